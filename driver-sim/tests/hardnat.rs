//! Hard NATs in the simulator: each node classifies its own NAT through
//! the rendezvous's second port, and pairs with a symmetric side go
//! direct by port prediction or birthday probing.

use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::{HostId, NatConfig, Network, PortAllocation};
use pilot_proto::addr::SocketAddress;
use pilot_proto::nat::NatKind;
use pilot_proto::node::Event;
use pilot_proto::tunnel::Route;

const MAX: Duration = Duration::from_secs(30);

fn behind(s: &mut Scenario, config: NatConfig, side: u8, name: &str) -> HostId {
    let nat = s.world.add_nat(
        &format!("nat{side}"),
        format!("198.51.100.{side}").parse().unwrap(),
        config,
    );
    s.add_node_in(
        Network::Behind(nat),
        name,
        &format!("192.168.{side}.2:4000"),
        |_| {},
    )
}

fn classified(s: &Scenario, id: HostId) -> Option<NatKind> {
    s.world.events().iter().rev().find_map(|(_, h, e)| match e {
        HostEvent::Node(Event::NatClassified { kind }) if *h == id => Some(*kind),
        _ => None,
    })
}

#[test]
fn nodes_classify_their_nats() {
    let cases = [
        (NatConfig::port_restricted(), NatKind::EndpointIndependent),
        (NatConfig::full_cone(), NatKind::EndpointIndependent),
        (
            NatConfig::symmetric_sequential(),
            NatKind::Sequential { stride: 1 },
        ),
        (
            NatConfig {
                allocation: PortAllocation::Sequential { stride: 4 },
                ..NatConfig::symmetric_sequential()
            },
            NatKind::Sequential { stride: 4 },
        ),
        (NatConfig::symmetric_random(), NatKind::Random),
    ];
    for (i, (config, want)) in cases.into_iter().enumerate() {
        let mut s = Scenario::with_reflect(500 + i as u64);
        let a = behind(&mut s, config, 1, "alice");
        let open = s.add_node("bob", "203.0.113.2:4000", |_| {});
        s.run_until_registered(&[a, open], MAX).unwrap();
        s.world
            .run_until(
                |w| classified_w(w, a).is_some() && classified_w(w, open).is_some(),
                MAX,
            )
            .unwrap();
        assert_eq!(classified(&s, a), Some(want), "case {i}");
        assert_eq!(classified(&s, open), Some(NatKind::EndpointIndependent));
        // The socket opened to classify is closed again.
        assert!(s.world.sockets(a).is_empty(), "case {i}");
    }
}

/// Agents told nothing about the reflect port learn it from the
/// rendezvous (`ReflectPort` after `Registered`) and classify anyway.
#[test]
fn agents_learn_the_reflect_port_from_the_rendezvous() {
    let cases = [
        (NatConfig::port_restricted(), NatKind::EndpointIndependent),
        (
            NatConfig::symmetric_sequential(),
            NatKind::Sequential { stride: 1 },
        ),
        (NatConfig::symmetric_random(), NatKind::Random),
    ];
    for (i, (config, want)) in cases.into_iter().enumerate() {
        let mut s = Scenario::with_reflect(700 + i as u64);
        let announced = s.reflect_addr.take();
        let a = behind(&mut s, config, 1, "alice");
        s.run_until_registered(&[a], MAX).unwrap();
        s.world
            .run_until(|w| classified_w(w, a).is_some(), MAX)
            .unwrap();
        assert_eq!(classified(&s, a), Some(want), "case {i}");
        assert_eq!(s.node(a).reflect_addr(), announced, "case {i}");
        let report = s.node(a).nat_report().expect("a finished classification");
        assert_eq!(report.info.kind, want, "case {i}");
        assert!(
            report.seen.iter().all(Option::is_some),
            "case {i}: {report:?}"
        );
        assert!(s.world.sockets(a).is_empty(), "case {i}");
    }
    // Without a reflect port nothing is announced, and nothing classified.
    let mut s = Scenario::new(710);
    let a = behind(&mut s, NatConfig::symmetric_random(), 1, "alice");
    s.run_until_registered(&[a], MAX).unwrap();
    s.world.run_for(Duration::from_secs(5));
    assert_eq!(classified(&s, a), None);
    assert_eq!(s.node(a).reflect_addr(), None);
}

/// A full check (`pilotctl netcheck`) also tells whether the NAT lets in
/// a port its socket never sent to, and whether it hairpins; the
/// classification for punching does neither.
#[test]
fn a_full_check_tells_filtering_and_hairpinning() {
    use pilot_proto::nat::Filtering;
    // The presets do not hairpin (as Linux masquerading without a DNAT
    // rule does not); `hairpin` turns it on.
    let hairpin = |c: NatConfig| NatConfig {
        hairpinning: true,
        ..c
    };
    let cases = [
        (
            "full cone",
            NatConfig::full_cone(),
            Filtering::AddressOrNone,
            false,
        ),
        (
            "address-restricted, hairpinning",
            hairpin(NatConfig::address_restricted()),
            Filtering::AddressOrNone,
            true,
        ),
        (
            "port-restricted",
            NatConfig::port_restricted(),
            Filtering::PortDependent,
            false,
        ),
        (
            "port-restricted, hairpinning",
            hairpin(NatConfig::port_restricted()),
            Filtering::PortDependent,
            true,
        ),
        (
            "symmetric random, hairpinning",
            hairpin(NatConfig::symmetric_random()),
            Filtering::PortDependent,
            // The hairpin probe gets a new mapping of its own, which the
            // primary socket's mapping does not let in.
            false,
        ),
        ("no NAT", NatConfig::open(), Filtering::AddressOrNone, true),
    ];
    for (i, (name, config, filtering, hairpin)) in cases.into_iter().enumerate() {
        let mut s = Scenario::with_reflect(730 + i as u64);
        let a = if config.translate {
            behind(&mut s, config, 1, "alice")
        } else {
            s.add_node("alice", "203.0.113.7:4000", |_| {})
        };
        s.run_until_registered(&[a], MAX).unwrap();
        s.world
            .run_until(|w| classified_w(w, a).is_some(), MAX)
            .unwrap();
        let first = s.node(a).nat_report().expect("classified");
        assert_eq!(first.filtering, Filtering::Unknown, "{name}: {first:?}");
        assert_eq!(first.hairpinning, None, "{name}");
        let before = count_classified(&s, a);
        assert!(s.world.with_host(a, |h, now| h.node_mut().reclassify(now)));
        s.world
            .run_until(|w| count_classified_w(w, a) > before, MAX)
            .unwrap();
        let report = s.node(a).nat_report().expect("checked");
        assert_eq!(report.filtering, filtering, "{name}: {report:?}");
        assert_eq!(report.hairpinning, Some(hairpin), "{name}: {report:?}");
        assert_eq!(
            report.info.kind, first.info.kind,
            "{name}: the same mapping"
        );
        // Both sockets of the check are closed again.
        assert!(s.world.sockets(a).is_empty(), "{name}");
    }
}

fn count_classified(s: &Scenario, id: HostId) -> usize {
    count_classified_w(&s.world, id)
}

fn count_classified_w(w: &driver_sim::World<driver_sim::pilot::Host>, id: HostId) -> usize {
    w.events()
        .iter()
        .filter(|(_, h, e)| *h == id && matches!(e, HostEvent::Node(Event::NatClassified { .. })))
        .count()
}

fn classified_w(w: &driver_sim::World<driver_sim::pilot::Host>, id: HostId) -> Option<NatKind> {
    w.events().iter().rev().find_map(|(_, h, e)| match e {
        HostEvent::Node(Event::NatClassified { kind }) if *h == id => Some(*kind),
        _ => None,
    })
}

/// Trust, then alice sends every 100 ms for `secs`: whether alice's path
/// to bob ends direct.
fn pair(seed: u64, a: NatConfig, b: NatConfig, secs: u32) -> (bool, u64, Scenario, HostId, HostId) {
    let mut s = Scenario::with_reflect(seed);
    let alice = behind(&mut s, a, 1, "alice");
    let bob = behind(&mut s, b, 2, "bob");
    s.run_until_registered(&[alice, bob], MAX).unwrap();
    s.world
        .run_until(
            |w| classified_w(w, alice).is_some() && classified_w(w, bob).is_some(),
            MAX,
        )
        .unwrap();
    s.trust(alice, bob, MAX).unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    for i in 0..secs * 10 {
        s.send(
            alice,
            1000,
            SocketAddress::new(bob_addr, 1000),
            &i.to_be_bytes(),
        )
        .unwrap();
        s.world.run_for(Duration::from_millis(100));
    }
    let now = s.world.now();
    let stats = s.node(alice).peer_stats(now);
    let peer = stats.iter().find(|p| p.address == bob_addr).unwrap();
    let direct = matches!(peer.stats.route, Some(Route::Direct { .. }));
    (direct, peer.stats.probes_sent, s, alice, bob)
}

#[test]
fn birthday_random_against_port_restricted() {
    let (direct, probes, s, alice, bob) = pair(
        42,
        NatConfig::port_restricted(),
        NatConfig::symmetric_random(),
        6,
    );
    std::fs::write("/tmp/hn/birthday.trace", s.world.trace()).ok();
    assert!(direct, "probes {probes}");
    // The hard side closed every extra socket but the one in use.
    assert!(
        s.world.sockets(bob).len() <= 1,
        "{:?}",
        s.world.sockets(bob).len()
    );
    assert!(s.world.sockets(alice).is_empty());
}

#[test]
fn prediction_sequential_pairs() {
    for (seed, a, b) in [
        (
            43,
            NatConfig::port_restricted(),
            NatConfig::symmetric_sequential(),
        ),
        (
            44,
            NatConfig::symmetric_sequential(),
            NatConfig::symmetric_sequential(),
        ),
    ] {
        let (direct, probes, s, _, _) = pair(seed, a, b, 6);
        std::fs::write(format!("/tmp/hn/seq{seed}.trace"), s.world.trace()).ok();
        assert!(direct, "seed {seed} probes {probes}");
    }
}

#[test]
fn random_against_random_stays_on_the_relay() {
    let (direct, _, s, alice, bob) = pair(
        45,
        NatConfig::symmetric_random(),
        NatConfig::symmetric_random(),
        6,
    );
    assert!(!direct);
    assert!(s.world.sockets(alice).is_empty() && s.world.sockets(bob).is_empty());
}
