//! The NAT traversal matrix: every pair of NAT kinds, realistic latencies
//! and 1 % loss, with the rendezvous reflecting on a second port so that
//! agents classify their NATs and cross symmetric ones by port
//! prediction or birthday probing. For each pair, alice starts sending
//! datagrams to bob right after trust is granted (as an application
//! would) and the table records the path reached, the time to the first
//! delivered datagram, the time until alice's traffic went direct, and
//! the path probes alice sent. Then a stream crosses whatever path there
//! is, checked byte for byte.
//!
//! Pairs whose outcome depends on chance (birthday probing: a
//! random-port symmetric NAT against an endpoint-independent one) run
//! over [`SEEDS`] seeds and report the success rate, the median time to
//! direct and the range of probes sent.
//!
//! The table is snapshotted in `testdata/snapshots/nat_matrix.snap` and
//! printed by `cargo run -p driver-sim --example nat_matrix`. The
//! assertions are the issue's: the first byte arrives for every pair;
//! every pair goes direct except where both sides allocate a new port per
//! destination and at least one of them does so at random (there
//! physics leaves only the relay); birthday pairs go direct in at least
//! 95 % of seeds within 3 s of the first datagram.

use std::fmt::Write as _;
use std::time::Duration;

use driver_sim::pilot::{Host, HostEvent, Scenario};
use driver_sim::{HostId, LinkConfig, NatConfig, Network, World};
use pilot_proto::addr::SocketAddress;
use pilot_proto::node::Event;
use pilot_proto::tunnel::Route;
use sha2::{Digest, Sha256};

const MAX: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Open,
    FullCone,
    AddressRestricted,
    PortRestricted,
    SymmetricSequential,
    SymmetricRandom,
    DoubleNat,
    CgnatPortRestricted,
    CgnatSymmetric,
}

const KINDS: [Kind; 9] = [
    Kind::Open,
    Kind::FullCone,
    Kind::AddressRestricted,
    Kind::PortRestricted,
    Kind::SymmetricSequential,
    Kind::SymmetricRandom,
    Kind::DoubleNat,
    Kind::CgnatPortRestricted,
    Kind::CgnatSymmetric,
];

/// Seeds per pair whose outcome is a matter of chance.
const SEEDS: u64 = 20;

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::FullCone => "full-cone",
            Kind::AddressRestricted => "addr-restricted",
            Kind::PortRestricted => "port-restricted",
            Kind::SymmetricSequential => "symmetric-seq",
            Kind::SymmetricRandom => "symmetric-random",
            Kind::DoubleNat => "double-nat",
            Kind::CgnatPortRestricted => "cgnat+port-restr",
            Kind::CgnatSymmetric => "cgnat+symmetric",
        }
    }

    /// A new public port per destination, unpredictably: a symmetric NAT
    /// with random ports, or any symmetric NAT behind a CGNAT that picks
    /// its ports at random.
    fn random(self) -> bool {
        matches!(self, Kind::SymmetricRandom | Kind::CgnatSymmetric)
    }

    /// A new public port per destination.
    fn symmetric(self) -> bool {
        self.random() || self == Kind::SymmetricSequential
    }

    fn config(self) -> NatConfig {
        match self {
            Kind::FullCone => NatConfig::full_cone(),
            Kind::AddressRestricted => NatConfig::address_restricted(),
            Kind::SymmetricSequential => NatConfig::symmetric_sequential(),
            Kind::SymmetricRandom => NatConfig::symmetric_random(),
            _ => NatConfig::port_restricted(),
        }
    }
}

/// An access link: `ms` one way, a little jitter, 1 % loss.
fn link(ms: u64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(ms),
        jitter: Duration::from_millis(ms / 10),
        loss_ppm: 10_000,
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
            // Two home routers, one behind the other.
            let outer = s.world.add_nat(
                &format!("outer{side}"),
                format!("198.51.100.{}", 100 + side).parse().unwrap(),
                NatConfig::port_restricted(),
            );
            let home = s.world.add_nat_behind(
                outer,
                &format!("home{side}"),
                format!("10.0.{side}.1").parse().unwrap(),
                NatConfig::port_restricted(),
            );
            Network::Behind(home)
        }
        Kind::CgnatPortRestricted => {
            let (_, home) = add_cgnat(&mut s.world, side, NatConfig::port_restricted());
            Network::Behind(home)
        }
        Kind::CgnatSymmetric => {
            let (_, home) = add_cgnat(&mut s.world, side, NatConfig::symmetric_sequential());
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

/// A carrier-grade NAT (endpoint-independent, random ports) with a home
/// NAT configured as `home` behind it.
fn add_cgnat<M: driver_sim::Machine>(
    world: &mut World<M>,
    side: u8,
    home: NatConfig,
) -> (driver_sim::NatId, driver_sim::NatId) {
    world.add_double_nat(
        (
            &format!("cgnat{side}"),
            format!("198.51.100.{}", 100 + side).parse().unwrap(),
        ),
        (
            &format!("home{side}"),
            format!("100.64.0.{side}").parse().unwrap(),
        ),
        home,
    )
}

/// One run of one pair.
struct Run {
    direct: bool,
    first_byte: Duration,
    to_direct: Option<Duration>,
    probes: u64,
}

fn classified(w: &World<Host>, id: HostId) -> bool {
    w.events()
        .iter()
        .any(|(_, h, e)| *h == id && matches!(e, HostEvent::Node(Event::NatClassified { .. })))
}

/// Runs one pair from registration to the path reached and, with
/// `stream`, a checked stream over it.
fn run_pair(
    seed: u64,
    label: &str,
    stream: bool,
    setup: impl FnOnce(&mut Scenario) -> (HostId, HostId),
) -> Run {
    let mut s = Scenario::with_reflect(seed);
    let rv = s.rendezvous;
    s.world.set_link(rv, link(5));
    let (alice, bob) = setup(&mut s);
    s.world.set_link(alice, link(15));
    s.world.set_link(bob, link(25));
    s.run_until_registered(&[alice, bob], MAX)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    // Classification takes a round trip (a few seconds when every
    // reflect is lost); an agent that punches before it ends punches as
    // an unknown NAT.
    s.world
        .run_until(
            |w| classified(w, alice) && classified(w, bob),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|e| panic!("{label}: classification: {e}"));
    s.trust(alice, bob, MAX)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    let events_before = s.world.events().len();
    let t0 = s.world.now();
    // An application sending a datagram every 100 ms for 5 s.
    let mut first_byte = None;
    let mut to_direct = None;
    for i in 0..50u32 {
        s.send(
            alice,
            1000,
            SocketAddress::new(bob_addr, 1000),
            &i.to_be_bytes(),
        )
        .unwrap_or_else(|e| panic!("{label}: send {i}: {e}"));
        // Step by step until the next send (never past it), noting when
        // bob gets his first datagram.
        let tick = Duration::from_millis(100);
        if first_byte.is_none() {
            let got = |w: &World<Host>| {
                w.events().iter().any(|(_, h, e)| {
                    *h == bob && matches!(e, HostEvent::Node(Event::Datagram { .. }))
                })
            };
            let start = s.world.now();
            if s.world.run_until(got, tick).is_ok() {
                first_byte = Some(s.world.now().saturating_since(t0));
                s.world.run_until_time(start + tick);
            }
        } else {
            s.world.run_for(tick);
        }
        for (t, h, e) in &s.world.events()[events_before..] {
            if let HostEvent::Node(Event::PathChanged {
                route: Some(Route::Direct { .. }),
                ..
            }) = e
            {
                if *h == alice && to_direct.is_none() {
                    to_direct = Some(t.saturating_since(t0));
                }
            }
        }
    }
    let first_byte = first_byte.unwrap_or_else(|| panic!("{label}: no datagram arrived"));
    let now = s.world.now();
    let stats = s.node(alice).peer_stats(now);
    let peer = stats.iter().find(|p| p.address == bob_addr).unwrap();
    let direct = matches!(peer.stats.route, Some(Route::Direct { .. }));
    let probes = peer.stats.probes_sent;
    if std::env::var("MATRIX_TRACE").is_ok_and(|v| v == seed.to_string()) {
        std::fs::write(format!("/tmp/matrix-{seed}.trace"), s.world.trace()).unwrap();
    }
    // Birthday probing's extra sockets are closed once it is over: only
    // those carrying a validated path stay.
    for h in [alice, bob] {
        let in_use = s.node(h).sockets_in_use();
        let open = s.world.sockets(h);
        assert!(
            open.iter().all(|(id, _)| in_use.contains(id)),
            "{label}: sockets {open:?} left open, {in_use:?} in use (seed {seed})"
        );
    }
    if stream {
        // A stream over whatever path there is, checked byte for byte.
        let data: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i * 7 + seed as u32) as u8)
            .collect();
        let (got, _) = s
            .transfer(alice, bob, 9000, &data, MAX)
            .unwrap_or_else(|e| panic!("{label}: stream: {e}"));
        assert_eq!(
            Sha256::digest(&got),
            Sha256::digest(&data),
            "{label}: stream corrupted (seed {seed})"
        );
    }
    Run {
        direct,
        first_byte,
        to_direct,
        probes,
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Whether a pair is expected direct: unless both sides map per
/// destination and one of them at random.
fn expect_direct(a: Kind, b: Kind) -> bool {
    !(a.symmetric() && b.symmetric() && (a.random() || b.random()))
}

/// Whether a pair's outcome depends on chance: birthday probing.
fn birthday(a: Kind, b: Kind) -> bool {
    (a.random() && !b.symmetric()) || (b.random() && !a.symmetric())
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

/// The matrix as a table, one row per pair.
pub fn matrix() -> String {
    let mut table = String::new();
    writeln!(
        table,
        "{:<36} {:<7} {:>6} {:>10} {:>10} {:>10}",
        "pair (alice x bob)", "path", "seeds", "first byte", "to direct", "probes"
    )
    .unwrap();
    let mut seed = 9000;
    let mut pairs: Vec<(String, Kind, Kind)> = Vec::new();
    for (i, a) in KINDS.iter().enumerate() {
        for b in &KINDS[i..] {
            pairs.push((format!("{} x {}", a.name(), b.name()), *a, *b));
        }
    }
    for (label, a, b) in pairs {
        seed += 1;
        let place_pair = |s: &mut Scenario| {
            let alice = place(s, a, 1, "alice");
            let bob = place(s, b, 2, "bob");
            (alice, bob)
        };
        let seeds = if birthday(a, b) { SEEDS } else { 1 };
        let runs: Vec<Run> = (0..seeds)
            .map(|k| run_pair(seed + 1000 * k, &label, k == 0, place_pair))
            .collect();
        let ok = runs.iter().filter(|r| r.direct).count();
        if expect_direct(a, b) {
            if birthday(a, b) {
                // The 3 s are the punch's: counted from the session's
                // first datagram, so that a lost handshake (retried on
                // its own timer) is not charged to it.
                let fast = runs
                    .iter()
                    .filter(|r| {
                        r.to_direct.is_some_and(|t| {
                            t.saturating_sub(r.first_byte) <= Duration::from_secs(3)
                        })
                    })
                    .count();
                assert!(
                    fast * 100 >= runs.len() * 95,
                    "{label}: direct within 3 s in {fast}/{} seeds: {:?}",
                    runs.len(),
                    runs.iter()
                        .map(|r| (r.to_direct, r.probes))
                        .collect::<Vec<_>>()
                );
            } else {
                assert!(ok == runs.len(), "{label}: not direct (seed {seed})");
            }
        } else {
            assert_eq!(ok, 0, "{label}: direct where only the relay should work");
        }
        let path = if ok == runs.len() {
            "direct"
        } else if ok == 0 {
            "relay"
        } else {
            "mixed"
        };
        let first = median(runs.iter().map(|r| r.first_byte).collect()).unwrap();
        let direct = median(runs.iter().filter_map(|r| r.to_direct).collect());
        let min = runs.iter().map(|r| r.probes).min().unwrap_or(0);
        let max = runs.iter().map(|r| r.probes).max().unwrap_or(0);
        let probes = if min == max {
            format!("{min}")
        } else {
            format!("{min}-{max}")
        };
        writeln!(
            table,
            "{:<36} {:<7} {:>6} {:>10} {:>10} {:>10}",
            label,
            path,
            format!("{ok}/{}", runs.len()),
            ms(first),
            direct.map_or("-".into(), ms),
            probes,
        )
        .unwrap();
    }
    // Two agents on one LAN behind one NAT.
    seed += 1;
    let r = run_pair(seed, "same LAN behind one NAT", true, |s| {
        let nat = s.world.add_nat(
            "home",
            "198.51.100.1".parse().unwrap(),
            NatConfig::port_restricted(),
        );
        let alice = s.add_node_in(nat, "alice", "192.168.1.2:4000", |_| {});
        let bob = s.add_node_in(nat, "bob", "192.168.1.3:4000", |_| {});
        (alice, bob)
    });
    assert!(r.direct, "same LAN: not direct");
    writeln!(
        table,
        "{:<36} {:<7} {:>6} {:>10} {:>10} {:>10}",
        "same LAN behind one NAT",
        "direct",
        "1/1",
        ms(r.first_byte),
        r.to_direct.map_or("-".into(), ms),
        r.probes,
    )
    .unwrap();
    table
}

#[test]
fn every_pair_of_nats() {
    let table = matrix();
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("nat_matrix", table);
    });
}
