//! Agents on the compat carrier ([`SocketId::CARRIER`]): a tiny
//! zero-latency network where one agent has UDP and the others reach the
//! rendezvous only over a TCP carrier, which the rendezvous knows by the
//! connection's peer address.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use pilot_proto::addr::{Hostname, SocketAddress};
use pilot_proto::msg::Query;
use pilot_proto::node::{Event, Node, NodeConfig};
use pilot_proto::rendezvous::{Rendezvous, RendezvousConfig};
use pilot_proto::{Identity, SocketId, SocketOp, Timestamp};

const RV: &str = "192.0.2.1:9000";
/// The reflect port the rendezvous announces.
const RV_REFLECT: &str = "192.0.2.1:9001";
/// A UDP agent.
const ALICE: &str = "198.51.100.1:4000";
/// A carrier agent whose TCP connection has the same address as Alice's
/// UDP socket: the rendezvous must keep them apart by socket.
const CAROL_TCP: &str = "198.51.100.1:4000";
/// Another carrier agent.
const DAVE_TCP: &str = "203.0.113.7:51000";
const WALL: u64 = 1_800_000_000_000_000;

fn ep(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Agent {
    node: Node,
    /// Its UDP address, or its carrier connection's address.
    addr: SocketAddr,
    carrier: bool,
}

struct Net {
    now: Timestamp,
    rv: Rendezvous,
    agents: BTreeMap<&'static str, Agent>,
    events: Vec<(&'static str, Event)>,
    /// (agent, destination) of every UDP datagram a carrier agent sent,
    /// and every socket it asked for: there must be none.
    carrier_udp: Vec<(&'static str, String)>,
    /// Datagrams the rendezvous sent over UDP to a carrier agent's address
    /// or over the carrier to a UDP agent's.
    misrouted: usize,
}

impl Net {
    fn new() -> Self {
        let mut rv_cfg = RendezvousConfig::new(Identity::from_seed(&[1; 32]));
        rv_cfg.wall_origin_micros = WALL;
        // It announces a reflect port: carrier agents must not classify
        // their NAT (that would open UDP sockets).
        rv_cfg.reflect_port = Some(9001);
        let rv = Rendezvous::new(rv_cfg, &[11; 32], Timestamp::ZERO);
        let rv_key = Identity::from_seed(&[1; 32]).public();
        let mut agents = BTreeMap::new();
        for (name, seed, addr, carrier) in [
            ("alice", 2u8, ALICE, false),
            ("carol", 3, CAROL_TCP, true),
            ("dave", 4, DAVE_TCP, true),
        ] {
            let mut cfg = NodeConfig::new(Identity::from_seed(&[seed; 32]), rv_key, ep(RV));
            cfg.hostname = Some(Hostname::new(name).unwrap());
            cfg.public = true;
            cfg.wall_origin_micros = WALL;
            cfg.relay_only = carrier;
            // A carrier agent still knows LAN addresses; it must not
            // advertise them.
            cfg.lan_endpoints = vec![ep("10.0.0.5:4000")];
            let node = Node::new(cfg, &[seed + 10; 32], Timestamp::ZERO);
            agents.insert(
                name,
                Agent {
                    node,
                    addr: ep(addr),
                    carrier,
                },
            );
        }
        Net {
            now: Timestamp::ZERO,
            rv,
            agents,
            events: Vec::new(),
            carrier_udp: Vec::new(),
            misrouted: 0,
        }
    }

    fn node(&mut self, name: &str) -> &mut Node {
        &mut self.agents.get_mut(name).expect("agent").node
    }

    fn step(&mut self) {
        let mut to_rv = Vec::new();
        let mut to_agents = Vec::new();
        for (name, a) in self.agents.iter_mut() {
            while let Some(op) = a.node.poll_socket_op() {
                if a.carrier && matches!(op, SocketOp::Open { .. }) {
                    // Any socket a carrier agent opens is a UDP socket.
                    self.carrier_udp.push((name, op.to_string()));
                }
            }
            while let Some(t) = a.node.poll_transmit() {
                if a.carrier {
                    if t.socket != SocketId::CARRIER || t.destination != ep(RV) {
                        self.carrier_udp.push((name, t.destination.to_string()));
                        continue;
                    }
                    to_rv.push((SocketId::CARRIER, a.addr, t.payload));
                } else if t.destination == ep(RV_REFLECT) {
                    // This tiny network has no reflect socket: a UDP
                    // agent's classification just gets no answer.
                    continue;
                } else if t.destination == ep(RV) {
                    to_rv.push((SocketId::PRIMARY, a.addr, t.payload));
                } else {
                    to_agents.push((SocketId::PRIMARY, a.addr, t.destination, t.payload));
                }
            }
            while let Some(e) = a.node.poll_event() {
                self.events.push((name, e));
            }
        }
        while let Some(t) = self.rv.poll_transmit() {
            to_agents.push((t.socket, ep(RV), t.destination, t.payload));
        }
        while self.rv.poll_event().is_some() {}
        let busy = !to_rv.is_empty() || !to_agents.is_empty();
        for (socket, from, payload) in to_rv {
            self.rv.handle_datagram(self.now, socket, from, &payload);
        }
        for (socket, from, to, payload) in to_agents {
            let target = self
                .agents
                .values_mut()
                .find(|a| a.addr == to && a.carrier == (socket == SocketId::CARRIER));
            match target {
                Some(a) => a.node.handle_datagram(self.now, socket, from, &payload),
                None => self.misrouted += 1,
            }
        }
        if busy {
            return;
        }
        let next = self
            .agents
            .values()
            .filter_map(|a| a.node.poll_timeout())
            .chain(self.rv.poll_timeout())
            .map(|(t, _)| t)
            .min()
            .expect("something is always scheduled");
        self.now = self.now.max(next);
        for a in self.agents.values_mut() {
            a.node.handle_timeout(self.now);
        }
        self.rv.handle_timeout(self.now);
    }

    fn run_until(&mut self, mut done: impl FnMut(&mut Net) -> bool) {
        for _ in 0..20_000 {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!(
            "condition not reached; events: {:?}; carrier agents' UDP: {:?}; misrouted: {}",
            self.events, self.carrier_udp, self.misrouted
        );
    }

    fn trust(&mut self, from: &str, to: &str) {
        let to_addr = self.node(to).address().unwrap();
        let now = self.now;
        self.node(from)
            .handshake(now, Query::Hostname(Hostname::new(to).unwrap()), "hi")
            .unwrap();
        let from_addr = self.node(from).address().unwrap();
        self.run_until(|n| n.node(to).pending().any(|p| p.request.from == from_addr));
        let now = self.now;
        self.node(to).approve(now, from_addr).unwrap();
        self.run_until(|n| n.node(from).trusted().any(|t| t.address == to_addr));
    }

    /// Sends `data` from `from` to port 5000 of `to` and waits for it.
    fn exchange(&mut self, from: &'static str, to: &'static str, data: &[u8]) {
        let to_addr = self.node(to).address().unwrap();
        let _ = self.node(to).bind(5000);
        let now = self.now;
        self.node(from)
            .send_datagram(now, 6000, SocketAddress::new(to_addr, 5000), data)
            .unwrap();
        self.run_until(|n| {
            n.events.iter().any(|(at, e)| {
                *at == to && matches!(e, Event::Datagram { data: d, .. } if d == data)
            })
        });
    }
}

#[test]
fn carrier_agents_register_trust_and_exchange_through_the_relay() {
    let mut net = Net::new();
    net.run_until(|n| n.agents.values().all(|a| a.node.is_registered()));
    assert!(net.node("carol").is_relay_only());
    // Carrier agents have no UDP candidates, not even their LAN ones.
    let now = net.now;
    let id = net
        .node("alice")
        .resolve(now, Query::Hostname(Hostname::new("carol").unwrap()));
    net.run_until(|n| {
        n.events
            .iter()
            .any(|(_, e)| matches!(e, Event::Resolved { id: i, .. } if *i == id))
    });
    let info = net
        .events
        .iter()
        .find_map(|(_, e)| match e {
            Event::Resolved { id: i, result } if *i == id => Some(result.clone()),
            _ => None,
        })
        .unwrap()
        .unwrap();
    assert!(info.endpoints.is_empty(), "{:?}", info.endpoints);

    // UDP agent <-> carrier agent, whose TCP address equals the UDP one.
    net.trust("alice", "carol");
    net.exchange("alice", "carol", b"to carol over the relay");
    net.exchange("carol", "alice", b"to alice from the carrier");
    // Carrier agent <-> carrier agent.
    net.trust("dave", "carol");
    net.exchange("dave", "carol", b"carrier to carrier");
    net.exchange("carol", "dave", b"and back");
    assert!(net.carrier_udp.is_empty(), "{:?}", net.carrier_udp);
    assert_eq!(net.misrouted, 0);
}

#[test]
fn a_reconnected_carrier_agent_is_found_at_its_new_connection() {
    let mut net = Net::new();
    net.run_until(|n| n.agents.values().all(|a| a.node.is_registered()));
    net.trust("alice", "dave");
    net.exchange("alice", "dave", b"first");
    let address = net.node("dave").address();
    // The carrier reconnects from a new TCP port.
    net.agents.get_mut("dave").unwrap().addr = ep("203.0.113.7:51001");
    let now = net.now;
    net.node("dave").rendezvous_reconnected(now);
    // It registers again at once, from the new connection (datagrams the
    // relay forwarded to the old one meanwhile are lost, as datagrams
    // may be; streams and messages retransmit).
    net.run_until(|n| {
        n.events.iter().any(|(at, e)| {
            *at == "dave"
                && matches!(e, Event::Registered { public_endpoint, .. }
                    if *public_endpoint == ep("203.0.113.7:51001"))
        })
    });
    net.exchange("alice", "dave", b"after the reconnect");
    net.exchange("dave", "alice", b"reply after the reconnect");
    assert_eq!(net.node("dave").address(), address);
    assert!(net.carrier_udp.is_empty());
}

#[test]
fn switching_to_the_carrier_keeps_address_and_trust() {
    let mut net = Net::new();
    net.run_until(|n| n.agents.values().all(|a| a.node.is_registered()));
    net.trust("carol", "alice");
    let address = net.node("alice").address();
    // Alice's UDP is blocked: her driver moves her to the carrier.
    {
        let a = net.agents.get_mut("alice").unwrap();
        a.carrier = true;
        a.addr = ep("198.51.100.1:52000");
    }
    let now = net.now;
    net.node("alice").set_relay_only(now, true);
    assert!(net.node("alice").is_relay_only());
    net.exchange("carol", "alice", b"to alice on the carrier");
    net.exchange("alice", "carol", b"from alice on the carrier");
    assert_eq!(net.node("alice").address(), address);
    assert!(net.carrier_udp.is_empty(), "{:?}", net.carrier_udp);
}
