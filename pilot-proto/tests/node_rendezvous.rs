//! Node and Rendezvous driven by a tiny zero-latency network loop. The
//! simulator tests the same things under latency, loss and attack; this
//! keeps the core's own test suite self-sufficient.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use pilot_proto::addr::{Hostname, SocketAddress};
use pilot_proto::msg::ErrorCode;
use pilot_proto::msg::Query;
use pilot_proto::node::{
    CommandError, Event, Node, NodeConfig, PeerInfo, RequestError, ResolveError,
};
use pilot_proto::rendezvous::{Record, Rendezvous, RendezvousConfig};
use pilot_proto::{Identity, Timestamp};

const RV: &str = "192.0.2.1:9000";
const ALICE: &str = "198.51.100.1:4000";
const BOB: &str = "203.0.113.1:4000";
const WALL: u64 = 1_800_000_000_000_000;

enum Host {
    Rv(Box<Rendezvous>),
    Node(Box<Node>),
}

struct Net {
    now: Timestamp,
    hosts: BTreeMap<SocketAddr, Host>,
    events: Vec<(SocketAddr, Event)>,
}

impl Net {
    fn new() -> Self {
        Net::with(|_| {})
    }

    /// A network whose nodes' settings `tune` changes.
    fn with(tune: impl Fn(&mut NodeConfig)) -> Self {
        let rv_id = Identity::from_seed(&[1; 32]);
        let mut hosts = BTreeMap::new();
        let rv = Rendezvous::new(rv_config(), &[11; 32], Timestamp::ZERO);
        hosts.insert(ep(RV), Host::Rv(Box::new(rv)));
        for (addr, seed, name) in [(ALICE, 2u8, "alice"), (BOB, 3, "bob")] {
            let mut cfg = NodeConfig::new(Identity::from_seed(&[seed; 32]), rv_id.public(), ep(RV));
            cfg.hostname = Some(Hostname::new(name).unwrap());
            cfg.public = true;
            cfg.wall_origin_micros = WALL;
            tune(&mut cfg);
            let node = Node::new(cfg, &[seed + 10; 32], Timestamp::ZERO);
            hosts.insert(ep(addr), Host::Node(Box::new(node)));
        }
        Net {
            now: Timestamp::ZERO,
            hosts,
            events: Vec::new(),
        }
    }

    fn node(&mut self, at: &str) -> &mut Node {
        match self.hosts.get_mut(&ep(at)) {
            Some(Host::Node(n)) => n,
            _ => panic!("no node at {at}"),
        }
    }

    fn rv(&mut self) -> &mut Rendezvous {
        match self.hosts.get_mut(&ep(RV)) {
            Some(Host::Rv(r)) => r,
            _ => panic!("no rendezvous"),
        }
    }

    /// Runs until node `at` reports an event `pick` accepts; returns what
    /// `pick` made of it.
    fn wait_for<T>(&mut self, at: &str, pick: impl Fn(&Event) -> Option<T>) -> T {
        let who = ep(at);
        let find = |n: &Net| {
            n.events
                .iter()
                .find_map(|(a, e)| if *a == who { pick(e) } else { None })
        };
        self.run_until(|n| find(n).is_some());
        find(self).expect("reported")
    }

    /// Looks `query` up from the node at `from` and waits for the answer.
    fn resolve(&mut self, from: &str, query: Query) -> Result<PeerInfo, ResolveError> {
        let now = self.now;
        let id = self.node(from).resolve(now, query);
        self.wait_for(from, |e| match e {
            Event::Resolved { id: i, result } if *i == id => Some(result.clone()),
            _ => None,
        })
    }

    /// Waits for the outcome of registration change `id` of node `at`.
    fn change_result(&mut self, at: &str, id: u32) -> Result<(), RequestError> {
        self.wait_for(at, |e| match e {
            Event::RegistrationChanged { id: i, result } if *i == id => Some(result.clone()),
            _ => None,
        })
    }

    /// Waits for the outcome of request `id` to the rendezvous of node `at`.
    fn request_result(&mut self, at: &str, id: u32) -> Result<(), RequestError> {
        self.wait_for(at, |e| match e {
            Event::RequestDone { id: i, result } if *i == id => Some(result.clone()),
            _ => None,
        })
    }

    /// Delivers everything queued, then advances to the next deadline.
    fn step(&mut self) {
        let mut queue = Vec::new();
        for (addr, h) in self.hosts.iter_mut() {
            match h {
                Host::Rv(r) => {
                    while let Some(t) = r.poll_transmit() {
                        queue.push((*addr, t));
                    }
                    while r.poll_event().is_some() {}
                }
                Host::Node(n) => {
                    while let Some(t) = n.poll_transmit() {
                        queue.push((*addr, t));
                    }
                    while let Some(e) = n.poll_event() {
                        self.events.push((*addr, e));
                    }
                }
            }
        }
        if !queue.is_empty() {
            for (from, t) in queue {
                match self.hosts.get_mut(&t.destination) {
                    Some(Host::Rv(r)) => r.handle_datagram(
                        self.now,
                        pilot_proto::SocketId::PRIMARY,
                        from,
                        &t.payload,
                    ),
                    Some(Host::Node(n)) => n.handle_datagram(
                        self.now,
                        pilot_proto::SocketId::PRIMARY,
                        from,
                        &t.payload,
                    ),
                    None => {}
                }
            }
            return;
        }
        let next = self
            .hosts
            .values()
            .filter_map(|h| match h {
                Host::Rv(r) => r.poll_timeout(),
                Host::Node(n) => n.poll_timeout(),
            })
            .map(|(t, _)| t)
            .min()
            .expect("something is always scheduled");
        self.now = self.now.max(next);
        for h in self.hosts.values_mut() {
            match h {
                Host::Rv(r) => r.handle_timeout(self.now),
                Host::Node(n) => n.handle_timeout(self.now),
            }
        }
    }

    fn run_until(&mut self, mut done: impl FnMut(&mut Net) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!("condition not reached; events: {:?}", self.events);
    }
}

fn rv_config() -> RendezvousConfig {
    let mut cfg = RendezvousConfig::new(Identity::from_seed(&[1; 32]));
    cfg.wall_origin_micros = WALL;
    cfg
}

fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn register_resolve_and_exchange_datagrams() {
    let mut net = Net::new();
    net.run_until(|n| n.node(ALICE).is_registered() && n.node(BOB).is_registered());
    let alice_addr = net.node(ALICE).address().unwrap();
    let bob_addr = net.node(BOB).address().unwrap();
    assert_ne!(alice_addr, bob_addr);
    assert_eq!(net.node(ALICE).public_endpoint(), Some(ep(ALICE)));

    let now = net.now;
    let id = net
        .node(ALICE)
        .resolve(now, Query::Hostname(Hostname::new("bob").unwrap()));
    net.run_until(|n| {
        n.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Resolved { id: i, .. } if *i == id))
    });
    let resolved = net.events.iter().find_map(|(_, e)| match e {
        Event::Resolved { result, .. } => Some(result.clone()),
        _ => None,
    });
    let info = resolved.unwrap().unwrap();
    assert_eq!(info.address, bob_addr);
    assert_eq!(info.endpoints, vec![ep(BOB)]);

    // Nothing flows before trust.
    let now = net.now;
    assert_eq!(
        net.node(ALICE)
            .send_datagram(now, 6000, SocketAddress::new(bob_addr, 5000), b"x"),
        Err(pilot_proto::node::CommandError::NotTrusted)
    );
    net.node(ALICE)
        .handshake(
            now,
            Query::Hostname(Hostname::new("bob").unwrap()),
            "let's talk",
        )
        .unwrap();
    net.run_until(|n| n.node(BOB).pending().count() == 1);
    let now = net.now;
    net.node(BOB).approve(now, alice_addr).unwrap();
    net.run_until(|n| n.node(ALICE).trusted().count() == 1);

    net.node(BOB).bind(5000).unwrap();
    let now = net.now;
    net.node(ALICE)
        .send_datagram(now, 6000, SocketAddress::new(bob_addr, 5000), b"hello bob")
        .unwrap();
    net.run_until(|n| {
        n.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Datagram { .. }))
    });
    let (at, ev) = net
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::Datagram { .. }))
        .unwrap();
    assert_eq!(*at, ep(BOB));
    assert_eq!(
        *ev,
        Event::Datagram {
            from: SocketAddress::new(alice_addr, 6000),
            port: 5000,
            data: b"hello bob".to_vec()
        }
    );
    // Bob answers to the address he learned from Alice's certificate.
    net.node(ALICE).bind(6000).unwrap();
    let now = net.now;
    net.node(BOB)
        .send_datagram(now, 5000, SocketAddress::new(alice_addr, 6000), b"hi alice")
        .unwrap();
    net.run_until(|n| {
        n.events
            .iter()
            .any(|(at, e)| *at == ep(ALICE) && matches!(e, Event::Datagram { .. }))
    });
    // A datagram to a port nobody bound is dropped and counted.
    let now = net.now;
    net.node(ALICE)
        .send_datagram(now, 6000, SocketAddress::new(bob_addr, 5001), b"nobody")
        .unwrap();
    net.run_until(|n| n.node(BOB).stats().dropped_port_unreachable == 1);
}

fn host(name: &str) -> Query {
    Query::Hostname(Hostname::new(name).unwrap())
}

fn registered() -> Net {
    let mut net = Net::new();
    net.run_until(|n| n.node(ALICE).is_registered() && n.node(BOB).is_registered());
    net
}

#[test]
fn a_renamed_node_releases_its_old_hostname() {
    let mut net = registered();
    let alice_addr = net.node(ALICE).address().unwrap();
    let bob_addr = net.node(BOB).address().unwrap();
    let now = net.now;
    let id = net
        .node(ALICE)
        .set_hostname(now, Some(Hostname::new("alice2").unwrap()));
    assert_eq!(net.change_result(ALICE, id), Ok(()));
    assert_eq!(net.node(ALICE).hostname().unwrap().as_str(), "alice2");
    assert_eq!(net.resolve(BOB, host("alice")), Err(ResolveError::NotFound));
    let found = net.resolve(BOB, host("alice2")).unwrap();
    assert_eq!(found.address, alice_addr);
    assert_eq!(found.hostname, Some(Hostname::new("alice2").unwrap()));
    // The old name is free for anyone now.
    let now = net.now;
    let id = net
        .node(BOB)
        .set_hostname(now, Some(Hostname::new("alice").unwrap()));
    assert_eq!(net.change_result(BOB, id), Ok(()));
    assert_eq!(net.resolve(ALICE, host("alice")).unwrap().address, bob_addr);
    assert_eq!(net.resolve(ALICE, host("bob")), Err(ResolveError::NotFound));
    // No hostname at all: still findable by address.
    let now = net.now;
    let id = net.node(BOB).set_hostname(now, None);
    assert_eq!(net.change_result(BOB, id), Ok(()));
    assert_eq!(
        net.resolve(ALICE, host("alice")),
        Err(ResolveError::NotFound)
    );
    let by_addr = net.resolve(ALICE, Query::Address(bob_addr)).unwrap();
    assert_eq!(by_addr.hostname, None);
    assert_eq!(net.rv().record(bob_addr).unwrap().hostname, None);
}

#[test]
fn a_taken_hostname_is_refused_and_the_old_one_kept() {
    let mut net = registered();
    let bob_addr = net.node(BOB).address().unwrap();
    let now = net.now;
    let id = net
        .node(BOB)
        .set_hostname(now, Some(Hostname::new("alice").unwrap()));
    match net.change_result(BOB, id) {
        Err(RequestError::Refused(ErrorCode::HostnameTaken, msg)) => {
            assert!(msg.contains("alice"), "{msg}")
        }
        other => panic!("expected HostnameTaken, got {other:?}"),
    }
    assert_eq!(net.node(BOB).hostname().unwrap().as_str(), "bob");
    assert_eq!(net.resolve(ALICE, host("bob")).unwrap().address, bob_addr);
    assert_ne!(net.resolve(BOB, host("alice")).unwrap().address, bob_addr);
    // Bob stays registered (the refusal changed nothing at the registry)
    // and keeps refreshing with his own name.
    let until = net.now + std::time::Duration::from_secs(60);
    net.run_until(|n| n.now >= until);
    assert!(net.node(BOB).is_registered());
    assert!(!net
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::RegistrationFailed { .. })));
}

#[test]
fn visibility_changes_what_untrusted_nodes_see() {
    let mut net = registered();
    let alice_addr = net.node(ALICE).address().unwrap();
    assert!(net.node(ALICE).is_public());
    let now = net.now;
    let id = net.node(ALICE).set_public(now, false);
    assert_eq!(net.change_result(ALICE, id), Ok(()));
    assert!(!net.node(ALICE).is_public());
    assert_eq!(net.resolve(BOB, host("alice")), Err(ResolveError::NotFound));
    assert_eq!(
        net.resolve(BOB, Query::Address(alice_addr)),
        Err(ResolveError::NotFound)
    );
    // Alice still finds herself.
    assert!(!net.resolve(ALICE, host("alice")).unwrap().public);
    let now = net.now;
    let id = net.node(ALICE).set_public(now, true);
    assert_eq!(net.change_result(ALICE, id), Ok(()));
    let found = net.resolve(BOB, host("alice")).unwrap();
    assert!(found.public);
    assert_eq!(found.address, alice_addr);
}

#[test]
fn a_register_overtaken_by_a_newer_one_is_not_applied() {
    let mut net = registered();
    let alice_addr = net.node(ALICE).address().unwrap();
    let now = net.now;
    let first = net
        .node(ALICE)
        .set_hostname(now, Some(Hostname::new("first").unwrap()));
    let older: Vec<_> = std::iter::from_fn(|| net.node(ALICE).poll_transmit()).collect();
    let second = net
        .node(ALICE)
        .set_hostname(now, Some(Hostname::new("second").unwrap()));
    let newer: Vec<_> = std::iter::from_fn(|| net.node(ALICE).poll_transmit()).collect();
    assert_eq!((older.len(), newer.len()), (1, 1));
    // The network swaps them.
    for t in newer.iter().chain(&older) {
        net.rv()
            .handle_datagram(now, pilot_proto::SocketId::PRIMARY, ep(ALICE), &t.payload);
    }
    assert_eq!(net.rv().stats().dropped_replay, 1);
    assert_eq!(net.change_result(ALICE, second), Ok(()));
    assert_eq!(net.change_result(ALICE, first), Ok(()));
    let rec = net.rv().record(alice_addr).unwrap().clone();
    assert_eq!(rec.hostname, Some(Hostname::new("second").unwrap()));
    assert_eq!(net.resolve(BOB, host("first")), Err(ResolveError::NotFound));
}

#[test]
fn a_request_refused_after_a_rendezvous_restart_registers_again_and_goes_through() {
    // The request outlives the time it takes alice to notice that the
    // rendezvous lost their session (keepalive + rekey timeout, 15 s).
    let mut net = Net::with(|c| c.request_timeout = Duration::from_secs(60));
    net.run_until(|n| n.node(ALICE).is_registered() && n.node(BOB).is_registered());
    // The rendezvous restarts: it keeps its records, not its sessions.
    let records: Vec<Record> = net.rv().records().cloned().collect();
    let now = net.now;
    let mut rv = Rendezvous::new(rv_config(), &[12; 32], now);
    for r in records {
        rv.restore(r);
    }
    net.hosts.insert(ep(RV), Host::Rv(Box::new(rv)));

    let id = net
        .node(ALICE)
        .handshake(now, host("bob"), "after the restart")
        .unwrap();
    // Refused with NotRegistered until the next refresh, it used to fail.
    assert_eq!(net.request_result(ALICE, id), Ok(()));
    assert!(net.node(ALICE).is_registered());
}

/// Every command that names a peer refuses this node itself as `IsSelf`,
/// by address or by its hostname.
#[test]
fn a_node_is_not_its_own_peer() {
    let mut net = registered();
    let me = net.node(ALICE).address().unwrap();
    let name = net.node(ALICE).hostname().cloned().unwrap();
    let now = net.now;
    let node = net.node(ALICE);
    for q in [Query::Address(me), Query::Hostname(name)] {
        assert_eq!(node.handshake(now, q, "me?"), Err(CommandError::IsSelf));
    }
    assert_eq!(node.approve(now, me), Err(CommandError::IsSelf));
    assert_eq!(node.reject(now, me, "no"), Err(CommandError::IsSelf));
    assert_eq!(node.untrust(now, me), Err(CommandError::IsSelf));
    let dst = SocketAddress::new(me, 7);
    assert_eq!(
        node.send_datagram(now, 7, dst, b"x"),
        Err(CommandError::IsSelf)
    );
    assert_eq!(node.connect(now, dst), Err(CommandError::IsSelf));
}

#[test]
fn a_silent_rendezvous_is_reported_and_a_moved_one_is_followed() {
    // Both nodes start with an address where nothing answers (the name
    // resolved to a stale address, say).
    const NOWHERE: &str = "192.0.2.99:9000";
    let mut net = Net::with(|c| c.rendezvous_addr = ep(NOWHERE));
    assert_eq!(net.node(ALICE).rendezvous_silent(), 0);
    net.run_until(|n| n.node(ALICE).rendezvous_silent() >= 1);
    assert!(!net.node(ALICE).is_registered());
    // The count goes on rising, once per period, while nothing answers.
    net.run_until(|n| n.node(ALICE).rendezvous_silent() >= 2);
    // The driver looked the name up again: the rendezvous is elsewhere.
    let now = net.now;
    net.node(ALICE).set_rendezvous_addr(now, ep(RV));
    assert_eq!(net.node(ALICE).rendezvous_addr(), ep(RV));
    net.run_until(|n| n.node(ALICE).is_registered());
    assert_eq!(net.node(ALICE).rendezvous_silent(), 0);
    // Bob, still pointed at nowhere, is not registered and still silent.
    assert!(!net.node(BOB).is_registered());
    assert!(net.node(BOB).rendezvous_silent() >= 2);
    // Setting the address in use again changes nothing.
    let now = net.now;
    net.node(ALICE).set_rendezvous_addr(now, ep(RV));
    assert!(net.node(ALICE).is_registered());
}
