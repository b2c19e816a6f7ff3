//! A handshake flood against the rendezvous and a trusted agent (issue 10,
//! items 1 and 2), with figures next to baselines from the same run.
//!
//! Scenario: alice and bob register and trust each other; alice goes
//! away. A flooder (`Host::Flooder`) sends handshakes from fresh
//! identities to the rendezvous and to bob, answering cookie replies. In
//! the middle of a one-second load window, alice starts again elsewhere
//! with her identity and trust, registers, and sends bob a datagram.
//!
//! Cases, in one run:
//! - `no flood`: the baseline for registration and first datagram;
//! - `flood, defences off`: probation and the per-source handshake limit
//!   disabled by configuration (what the rendezvous held before them);
//! - `flood`: the defaults.
//!
//! Printed per case: registration time and time to the first datagram at
//! bob (virtual time, from alice's start), tunnel peers at the rendezvous
//! at the end of the flood and 15 s later, and the wall-clock cost of one
//! `Rendezvous::poll_timeout` call at both points (it walks the peers).
//!
//! For the record, the commit before these defences (b04a348~1), in the
//! driver-sim flood tests: 4560 peers at the rendezvous after 10 s at
//! 500 handshakes/s and never fewer; registration 1.06 s and first
//! datagram 2.38 s under flood. Before the timer index (216ce85, quick
//! run), one `poll_timeout` with 4982 peers cost 2.0 ms; with the index,
//! about 0.1 us with 10 000.
//!
//! `cargo bench -p driver-sim --bench flood` (`PILOT_BENCH_QUICK=1` for a
//! short run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use driver_sim::pilot::{Host, HostEvent, Scenario};
use driver_sim::{HostId, World};
use pilot_proto::addr::SocketAddress;
use pilot_proto::node::Event;
use pilot_proto::tunnel::TunnelConfig;

/// Fresh identities per second and target.
const RATE: u32 = 1000;

fn quick() -> bool {
    std::env::var_os("PILOT_BENCH_QUICK").is_some()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    NoFlood,
    DefencesOff,
    Defended,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::NoFlood => "no flood",
            Case::DefencesOff => "flood, defences off",
            Case::Defended => "flood",
        }
    }
}

struct Figures {
    registered: Duration,
    first_datagram: Duration,
    peers_end: usize,
    peers_later: usize,
    poll_end: Duration,
    poll_later: Duration,
    wall: Duration,
}

fn undefended(t: &mut TunnelConfig) {
    t.probation = Duration::from_secs(1 << 30);
    t.max_probation = usize::MAX;
    t.source_limits.per_second = u32::MAX;
    t.source_limits.burst = u32::MAX;
}

fn datagram_arrived(w: &World<Host>, to: HostId, payload: &[u8]) -> bool {
    w.events().iter().any(|(_, h, e)| {
        *h == to && matches!(e, HostEvent::Node(Event::Datagram { data, .. }) if data == payload)
    })
}

/// Wall time of one `poll_timeout` at the rendezvous, averaged.
fn poll_cost(s: &Scenario) -> Duration {
    let rv = s.world.host(s.rendezvous).rendezvous();
    let n = if quick() { 200 } else { 2000 };
    let start = Instant::now();
    for _ in 0..n {
        black_box(rv.poll_timeout());
    }
    start.elapsed() / n
}

fn run(case: Case, flood: Duration) -> Figures {
    let wall = Instant::now();
    let off = case == Case::DefencesOff;
    let mut s = Scenario::with_rendezvous(77, |c| {
        if off {
            undefended(&mut c.tunnel);
        }
    });
    s.world.set_tracing(false);
    let mut alice_identity = None;
    let alice = s.add_node("alice", "198.51.100.10:4000", |c| {
        alice_identity = Some(c.identity.clone());
    });
    let bob = s.add_node("bob", "198.51.100.20:4000", |c| {
        if off {
            undefended(&mut c.tunnel);
        }
    });
    s.run_until_registered(&[alice, bob], Duration::from_secs(30))
        .expect("registered");
    s.trust(alice, bob, Duration::from_secs(30)).expect("trust");
    let trust = s.node(alice).trust_state();
    let bob_addr = s.node(bob).address().expect("bob registered");
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(77))
        .expect("bind");
    s.world.isolate(alice);
    let rv = s.rendezvous;
    let flood_start = s.world.now();
    if case != Case::NoFlood {
        s.add_flooder("mallory", "203.0.113.66:6666", &[rv, bob], RATE, flood);
    }
    s.world.run_for(Duration::from_millis(3500));
    let start = s.world.now();
    let identity = alice_identity.expect("alice built");
    let alice2 = s.add_node("alice2", "198.51.100.11:4000", |c| {
        c.identity = identity;
        c.trust = trust;
        c.hostname = "alice".parse().ok();
        if off {
            undefended(&mut c.tunnel);
        }
    });
    s.run_until_registered(&[alice2], Duration::from_secs(60))
        .expect("alice registers");
    let registered = s.world.now().saturating_since(start);
    s.send(alice2, 77, SocketAddress::new(bob_addr, 77), b"hello bob")
        .expect("send");
    s.world
        .run_until(
            |w| datagram_arrived(w, bob, b"hello bob"),
            Duration::from_secs(60),
        )
        .expect("datagram arrives");
    let first_datagram = s.world.now().saturating_since(start);
    let end = flood_start + flood;
    if s.world.now() < end {
        s.world.run_until_time(end);
    }
    let peers_end = s.world.host(rv).rendezvous().state_size().0;
    let poll_end = poll_cost(&s);
    s.world.run_for(Duration::from_secs(15));
    let peers_later = s.world.host(rv).rendezvous().state_size().0;
    let poll_later = poll_cost(&s);
    Figures {
        registered,
        first_datagram,
        peers_end,
        peers_later,
        poll_end,
        poll_later,
        wall: wall.elapsed(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let flood = if quick() {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(10)
    };
    println!(
        "handshake flood: {RATE} fresh identities/s to the rendezvous and to bob for {} s",
        flood.as_secs()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>10} {:>11} {:>12} {:>12} {:>9}",
        "case", "register", "datagram", "peers end", "peers +15s", "poll end", "poll +15s", "wall"
    );
    let mut base = None;
    for case in [Case::NoFlood, Case::DefencesOff, Case::Defended] {
        let f = run(case, flood);
        println!(
            "{:<22} {:>10} {:>10} {:>10} {:>11} {:>9} ns {:>9} ns {:>7.1} s",
            case.name(),
            ms(f.registered),
            ms(f.first_datagram),
            f.peers_end,
            f.peers_later,
            f.poll_end.as_nanos(),
            f.poll_later.as_nanos(),
            f.wall.as_secs_f64()
        );
        match &base {
            None => base = Some(f),
            Some(b) => println!(
                "{:<22} register x{:.2}, datagram x{:.2}, poll_timeout at the end x{:.1} of no flood",
                "",
                f.registered.as_secs_f64() / b.registered.as_secs_f64(),
                f.first_datagram.as_secs_f64() / b.first_datagram.as_secs_f64(),
                f.poll_end.as_secs_f64() / b.poll_end.as_secs_f64().max(1e-9),
            ),
        }
    }
}
