//! The registry's promises, checked against the real core in the
//! simulator: stable addresses per identity, unique hostnames, private by
//! default, expiry without refresh.

use std::time::Duration;

use driver_sim::host_seed;
use driver_sim::pilot::{identity_for, HostEvent, Scenario};
use driver_sim::HostId;
use pilot_proto::addr::Hostname;
use pilot_proto::msg::{ErrorCode, Query};
use pilot_proto::node::{Event, PeerInfo, ResolveError};
use pilot_proto::rendezvous::RendezvousEvent;

const SEED: u64 = 11;

fn registered(s: &mut Scenario, ids: &[HostId]) {
    s.run_until_registered(ids, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn lookup(s: &mut Scenario, from: HostId, query: Query) -> Result<PeerInfo, ResolveError> {
    let id = s
        .world
        .with_host(from, |h, now| h.node_mut().resolve(now, query));
    let done = |w: &driver_sim::World<driver_sim::pilot::Host>| {
        w.events().iter().any(|(_, h, e)| {
            *h == from && matches!(e, HostEvent::Node(Event::Resolved { id: i, .. }) if *i == id)
        })
    };
    s.world
        .run_until(done, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    s.node_events()
        .find_map(|(_, h, e)| match e {
            Event::Resolved { id: i, result } if h == from && *i == id => Some(result.clone()),
            _ => None,
        })
        .expect("resolved event present")
}

#[test]
fn an_identity_keeps_its_address_wherever_it_registers_from() {
    let mut s = Scenario::new(SEED);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.20:4000", |_| {});
    registered(&mut s, &[alice, bob]);
    let first = s.node(alice).address().unwrap();
    // Alice's daemon restarts on another host: same identity, new endpoint.
    let same_identity = identity_for(&host_seed(SEED, "alice"));
    let again = s.add_node("alice-restarted", "198.51.100.99:5000", |c| {
        c.identity = same_identity;
        c.hostname = Hostname::new("alice").ok();
    });
    registered(&mut s, &[again]);
    assert_eq!(s.node(again).address(), Some(first));
    assert_eq!(
        s.node(again).public_endpoint(),
        Some("198.51.100.99:5000".parse().unwrap())
    );
    // Bob finds alice at her new endpoint.
    let info = lookup(
        &mut s,
        bob,
        Query::Hostname(Hostname::new("alice").unwrap()),
    )
    .unwrap();
    assert_eq!(info.address, first);
    assert_eq!(info.endpoints, vec!["198.51.100.99:5000".parse().unwrap()]);
    // Node IDs are never handed out twice.
    let bob_addr = s.node(bob).address().unwrap();
    assert_ne!(bob_addr, first);
    assert!(!first.is_reserved() && !bob_addr.is_reserved());
}

#[test]
fn a_hostname_belongs_to_one_identity() {
    let mut s = Scenario::new(SEED);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    registered(&mut s, &[alice]);
    let mallory = s.add_node("mallory", "203.0.113.66:4000", |c| {
        c.hostname = Hostname::new("alice").ok();
    });
    s.world.run_for(Duration::from_secs(5));
    assert!(!s.node(mallory).is_registered());
    let refused = s.node_events().any(|(_, h, e)| {
        h == mallory
            && matches!(
                e,
                Event::RegistrationFailed {
                    code: ErrorCode::HostnameTaken,
                    ..
                }
            )
    });
    assert!(refused, "mallory is told the hostname is taken");
    assert!(s.node(alice).is_registered());
}

#[test]
fn nodes_are_private_by_default() {
    let mut s = Scenario::new(SEED);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let shy = s.add_node("shy", "203.0.113.30:4000", |c| c.public = false);
    registered(&mut s, &[alice, shy]);
    let shy_addr = s.node(shy).address().unwrap();
    let by_name = lookup(
        &mut s,
        alice,
        Query::Hostname(Hostname::new("shy").unwrap()),
    );
    assert_eq!(by_name, Err(ResolveError::NotFound));
    let by_addr = lookup(&mut s, alice, Query::Address(shy_addr));
    assert_eq!(by_addr, Err(ResolveError::NotFound));
    // A node can always look itself up.
    let me = lookup(&mut s, shy, Query::Address(shy_addr)).unwrap();
    assert!(!me.public);
}

#[test]
fn a_node_that_stops_refreshing_goes_offline_but_keeps_its_address() {
    let mut s = Scenario::new(SEED);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.20:4000", |_| {});
    registered(&mut s, &[alice, bob]);
    let alice_addr = s.node(alice).address().unwrap();
    s.world.isolate(alice);
    s.world.run_for(Duration::from_secs(100));
    let expired = s.world.events().iter().any(|(_, _, e)| {
        matches!(e, HostEvent::Rendezvous(RendezvousEvent::Expired { address }) if *address == alice_addr)
    });
    assert!(expired);
    let info = lookup(&mut s, bob, Query::Address(alice_addr)).unwrap();
    assert!(!info.online && info.endpoints.is_empty());
    assert!(
        !s.node(alice).is_registered(),
        "alice knows her registration lapsed"
    );
    s.world.rejoin(alice);
    registered(&mut s, &[alice]);
    assert_eq!(s.node(alice).address(), Some(alice_addr));
}

#[test]
fn a_node_shutting_down_says_goodbye() {
    let mut s = Scenario::new(SEED);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.20:4000", |_| {});
    registered(&mut s, &[alice, bob]);
    s.trust(alice, bob, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world.with_host(bob, |h, _| h.node_mut().bind(9)).unwrap();
    s.send(
        alice,
        9,
        pilot_proto::addr::SocketAddress::new(bob_addr, 9),
        b"hi",
    )
    .unwrap();
    s.world.run_for(Duration::from_secs(1));
    assert!(s.node(bob).has_session(alice_addr));
    s.world
        .with_host(alice, |h, now| h.node_mut().shutdown(now));
    s.world.isolate(alice);
    s.world.run_for(Duration::from_millis(100));
    // Within one trip, not after the 90 s registration TTL.
    let offline = s.world.events().iter().any(|(_, _, e)| {
        matches!(e, HostEvent::Rendezvous(RendezvousEvent::Expired { address }) if *address == alice_addr)
    });
    assert!(offline, "the rendezvous marked alice offline at once");
    assert!(
        !s.node(bob).has_session(alice_addr),
        "bob dropped alice's session"
    );
    assert_eq!(
        s.node(bob).trusted().count(),
        1,
        "trust outlives a shutdown"
    );
}
