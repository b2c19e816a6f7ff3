//! NAT traversal timings in the simulator, each figure next to a baseline
//! from the same run.
//!
//! For each pair of NAT kinds (alice × bob), with fixed latencies (rendezvous
//! 5 ms, alice 15 ms, bob 25 ms one way, no jitter, no loss), alice sends a
//! datagram every 10 ms right after trust is granted. Per pair, averaged
//! over `SEEDS` seeds:
//!
//! - time to the first datagram bob receives;
//! - time until alice's traffic goes direct (the first
//!   `Event::PathChanged` with `Route::Direct` on alice);
//!
//! both in ms and in round trips to the rendezvous as alice measured it
//! (`Node::rendezvous_rtt`), and the one-way time of one more datagram
//! sent once the run has settled, on whatever path it ended on. Baselines:
//! that RTT itself, and the one-way time over a known direct path (open ×
//! open, after its run). With fixed latencies and no loss, seeds change keys,
//! indices and NAT port choices but not the timings, so the means are exact.
//!
//! Then relay → direct: the direct path is cut (`World::partition`) while
//! trust is set up and traffic flows over the relay for 3 to 15.3 s, then
//! healed; the figure is heal to alice's `PathChanged` to direct.
//!
//! `cargo bench -p driver-sim --bench nat`

use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::{HostId, LinkConfig, NatConfig, Network};
use pilot_proto::addr::SocketAddress;
use pilot_proto::node::Event;
use pilot_proto::tunnel::Route;

const MAX: Duration = Duration::from_secs(30);
const SEEDS: u64 = 10;
/// How long alice keeps sending after trust.
const RUN: Duration = Duration::from_secs(5);
const EVERY: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    FullCone,
    AddressRestricted,
    PortRestricted,
    SymmetricRandom,
    DoubleNat,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::FullCone => "full-cone",
            Kind::AddressRestricted => "addr-restricted",
            Kind::PortRestricted => "port-restricted",
            Kind::SymmetricRandom => "symmetric-random",
            Kind::DoubleNat => "double-nat",
        }
    }

    fn config(self) -> NatConfig {
        match self {
            Kind::FullCone => NatConfig::full_cone(),
            Kind::AddressRestricted => NatConfig::address_restricted(),
            Kind::SymmetricRandom => NatConfig::symmetric_random(),
            _ => NatConfig::port_restricted(),
        }
    }
}

const PAIRS: [(Kind, Kind); 6] = [
    (Kind::Open, Kind::Open),
    (Kind::FullCone, Kind::FullCone),
    (Kind::AddressRestricted, Kind::AddressRestricted),
    (Kind::PortRestricted, Kind::PortRestricted),
    (Kind::DoubleNat, Kind::DoubleNat),
    (Kind::PortRestricted, Kind::SymmetricRandom),
];

fn link(ms: u64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(ms),
        jitter: Duration::ZERO,
        loss_ppm: 0,
        ..LinkConfig::default()
    }
}

/// Puts agent `name` (side 1 or 2) behind a NAT of `kind`.
fn place(s: &mut Scenario, kind: Kind, side: u8, name: &str) -> HostId {
    let private = format!("192.168.{side}.2:4000");
    let network = match kind {
        Kind::Open => {
            return s.add_node(name, &format!("203.0.113.{side}:4000"), |_| {});
        }
        Kind::DoubleNat => {
            let (_, home) = s.world.add_double_nat(
                (
                    &format!("cgnat{side}"),
                    format!("198.51.100.{}", 100 + side).parse().unwrap(),
                ),
                (
                    &format!("home{side}"),
                    format!("100.64.0.{side}").parse().unwrap(),
                ),
                NatConfig::port_restricted(),
            );
            Network::Behind(home)
        }
        k => Network::Behind(s.world.add_nat(
            &format!("nat{side}"),
            format!("198.51.100.{side}").parse().unwrap(),
            k.config(),
        )),
    };
    s.add_node_in(network, name, &private, |_| {})
}

struct Run {
    first_byte: Duration,
    to_direct: Option<Duration>,
    rtt_rv: Duration,
    /// Send to delivery of one more datagram at the end of the run.
    steady: Duration,
}

fn run_pair(seed: u64, a: Kind, b: Kind) -> Run {
    let label = format!("{} x {} (seed {seed})", a.name(), b.name());
    let mut s = Scenario::new(seed);
    s.world.set_tracing(false);
    let rv = s.rendezvous;
    s.world.set_link(rv, link(5));
    let alice = place(&mut s, a, 1, "alice");
    let bob = place(&mut s, b, 2, "bob");
    s.world.set_link(alice, link(15));
    s.world.set_link(bob, link(25));
    s.run_until_registered(&[alice, bob], MAX)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    s.trust(alice, bob, MAX)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    let rtt_rv = s
        .node(alice)
        .rendezvous_rtt(s.world.now())
        .expect("rendezvous rtt");
    let events_before = s.world.events().len();
    let t0 = s.world.now();
    let mut first_byte = None;
    let mut to_direct = None;
    let mut i = 0u32;
    while s.world.now().saturating_since(t0) < RUN {
        s.send(
            alice,
            1000,
            SocketAddress::new(bob_addr, 1000),
            &i.to_be_bytes(),
        )
        .unwrap_or_else(|e| panic!("{label}: send {i}: {e}"));
        i += 1;
        let until = s.world.now() + EVERY;
        while s.world.now() < until && s.world.step() {
            if first_byte.is_none() && !s.datagrams(bob).is_empty() {
                first_byte = Some(s.world.now().saturating_since(t0));
            }
        }
        if to_direct.is_none() {
            to_direct = s.world.events()[events_before..]
                .iter()
                .find(|(_, h, e)| {
                    *h == alice
                        && matches!(
                            e,
                            HostEvent::Node(Event::PathChanged {
                                route: Some(Route::Direct { .. }),
                                ..
                            })
                        )
                })
                .map(|(t, _, _)| t.saturating_since(t0));
        }
        if first_byte.is_some() && to_direct.is_some() {
            break;
        }
    }
    let first_byte = first_byte.unwrap_or_else(|| panic!("{label}: no datagram arrived"));
    // Let what is in flight land, then one more datagram on whatever path
    // there is now.
    let quiet = s.world.now() + Duration::from_millis(500);
    while s.world.now() < quiet && s.world.step() {}
    let last = |s: &Scenario| s.datagrams(bob).iter().any(|(_, _, d)| d == b"last");
    let t1 = s.world.now();
    s.send(alice, 1000, SocketAddress::new(bob_addr, 1000), b"last")
        .unwrap_or_else(|e| panic!("{label}: send last: {e}"));
    while !last(&s) && s.world.step() {
        assert!(
            s.world.now().saturating_since(t1) < MAX,
            "{label}: last lost"
        );
    }
    let steady = s.world.now().saturating_since(t1);
    Run {
        first_byte,
        to_direct,
        rtt_rv,
        steady,
    }
}

/// Relay to direct: alice and bob (open internet, or both behind
/// port-restricted NATs) cannot reach each other directly at first, so
/// traffic goes through the relay for `cut`; then the cut heals and alice
/// keeps sending every 100 ms. Returns the time from the heal to alice's path
/// going direct.
fn upgrade(seed: u64, kind: Kind, cut: Duration) -> Duration {
    let label = format!("upgrade {} (seed {seed})", kind.name());
    let mut s = Scenario::new(seed);
    s.world.set_tracing(false);
    let rv = s.rendezvous;
    s.world.set_link(rv, link(5));
    let alice = place(&mut s, kind, 1, "alice");
    let bob = place(&mut s, kind, 2, "bob");
    s.world.set_link(alice, link(15));
    s.world.set_link(bob, link(25));
    s.run_until_registered(&[alice, bob], MAX)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    s.world.partition(alice, bob);
    s.trust(alice, bob, MAX)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    let dst = SocketAddress::new(bob_addr, 1000);
    let send_for = |s: &mut Scenario, d: Duration| {
        let end = s.world.now() + d;
        while s.world.now() < end {
            s.send(alice, 1000, dst, b"x")
                .unwrap_or_else(|e| panic!("{label}: send: {e}"));
            let until = s.world.now() + Duration::from_millis(100);
            while s.world.now() < until && s.world.step() {}
        }
    };
    send_for(&mut s, cut);
    let route = |s: &Scenario| {
        let now = s.world.now();
        s.node(alice)
            .peer_stats(now)
            .into_iter()
            .find(|p| p.address == bob_addr)
            .and_then(|p| p.stats.route)
    };
    assert!(
        !s.datagrams(bob).is_empty(),
        "{label}: nothing over the relay"
    );
    assert!(
        matches!(route(&s), Some(Route::Relay(_))),
        "{label}: not on the relay while cut: {:?}",
        route(&s)
    );
    s.world.heal(alice, bob);
    let healed = s.world.now();
    let events_before = s.world.events().len();
    loop {
        send_for(&mut s, Duration::from_millis(100));
        let direct = s.world.events()[events_before..].iter().find(|(_, h, e)| {
            *h == alice
                && matches!(
                    e,
                    HostEvent::Node(Event::PathChanged {
                        route: Some(Route::Direct { .. }),
                        ..
                    })
                )
        });
        if let Some((t, _, _)) = direct {
            return t.saturating_since(healed);
        }
        assert!(
            s.world.now().saturating_since(healed) < Duration::from_secs(600),
            "{label}: never went direct"
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    println!(
        "NAT traversal, fixed one-way latencies rv 5 ms / alice 15 ms / bob 25 ms, no loss, \
         a datagram every {} ms, mean over {SEEDS} seeds",
        EVERY.as_millis()
    );
    println!(
        "{:<36} {:>9} {:>11} {:>7} {:>11} {:>7} {:>8} {:>9}",
        "pair (alice x bob)",
        "rtt rv",
        "first byte",
        "(RTTs)",
        "to direct",
        "(RTTs)",
        "direct",
        "one-way"
    );
    let mut baseline_rtt = Vec::new();
    let mut baseline_steady = None;
    for (pi, (a, b)) in PAIRS.iter().enumerate() {
        let runs: Vec<Run> = (0..SEEDS)
            .map(|k| run_pair(7000 + 100 * pi as u64 + k, *a, *b))
            .collect();
        let n = runs.len() as f64;
        let rtt = runs.iter().map(|r| ms(r.rtt_rv)).sum::<f64>() / n;
        let first = runs.iter().map(|r| ms(r.first_byte)).sum::<f64>() / n;
        let first_rtts = runs
            .iter()
            .map(|r| r.first_byte.as_secs_f64() / r.rtt_rv.as_secs_f64())
            .sum::<f64>()
            / n;
        let direct: Vec<&Run> = runs.iter().filter(|r| r.to_direct.is_some()).collect();
        let (to_direct, to_direct_rtts) = if direct.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            let d = direct.len() as f64;
            (
                format!(
                    "{:.1}ms",
                    direct.iter().map(|r| ms(r.to_direct.unwrap())).sum::<f64>() / d
                ),
                format!(
                    "{:.2}",
                    direct
                        .iter()
                        .map(|r| r.to_direct.unwrap().as_secs_f64() / r.rtt_rv.as_secs_f64())
                        .sum::<f64>()
                        / d
                ),
            )
        };
        let steady = runs.iter().map(|r| ms(r.steady)).sum::<f64>() / n;
        if pi == 0 {
            baseline_steady = Some(steady);
        }
        baseline_rtt.push(rtt);
        println!(
            "{:<36} {:>7.1}ms {:>9.1}ms {:>7.2} {:>11} {:>7} {:>5}/{:<2} {:>7.1}ms",
            format!("{} x {}", a.name(), b.name()),
            rtt,
            first,
            first_rtts,
            to_direct,
            to_direct_rtts,
            direct.len(),
            runs.len(),
            steady
        );
    }
    let rtt = baseline_rtt.iter().sum::<f64>() / baseline_rtt.len() as f64;
    println!(
        "baseline: alice's RTT to the rendezvous {rtt:.1} ms; one datagram over a known \
         direct path (open x open, after the run) {:.1} ms one way",
        baseline_steady.unwrap()
    );

    println!();
    println!(
        "relay -> direct upgrade: direct path cut for 3 to 15.3 s (traffic over the relay), then healed"
    );
    for kind in [Kind::Open, Kind::PortRestricted] {
        let mut times: Vec<Duration> = (0..SEEDS)
            .map(|k| {
                // Cuts of different lengths, so the heal falls at different
                // points of the nodes' probe and punch schedules.
                let cut = Duration::from_millis(3000 + 1370 * k);
                upgrade(8000 + k, kind, cut)
            })
            .collect();
        let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
        times.sort();
        println!(
            "   {k} x {k}: heal to direct {mean:.0} ms mean, median {:.0} ms (min {:.0}, max {:.0} ms)",
            ms(times[times.len() / 2]),
            ms(times[0]),
            ms(times[times.len() - 1]),
            k = kind.name()
        );
    }
}
