//! The rendezvous: registry and beacon.
//!
//! It hands out addresses (one per identity, forever), binds hostnames,
//! reflects each agent's public endpoint, and answers lookups. Agents reach
//! it over the same Noise sessions they use with each other, keyed to the
//! rendezvous's pinned public key.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use crate::addr::{Address, Hostname};
use crate::identity::{Identity, PublicKey};
use crate::io::{earliest, SocketId, SocketOp, Timer, Transmit};
use crate::msg::{
    Certificate, ErrorCode, Message, Query, Register, Registered, Resolved, MAX_ENDPOINTS,
};
use crate::stats::{DropReason, Stats};
use crate::time::Timestamp;
use crate::trust::{TrustApproval, TrustRequest};
use crate::tunnel::{Inbound, PeerKey, Route, TunnelConfig, TunnelEvent, Tunnels};
use crate::wire::{self, Packet};

mod relay;

pub use relay::{RelayLimits, RelayStats};

/// How a rendezvous behaves.
#[derive(Clone, Debug)]
pub struct RendezvousConfig {
    /// The rendezvous's identity; agents pin its public key.
    pub identity: Identity,
    /// The network whose addresses it hands out.
    pub network: u16,
    /// Wall-clock microseconds since the Unix epoch at `Timestamp::ZERO`.
    pub wall_origin_micros: u64,
    /// How often agents should refresh.
    pub refresh_interval: Duration,
    /// A registration without refresh for this long goes offline.
    pub registration_ttl: Duration,
    /// How long the certificates it issues stay valid.
    pub cert_lifetime: Duration,
    /// The most identities it will register.
    pub max_registrations: usize,
    /// Requests per second each agent may make (sustained).
    pub requests_per_second: u32,
    /// Requests an agent may make in a burst.
    pub request_burst: u32,
    /// New trust requests each agent may make per minute (sustained).
    pub trust_requests_per_minute: u32,
    /// New trust requests an agent may make in a burst.
    pub trust_request_burst: u32,
    /// Trust requests waiting for one agent's decision, at most; more are
    /// refused until it decides some.
    pub max_pending_per_target: usize,
    /// Handshake and session settings.
    pub tunnel: TunnelConfig,
    /// What the relay forwards per agent and per pair.
    pub relay: RelayLimits,
    /// A second UDP port (on the primary socket's address) that answers
    /// Reflect requests, so agents can tell whether their NAT maps per
    /// destination. Off (`None`) by default; the driver opens it when
    /// the rendezvous asks ([`Rendezvous::poll_socket_op`]).
    pub reflect_port: Option<u16>,
    /// Reflect requests answered per second, all sources together.
    pub reflects_per_second: u32,
}

impl RendezvousConfig {
    /// Defaults for a rendezvous with `identity`.
    pub fn new(identity: Identity) -> Self {
        RendezvousConfig {
            identity,
            network: 0,
            wall_origin_micros: 0,
            refresh_interval: Duration::from_secs(25),
            registration_ttl: Duration::from_secs(90),
            cert_lifetime: Duration::from_secs(3600),
            max_registrations: 1_000_000,
            requests_per_second: 20,
            request_burst: 40,
            trust_requests_per_minute: 10,
            trust_request_burst: 10,
            max_pending_per_target: 64,
            tunnel: TunnelConfig {
                responder_only: true,
                ..TunnelConfig::default()
            },
            relay: RelayLimits::default(),
            reflect_port: None,
            reflects_per_second: 4000,
        }
    }
}

/// The socket the rendezvous asks for when it has a reflect port.
pub const REFLECT_SOCKET: SocketId = SocketId(1);

/// What the registry knows of one identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The node's address.
    pub address: Address,
    /// Its Ed25519 identity.
    pub key: PublicKey,
    /// Its hostname, if any.
    pub hostname: Option<Hostname>,
    /// Findable by anyone.
    pub public: bool,
    /// Its reflected public endpoint while online.
    pub endpoint: Option<SocketAddr>,
    /// When it goes offline without a refresh (None: offline).
    pub expires: Option<Timestamp>,
}

/// Something that happened at the rendezvous.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RendezvousEvent {
    /// A node registered (or changed its registration).
    Registered {
        /// Its address.
        address: Address,
        /// Its hostname.
        hostname: Option<Hostname>,
        /// Its reflected endpoint.
        endpoint: SocketAddr,
        /// First registration of this identity.
        new: bool,
    },
    /// A node stopped refreshing and went offline.
    Expired {
        /// Its address.
        address: Address,
    },
}

impl fmt::Display for RendezvousEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RendezvousEvent::Registered {
                address,
                hostname,
                endpoint,
                new,
            } => {
                write!(f, "registered {address}")?;
                if let Some(h) = hostname {
                    write!(f, " ({h})")?;
                }
                write!(f, " at {endpoint}{}", if *new { " new" } else { "" })
            }
            RendezvousEvent::Expired { address } => write!(f, "expired {address}"),
        }
    }
}

/// Registry state that changed and must be persisted, as it is now.
///
/// The driver takes these with [`Rendezvous::poll_change`] and hands them
/// back after a restart through [`Rendezvous::restore`],
/// [`Rendezvous::restore_pair`], [`Rendezvous::restore_pending`] and
/// [`Rendezvous::restore_last_request`]. Endpoints and expiry times are not
/// state worth keeping: a restored registration is offline until the agent
/// registers again. Pushes waiting for an agent's acknowledgement are not
/// kept either.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A registration was created, or its hostname or visibility changed:
    /// store it, replacing what was stored for its key.
    Record(Record),
    /// A trust pair exists: store it, replacing what was stored for the
    /// two keys.
    Pair(TrustPair),
    /// The trust pair between these two keys (in key order) is gone.
    PairRemoved(PublicKey, PublicKey),
    /// A request waits for `target`'s decision: store it, replacing what
    /// was stored for the same target and requester.
    Pending {
        /// Whom the request asks.
        target: PublicKey,
        /// The signed request.
        request: TrustRequest,
    },
    /// The request from `requester` to `target` is settled.
    PendingRemoved {
        /// Whom the request asked.
        target: PublicKey,
        /// Who asked.
        requester: PublicKey,
    },
    /// The newest request `issued_at` accepted from `requester`: older
    /// requests are replays, also after a restart.
    LastRequest {
        /// Who asked.
        requester: PublicKey,
        /// Its request's `issued_at`.
        issued_at: u64,
    },
}

/// Which piece of state changed since the driver last asked. A set of
/// keys rather than a log: each key appears once however often it
/// changed, so a driver that never asks keeps memory bounded by the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Dirty {
    Record(PublicKey),
    Pair(PublicKey, PublicKey),
    /// (target, requester)
    Pending(PublicKey, PublicKey),
    LastRequest(PublicKey),
}

/// A message pushed to an agent, kept until the agent acknowledges it.
struct Push {
    id: u32,
    bytes: Vec<u8>,
    next_send: Timestamp,
    sends: u32,
}

/// Pushes not yet acknowledged, per identity.
const MAX_MAILBOX: usize = 64;

/// Both signatures behind a trust pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustPair {
    /// The request.
    pub request: TrustRequest,
    /// Its approval.
    pub approval: TrustApproval,
}

fn pair_key(a: PublicKey, b: PublicKey) -> (PublicKey, PublicKey) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

struct Bucket {
    /// Tokens, in thousandths of a request (millionths of a trust
    /// request).
    tokens: u64,
    last: Timestamp,
}

/// The registry and beacon state machine.
pub struct Rendezvous {
    config: RendezvousConfig,
    tunnels: Tunnels,
    records: BTreeMap<PublicKey, Record>,
    by_node: BTreeMap<u32, PublicKey>,
    by_hostname: BTreeMap<Hostname, PublicKey>,
    /// The socket and address each online agent registered from: how the
    /// relay knows who sends a relay packet. The socket is part of the key
    /// because a carrier connection's TCP address may equal some other
    /// agent's UDP address.
    by_endpoint: BTreeMap<(SocketId, SocketAddr), PublicKey>,
    /// The socket each online agent's endpoint is on (absent: the primary
    /// UDP socket). An agent on [`SocketId::CARRIER`] has no UDP
    /// candidates: peers reach it through the relay only.
    sockets: BTreeMap<PublicKey, SocketId>,
    /// Each online agent's LAN endpoints, from its registration.
    lan: BTreeMap<PublicKey, Vec<SocketAddr>>,
    relay: relay::Relay,
    /// Relayed packets to send, ahead of the tunnel layer's own.
    relayed: VecDeque<Transmit>,
    /// Session key to identity, for agents that registered.
    by_session_key: BTreeMap<PeerKey, PublicKey>,
    /// Per identity, the last Register applied: when its session was
    /// created and its `req`. Older ones arriving late are stale.
    last_register: BTreeMap<PublicKey, (Timestamp, u32)>,
    expiries: BTreeSet<(Timestamp, PublicKey)>,
    buckets: BTreeMap<PeerKey, Bucket>,
    /// New trust requests each registered identity may still make.
    trust_buckets: BTreeMap<PublicKey, Bucket>,
    /// Requests waiting for the target's decision: (target, requester).
    pending_trust: BTreeMap<(PublicKey, PublicKey), TrustRequest>,
    /// The newest request `issued_at` accepted per requester.
    last_request: BTreeMap<PublicKey, u64>,
    pairs: BTreeMap<(PublicKey, PublicKey), TrustPair>,
    mailboxes: BTreeMap<PublicKey, VecDeque<Push>>,
    next_push: u32,
    next_node: u32,
    events: VecDeque<RendezvousEvent>,
    /// State changed since the driver last took the changes.
    dirty: BTreeSet<Dirty>,
    /// What each online agent reported about its NAT.
    nat_info: BTreeMap<PublicKey, crate::nat::NatInfo>,
    /// Sockets to ask the driver for.
    socket_ops: VecDeque<SocketOp>,
    /// Reflect answers in the current second: (second, count).
    reflects: (u64, u32),
    now: Timestamp,
}

impl Rendezvous {
    /// A rendezvous seeded with `seed` (all its randomness), started at `now`.
    pub fn new(config: RendezvousConfig, seed: &[u8; 32], now: Timestamp) -> Self {
        let tunnels = Tunnels::new(
            config.tunnel,
            config.identity.x25519_secret(),
            seed,
            config.wall_origin_micros,
        );
        let relay = relay::Relay::new(config.relay);
        let mut rv = Rendezvous {
            config,
            tunnels,
            records: BTreeMap::new(),
            by_node: BTreeMap::new(),
            by_hostname: BTreeMap::new(),
            by_endpoint: BTreeMap::new(),
            sockets: BTreeMap::new(),
            lan: BTreeMap::new(),
            relay,
            relayed: VecDeque::new(),
            by_session_key: BTreeMap::new(),
            last_register: BTreeMap::new(),
            expiries: BTreeSet::new(),
            buckets: BTreeMap::new(),
            trust_buckets: BTreeMap::new(),
            pending_trust: BTreeMap::new(),
            last_request: BTreeMap::new(),
            pairs: BTreeMap::new(),
            mailboxes: BTreeMap::new(),
            next_push: 1,
            next_node: Address::FIRST_ALLOCATABLE,
            events: VecDeque::new(),
            dirty: BTreeSet::new(),
            nat_info: BTreeMap::new(),
            socket_ops: VecDeque::new(),
            reflects: (0, 0),
            now,
        };
        if let Some(port) = rv.config.reflect_port {
            rv.socket_ops.push_back(SocketOp::Open {
                id: REFLECT_SOCKET,
                port: Some(port),
            });
        }
        rv
    }

    /// The public key agents pin.
    pub fn public_key(&self) -> PublicKey {
        self.config.identity.public()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        self.tunnels.stats()
    }

    /// Peers and receiver indices held by the tunnel layer.
    pub fn state_size(&self) -> (usize, usize) {
        self.tunnels.state_size()
    }

    /// What the relay forwarded and refused.
    pub fn relay_stats(&self) -> RelayStats {
        self.relay.stats
    }

    /// Relay meters held (per agent, per pair): bounded by online agents.
    pub fn relay_state_size(&self) -> (usize, usize) {
        self.relay.size()
    }

    /// Every registration, in key order (for persistence and inspection).
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// The registration holding `address`.
    pub fn record(&self, address: Address) -> Option<&Record> {
        self.by_node
            .get(&address.node())
            .and_then(|k| self.records.get(k))
    }

    /// Registrations currently online.
    pub fn online(&self) -> usize {
        self.expiries.len()
    }

    /// Restores a registration saved earlier (offline until it refreshes).
    pub fn restore(&mut self, record: Record) {
        let mut record = record;
        record.endpoint = None;
        record.expires = None;
        self.by_node.insert(record.address.node(), record.key);
        if let Some(h) = &record.hostname {
            self.by_hostname.insert(h.clone(), record.key);
        }
        self.next_node = self.next_node.max(record.address.node().saturating_add(1));
        self.records.insert(record.key, record);
    }

    fn wall_secs(&self, now: Timestamp) -> u64 {
        self.config
            .wall_origin_micros
            .saturating_add(now.as_micros())
            / 1_000_000
    }

    /// Handles one datagram that our socket `socket` received from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.now = now;
        if data.first() == Some(&wire::TYPE_REFLECT) {
            if socket.is_carrier() {
                // A TCP connection's address says nothing about UDP.
                return self.tunnels.stats_mut().drop(DropReason::Unexpected);
            }
            return self.on_reflect(now, socket, from, data);
        }
        if socket != SocketId::PRIMARY && !socket.is_carrier() {
            // The reflect port answers reflects and nothing else.
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        }
        if data.first() == Some(&wire::TYPE_RELAY) {
            return self.on_relay(now, socket, from, data);
        }
        // Anyone may open a session with the rendezvous: registering is
        // how an agent gets known at all.
        let result = self
            .tunnels
            .handle_datagram(now, socket, from, data, &mut |_, _| true);
        match result {
            Err(reason) => self.tunnels.stats_mut().drop(reason),
            Ok(None) => {}
            Ok(Some(inbound)) => {
                if !self.take_token(now, &inbound.peer) {
                    self.tunnels.stats_mut().drop(DropReason::RateLimited);
                    return;
                }
                match Message::decode(&inbound.plaintext) {
                    Ok(Message::Register(r)) => self.on_register(now, &inbound, r),
                    Ok(Message::Resolve { req, query }) => {
                        self.on_resolve(now, inbound.peer, req, query)
                    }
                    Ok(Message::TrustRequest { req, request }) => {
                        self.on_trust_request(now, inbound.peer, req, request)
                    }
                    Ok(Message::TrustApprove { req, approval }) => {
                        self.on_trust_approve(now, inbound.peer, req, approval)
                    }
                    Ok(Message::TrustReject {
                        req,
                        requester,
                        issued_at,
                        reason,
                    }) => {
                        self.on_trust_reject(now, inbound.peer, req, requester, issued_at, reason)
                    }
                    Ok(Message::TrustRevoke { req, peer }) => {
                        self.on_trust_revoke(now, inbound.peer, req, peer)
                    }
                    Ok(Message::Ack { req }) => self.on_ack(inbound.peer, req),
                    Ok(Message::Punch { peer }) => self.on_punch(now, inbound.peer, peer),
                    Ok(Message::NatInfo { req, info }) => {
                        if let Some(key) = self.by_session_key.get(&inbound.peer).copied() {
                            self.nat_info.insert(key, info);
                            self.reply(now, &inbound.peer, &Message::Ack { req });
                        } else {
                            self.tunnels.stats_mut().drop(DropReason::Unexpected);
                        }
                    }
                    Ok(Message::Bye) => self.on_bye(now, inbound.peer),
                    Ok(_) => self.tunnels.stats_mut().drop(DropReason::Unexpected),
                    Err(_) => self.tunnels.stats_mut().drop(DropReason::Malformed),
                }
            }
        }
        self.follow_agents();
    }

    /// The rendezvous never initiates, so the tunnel events it acts on are
    /// a peer forgotten after its probation, and its tunnel following an agent to a new address (an
    /// authenticated, non-replayed packet of the agent's session came from
    /// there: the agent roamed, or its NAT remapped it). The agent's
    /// registered endpoint follows too, so relay packets from the new
    /// address are accepted and relay packets to it go there, without
    /// waiting for the agent's next registration.
    fn follow_agents(&mut self) {
        while let Some(event) = self.tunnels.poll_event() {
            if let TunnelEvent::Forgotten { peer } = event {
                // A handshake that never registered: its request bucket
                // goes with its session.
                self.buckets.remove(&peer);
                continue;
            }
            let TunnelEvent::PathChanged {
                peer,
                route: Some(Route::Direct { socket, addr }),
            } = event
            else {
                continue;
            };
            let Some(key) = self.by_session_key.get(&peer).copied() else {
                continue;
            };
            let old_socket = self.socket_of(&key);
            let Some(rec) = self.records.get_mut(&key) else {
                continue;
            };
            if rec.expires.is_none() || (rec.endpoint == Some(addr) && old_socket == socket) {
                continue;
            }
            if let Some(old) = rec.endpoint.replace(addr) {
                if self.by_endpoint.get(&(old_socket, old)) == Some(&key) {
                    self.by_endpoint.remove(&(old_socket, old));
                }
            }
            self.by_endpoint.insert((socket, addr), key);
            self.set_socket(key, socket);
        }
    }

    /// Forwards a relay packet between two agents that trust each other.
    /// No reply on any refusal: the sender's tunnel retries or falls back.
    fn on_relay(&mut self, now: Timestamp, socket: SocketId, from: SocketAddr, data: &[u8]) {
        let Ok(Packet::Relay { address, inner }) = wire::decode(data) else {
            self.relay.stats.malformed += 1;
            return;
        };
        let Some(sender) = self.by_endpoint.get(&(socket, from)).copied() else {
            self.relay.stats.unknown_sender += 1;
            return;
        };
        let Some(sender_addr) = self
            .records
            .get(&sender)
            .filter(|r| r.expires.is_some())
            .map(|r| r.address)
        else {
            self.relay.stats.unknown_sender += 1;
            return;
        };
        let target = self.key_of(Address::from_bytes(address));
        let Some((target, (to_socket, to))) = target.and_then(|k| {
            let ep = self.records.get(&k)?.endpoint?;
            Some((k, (self.socket_of(&k), ep)))
        }) else {
            self.relay.stats.offline += 1;
            return;
        };
        let pair = pair_key(sender, target);
        if !self.pairs.contains_key(&pair) {
            self.relay.stats.not_paired += 1;
            return;
        }
        let out = wire::relay(sender_addr.to_bytes(), inner);
        if !self.relay.admit(now, sender, pair, out.len()) {
            return;
        }
        self.relay.stats.forwarded_packets += 1;
        self.relay.stats.forwarded_bytes += out.len() as u64;
        self.relayed.push_back(Transmit::new(to_socket, to, out));
    }

    /// An agent asks to punch through to `target`: tell both sides each
    /// other's candidates and when to start. Refusals are silent (counted):
    /// the agent asks again later, and may not learn whether a peer that
    /// does not trust it is online.
    fn on_punch(&mut self, now: Timestamp, peer: PeerKey, target: Address) {
        let requester = self.by_session_key.get(&peer).copied();
        let target = self.key_of(target);
        let (Some(a), Some(b)) = (requester, target) else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        if a == b || !self.pairs.contains_key(&pair_key(a, b)) {
            return self.tunnels.stats_mut().drop(DropReason::NotAllowed);
        }
        let (Some(ra), Some(rb)) = (self.records.get(&a), self.records.get(&b)) else {
            return;
        };
        if ra.endpoint.is_none() || rb.endpoint.is_none() {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        }
        // An agent on the carrier has no UDP path to punch: both keep
        // the relay.
        if self.socket_of(&a).is_carrier() || self.socket_of(&b).is_carrier() {
            return self.tunnels.stats_mut().drop(DropReason::NotAllowed);
        }
        let (addr_a, addr_b) = (ra.address, rb.address);
        let (Ok(xa), Ok(xb)) = (a.x25519(), b.x25519()) else {
            return;
        };
        // Each side starts when the other's message has arrived too: the
        // nearer side waits for the difference of the one-way delays
        // (half the handshake round trips), each on its own clock.
        let owd = |x: &PeerKey| {
            self.tunnels
                .peer_stats(x, now)
                .and_then(|s| s.rtt)
                .map_or(Duration::ZERO, |r| r / 2)
        };
        let (da, db) = (owd(&xa), owd(&xb));
        let delay = |mine: Duration, theirs: Duration| {
            theirs
                .saturating_sub(mine)
                .min(Duration::from_secs(2))
                .as_millis() as u16
        };
        let nat = |k: &PublicKey| self.nat_info.get(k).copied().unwrap_or_default();
        let to_a = Message::PunchGo {
            peer: addr_b,
            delay_ms: delay(da, db),
            endpoints: self.candidates(&b),
            nat: nat(&b),
        };
        let to_b = Message::PunchGo {
            peer: addr_a,
            delay_ms: delay(db, da),
            endpoints: self.candidates(&a),
            nat: nat(&a),
        };
        // Always twice: a lost PunchGo leaves its side out of the attempt
        // until the next Punch, seconds later. Behind a symmetric NAT the
        // other side then sprays alone, which cannot work; behind a port-
        // restricted one the other side's probes are filtered, since this
        // side never sends towards it (the simulator's matrix lost bob's
        // only copy and stayed on the relay for 5 s). Agents ignore the
        // second copy.
        let copies = 2;
        for _ in 0..copies {
            self.reply(now, &xa, &to_a);
            self.reply(now, &xb, &to_b);
        }
    }

    /// Answers a Reflect request with the address it came from, on the
    /// socket it came in on or, when asked and we have a reflect port, on
    /// the other one. Stateless, answerless beyond the global rate, and
    /// never larger than the request.
    fn on_reflect(&mut self, now: Timestamp, socket: SocketId, from: SocketAddr, data: &[u8]) {
        let Ok(Packet::Reflect { token, other_port }) = wire::decode(data) else {
            return self.tunnels.stats_mut().drop(DropReason::Malformed);
        };
        let second = now.as_micros() / 1_000_000;
        if self.reflects.0 != second {
            self.reflects = (second, 0);
        }
        if self.reflects.1 >= self.config.reflects_per_second {
            return self.tunnels.stats_mut().drop(DropReason::RateLimited);
        }
        self.reflects.1 += 1;
        let socket = match (other_port, self.config.reflect_port) {
            (true, Some(_)) if socket == SocketId::PRIMARY => REFLECT_SOCKET,
            (true, Some(_)) => SocketId::PRIMARY,
            _ => socket,
        };
        self.relayed
            .push_back(Transmit::new(socket, from, wire::reflected(token, from)));
    }

    /// The next change to our sockets the driver should make: the reflect
    /// port, once, if configured.
    pub fn poll_socket_op(&mut self) -> Option<SocketOp> {
        self.socket_ops.pop_front()
    }

    /// An agent's direct candidates: the UDP endpoint it registered from
    /// (none on the carrier), then its LAN endpoints, without repeats.
    fn candidates(&self, key: &PublicKey) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.udp_endpoint(key).into_iter().collect();
        for l in self.lan.get(key).into_iter().flatten() {
            if !v.contains(l) && v.len() < MAX_ENDPOINTS {
                v.push(*l);
            }
        }
        v
    }

    /// The socket an agent's endpoint is on.
    fn socket_of(&self, key: &PublicKey) -> SocketId {
        self.sockets.get(key).copied().unwrap_or(SocketId::PRIMARY)
    }

    fn set_socket(&mut self, key: PublicKey, socket: SocketId) {
        if socket == SocketId::PRIMARY {
            self.sockets.remove(&key);
        } else {
            self.sockets.insert(key, socket);
        }
    }

    /// An online agent's endpoint if a peer can send UDP to it (not one
    /// on the carrier).
    fn udp_endpoint(&self, key: &PublicKey) -> Option<SocketAddr> {
        if self.socket_of(key).is_carrier() {
            return None;
        }
        self.records.get(key)?.endpoint
    }

    /// An agent is offline: it is no longer known by its endpoint.
    fn went_offline(&mut self, key: &PublicKey, endpoint: Option<SocketAddr>) {
        let socket = self.socket_of(key);
        if let Some(ep) = endpoint {
            if self.by_endpoint.get(&(socket, ep)) == Some(key) {
                self.by_endpoint.remove(&(socket, ep));
            }
        }
        self.sockets.remove(key);
        self.lan.remove(key);
        self.nat_info.remove(key);
        self.relay.forget(key);
    }

    fn take_token(&mut self, now: Timestamp, peer: &PeerKey) -> bool {
        let rate = u64::from(self.config.requests_per_second);
        let cap = u64::from(self.config.request_burst) * 1000;
        let b = self.buckets.entry(*peer).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed_ms = now.saturating_since(b.last).as_millis() as u64;
        b.tokens = (b.tokens + elapsed_ms * rate).min(cap);
        b.last = now;
        if b.tokens < 1000 {
            return false;
        }
        b.tokens -= 1000;
        true
    }

    /// Takes one new trust request from `requester`'s allowance.
    fn take_trust_token(&mut self, now: Timestamp, requester: PublicKey) -> bool {
        // Millionths of a request; the rate is per minute.
        let cap = u64::from(self.config.trust_request_burst.max(1)) * 1_000_000;
        let per_minute = u64::from(self.config.trust_requests_per_minute);
        let b = self.trust_buckets.entry(requester).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed = now.saturating_since(b.last).as_micros() as u64;
        b.tokens = b
            .tokens
            .saturating_add(elapsed.saturating_mul(per_minute) / 60)
            .min(cap);
        b.last = now;
        if b.tokens < 1_000_000 {
            return false;
        }
        b.tokens -= 1_000_000;
        true
    }

    fn reply(&mut self, now: Timestamp, peer: &PeerKey, msg: &Message<'_>) {
        // A reply can only fail if the session vanished; the agent retries.
        let _ = self.tunnels.send(now, peer, &msg.to_vec());
    }

    fn error(
        &mut self,
        now: Timestamp,
        peer: &PeerKey,
        req: u32,
        code: ErrorCode,
        message: String,
    ) {
        self.reply(now, peer, &Message::Error { req, code, message });
    }

    fn on_register(&mut self, now: Timestamp, inbound: &Inbound, r: Register) {
        let peer = inbound.peer;
        // The rendezvous relays for nobody, so everything reaches it
        // directly.
        let Route::Direct { socket, addr: from } = inbound.from else {
            return;
        };
        if r.key.x25519().ok() != Some(peer) {
            let msg = "the identity key is not the key of this session".into();
            return self.error(now, &peer, r.req, ErrorCode::KeyMismatch, msg);
        }
        if !r.verify(&inbound.handshake_hash) {
            let msg = "registration signature does not verify".into();
            return self.error(now, &peer, r.req, ErrorCode::BadSignature, msg);
        }
        // Every Register carries the agent's whole state, so one that was
        // overtaken (a retransmission delayed past a hostname change, say)
        // would undo a newer one: apply them in the order they were sent.
        // An agent's `req` only grows within a run, and a new run (or a
        // rekey) starts a newer session.
        let order = (inbound.session_created, r.req);
        if self
            .last_register
            .get(&r.key)
            .is_some_and(|last| order <= *last)
        {
            return self.tunnels.stats_mut().drop(DropReason::Replay);
        }
        if let Some(h) = &r.hostname {
            if self.by_hostname.get(h).is_some_and(|owner| *owner != r.key) {
                let msg = format!("hostname `{h}` belongs to another identity");
                return self.error(now, &peer, r.req, ErrorCode::HostnameTaken, msg);
            }
        }
        let new = !self.records.contains_key(&r.key);
        if new {
            if self.records.len() >= self.config.max_registrations {
                let msg = "the registry is full".into();
                return self.error(now, &peer, r.req, ErrorCode::Full, msg);
            }
            let Some(node) = self.allocate_node() else {
                let msg = "no node IDs left in this network".into();
                return self.error(now, &peer, r.req, ErrorCode::Full, msg);
            };
            self.by_node.insert(node, r.key);
            self.records.insert(
                r.key,
                Record {
                    address: Address::new(self.config.network, node),
                    key: r.key,
                    hostname: None,
                    public: false,
                    endpoint: None,
                    expires: None,
                },
            );
        }
        let expires = now + self.config.registration_ttl;
        let Some(rec) = self.records.get_mut(&r.key) else {
            return;
        };
        let persist = new || rec.hostname != r.hostname || rec.public != r.public;
        let old_socket = self
            .sockets
            .get(&r.key)
            .copied()
            .unwrap_or(SocketId::PRIMARY);
        let changed = persist || rec.endpoint != Some(from) || old_socket != socket;
        if let Some(old) = rec.hostname.take() {
            self.by_hostname.remove(&old);
        }
        if let Some(h) = &r.hostname {
            self.by_hostname.insert(h.clone(), r.key);
        }
        rec.hostname = r.hostname.clone();
        rec.public = r.public;
        if let Some(old) = rec.endpoint.replace(from) {
            let old = (old_socket, old);
            if old != (socket, from) && self.by_endpoint.get(&old) == Some(&r.key) {
                self.by_endpoint.remove(&old);
            }
        }
        self.by_endpoint.insert((socket, from), r.key);
        if socket == SocketId::PRIMARY {
            self.sockets.remove(&r.key);
        } else {
            self.sockets.insert(r.key, socket);
        }
        if r.lan.is_empty() {
            self.lan.remove(&r.key);
        } else {
            self.lan.insert(r.key, r.lan.clone());
        }
        if let Some(old) = rec.expires.replace(expires) {
            self.expiries.remove(&(old, r.key));
        }
        self.expiries.insert((expires, r.key));
        let address = rec.address;
        if persist {
            self.dirty.insert(Dirty::Record(r.key));
        }
        self.by_session_key.insert(peer, r.key);
        // Registered: the session is worth keeping (until the
        // registration expires or the agent says bye).
        self.tunnels.keep(&peer);
        self.last_register.insert(r.key, order);
        let not_after = self.wall_secs(now) + self.config.cert_lifetime.as_secs();
        let cert = Certificate::issue(&self.config.identity, address, r.key, not_after);
        let answer = Message::Registered(Registered {
            req: r.req,
            address,
            observed: from,
            refresh_secs: self.config.refresh_interval.as_secs().min(u16::MAX as u64) as u16,
            ttl_secs: self.config.registration_ttl.as_secs().min(u16::MAX as u64) as u16,
            cert,
        });
        self.reply(now, &peer, &answer);
        // With every Registered (so a lost copy costs one refresh at most):
        // where to send reflects, so agents classify their NAT without
        // being told. Older agents drop the unknown kind.
        if let Some(port) = self.config.reflect_port.filter(|p| *p != 0) {
            self.reply(now, &peer, &Message::ReflectPort { port });
        }
        // Whatever waited for this agent goes out now, on this session.
        self.flush_mailbox(now, r.key, true);
        if changed {
            self.events.push_back(RendezvousEvent::Registered {
                address,
                hostname: r.hostname,
                endpoint: from,
                new,
            });
        }
    }

    fn allocate_node(&mut self) -> Option<u32> {
        let start = self.next_node;
        loop {
            let candidate = self.next_node;
            self.next_node = match self.next_node.checked_add(1) {
                Some(n) if n < Address::BROADCAST_NODE => n,
                _ => Address::FIRST_ALLOCATABLE,
            };
            if !self.by_node.contains_key(&candidate) {
                return Some(candidate);
            }
            if self.next_node == start {
                return None;
            }
        }
    }

    fn on_resolve(&mut self, now: Timestamp, peer: PeerKey, req: u32, query: Query) {
        let Some(requester) = self.by_session_key.get(&peer).copied() else {
            let msg = "register before resolving".into();
            return self.error(now, &peer, req, ErrorCode::NotRegistered, msg);
        };
        let key = match &query {
            Query::Address(a) if a.network() == self.config.network => self.by_node.get(&a.node()),
            Query::Address(_) => None,
            Query::Hostname(h) => self.by_hostname.get(h),
        };
        let rec = key
            .filter(|k| self.visible_to(k, requester))
            .and_then(|k| self.records.get(k));
        let Some(rec) = rec else {
            let msg = format!("no public node `{query}`");
            return self.error(now, &peer, req, ErrorCode::NotFound, msg);
        };
        let answer = Message::Resolved(Resolved {
            req,
            address: rec.address,
            key: rec.key,
            public: rec.public,
            online: rec.expires.is_some(),
            hostname: rec.hostname.clone(),
            endpoints: if rec.endpoint.is_some() {
                self.candidates(&rec.key)
            } else {
                Vec::new()
            },
        });
        self.reply(now, &peer, &answer);
    }

    /// True if `a` and `b` trust each other (both signatures on record).
    pub fn is_pair(&self, a: PublicKey, b: PublicKey) -> bool {
        self.pairs.contains_key(&pair_key(a, b))
    }

    /// Every trust pair (for persistence and inspection).
    pub fn pairs(&self) -> impl Iterator<Item = &TrustPair> {
        self.pairs.values()
    }

    /// Restores a trust pair saved earlier, after checking both signatures.
    pub fn restore_pair(&mut self, pair: TrustPair) -> bool {
        if !(pair.request.verify()
            && pair.approval.verify()
            && pair.approval.approves(&pair.request))
        {
            return false;
        }
        let key = pair_key(pair.request.from_key, pair.approval.approver_key);
        self.pairs.insert(key, pair);
        true
    }

    /// Restores a request that waited for `target`'s decision, after
    /// checking the requester's signature. Its push to the target is not
    /// repeated (the target keeps the requests it received); the target
    /// can approve or reject it after the restart as before.
    pub fn restore_pending(&mut self, target: PublicKey, request: TrustRequest) -> bool {
        if !request.verify() || request.from_key == target {
            return false;
        }
        self.pending_trust
            .insert((target, request.from_key), request);
        true
    }

    /// Restores the newest request `issued_at` accepted from `requester`,
    /// so that replays stay refused across a restart.
    pub fn restore_last_request(&mut self, requester: PublicKey, issued_at: u64) {
        let last = self.last_request.entry(requester).or_insert(0);
        *last = (*last).max(issued_at);
    }

    /// Requests waiting for a decision, as (target, request), for
    /// persistence and inspection.
    pub fn pending_requests(&self) -> impl Iterator<Item = (PublicKey, &TrustRequest)> {
        self.pending_trust.iter().map(|((t, _), r)| (*t, r))
    }

    /// The newest request `issued_at` accepted per requester.
    pub fn last_requests(&self) -> impl Iterator<Item = (PublicKey, u64)> + '_ {
        self.last_request.iter().map(|(k, v)| (*k, *v))
    }

    /// The next piece of state that changed since the last call, as it is
    /// now, for the driver to persist.
    ///
    /// Not part of the drain rule and not a reason to wake: changes are
    /// remembered per key (however often a key changed, it is reported
    /// once, with its latest state) until the driver takes them, so a
    /// driver can take them once per loop turn and write them in one
    /// transaction, and one that persists nothing may ignore them.
    pub fn poll_change(&mut self) -> Option<Change> {
        while let Some(dirty) = self.dirty.pop_first() {
            let change = match dirty {
                Dirty::Record(key) => match self.records.get(&key) {
                    Some(rec) => Change::Record(rec.clone()),
                    // Records are never removed.
                    None => continue,
                },
                Dirty::Pair(a, b) => match self.pairs.get(&(a, b)) {
                    Some(pair) => Change::Pair(pair.clone()),
                    None => Change::PairRemoved(a, b),
                },
                Dirty::Pending(target, requester) => {
                    match self.pending_trust.get(&(target, requester)) {
                        Some(request) => Change::Pending {
                            target,
                            request: request.clone(),
                        },
                        None => Change::PendingRemoved { target, requester },
                    }
                }
                Dirty::LastRequest(requester) => match self.last_request.get(&requester) {
                    Some(&issued_at) => Change::LastRequest {
                        requester,
                        issued_at,
                    },
                    None => continue,
                },
            };
            return Some(change);
        }
        None
    }

    fn key_of(&self, address: Address) -> Option<PublicKey> {
        if address.network() != self.config.network {
            return None;
        }
        self.by_node.get(&address.node()).copied()
    }

    /// Whether `requester` may see the node holding `key` when it names
    /// it by hostname or looks it up: a public node, itself, or a node it
    /// is paired with. A private node is indistinguishable from a missing
    /// one, so hostnames cannot be used to enumerate private agents.
    fn visible_to(&self, key: &PublicKey, requester: PublicKey) -> bool {
        self.records.get(key).is_some_and(|r| {
            r.public || r.key == requester || self.pairs.contains_key(&pair_key(r.key, requester))
        })
    }

    fn hostname_of(&self, key: &PublicKey) -> Option<Hostname> {
        self.records.get(key).and_then(|r| r.hostname.clone())
    }

    /// The registered identity behind a session, or an error sent back.
    fn requester(
        &mut self,
        now: Timestamp,
        peer: &PeerKey,
        req: u32,
    ) -> Option<(PublicKey, Address)> {
        let found = self
            .by_session_key
            .get(peer)
            .and_then(|k| self.records.get(k))
            .map(|r| (r.key, r.address));
        if found.is_none() {
            self.error(
                now,
                peer,
                req,
                ErrorCode::NotRegistered,
                "register first".into(),
            );
        }
        found
    }

    /// Queues `msg` (built with the push ID) for `to` and sends it if the
    /// agent is connected. Pushes are retried until acknowledged.
    fn push(&mut self, now: Timestamp, to: PublicKey, msg: impl FnOnce(u32) -> Message<'static>) {
        let id = self.next_push;
        self.next_push = self.next_push.wrapping_add(1).max(1);
        let bytes = msg(id).to_vec();
        let mailbox = self.mailboxes.entry(to).or_default();
        if mailbox.len() >= MAX_MAILBOX {
            mailbox.pop_front();
        }
        mailbox.push_back(Push {
            id,
            bytes,
            next_send: now,
            sends: 0,
        });
        self.flush_mailbox(now, to, false);
    }

    /// Sends the pushes for `to` that are due (all of them if `all`).
    fn flush_mailbox(&mut self, now: Timestamp, to: PublicKey, all: bool) {
        let Ok(x) = to.x25519() else {
            return;
        };
        if !self.tunnels.has_session(&x, now) {
            return;
        }
        let Some(mailbox) = self.mailboxes.get_mut(&to) else {
            return;
        };
        let mut due = Vec::new();
        for p in mailbox.iter_mut() {
            if all || p.next_send <= now {
                due.push(p.bytes.clone());
                // 1, 2, 4, 8 s; then only at the agent's next refresh.
                p.sends += 1;
                p.next_send = if p.sends > 4 {
                    Timestamp::MAX
                } else {
                    now + Duration::from_secs(1 << (p.sends - 1))
                };
            }
        }
        for bytes in due {
            let _ = self.tunnels.send(now, &x, &bytes);
        }
    }

    /// An agent shutting down: offline at once, its session forgotten.
    fn on_bye(&mut self, now: Timestamp, peer: PeerKey) {
        self.now = now;
        if let Some(key) = self.by_session_key.remove(&peer) {
            self.last_register.remove(&key);
            if let Some(rec) = self.records.get_mut(&key) {
                if let Some(at) = rec.expires.take() {
                    self.expiries.remove(&(at, key));
                }
                let endpoint = rec.endpoint.take();
                self.events.push_back(RendezvousEvent::Expired {
                    address: rec.address,
                });
                self.went_offline(&key, endpoint);
            }
        }
        self.tunnels.remove_peer(&peer);
        self.buckets.remove(&peer);
    }

    fn on_ack(&mut self, peer: PeerKey, id: u32) {
        let Some(key) = self.by_session_key.get(&peer).copied() else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        if let Some(mailbox) = self.mailboxes.get_mut(&key) {
            mailbox.retain(|p| p.id != id);
            if mailbox.is_empty() {
                self.mailboxes.remove(&key);
            }
        }
    }

    fn on_trust_request(&mut self, now: Timestamp, peer: PeerKey, req: u32, request: TrustRequest) {
        let Some((requester, address)) = self.requester(now, &peer, req) else {
            return;
        };
        if request.from_key != requester || request.from != address || !request.verify() {
            let msg = "the request is not signed by this agent's identity".into();
            return self.error(now, &peer, req, ErrorCode::BadSignature, msg);
        }
        let target = match &request.to {
            Query::Address(a) => self.key_of(*a),
            // By hostname a private node is as missing as in a lookup (no
            // oracle for private names, no requests to them); by address,
            // which the requester learnt some other way, it is reached.
            Query::Hostname(h) => self
                .by_hostname
                .get(h)
                .copied()
                .filter(|k| self.visible_to(k, requester)),
        };
        let Some(target) = target.filter(|t| *t != requester) else {
            let msg = format!("no node `{}`", request.to);
            return self.error(now, &peer, req, ErrorCode::NotFound, msg);
        };
        let last = self.last_request.get(&requester).copied().unwrap_or(0);
        if request.issued_at <= last {
            // A retransmission of the request already pending is answered
            // again; anything else older is a replay.
            if self.pending_trust.get(&(target, requester)) == Some(&request) {
                return self.reply(now, &peer, &Message::Ack { req });
            }
            let msg = "replayed trust request".into();
            return self.error(now, &peer, req, ErrorCode::BadRequest, msg);
        }
        // Each target holds a bounded number of undecided requests, and
        // each requester makes new ones slowly: throwaway identities can
        // neither fill an agent's pending list nor this registry.
        let lo = (target, PublicKey([0; 32]));
        let hi = (target, PublicKey([0xff; 32]));
        let waiting = self
            .pending_trust
            .range(lo..=hi)
            .take(self.config.max_pending_per_target)
            .count();
        if waiting >= self.config.max_pending_per_target {
            self.tunnels.stats_mut().trust_requests_dropped += 1;
            let msg = "too many trust requests wait for this node; try later".into();
            return self.error(now, &peer, req, ErrorCode::RateLimited, msg);
        }
        if !self.take_trust_token(now, requester) {
            self.tunnels.stats_mut().trust_requests_limited += 1;
            let msg = "too many trust requests; slow down".into();
            return self.error(now, &peer, req, ErrorCode::RateLimited, msg);
        }
        self.last_request.insert(requester, request.issued_at);
        self.dirty.insert(Dirty::LastRequest(requester));
        self.pending_trust
            .insert((target, requester), request.clone());
        self.dirty.insert(Dirty::Pending(target, requester));
        let hostname = self.hostname_of(&requester);
        self.push(now, target, |id| Message::TrustRequested {
            id,
            request,
            hostname,
        });
        self.reply(now, &peer, &Message::Ack { req });
    }

    fn on_trust_approve(
        &mut self,
        now: Timestamp,
        peer: PeerKey,
        req: u32,
        approval: TrustApproval,
    ) {
        let Some((approver, address)) = self.requester(now, &peer, req) else {
            return;
        };
        if approval.approver_key != approver || approval.approver != address || !approval.verify() {
            let msg = "the approval is not signed by this agent's identity".into();
            return self.error(now, &peer, req, ErrorCode::BadSignature, msg);
        }
        let requester = approval.requester_key;
        let pair = pair_key(approver, requester);
        if self
            .pairs
            .get(&pair)
            .is_some_and(|p| p.approval == approval)
        {
            return self.reply(now, &peer, &Message::Ack { req });
        }
        let pending = self.pending_trust.get(&(approver, requester));
        let Some(request) = pending.filter(|r| approval.approves(r)).cloned() else {
            let msg = "no such pending request".into();
            return self.error(now, &peer, req, ErrorCode::NotFound, msg);
        };
        self.pending_trust.remove(&(approver, requester));
        self.dirty.insert(Dirty::Pending(approver, requester));
        // A request the other way is settled by this pair too.
        if self.pending_trust.remove(&(requester, approver)).is_some() {
            self.dirty.insert(Dirty::Pending(requester, approver));
        }
        self.dirty.insert(Dirty::Pair(pair.0, pair.1));
        self.pairs.insert(
            pair,
            TrustPair {
                request,
                approval: approval.clone(),
            },
        );
        let hostname = self.hostname_of(&approver);
        let endpoint = self.udp_endpoint(&approver);
        self.push(now, requester, |id| Message::TrustApproved {
            id,
            approval,
            hostname,
            endpoint,
        });
        self.reply(now, &peer, &Message::Ack { req });
    }

    fn on_trust_reject(
        &mut self,
        now: Timestamp,
        peer: PeerKey,
        req: u32,
        requester: Address,
        issued_at: u64,
        reason: String,
    ) {
        let Some((rejecter, address)) = self.requester(now, &peer, req) else {
            return;
        };
        let Some(requester_key) = self.key_of(requester) else {
            return self.reply(now, &peer, &Message::Ack { req });
        };
        let matches = self
            .pending_trust
            .get(&(rejecter, requester_key))
            .is_some_and(|r| r.issued_at == issued_at);
        if matches {
            self.pending_trust.remove(&(rejecter, requester_key));
            self.dirty.insert(Dirty::Pending(rejecter, requester_key));
            self.push(now, requester_key, |id| Message::TrustRejected {
                id,
                rejecter: address,
                issued_at,
                reason,
            });
        }
        // Rejecting twice (a retransmission) is not an error.
        self.reply(now, &peer, &Message::Ack { req });
    }

    fn on_trust_revoke(&mut self, now: Timestamp, peer: PeerKey, req: u32, other: Address) {
        let Some((revoker, address)) = self.requester(now, &peer, req) else {
            return;
        };
        if let Some(other_key) = self.key_of(other) {
            let pair = pair_key(revoker, other_key);
            if self.pending_trust.remove(&(revoker, other_key)).is_some() {
                self.dirty.insert(Dirty::Pending(revoker, other_key));
            }
            if self.pending_trust.remove(&(other_key, revoker)).is_some() {
                self.dirty.insert(Dirty::Pending(other_key, revoker));
            }
            if self.pairs.remove(&pair).is_some() {
                self.dirty.insert(Dirty::Pair(pair.0, pair.1));
                self.push(now, other_key, |id| Message::TrustRevoked {
                    id,
                    peer: address,
                });
            }
        }
        self.reply(now, &peer, &Message::Ack { req });
    }

    /// Runs due timers: registration expiry and the tunnel layer's.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = now;
        self.tunnels.handle_timeout(now);
        let due: Vec<PublicKey> = self
            .mailboxes
            .iter()
            .filter(|(_, m)| m.iter().any(|p| p.next_send <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.flush_mailbox(now, key, false);
        }
        while let Some(&(at, key)) = self.expiries.first() {
            if at > now {
                break;
            }
            self.expiries.remove(&(at, key));
            if let Some(rec) = self.records.get_mut(&key) {
                rec.expires = None;
                let endpoint = rec.endpoint.take();
                self.events.push_back(RendezvousEvent::Expired {
                    address: rec.address,
                });
                self.went_offline(&key, endpoint);
            }
            // A silent agent's session state goes too: it comes back with
            // a new handshake, and 10 000 vanished agents cost nothing.
            if let Ok(x) = key.x25519() {
                self.tunnels.remove_peer(&x);
                self.by_session_key.remove(&x);
                self.buckets.remove(&x);
            }
            self.trust_buckets.remove(&key);
            self.last_register.remove(&key);
        }
        self.follow_agents();
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.relayed
            .pop_front()
            .or_else(|| self.tunnels.poll_transmit())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<RendezvousEvent> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` next, and why.
    pub fn poll_timeout(&self) -> Option<(Timestamp, Timer)> {
        if self.tunnels.has_output()
            || !self.events.is_empty()
            || !self.relayed.is_empty()
            || !self.socket_ops.is_empty()
        {
            return Some((self.now, Timer::Output));
        }
        let expiry = self.expiries.first().map(|(t, _)| (*t, Timer::Expiry));
        let mut next = earliest(self.tunnels.poll_timeout(), expiry);
        for (key, mailbox) in &self.mailboxes {
            // Pushes wait for a session; without one, the next
            // registration sends them.
            let connected = key
                .x25519()
                .is_ok_and(|x| self.tunnels.has_session(&x, self.now));
            if let Some(at) = mailbox
                .iter()
                .map(|p| p.next_send)
                .min()
                .filter(|_| connected)
            {
                next = earliest(next, Some((at, Timer::Push)));
            }
        }
        next
    }
}
