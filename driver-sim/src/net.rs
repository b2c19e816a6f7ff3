//! The network between the machines: addresses, links, partitions, the
//! clock and the queue of things to come.
//!
//! None of this depends on the machine type, so it is compiled once and the
//! borrow of a machine never overlaps a borrow of the network.
//!
//! All routing goes through [`Net::route`]. Addresses live in realms
//! ([`Network`]): the internet, and a private realm behind each NAT box.
//! `route` first walks a datagram from realm to realm ([`Net::traverse`]),
//! letting each NAT box on the way translate or refuse it (the boxes'
//! decisions live in `nat.rs`), then puts it on the links between the
//! sending and the receiving host. NAT boxes decide at the instant a
//! datagram is sent, as if they sat at zero distance from both ends; the
//! links add their delay afterwards.

use core::fmt;
use core::mem;
use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, BTreeSet};

use pilot_proto::{SocketId, SocketOp, Timestamp, Transmit};

use crate::link::{wire_len, Flight, Link, LinkConfig, Mishap};
use crate::nat::{Behaviour, NatBox, NatConfig, NatId, Network};
use crate::queue::{Action, Delivery, Queue};
use crate::rng::SimRng;
use crate::trace::{DropReason, Millis, Stats, Trace};
use crate::world::HostId;

/// More wakeups of one host at one virtual instant than this is a machine
/// that keeps asking to be woken "now" without making progress.
const MAX_WAKES_PER_INSTANT: u32 = 10_000;

/// More queue entries at one virtual instant than this is a loop that never
/// lets time advance (machines answering each other over zero-latency links).
const MAX_STEPS_PER_INSTANT: u64 = 1_000_000;

/// A datagram seen on the wire by [`World::set_capture`](crate::World::set_capture).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// When it was sent.
    pub at: Timestamp,
    /// The sender's address.
    pub from: SocketAddr,
    /// The address it was sent to.
    pub to: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// A datagram entering the network.
pub(crate) struct Packet {
    /// The host whose link it enters through; `None` for a datagram
    /// injected from an address no host owns.
    pub(crate) via: Option<HostId>,
    /// The realm it enters in: the sender's, where `from` and `to` mean
    /// what the sender meant.
    pub(crate) network: Network,
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) payload: Vec<u8>,
    pub(crate) injected: bool,
}

/// A host as the network sees it.
pub(crate) struct HostNet {
    pub(crate) name: String,
    /// The realm the host is attached to.
    pub(crate) network: Network,
    /// The host's primary socket ([`SocketId::PRIMARY`]).
    pub(crate) addr: SocketAddr,
    /// The other sockets its machine asked for, by id: their ports, on
    /// the primary socket's IP address.
    pub(crate) sockets: BTreeMap<SocketId, u16>,
    pub(crate) link: Link,
    /// The pending timer, if the machine asked for one.
    wake: Option<Wake>,
    /// Bumped whenever the timer is rescheduled, so that queue entries for
    /// an older deadline are recognised as stale and skipped.
    generation: u64,
    /// The instant of the last wakeup and how many wakeups it has seen.
    wakes_at: Timestamp,
    wakes_here: u32,
}

#[derive(Clone, Copy)]
struct Wake {
    at: Timestamp,
    generation: u64,
    reason: &'static str,
}

/// The simulated network.
pub(crate) struct Net {
    pub(crate) seed: u64,
    pub(crate) now: Timestamp,
    pub(crate) hosts: Vec<HostNet>,
    pub(crate) trace: Trace,
    pub(crate) stats: Stats,
    queue: Queue,
    by_addr: BTreeMap<(Network, SocketAddr), (HostId, SocketId)>,
    /// Where the search for a free ephemeral port starts next.
    next_ephemeral: u16,
    by_name: BTreeMap<String, HostId>,
    pub(crate) nats: Vec<NatBox>,
    nats_by_name: BTreeMap<String, NatId>,
    /// Path overrides by (sender, receiver).
    paths: BTreeMap<(HostId, HostId), Link>,
    /// Partitioned pairs, smaller id first.
    cuts: BTreeSet<(HostId, HostId)>,
    isolated: BTreeSet<HostId>,
    capture: Option<Vec<Captured>>,
    /// The machine type's `describe`, kept as a plain function so that the
    /// network need not be generic.
    describe: fn(&[u8]) -> String,
    /// The instant of the last step and how many steps it has seen.
    instant: Timestamp,
    steps_here: u64,
    /// Scratch space reused by every `route`, to spare an allocation per
    /// datagram.
    flights: Vec<Flight>,
    midway: Vec<Flight>,
    mishaps: Vec<Mishap>,
}

impl Net {
    pub(crate) fn new(seed: u64, describe: fn(&[u8]) -> String) -> Self {
        Net {
            seed,
            now: Timestamp::ZERO,
            hosts: Vec::new(),
            trace: Trace::new(),
            stats: Stats::default(),
            queue: Queue::default(),
            by_addr: BTreeMap::new(),
            next_ephemeral: EPHEMERAL.0,
            by_name: BTreeMap::new(),
            nats: Vec::new(),
            nats_by_name: BTreeMap::new(),
            paths: BTreeMap::new(),
            cuts: BTreeSet::new(),
            isolated: BTreeSet::new(),
            capture: None,
            describe,
            instant: Timestamp::ZERO,
            steps_here: 0,
            flights: Vec::new(),
            midway: Vec::new(),
            mishaps: Vec::new(),
        }
    }

    /// Registers a host in `network` with the default link.
    ///
    /// Panics on a name or address already taken: two hosts sharing either
    /// would make the trace or the routing ambiguous, and that is a bug in
    /// the scenario, not something to carry on from.
    pub(crate) fn add_host(&mut self, name: &str, network: Network, addr: SocketAddr) -> HostId {
        assert!(
            !self.by_name.contains_key(name),
            "driver-sim: a host called `{name}` already exists"
        );
        self.check_free(network, addr);
        let id = HostId(u32::try_from(self.hosts.len()).expect("fewer than 2^32 hosts"));
        let rng = SimRng::derive(self.seed, "link", &[name.as_bytes()]);
        self.hosts.push(HostNet {
            name: name.to_owned(),
            network,
            addr,
            sockets: BTreeMap::new(),
            link: Link::new(LinkConfig::default(), rng),
            wake: None,
            generation: 0,
            wakes_at: Timestamp::ZERO,
            wakes_here: 0,
        });
        self.by_addr
            .insert((network, addr), (id, SocketId::PRIMARY));
        self.by_name.insert(name.to_owned(), id);
        id
    }

    /// Carries out a machine's request to open or close a socket. Opening
    /// at a port already taken, or when every ephemeral port is, leaves
    /// the socket closed (its datagrams then go nowhere); opening an id
    /// already open moves it.
    pub(crate) fn socket_op(&mut self, id: HostId, op: SocketOp) {
        let (network, ip) = {
            let h = self.host(id);
            (h.network, h.addr.ip())
        };
        match op {
            SocketOp::Open { id: sid, port } => {
                if sid == SocketId::PRIMARY {
                    return;
                }
                self.close_socket(id, sid);
                let free = |net: &Net, p: u16| {
                    let a = SocketAddr::new(ip, p);
                    !net.by_addr.contains_key(&(network, a)) && net.entrance(network, a).is_none()
                };
                let port = match port {
                    Some(p) => free(self, p).then_some(p),
                    None => {
                        let span = EPHEMERAL.1 - EPHEMERAL.0 + 1;
                        let start = self.next_ephemeral;
                        (0..span)
                            .map(|i| EPHEMERAL.0 + (start - EPHEMERAL.0 + i) % span)
                            .find(|&p| free(self, p))
                    }
                };
                let Some(port) = port else {
                    return;
                };
                if port >= EPHEMERAL.0 {
                    self.next_ephemeral = if port >= EPHEMERAL.1 {
                        EPHEMERAL.0
                    } else {
                        port + 1
                    };
                }
                self.hosts[id.index()].sockets.insert(sid, port);
                self.by_addr
                    .insert((network, SocketAddr::new(ip, port)), (id, sid));
                self.stats.sockets_opened += 1;
            }
            SocketOp::Close(sid) => self.close_socket(id, sid),
            // A newer core's operation this simulator does not know.
            _ => {}
        }
    }

    fn close_socket(&mut self, id: HostId, sid: SocketId) {
        let h = &mut self.hosts[id.index()];
        if let Some(port) = h.sockets.remove(&sid) {
            let key = (h.network, SocketAddr::new(h.addr.ip(), port));
            self.by_addr.remove(&key);
        }
    }

    /// The address host `id`'s socket `sid` is bound to, if it is open.
    pub(crate) fn socket_addr(&self, id: HostId, sid: SocketId) -> Option<SocketAddr> {
        let h = self.host(id);
        if sid == SocketId::PRIMARY {
            return Some(h.addr);
        }
        h.sockets
            .get(&sid)
            .map(|&port| SocketAddr::new(h.addr.ip(), port))
    }

    /// Registers a NAT box whose public side is `public_ip` in `outer`.
    ///
    /// Panics on a name taken by another box, or a public address already
    /// in use in `outer`, for the same reason as `add_host`.
    pub(crate) fn add_nat(
        &mut self,
        name: &str,
        outer: Network,
        public_ip: IpAddr,
        config: NatConfig,
    ) -> NatId {
        assert!(
            !self.nats_by_name.contains_key(name),
            "driver-sim: a NAT called `{name}` already exists"
        );
        self.check_network(outer);
        if let Some(owner) = self.ip_owner(outer, public_ip) {
            panic!("driver-sim: {public_ip} is already used by `{owner}` in that network");
        }
        let id = NatId(u32::try_from(self.nats.len()).expect("fewer than 2^32 NATs"));
        self.nats
            .push(NatBox::new(self.seed, name, outer, public_ip, config));
        self.nats_by_name.insert(name.to_owned(), id);
        id
    }

    pub(crate) fn nat(&self, id: NatId) -> &NatBox {
        &self.nats[id.index()]
    }

    pub(crate) fn nat_id(&self, name: &str) -> Option<NatId> {
        self.nats_by_name.get(name).copied()
    }

    /// Moves a host to `addr` in `network`. Datagrams in flight to its old
    /// address are lost; mappings its old address made stay in their NAT
    /// until they time out, as they would in the real world.
    pub(crate) fn move_host(&mut self, id: HostId, network: Network, addr: SocketAddr) {
        let old = {
            let host = self.host(id);
            (host.network, host.addr)
        };
        self.by_addr.remove(&old);
        let extras: Vec<(SocketId, u16)> = self
            .host(id)
            .sockets
            .iter()
            .map(|(s, p)| (*s, *p))
            .collect();
        for (_, port) in &extras {
            self.by_addr
                .remove(&(old.0, SocketAddr::new(old.1.ip(), *port)));
        }
        self.check_free(network, addr);
        self.by_addr
            .insert((network, addr), (id, SocketId::PRIMARY));
        // The other sockets keep their ports on the new address, where free.
        let mut kept = BTreeMap::new();
        for (sid, port) in extras {
            let a = SocketAddr::new(addr.ip(), port);
            if let std::collections::btree_map::Entry::Vacant(e) = self.by_addr.entry((network, a))
            {
                e.insert((id, sid));
                kept.insert(sid, port);
            }
        }
        let host = &mut self.hosts[id.index()];
        host.network = network;
        host.addr = addr;
        host.sockets = kept;
        let line = format!(
            "move {} {addr}{}",
            self.host(id).name,
            self.realm_suffix(network)
        );
        self.note(line);
    }

    /// Forgets every mapping of a NAT box, as a reboot would.
    pub(crate) fn reset_nat(&mut self, id: NatId) {
        let nat = &mut self.nats[id.index()];
        nat.reset();
        let line = format!("nat {} reset", nat.name);
        self.note(line);
    }

    /// Panics unless `addr` in `network` is free for a host.
    fn check_free(&self, network: Network, addr: SocketAddr) {
        self.check_network(network);
        if let Some(&(other, _)) = self.by_addr.get(&(network, addr)) {
            panic!(
                "driver-sim: {addr} already belongs to `{}`",
                self.host(other).name
            );
        }
        if let Some(nat) = self.entrance(network, addr) {
            panic!(
                "driver-sim: {addr} is the public address of NAT `{}`",
                self.nat(nat).name
            );
        }
    }

    /// Panics on a NAT id from another world.
    fn check_network(&self, network: Network) {
        if let Network::Behind(nat) = network {
            assert!(
                nat.index() < self.nats.len(),
                "driver-sim: no NAT {nat:?} in this world"
            );
        }
    }

    /// The host or box using `ip` in `network`, by name.
    fn ip_owner(&self, network: Network, ip: IpAddr) -> Option<&str> {
        let host = self
            .hosts
            .iter()
            .find(|h| h.network == network && h.addr.ip() == ip)
            .map(|h| h.name.as_str());
        host.or_else(|| {
            self.nats
                .iter()
                .find(|n| n.outer == network && n.public_ip == ip)
                .map(|n| n.name.as_str())
        })
    }

    /// How the trace says where an address lives: nothing for the
    /// internet, ` behind <nat>` otherwise.
    fn realm_suffix(&self, network: Network) -> String {
        match network {
            Network::Internet => String::new(),
            Network::Behind(nat) => format!(" behind {}", self.nat(nat).name),
        }
    }

    pub(crate) fn host(&self, id: HostId) -> &HostNet {
        &self.hosts[id.index()]
    }

    pub(crate) fn host_id(&self, name: &str) -> Option<HostId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn set_path(&mut self, from: HostId, to: HostId, config: LinkConfig) {
        if let Some(path) = self.paths.get_mut(&(from, to)) {
            path.config = config;
            return;
        }
        let rng = SimRng::derive(
            self.seed,
            "path",
            &[
                self.hosts[from.index()].name.as_bytes(),
                self.hosts[to.index()].name.as_bytes(),
            ],
        );
        self.paths.insert((from, to), Link::new(config, rng));
    }

    pub(crate) fn clear_path(&mut self, from: HostId, to: HostId) {
        self.paths.remove(&(from, to));
    }

    pub(crate) fn path(&self, from: HostId, to: HostId) -> Option<&LinkConfig> {
        self.paths.get(&(from, to)).map(|p| &p.config)
    }

    pub(crate) fn partition(&mut self, a: HostId, b: HostId) {
        self.cuts.insert(pair(a, b));
        let line = format!("partition {} {}", self.host(a).name, self.host(b).name);
        self.note(line);
    }

    pub(crate) fn heal(&mut self, a: HostId, b: HostId) {
        self.cuts.remove(&pair(a, b));
        let line = format!("heal {} {}", self.host(a).name, self.host(b).name);
        self.note(line);
    }

    pub(crate) fn isolate(&mut self, host: HostId) {
        self.isolated.insert(host);
        let line = format!("isolate {}", self.host(host).name);
        self.note(line);
    }

    pub(crate) fn rejoin(&mut self, host: HostId) {
        self.isolated.remove(&host);
        let line = format!("rejoin {}", self.host(host).name);
        self.note(line);
    }

    pub(crate) fn set_capture(&mut self, on: bool) {
        match (on, self.capture.is_some()) {
            (true, false) => self.capture = Some(Vec::new()),
            (false, true) => self.capture = None,
            _ => {}
        }
    }

    pub(crate) fn captured(&self) -> &[Captured] {
        self.capture.as_deref().unwrap_or(&[])
    }

    pub(crate) fn take_captured(&mut self) -> Vec<Captured> {
        self.capture.as_mut().map(mem::take).unwrap_or_default()
    }

    /// A trace line with no host attached to it.
    pub(crate) fn note(&mut self, line: impl fmt::Display) {
        self.trace.line(self.now, line);
    }

    /// A datagram a machine wants sent.
    pub(crate) fn send(&mut self, host: HostId, transmit: Transmit) {
        self.stats.sent += 1;
        let network = self.host(host).network;
        let Some(from) = self.socket_addr(host, transmit.socket) else {
            // A socket the driver never opened (or already closed).
            let desc = self.describe_for_trace(&transmit.payload);
            let len = transmit.payload.len();
            let src = self.host(host).addr;
            return self.dropped_between(
                DropReason::NoRoute,
                network,
                src,
                transmit.destination,
                len,
                &desc,
            );
        };
        if let Some(capture) = &mut self.capture {
            capture.push(Captured {
                at: self.now,
                from,
                to: transmit.destination,
                payload: transmit.payload.clone(),
            });
        }
        let desc = self.describe_for_trace(&transmit.payload);
        if self.trace.enabled() {
            let line = format!(
                "{}{} -> {} {desc} ({}B)",
                self.host(host).name,
                SocketTag(transmit.socket),
                self.peer(network, transmit.destination),
                transmit.payload.len()
            );
            self.trace.line(self.now, line);
        }
        let packet = Packet {
            via: Some(host),
            network,
            from,
            to: transmit.destination,
            payload: transmit.payload,
            injected: false,
        };
        self.route(packet, &desc);
    }

    /// A forged or replayed datagram, sent on the internet. From an address
    /// a host on the internet owns, it
    /// crosses that host's link like anything the host sends; from any other
    /// address it appears at the destination at once, untouched by any link,
    /// as if the attacker sat right next to it.
    pub(crate) fn inject(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        self.stats.injected += 1;
        let desc = self.describe_for_trace(&payload);
        if self.trace.enabled() {
            let line = format!(
                "inject {} -> {} {desc} ({}B)",
                self.peer(Network::Internet, from),
                self.peer(Network::Internet, to),
                payload.len()
            );
            self.trace.line(self.now, line);
        }
        let packet = Packet {
            via: self
                .by_addr
                .get(&(Network::Internet, from))
                .map(|(h, _)| *h),
            network: Network::Internet,
            from,
            to,
            payload,
            injected: true,
        };
        self.route(packet, &desc);
    }

    /// Takes one datagram from where it enters the network to the queue
    /// entries that will deliver its surviving copies. Every datagram,
    /// honest or injected, goes through here.
    pub(crate) fn route(&mut self, packet: Packet, desc: &str) {
        let arrival = match self.traverse(&packet) {
            Ok(arrival) => arrival,
            Err(reason) => return self.dropped(reason, &packet, desc),
        };
        let to = arrival.host;
        if self.blocked(packet.via, to) {
            self.dropped(DropReason::Partition, &packet, desc);
            return;
        }

        let wire = wire_len(packet.payload.len(), packet.to);
        let start = [Flight {
            at: self.now,
            duplicate: false,
        }];
        let mut flights = mem::take(&mut self.flights);
        let mut mishaps = mem::take(&mut self.mishaps);
        match packet.via {
            None => flights.extend_from_slice(&start),
            Some(from) => match self.paths.get_mut(&(from, to)) {
                Some(path) => path.cross(wire, true, &start, &mut flights, &mut mishaps),
                None => {
                    let mut midway = mem::take(&mut self.midway);
                    let uplink = &mut self.hosts[from.index()].link;
                    uplink.cross(wire, true, &start, &mut midway, &mut mishaps);
                    let downlink = &mut self.hosts[to.index()].link;
                    downlink.cross(wire, false, &midway, &mut flights, &mut mishaps);
                    midway.clear();
                    self.midway = midway;
                }
            },
        }

        for mishap in mishaps.drain(..) {
            self.mishap(mishap, &packet, desc);
        }
        // Copies share the bytes; only extra ones pay for a clone.
        let Packet {
            mut payload,
            injected,
            ..
        } = packet;
        let from = arrival.from;
        let copies = flights.len();
        for (i, flight) in flights.drain(..).enumerate() {
            let payload = if i + 1 == copies {
                mem::take(&mut payload)
            } else {
                payload.clone()
            };
            let delivery = Delivery {
                to,
                socket: arrival.socket,
                addressed: (arrival.network, arrival.addr),
                from,
                payload,
                duplicate: flight.duplicate,
                injected,
            };
            self.queue.push(flight.at, Action::Deliver(delivery));
        }
        self.flights = flights;
        self.mishaps = mishaps;
    }

    /// Follows a datagram from realm to realm until it reaches a host,
    /// letting every NAT box on the way translate or refuse it.
    ///
    /// In each realm: a host that owns the destination gets it (a LAN
    /// delivery, untranslated); else a box whose public side (or, for a
    /// router, whose realm) holds the destination lets it in; else it
    /// leaves through the box in front of this realm, or, on the internet,
    /// has nowhere to go.
    fn traverse(&mut self, packet: &Packet) -> Result<Arrival, DropReason> {
        let (mut network, mut from, mut to) = (packet.network, packet.from, packet.to);
        // The boxes form a tree, so a path leaves and enters each box at
        // most once (both, when it hairpins); the bound only guards
        // against a bug here turning into a hang.
        for _ in 0..2 * self.nats.len() + 2 {
            if let Some(&(host, socket)) = self.by_addr.get(&(network, to)) {
                return Ok(Arrival {
                    host,
                    socket,
                    from,
                    network,
                    addr: to,
                });
            }
            if let Some(id) = self.entrance(network, to) {
                let now = self.now;
                let nat = &mut self.nats[id.index()];
                if nat.config.translate {
                    to = nat.inbound(now, from, to.port())?;
                }
                network = Network::Behind(id);
                continue;
            }
            let Network::Behind(id) = network else {
                return Err(DropReason::NoRoute);
            };
            let now = self.now;
            let nat = &mut self.nats[id.index()];
            if nat.config.block_udp {
                return Err(DropReason::UdpBlocked);
            }
            if to.ip() == nat.public_ip && !nat.config.hairpinning {
                return Err(DropReason::NatHairpin);
            }
            network = nat.outer;
            if !nat.config.translate {
                continue;
            }
            let out = nat.outbound(now, from, to)?;
            if out.created {
                self.mapped(id, from, out.external, to);
            }
            from = out.external;
        }
        Err(DropReason::NoRoute)
    }

    /// The box a datagram addressed to `to` in `network` enters through:
    /// a NAT whose public address it is, or a router with the destination
    /// somewhere behind it.
    fn entrance(&self, network: Network, to: SocketAddr) -> Option<NatId> {
        (0..self.nats.len()).find_map(|i| {
            let nat = &self.nats[i];
            if nat.outer != network {
                return None;
            }
            let id = NatId(u32::try_from(i).ok()?);
            let behind = if nat.config.translate {
                nat.public_ip == to.ip()
            } else {
                self.reaches(Network::Behind(id), to)
            };
            behind.then_some(id)
        })
    }

    /// Whether `to` is a host in `network`, or enters a box from there.
    fn reaches(&self, network: Network, to: SocketAddr) -> bool {
        self.by_addr.contains_key(&(network, to)) || self.entrance(network, to).is_some()
    }

    /// Counts and traces a new mapping, once.
    fn mapped(
        &mut self,
        id: NatId,
        internal: SocketAddr,
        external: SocketAddr,
        remote: SocketAddr,
    ) {
        self.stats.nat_mappings += 1;
        if !self.trace.enabled() {
            return;
        }
        let nat = self.nat(id);
        // A mapping that depends on the remote says which one, so that a
        // symmetric NAT's ports can be told apart in the trace.
        let line = match nat.config.mapping {
            Behaviour::EndpointIndependent => {
                format!("nat {} map {internal} -> {external}", nat.name)
            }
            _ => format!("nat {} map {internal} -> {external} for {remote}", nat.name),
        };
        self.note(line);
    }

    /// Traces a datagram arriving, just before the machine sees it, or
    /// drops it if its host has moved away from the address it was routed
    /// to. Returns whether the machine should see it.
    pub(crate) fn arrive(&mut self, delivery: &Delivery) -> bool {
        if self.by_addr.get(&delivery.addressed) != Some(&(delivery.to, delivery.socket)) {
            let (network, to) = delivery.addressed;
            let desc = self.describe_for_trace(&delivery.payload);
            let len = delivery.payload.len();
            self.dropped_between(DropReason::NoRoute, network, delivery.from, to, len, &desc);
            return false;
        }
        self.stats.delivered += 1;
        if !self.trace.enabled() {
            return true;
        }
        let desc = (self.describe)(&delivery.payload);
        let tags = match (delivery.duplicate, delivery.injected) {
            (false, false) => "",
            (true, false) => " [dup]",
            (false, true) => " [injected]",
            (true, true) => " [injected dup]",
        };
        let line = format!(
            "{}{} <- {} {desc} ({}B){tags}",
            self.host(delivery.to).name,
            SocketTag(delivery.socket),
            self.peer(delivery.addressed.0, delivery.from),
            delivery.payload.len()
        );
        self.trace.line(self.now, line);
        true
    }

    /// Traces and counts an event a machine emitted.
    pub(crate) fn trace_event(&mut self, host: HostId, event: &dyn fmt::Display) {
        self.stats.events += 1;
        if !self.trace.enabled() {
            return;
        }
        let line = format!("{} event {event}", self.host(host).name);
        self.trace.line(self.now, line);
    }

    /// Replaces a host's timer with the deadline its machine just asked for.
    /// A deadline already past means "as soon as possible": now.
    pub(crate) fn schedule_wake(
        &mut self,
        id: HostId,
        deadline: Option<(Timestamp, &'static str)>,
    ) {
        let now = self.now;
        let host = &mut self.hosts[id.index()];
        let Some((deadline, reason)) = deadline else {
            host.wake = None;
            return;
        };
        let at = deadline.max(now);
        if let Some(wake) = &mut host.wake {
            // Same instant: the entry already queued will do.
            if wake.at == at {
                wake.reason = reason;
                return;
            }
        }
        host.generation += 1;
        host.wake = Some(Wake {
            at,
            generation: host.generation,
            reason,
        });
        let generation = host.generation;
        self.queue.push(
            at,
            Action::Wake {
                host: id,
                generation,
            },
        );
    }

    /// Consumes a host's timer that has just come due, tracing why it fired.
    pub(crate) fn fire(&mut self, id: HostId) {
        let now = self.now;
        let host = &mut self.hosts[id.index()];
        let reason = host.wake.take().map_or("?", |w| w.reason);
        if host.wakes_at == now {
            host.wakes_here += 1;
        } else {
            host.wakes_at = now;
            host.wakes_here = 1;
        }
        if host.wakes_here > MAX_WAKES_PER_INSTANT {
            panic!(
                "driver-sim: host `{}` woke more than {MAX_WAKES_PER_INSTANT} times at {now} \
                 (timer `{reason}`) without time moving on; its poll_timeout keeps returning \
                 a deadline <= now (seed {})",
                host.name, self.seed
            );
        }
        self.stats.timer_wakeups += 1;
        if self.trace.enabled() {
            let line = format!("{} timer {reason}", self.host(id).name);
            self.trace.line(now, line);
        }
    }

    /// The next action due no later than `limit`, with the clock moved to
    /// its time. Stale timer entries are discarded on the way.
    pub(crate) fn next(&mut self, limit: Timestamp) -> Option<Action> {
        let at = self.peek_live()?;
        if at > limit {
            return None;
        }
        let (at, action) = self.queue.pop()?;
        self.advance(at);
        self.stats.steps += 1;
        Some(action)
    }

    /// Whether anything is left to happen, ever.
    pub(crate) fn idle(&mut self) -> bool {
        self.peek_live().is_none()
    }

    /// Moves the clock forward to `to` (never back) when nothing is left to
    /// do before it.
    pub(crate) fn idle_until(&mut self, to: Timestamp) {
        self.now = self.now.max(to);
    }

    fn peek_live(&mut self) -> Option<Timestamp> {
        loop {
            let (at, action) = self.queue.peek()?;
            if !self.stale(action) {
                return Some(at);
            }
            self.queue.pop();
        }
    }

    fn stale(&self, action: &Action) -> bool {
        match *action {
            Action::Wake { host, generation } => {
                self.host(host).wake.map(|w| w.generation) != Some(generation)
            }
            Action::Deliver(_) => false,
        }
    }

    fn advance(&mut self, at: Timestamp) {
        debug_assert!(at >= self.now, "the queue never schedules into the past");
        self.now = at;
        if at != self.instant {
            self.instant = at;
            self.steps_here = 0;
        }
        self.steps_here += 1;
        if self.steps_here > MAX_STEPS_PER_INSTANT {
            panic!(
                "driver-sim: more than {MAX_STEPS_PER_INSTANT} things happened at {at} without \
                 time moving on; machines answering each other over zero-latency links? \
                 (seed {})",
                self.seed
            );
        }
    }

    fn blocked(&self, via: Option<HostId>, to: HostId) -> bool {
        if self.isolated.contains(&to) {
            return true;
        }
        let Some(from) = via else {
            return false;
        };
        self.isolated.contains(&from) || self.cuts.contains(&pair(from, to))
    }

    fn dropped(&mut self, reason: DropReason, packet: &Packet, desc: &str) {
        let len = packet.payload.len();
        self.dropped_between(reason, packet.network, packet.from, packet.to, len, desc);
    }

    /// Counts and traces a drop, naming the endpoints as seen in `network`.
    fn dropped_between(
        &mut self,
        reason: DropReason,
        network: Network,
        from: SocketAddr,
        to: SocketAddr,
        len: usize,
        desc: &str,
    ) {
        self.stats.dropped.count(reason);
        if !self.trace.enabled() {
            return;
        }
        let line = format!(
            "drop({}) {} -> {} {desc} ({len}B)",
            reason.as_str(),
            self.peer(network, from),
            self.peer(network, to),
        );
        self.trace.line(self.now, line);
    }

    fn mishap(&mut self, mishap: Mishap, packet: &Packet, desc: &str) {
        let what = match mishap {
            Mishap::Dropped(reason) => return self.dropped(reason, packet, desc),
            Mishap::Duplicated => {
                self.stats.duplicated += 1;
                None
            }
            Mishap::Reordered(extra) => {
                self.stats.reordered += 1;
                Some(extra)
            }
        };
        if !self.trace.enabled() {
            return;
        }
        let (from, to, len) = (
            self.peer(packet.network, packet.from),
            self.peer(packet.network, packet.to),
            packet.payload.len(),
        );
        let line = match what {
            None => format!("dup {from} -> {to} {desc} ({len}B)"),
            Some(extra) => format!("reorder(+{}) {from} -> {to} {desc} ({len}B)", Millis(extra)),
        };
        self.trace.line(self.now, line);
    }

    fn describe_for_trace(&self, payload: &[u8]) -> String {
        if !self.trace.enabled() {
            return String::new();
        }
        (self.describe)(payload)
    }

    /// How the trace names an endpoint seen from `network`: the name of
    /// the host owning the address there or, failing that, in the realms
    /// outside it (where a datagram to it would go); the address itself
    /// otherwise.
    fn peer(&self, network: Network, addr: SocketAddr) -> Peer<'_> {
        let mut realm = network;
        loop {
            if let Some(&(id, _)) = self.by_addr.get(&(realm, addr)) {
                return Peer::Host(&self.host(id).name);
            }
            match realm {
                Network::Internet => return Peer::Addr(addr),
                Network::Behind(nat) => realm = self.nat(nat).outer,
            }
        }
    }
}

/// Where a datagram ends up after [`Net::traverse`].
struct Arrival {
    host: HostId,
    /// Which of its sockets.
    socket: SocketId,
    /// The source address the receiver sees, after any translation.
    from: SocketAddr,
    /// The realm and address it was delivered to.
    network: Network,
    addr: SocketAddr,
}

enum Peer<'a> {
    Host(&'a str),
    Addr(SocketAddr),
}

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Host(name) => f.write_str(name),
            Peer::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// The ports extra sockets get when the machine names none.
const EPHEMERAL: (u16, u16) = (40000, 60999);

/// Nothing for the primary socket, `:s<N>` for another, in trace lines.
struct SocketTag(SocketId);

impl fmt::Display for SocketTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == SocketId::PRIMARY {
            return Ok(());
        }
        write!(f, ":{}", self.0)
    }
}

/// An unordered pair as an ordered key.
fn pair(a: HostId, b: HostId) -> (HostId, HostId) {
    (a.min(b), a.max(b))
}
