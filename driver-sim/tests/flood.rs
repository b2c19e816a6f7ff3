//! Issue 10, items 1 and 2: a handshake flood from throwaway identities
//! (answering every cookie reply, completing every handshake it can) must
//! neither grow the rendezvous without bound nor lock legitimate agents
//! out.

use std::time::Duration;

use driver_sim::pilot::{Host, HostEvent, Scenario};
use driver_sim::{HostId, World};
use pilot_proto::addr::SocketAddress;
use pilot_proto::node::Event;
use pilot_proto::tunnel::TunnelConfig;

const SEED: u64 = 1010;
/// Fresh identities per second and target: well over the default load
/// threshold (200 handshakes/s).
const RATE: u32 = 500;

fn registered(s: &mut Scenario, ids: &[HostId]) {
    s.run_until_registered(ids, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
}

fn peers_at_rendezvous(s: &Scenario) -> usize {
    s.world.host(s.rendezvous).rendezvous().state_size().0
}

#[test]
fn throwaway_identities_leave_no_lasting_state_at_the_rendezvous() {
    let mut s = Scenario::new(SEED);
    s.world.set_tracing(false);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    registered(&mut s, &[alice]);
    let rv = s.rendezvous;
    let flood = Duration::from_secs(10);
    let flooder = s.add_flooder("mallory", "203.0.113.66:6666", &[rv], RATE, flood);
    let mut most = 0;
    for _ in 0..100 {
        s.world.run_for(flood / 100);
        most = most.max(peers_at_rendezvous(&s));
    }
    let f = s.world.host(flooder).flooder();
    assert!(f.started >= u64::from(RATE) * 9, "started {}", f.started);
    let stats = s.world.host(rv).rendezvous().stats().clone();
    // Peers on probation are bounded (and under load one source gets a
    // trickle of handshakes through, not all of them).
    let cap = TunnelConfig::default().max_probation + 1;
    assert!(
        most <= cap,
        "{most} peers at the rendezvous during the flood"
    );
    assert!(
        stats.handshakes_source_limited > 0,
        "per-source limit never used"
    );
    // Then nothing nobody keeps outlives its probation: the one
    // registered agent is all that is left.
    s.world.run_for(Duration::from_secs(15));
    assert_eq!(peers_at_rendezvous(&s), 1);
    let (_, indices) = s.world.host(rv).rendezvous().state_size();
    assert!(indices <= 3, "{indices} session indices left");
    assert!(s.node(alice).is_registered());
    assert!(s.world.host(rv).rendezvous().stats().peers_forgotten > 0);
}

fn datagram_arrived(w: &World<Host>, to: HostId, payload: &[u8]) -> bool {
    w.events().iter().any(|(_, h, e)| {
        *h == to && matches!(e, HostEvent::Node(Event::Datagram { data, .. }) if data == payload)
    })
}

#[test]
fn under_flood_a_legitimate_agent_registers_and_reaches_a_trusted_peer_within_2s() {
    let mut s = Scenario::new(SEED);
    s.world.set_tracing(false);
    // alice and bob trust each other; alice then goes away.
    let mut alice_identity = None;
    let alice = s.add_node("alice", "198.51.100.10:4000", |c| {
        alice_identity = Some(c.identity.clone());
    });
    let bob = s.add_node("bob", "198.51.100.20:4000", |_| {});
    registered(&mut s, &[alice, bob]);
    s.trust(alice, bob, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));
    let alice_trust = s.node(alice).trust_state();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(77))
        .unwrap();
    s.world.isolate(alice);
    // Both the rendezvous and bob are flooded.
    let rv = s.rendezvous;
    s.add_flooder(
        "mallory",
        "203.0.113.66:6666",
        &[rv, bob],
        2 * RATE,
        Duration::from_secs(8),
    );
    // Into the middle of a one-second load window.
    s.world.run_for(Duration::from_millis(3500));
    assert!(
        s.world.host(rv).rendezvous().stats().cookie_replies > 0,
        "the rendezvous is not under load"
    );
    // alice starts again elsewhere, with her identity and trust.
    let start = s.world.now();
    let identity = alice_identity.unwrap();
    let alice2 = s.add_node("alice2", "198.51.100.11:4000", |c| {
        c.identity = identity;
        c.trust = alice_trust;
        c.hostname = "alice".parse().ok();
    });
    registered(&mut s, &[alice2]);
    let registered_after = s.world.now().saturating_since(start);
    s.send(
        alice2,
        77,
        SocketAddress::new(bob_addr, 77),
        b"through the flood",
    )
    .unwrap();
    s.world
        .run_until(
            |w| datagram_arrived(w, bob, b"through the flood"),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let reached_after = s.world.now().saturating_since(start);
    println!("registered after {registered_after:?}, reached bob after {reached_after:?}");
    assert!(
        reached_after <= Duration::from_secs(2),
        "registered after {registered_after:?}, reached bob after {reached_after:?}"
    );
}
