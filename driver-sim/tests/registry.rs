//! The registry's promises, checked against the real core in the
//! simulator: stable addresses per identity, unique hostnames, private by
//! default, expiry without refresh, hostname and visibility changed live.

use std::time::Duration;

use driver_sim::host_seed;
use driver_sim::pilot::{identity_for, HostEvent, Scenario};
use driver_sim::HostId;
use pilot_proto::addr::Hostname;
use pilot_proto::msg::{ErrorCode, Query};
use pilot_proto::node::{Event, Node, PeerInfo, RequestError, ResolveError};
use pilot_proto::rendezvous::RendezvousEvent;
use pilot_proto::Timestamp;

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

/// Runs a registration change on `on` and waits for its outcome.
fn change(
    s: &mut Scenario,
    on: HostId,
    f: impl FnOnce(&mut Node, Timestamp) -> u32,
) -> Result<(), RequestError> {
    let id = s.world.with_host(on, |h, now| f(h.node_mut(), now));
    let outcome = |s: &Scenario| {
        s.node_events().find_map(|(_, h, e)| match e {
            Event::RegistrationChanged { id: i, result } if h == on && *i == id => {
                Some(result.clone())
            }
            _ => None,
        })
    };
    s.world
        .run_until(
            |w| {
                w.events().iter().any(|(_, h, e)| {
                    *h == on
                        && matches!(e, HostEvent::Node(Event::RegistrationChanged { id: i, .. }) if *i == id)
                })
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    outcome(s).expect("outcome present")
}

fn name(h: &str) -> Query {
    Query::Hostname(Hostname::new(h).unwrap())
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

/// Lossy, reordering links: a rename and a refused rename settle as the
/// registry decided, whatever the network did to the Registers.
#[test]
fn renaming_releases_the_old_name_and_a_taken_name_is_refused() {
    let mut s = Scenario::new(SEED);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.20:4000", |_| {});
    let carol = s.add_node("carol", "192.0.2.30:4000", |_| {});
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(
            id,
            driver_sim::LinkConfig {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(15),
                loss_ppm: 50_000,
                duplicate_ppm: 50_000,
                reorder_ppm: 100_000,
                reorder_extra: Duration::from_millis(300),
                ..driver_sim::LinkConfig::default()
            },
        );
    }
    registered(&mut s, &[alice, bob, carol]);
    let alice_addr = s.node(alice).address().unwrap();
    let carol_addr = s.node(carol).address().unwrap();

    let renamed = change(&mut s, alice, |n, now| {
        n.set_hostname(now, Hostname::new("alice-v2").ok())
    });
    assert_eq!(renamed, Ok(()));
    assert_eq!(
        lookup(&mut s, bob, name("alice")),
        Err(ResolveError::NotFound)
    );
    assert_eq!(
        lookup(&mut s, bob, name("alice-v2")).unwrap().address,
        alice_addr
    );

    // The old name is free: carol takes it.
    let took = change(&mut s, carol, |n, now| {
        n.set_hostname(now, Hostname::new("alice").ok())
    });
    assert_eq!(took, Ok(()));
    assert_eq!(
        lookup(&mut s, bob, name("alice")).unwrap().address,
        carol_addr
    );

    // Bob cannot have it: refused, and bob keeps his own name.
    let refused = change(&mut s, bob, |n, now| {
        n.set_hostname(now, Hostname::new("alice").ok())
    });
    assert!(
        matches!(
            refused,
            Err(RequestError::Refused(ErrorCode::HostnameTaken, _))
        ),
        "{refused:?}"
    );
    assert_eq!(s.node(bob).hostname().map(|h| h.as_str()), Some("bob"));
    s.world.run_for(Duration::from_secs(60));
    assert!(s.node(bob).is_registered(), "bob still refreshes as bob");
    assert!(lookup(&mut s, alice, name("bob")).is_ok());
    assert_eq!(
        lookup(&mut s, alice, name("alice")).unwrap().address,
        carol_addr
    );
}

#[test]
fn going_private_and_public_again_as_an_untrusted_node_sees_it() {
    let mut s = Scenario::new(SEED);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.20:4000", |_| {});
    let friend = s.add_node("friend", "192.0.2.30:4000", |_| {});
    registered(&mut s, &[alice, bob, friend]);
    s.trust(alice, friend, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let alice_addr = s.node(alice).address().unwrap();
    assert!(lookup(&mut s, bob, name("alice")).unwrap().public);

    assert_eq!(
        change(&mut s, alice, |n, now| n.set_public(now, false)),
        Ok(())
    );
    assert_eq!(
        lookup(&mut s, bob, name("alice")),
        Err(ResolveError::NotFound)
    );
    assert_eq!(
        lookup(&mut s, bob, Query::Address(alice_addr)),
        Err(ResolveError::NotFound)
    );
    // A trusted peer still finds her, and sees she is private.
    let seen = lookup(&mut s, friend, name("alice")).unwrap();
    assert!(!seen.public);

    assert_eq!(
        change(&mut s, alice, |n, now| n.set_public(now, true)),
        Ok(())
    );
    let again = lookup(&mut s, bob, name("alice")).unwrap();
    assert_eq!(again.address, alice_addr);
    assert!(again.public);
}
