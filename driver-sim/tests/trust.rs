//! Trust with the real core in the simulator: request, pending, approve,
//! reject, mutual requests, revocation, and what an untrusted peer gets.

use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::{HostId, LinkConfig};
use pilot_proto::addr::{Hostname, SocketAddress};
use pilot_proto::msg::{ErrorCode, Query};
use pilot_proto::node::{CommandError, Event, RequestError};
use pilot_proto::trust::{Pending, TrustRequest, TrustState, Trusted};
use pilot_proto::tunnel::{Route, SessionState};

const ALICE: &str = "198.51.100.10:4000";
const BOB: &str = "203.0.113.20:4000";
const MAX: Duration = Duration::from_secs(30);

fn snapshot(name: &str, trace: &str) {
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name, trace);
    });
}

/// Alice and bob, registered and private, 10 ms links.
fn private_pair(seed: u64) -> (Scenario, HostId, HostId) {
    let mut s = Scenario::new(seed);
    let alice = s.add_node("alice", ALICE, |c| c.public = false);
    let bob = s.add_node("bob", BOB, |c| c.public = false);
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(
            id,
            LinkConfig {
                latency: Duration::from_millis(10),
                ..LinkConfig::default()
            },
        );
    }
    s.run_until_registered(&[alice, bob], MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    (s, alice, bob)
}

fn events_of(s: &Scenario, id: HostId) -> Vec<Event> {
    s.node_events()
        .filter(|(_, h, _)| *h == id)
        .map(|(_, _, e)| e.clone())
        .collect()
}

fn run_until_event(s: &mut Scenario, id: HostId, pred: impl Fn(&Event) -> bool) {
    s.world
        .run_until(
            |w| {
                w.events()
                    .iter()
                    .any(|(_, h, e)| *h == id && matches!(e, HostEvent::Node(n) if pred(n)))
            },
            MAX,
        )
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Bob binds port 1000 and alice sends "hello" there; runs until it
/// arrives.
fn hello(s: &mut Scenario, alice: HostId, bob: HostId) {
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    s.send(alice, 1000, SocketAddress::new(bob_addr, 1000), b"hello")
        .unwrap();
    run_until_event(s, bob, |e| matches!(e, Event::Datagram { .. }));
}

#[test]
fn request_pending_approve_then_datagrams() {
    let (mut s, alice, bob) = private_pair(21);
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    // Bob is private: alice cannot even look him up before trust, nor
    // name him by hostname; she asks by the address she was given.
    let asked = s.world.now();
    s.world
        .with_host(alice, |h, now| {
            h.node_mut()
                .handshake(now, Query::Address(bob_addr), "I have a task for you")
        })
        .unwrap();
    run_until_event(&mut s, bob, |e| matches!(e, Event::TrustRequested { .. }));
    // One trip through the rendezvous: alice -> rv -> bob, 20 ms a hop.
    assert_eq!(
        s.world.now().saturating_since(asked),
        Duration::from_millis(40)
    );
    let pending: Vec<Pending> = s.node(bob).pending().cloned().collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].request.from, alice_addr);
    assert_eq!(pending[0].hostname, Hostname::new("alice").ok());
    assert_eq!(pending[0].request.reason, "I have a task for you");
    assert_eq!(
        s.send(alice, 1, SocketAddress::new(bob_addr, 1), b"too early"),
        Err(CommandError::NotTrusted)
    );
    let approved = s.world.now();
    s.world
        .with_host(bob, |h, now| h.node_mut().approve(now, alice_addr))
        .unwrap();
    run_until_event(&mut s, alice, |e| matches!(e, Event::Trusted { .. }));
    assert_eq!(
        s.world.now().saturating_since(approved),
        Duration::from_millis(40)
    );
    let bob_trusts: Vec<Trusted> = s.node(bob).trusted().cloned().collect();
    assert_eq!(
        bob_trusts[0].key,
        s.node(alice).public_key(),
        "bob pinned alice's key"
    );
    let alice_trusts: Vec<Trusted> = s.node(alice).trusted().cloned().collect();
    assert_eq!(alice_trusts[0].address, bob_addr);
    assert_eq!(alice_trusts[0].key, s.node(bob).public_key());
    // Now the private peer resolves and data flows.
    hello(&mut s, alice, bob);
    snapshot("trust_request_approve", s.world.trace());
}

#[test]
fn reject_tells_the_requester_and_nothing_flows() {
    let (mut s, alice, bob) = private_pair(22);
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(alice, |h, now| {
            h.node_mut().handshake(now, Query::Address(bob_addr), "hi")
        })
        .unwrap();
    run_until_event(&mut s, bob, |e| matches!(e, Event::TrustRequested { .. }));
    // Until bob decides, alice's request is outgoing on her side.
    let outgoing: Vec<_> = s.node(alice).outgoing().map(|r| r.to.clone()).collect();
    assert_eq!(outgoing, vec![Query::Address(bob_addr)]);
    s.world
        .with_host(bob, |h, now| {
            h.node_mut().reject(now, alice_addr, "not today")
        })
        .unwrap();
    run_until_event(&mut s, alice, |e| matches!(e, Event::TrustRejected { .. }));
    // Both sides keep the rejection, with its reason, in their trust
    // state (so a restart keeps it too).
    assert_eq!(s.node(alice).outgoing().count(), 0);
    let mine: Vec<_> = s.node(alice).rejected().cloned().collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].peer, bob_addr);
    assert!(mine[0].by_peer);
    assert_eq!(mine[0].reason, "not today");
    let theirs: Vec<_> = s.node(bob).rejected().cloned().collect();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].peer, alice_addr);
    assert!(!theirs[0].by_peer);
    assert_eq!(s.node(bob).trust_state().rejected, theirs);
    assert!(events_of(&s, alice).contains(&Event::TrustRejected {
        peer: bob_addr,
        reason: "not today".into()
    }));
    assert_eq!(s.node(alice).trusted().count(), 0);
    assert_eq!(s.node(bob).trusted().count(), 0);
    assert_eq!(s.node(bob).pending().count(), 0);
    assert_eq!(
        s.send(alice, 1, SocketAddress::new(bob_addr, 1), b"x"),
        Err(CommandError::NotTrusted)
    );
    // Approving a request that was rejected is an error, not a trust.
    assert_eq!(
        s.world
            .with_host(bob, |h, now| h.node_mut().approve(now, alice_addr)),
        Err(CommandError::NotFound)
    );
}

#[test]
fn mutual_requests_approve_each_other() {
    let (mut s, alice, bob) = private_pair(23);
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(alice, |h, now| {
            h.node_mut().handshake(now, Query::Address(bob_addr), "a")
        })
        .unwrap();
    s.world
        .with_host(bob, |h, now| {
            h.node_mut().handshake(now, Query::Address(alice_addr), "b")
        })
        .unwrap();
    s.world
        .run_until(
            |w| {
                w.host(alice).node().trusted().count() == 1
                    && w.host(bob).node().trusted().count() == 1
            },
            MAX,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    // Nobody had to decide anything.
    assert!(!events_of(&s, alice)
        .iter()
        .any(|e| matches!(e, Event::TrustRequested { .. })));
    assert!(!events_of(&s, bob)
        .iter()
        .any(|e| matches!(e, Event::TrustRequested { .. })));
    assert_eq!(
        s.node(alice).pending().count() + s.node(bob).pending().count(),
        0
    );
}

#[test]
fn a_later_handshake_from_the_asked_side_approves() {
    let (mut s, alice, bob) = private_pair(24);
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(alice, |h, now| {
            h.node_mut().handshake(now, Query::Address(bob_addr), "a")
        })
        .unwrap();
    run_until_event(&mut s, bob, |e| matches!(e, Event::TrustRequested { .. }));
    // `pilotctl handshake alice` on bob's side is an approval.
    s.world
        .with_host(bob, |h, now| {
            h.node_mut().handshake(now, Query::Address(alice_addr), "b")
        })
        .unwrap();
    run_until_event(&mut s, alice, |e| matches!(e, Event::Trusted { .. }));
}

#[test]
fn untrusted_peers_get_no_session_no_datagrams() {
    let (mut s, alice, bob) = private_pair(25);
    let bob_addr = s.node(bob).address().unwrap();
    let bob_key = s.node(bob).public_key();
    // Mallory pretends, on her side, that she trusts bob: her node will try
    // to open a session and send, but bob never agreed.
    let mallory = s.add_node("mallory", "203.0.113.66:4000", |c| {
        c.trust = TrustState {
            trusted: vec![Trusted {
                address: bob_addr,
                key: bob_key,
                hostname: None,
                since: 0,
            }],
            ..TrustState::default()
        };
    });
    s.run_until_registered(&[mallory], MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    // Her first packets go to the relay at once, which refuses to forward
    // between agents that do not trust each other.
    let _ = s.send(
        mallory,
        1000,
        SocketAddress::new(bob_addr, 1000),
        b"let me in",
    );
    s.world.run_for(Duration::from_secs(10));
    assert!(!s.node(mallory).has_session(bob_addr));
    let relay = s.world.host(s.rendezvous).rendezvous().relay_stats();
    assert!(relay.not_paired > 0, "{relay:?}");
    assert_eq!(relay.forwarded_packets, 0, "{relay:?}");
    // Even knowing bob's endpoint, her handshakes are refused.
    let bob_ep = s.world.addr(bob);
    s.world
        .with_host(mallory, |h, now| {
            let x = bob_key.x25519().unwrap();
            h.node_mut().tunnels_mut().set_endpoint(x, bob_ep);
            h.node_mut()
                .send_datagram(now, 1000, SocketAddress::new(bob_addr, 1000), b"again")
        })
        .unwrap();
    s.world.run_for(Duration::from_secs(10));
    assert!(
        s.node(bob).stats().dropped_not_allowed >= 1,
        "bob refused mallory's handshakes"
    );
    assert_eq!(s.datagrams(bob).len(), 0);
    assert!(!s.node(mallory).has_session(bob_addr));
    assert_eq!(
        s.node(bob).state_size().0,
        1,
        "bob holds state for the rendezvous only"
    );
    let _ = alice;
}

#[test]
fn revocation_closes_both_sides_and_needs_a_new_handshake() {
    let (mut s, alice, bob) = private_pair(26);
    s.trust(alice, bob, MAX).unwrap_or_else(|e| panic!("{e}"));
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    s.world
        .with_host(alice, |h, _| h.node_mut().bind(1000))
        .unwrap();
    s.send(alice, 1000, SocketAddress::new(bob_addr, 1000), b"before")
        .unwrap();
    run_until_event(&mut s, bob, |e| matches!(e, Event::Datagram { .. }));
    assert!(s.node(alice).has_session(bob_addr) && s.node(bob).has_session(alice_addr));
    s.world
        .with_host(alice, |h, now| h.node_mut().untrust(now, bob_addr))
        .unwrap();
    run_until_event(&mut s, bob, |e| matches!(e, Event::TrustRevoked { .. }));
    assert!(!s.node(alice).has_session(bob_addr));
    assert!(!s.node(bob).has_session(alice_addr));
    assert_eq!(s.node(bob).trusted().count(), 0);
    assert_eq!(
        s.send(bob, 1000, SocketAddress::new(alice_addr, 1000), b"after"),
        Err(CommandError::NotTrusted)
    );
    // The registry dropped the pair: private alice is unknown to bob again.
    let id = s.world.with_host(bob, |h, now| {
        h.node_mut().resolve(now, Query::Address(alice_addr))
    });
    run_until_event(
        &mut s,
        bob,
        |e| matches!(e, Event::Resolved { id: i, .. } if *i == id),
    );
    assert!(events_of(&s, bob).iter().any(|e| matches!(
        e,
        Event::Resolved { id: i, result: Err(_) } if *i == id
    )));
    // A new handshake works.
    s.trust(bob, alice, MAX).unwrap_or_else(|e| panic!("{e}"));
    snapshot("trust_revocation", s.world.trace());
}

#[test]
fn forged_and_replayed_requests_and_approvals_are_refused() {
    let (mut s, alice, bob) = private_pair(27);
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    // Mallory forges a pending request "from alice" in her own state and
    // approves it: the registry has no such request and refuses.
    let mallory_identity = driver_sim::pilot::identity_for(&driver_sim::host_seed(27, "mallory"));
    let forged = TrustRequest::new(
        &mallory_identity,
        alice_addr,
        Query::Address(bob_addr),
        1,
        "forged",
    );
    let mallory = s.add_node("mallory", "203.0.113.66:4000", |c| {
        c.trust = TrustState {
            pending: vec![Pending {
                request: forged,
                hostname: None,
            }],
            ..TrustState::default()
        };
    });
    s.run_until_registered(&[mallory], MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    let id = s
        .world
        .with_host(mallory, |h, now| h.node_mut().approve(now, alice_addr))
        .unwrap();
    run_until_event(
        &mut s,
        mallory,
        |e| matches!(e, Event::RequestDone { id: i, .. } if *i == id),
    );
    assert!(events_of(&s, mallory).iter().any(|e| matches!(
        e,
        Event::RequestDone { id: i, result: Err(RequestError::Refused(ErrorCode::BadSignature | ErrorCode::NotFound, _)) } if *i == id
    )));
    assert!(!events_of(&s, alice)
        .iter()
        .any(|e| matches!(e, Event::Trusted { .. })));

    // A request replayed into a node (a captured push) raises nothing new.
    s.world.set_capture(true);
    s.world
        .with_host(alice, |h, now| {
            h.node_mut()
                .handshake(now, Query::Address(bob_addr), "once")
        })
        .unwrap();
    run_until_event(&mut s, bob, |e| matches!(e, Event::TrustRequested { .. }));
    let captured = s.world.take_captured();
    s.world.set_capture(false);
    for c in &captured {
        s.world.inject(c.from, c.to, c.payload.clone());
    }
    s.world.run_for(Duration::from_secs(2));
    let asks = events_of(&s, bob)
        .iter()
        .filter(|e| matches!(e, Event::TrustRequested { .. }))
        .count();
    assert_eq!(asks, 1, "the replay raised no second request");
    assert!(s.node(bob).stats().dropped_replay > 0);
}

#[test]
fn pending_requests_and_trust_survive_a_restart() {
    let (mut s, alice, bob) = private_pair(28);
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(alice, |h, now| {
            h.node_mut()
                .handshake(now, Query::Address(bob_addr), "persist me")
        })
        .unwrap();
    run_until_event(&mut s, bob, |e| matches!(e, Event::TrustRequested { .. }));
    // Bob's daemon saves its state and dies; a new one starts from it
    // (encoded and decoded, as the daemon's file would be).
    let saved = TrustState::decode(&s.node(bob).trust_state().encode()).unwrap();
    assert_eq!(saved.pending.len(), 1);
    s.world.isolate(bob);
    let bob_identity = driver_sim::pilot::identity_for(&driver_sim::host_seed(28, "bob"));
    let bob2 = s.add_node("bob-again", "203.0.113.21:4000", |c| {
        c.identity = bob_identity;
        c.hostname = pilot_proto::addr::Hostname::new("bob").ok();
        c.public = false;
        c.trust = saved;
    });
    s.run_until_registered(&[bob2], MAX)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.node(bob2).address(), Some(bob_addr));
    let pending: Vec<_> = s
        .node(bob2)
        .pending()
        .map(|p| p.request.reason.clone())
        .collect();
    assert_eq!(pending, vec!["persist me".to_string()]);
    s.world
        .with_host(bob2, |h, now| h.node_mut().approve(now, alice_addr))
        .unwrap();
    run_until_event(&mut s, alice, |e| matches!(e, Event::Trusted { .. }));
    // And trust itself survives the next restart.
    let saved = s.node(bob2).trust_state();
    assert_eq!(saved.trusted.len(), 1);
    assert_eq!(saved.trusted[0].address, alice_addr);
    assert_eq!(saved.trusted[0].key, s.node(alice).public_key());
}

/// Per-peer diagnostics: the handshake measures the round trip of the
/// 20 ms-a-hop path (40 ms) on both sides, and what one side counts as
/// sent the other counts as received, byte for byte.
#[test]
fn peer_stats_measure_rtt_and_traffic() {
    let (mut s, alice, bob) = private_pair(23);
    let bob_addr = s.node(bob).address().unwrap();
    let alice_addr = s.node(alice).address().unwrap();
    s.trust(alice, bob, MAX).unwrap_or_else(|e| panic!("{e}"));
    hello(&mut s, alice, bob);
    // Nothing in flight any more (keepalives come after 10 s).
    s.world.run_for(Duration::from_secs(1));
    let now = s.world.now();
    let a = s.node(alice).peer_stats(now);
    let b = s.node(bob).peer_stats(now);
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    let (a, b) = (&a[0], &b[0]);
    assert_eq!(a.address, bob_addr);
    assert_eq!(b.address, alice_addr);
    assert!(a.trusted && b.trusted);
    assert_eq!(a.hostname, Hostname::new("bob").ok());
    assert_eq!(a.stats.endpoint, Some(BOB.parse().unwrap()));
    assert_eq!(b.stats.endpoint, Some(ALICE.parse().unwrap()));
    for p in [a, b] {
        assert_eq!(p.stats.state, SessionState::Established);
        assert_eq!(p.stats.rtt, Some(Duration::from_millis(40)));
        assert!(p.stats.last_handshake.is_some_and(|t| t < now));
    }
    // Alice: her initiation (254 B with her certificate) raced over the
    // relay (10 B more) and direct, the datagram (86 B) that confirmed
    // bob's side, and a path challenge (41 B) when bob stayed silent;
    // bob: his response (202 B) and the challenge's answer (41 B).
    assert_eq!(
        (a.stats.packets_out, a.stats.bytes_out),
        (4, 264 + 254 + 86 + 41)
    );
    assert_eq!((b.stats.packets_out, b.stats.bytes_out), (2, 202 + 41));
    // Bob counts what authenticated: the relayed copy of the initiation
    // came second and was refused as a replay.
    assert_eq!((b.stats.packets_in, b.stats.bytes_in), (3, 254 + 86 + 41));
    assert_eq!(b.stats.packets_out, a.stats.packets_in);
    assert_eq!(b.stats.bytes_out, a.stats.bytes_in);
    assert_eq!(a.stats.route, Some(Route::direct(BOB.parse().unwrap())));
    assert!(a.stats.path_rtt.is_some());
}
