//! The NAT traversal matrix: every pair of NAT kinds, realistic latencies
//! and 1 % loss. For each pair, alice starts sending datagrams to bob
//! right after trust is granted (as an application would) and the table
//! records the path reached, the time to the first delivered datagram,
//! the time until alice's traffic went direct, and the path probes sent.
//! Then a stream crosses whatever path there is, checked byte for byte.
//!
//! The table is snapshotted in `testdata/snapshots/nat_matrix.snap`; the
//! assertions are the issue's: the first byte arrives for every pair, the
//! path is direct for every pair where neither side is symmetric, and
//! streams work over the relay for the rest.

use std::fmt::Write as _;
use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
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
}

const KINDS: [Kind; 7] = [
    Kind::Open,
    Kind::FullCone,
    Kind::AddressRestricted,
    Kind::PortRestricted,
    Kind::SymmetricSequential,
    Kind::SymmetricRandom,
    Kind::DoubleNat,
];

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
        }
    }

    fn symmetric(self) -> bool {
        matches!(self, Kind::SymmetricSequential | Kind::SymmetricRandom)
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
            let (_, home) = add_double_nat(&mut s.world, side);
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

fn add_double_nat<M: driver_sim::Machine>(
    world: &mut World<M>,
    side: u8,
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
        NatConfig::port_restricted(),
    )
}

struct Row {
    label: String,
    direct: bool,
    first_byte: Duration,
    to_direct: Option<Duration>,
    probes: u64,
    rtt_rv: Duration,
}

/// Runs one pair from registration to a checked stream.
fn run_pair(
    seed: u64,
    label: String,
    setup: impl FnOnce(&mut Scenario) -> (HostId, HostId),
) -> Row {
    let mut s = Scenario::new(seed);
    let rv = s.rendezvous;
    s.world.set_link(rv, link(5));
    let (alice, bob) = setup(&mut s);
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
        let until = s.world.now() + Duration::from_millis(100);
        while s.world.now() < until && s.world.step() {
            if first_byte.is_none() && !s.datagrams(bob).is_empty() {
                first_byte = Some(s.world.now().saturating_since(t0));
            }
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
    let rtt_rv = s.node(alice).rendezvous_rtt(now).unwrap_or(Duration::ZERO);
    Row {
        label,
        direct,
        first_byte,
        to_direct,
        probes,
        rtt_rv,
    }
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

#[test]
fn every_pair_of_nats() {
    let mut rows = Vec::new();
    let mut seed = 9000;
    for (i, a) in KINDS.iter().enumerate() {
        for b in &KINDS[i..] {
            seed += 1;
            let (a, b) = (*a, *b);
            let label = format!("{} x {}", a.name(), b.name());
            let row = run_pair(seed, label, |s| {
                let alice = place(s, a, 1, "alice");
                let bob = place(s, b, 2, "bob");
                (alice, bob)
            });
            if !a.symmetric() && !b.symmetric() {
                assert!(row.direct, "{}: not direct (seed {seed})", row.label);
            }
            rows.push(row);
        }
    }
    // Two agents on one LAN behind one NAT.
    seed += 1;
    let row = run_pair(seed, "same LAN behind one NAT".into(), |s| {
        let nat = s.world.add_nat(
            "home",
            "198.51.100.1".parse().unwrap(),
            NatConfig::port_restricted(),
        );
        let alice = s.add_node_in(nat, "alice", "192.168.1.2:4000", |_| {});
        let bob = s.add_node_in(nat, "bob", "192.168.1.3:4000", |_| {});
        (alice, bob)
    });
    assert!(row.direct, "same LAN: not direct");
    rows.push(row);

    let mut table = String::new();
    writeln!(
        table,
        "{:<40} {:<7} {:>11} {:>10} {:>7} {:>7}",
        "pair (alice x bob)", "path", "first byte", "to direct", "probes", "rtt rv"
    )
    .unwrap();
    for r in &rows {
        writeln!(
            table,
            "{:<40} {:<7} {:>11} {:>10} {:>7} {:>7}",
            r.label,
            if r.direct { "direct" } else { "relay" },
            ms(r.first_byte),
            r.to_direct.map_or("-".into(), ms),
            r.probes,
            ms(r.rtt_rv),
        )
        .unwrap();
    }
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!("nat_matrix", table);
    });
}
