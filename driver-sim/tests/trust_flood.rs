//! Issue 10, item 3: throwaway identities must not grow an agent's pending
//! trust requests (and its `trust.state`) without bound, nor may one
//! requester spray requests.

use std::time::Duration;

use driver_sim::pilot::Scenario;
use driver_sim::HostId;
use pilot_proto::msg::Query;
use pilot_proto::node::MAX_PENDING;
use pilot_proto::Address;

const SEED: u64 = 303;

fn registered(s: &mut Scenario, ids: &[HostId]) {
    s.run_until_registered(ids, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `n` agents called `{prefix}{i}`, registered, in 100.`net`.0.0/16.
fn agents(s: &mut Scenario, prefix: &str, net: u8, n: usize) -> Vec<HostId> {
    let ids: Vec<HostId> = (0..n)
        .map(|i| {
            let addr = format!("100.{net}.{}.{}:4000", i / 200, i % 200 + 1);
            s.add_node(&format!("{prefix}{i}"), &addr, |_| {})
        })
        .collect();
    registered(s, &ids);
    ids
}

fn ask(s: &mut Scenario, from: HostId, to: Address) {
    s.world
        .with_host(from, |h, now| {
            h.node_mut().handshake(now, Query::Address(to), "let me in")
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

fn pending_at_rendezvous(s: &Scenario, target: &pilot_proto::PublicKey) -> usize {
    s.world
        .host(s.rendezvous)
        .rendezvous()
        .pending_requests()
        .filter(|(t, _)| t == target)
        .count()
}

#[test]
fn the_rendezvous_holds_at_most_64_requests_per_target() {
    let mut s = Scenario::new(SEED);
    s.world.set_tracing(false);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    registered(&mut s, &[alice]);
    let alice_addr = s.node(alice).address().unwrap();
    let alice_key = s.node(alice).public_key();
    let throwaway = agents(&mut s, "t", 64, 100);
    for t in &throwaway {
        ask(&mut s, *t, alice_addr);
    }
    s.world.run_for(Duration::from_secs(10));
    assert_eq!(pending_at_rendezvous(&s, &alice_key), 64);
    assert_eq!(s.node(alice).pending().count(), 64);
    let stats = s.world.host(s.rendezvous).rendezvous().stats().clone();
    assert_eq!(stats.trust_requests_dropped, 36);
    // Once alice decides, room opens again.
    let first = s.node(alice).pending().next().unwrap().request.from;
    s.world
        .with_host(alice, |h, now| h.node_mut().reject(now, first, "no"))
        .unwrap();
    s.world.run_for(Duration::from_secs(2));
    assert_eq!(pending_at_rendezvous(&s, &alice_key), 63);
}

#[test]
fn an_agent_keeps_at_most_64_pending_and_drops_the_oldest_unknown_first() {
    // A rendezvous that does not bound pending requests (an older or a
    // hostile one): the agent bounds its own list.
    let mut s = Scenario::with_rendezvous(SEED, |c| c.max_pending_per_target = 10_000);
    s.world.set_tracing(false);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "198.51.100.20:4000", |_| {});
    registered(&mut s, &[alice, bob]);
    let alice_addr = s.node(alice).address().unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    // bob asks, is turned down, and asks again: a key alice knows, and
    // the oldest request she holds when the flood comes.
    ask(&mut s, bob, alice_addr);
    s.world.run_for(Duration::from_secs(2));
    s.world
        .with_host(alice, |h, now| {
            h.node_mut().reject(now, bob_addr, "not now")
        })
        .unwrap();
    s.world.run_for(Duration::from_secs(2));
    assert_eq!(s.node(alice).pending().count(), 0);
    ask(&mut s, bob, alice_addr);
    s.world.run_for(Duration::from_secs(2));
    assert_eq!(s.node(alice).pending().count(), 1);
    let size_before = s.node(alice).trust_state().encode().len();
    let throwaway = agents(&mut s, "t", 64, 100);
    let mut order = Vec::new();
    for t in &throwaway {
        ask(&mut s, *t, alice_addr);
        order.push(s.node(*t).address().unwrap());
        // One at a time, so arrival order is known.
        s.world.run_for(Duration::from_millis(50));
    }
    s.world.run_for(Duration::from_secs(5));
    let mut kept: Vec<Address> = s.node(alice).pending().map(|p| p.request.from).collect();
    assert_eq!(kept.len(), MAX_PENDING);
    kept.sort();
    let mut expected = order[order.len() - (MAX_PENDING - 1)..].to_vec();
    expected.push(bob_addr);
    expected.sort();
    assert_eq!(
        kept, expected,
        "bob's request and the newest 63 of the flood are kept"
    );
    assert_eq!(s.node(alice).stats().trust_requests_dropped, 37);
    assert_eq!(s.node(alice).trust_state().pending.len(), MAX_PENDING);
    // The figures (`--nocapture`); before the cap: 300 identities, 300
    // pending, trust.state 80 B -> 110 KB.
    println!(
        "100 requests from throwaway identities: {} pending kept, 37 dropped; \
         trust.state {size_before} B before the flood, {} B after",
        s.node(alice).pending().count(),
        s.node(alice).trust_state().encode().len()
    );
}

#[test]
fn one_requester_gets_ten_new_requests_a_minute() {
    let mut s = Scenario::new(SEED);
    s.world.set_tracing(false);
    let mallory = s.add_node("mallory", "198.51.100.66:4000", |_| {});
    registered(&mut s, &[mallory]);
    let targets = agents(&mut s, "t", 64, 15);
    for t in &targets {
        let to = s.node(*t).address().unwrap();
        ask(&mut s, mallory, to);
    }
    s.world.run_for(Duration::from_secs(10));
    let reached = targets
        .iter()
        .filter(|t| s.node(**t).pending().count() == 1)
        .count();
    assert_eq!(reached, 10);
    let stats = s.world.host(s.rendezvous).rendezvous().stats().clone();
    assert_eq!(stats.trust_requests_limited, 5);
    // The allowance refills: a minute later, more get through.
    s.world.run_for(Duration::from_secs(60));
    let more = agents(&mut s, "u", 65, 3);
    for t in &more {
        let to = s.node(*t).address().unwrap();
        ask(&mut s, mallory, to);
    }
    s.world.run_for(Duration::from_secs(10));
    for t in &more {
        assert_eq!(s.node(*t).pending().count(), 1);
    }
}
