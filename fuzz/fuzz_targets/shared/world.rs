//! A small world in which fuzz input drives a whole `Node` or `Rendezvous`.
//!
//! Shared, through `#[path]`, by the `node_datagram` and
//! `rendezvous_datagram` fuzz targets and by
//! `pilot-proto/tests/fuzz_corpus.rs`, so a corpus file means the same
//! thing to libFuzzer and to `cargo test`.
//!
//! Random bytes alone stop at the first MAC or AEAD tag, so the machine
//! under test (the SUT) lives among honest peers, each a real
//! `tunnel::Tunnels` with a fixed identity: for a node, a stand-in
//! rendezvous that answers registrations and lookups, and an agent `bob`
//! holding a certificate from it; for a rendezvous, two agents. The input is
//! a program: it makes peers send chosen plaintexts over authenticated
//! sessions, injects raw datagrams, replays and mutates packets seen on the
//! wire, moves time and issues commands. Everything is deterministic.
//!
//! Input format (all fields optional: a missing byte reads as 0, a missing
//! op ends the program):
//!
//! ```text
//! flags u8            bit 0: the stand-in rendezvous answers Register,
//!                     bit 1: it answers Resolve (node target only)
//! then ops, each one byte, op % 8:
//!   0 raw       src u8, len u16le, bytes      datagram to the SUT
//!   1 mutate    pick u8, edit u8, at u16le, val u8, src u8
//!                                             a logged packet, edited, to the SUT
//!   2 replay    pick u8, src u8               a logged packet, as is, to the SUT
//!   3 wait      t u8                          advance time, run every timer
//!   4 deadline                                jump to the next deadline, run timers
//!   5 plaintext peer u8, len u16le, bytes     a peer seals bytes to the SUT
//!   6 message   peer u8, kind u8, fields...   a peer sends a well-formed message
//!   7 command   kind u8, fields...            a command to the SUT
//! ```
//!
//! Message kinds (kind % 6). To a node, from the stand-in rendezvous
//! (peer 0): 0 Registered, 1 Resolved, 2 Error, each answering its last
//! request or the next one; from bob (peer 1): 0 to 2 an overlay datagram.
//! To a rendezvous, from either agent: 0 Register signed for the session
//! (opened first if need be), 1 the same signed by the other agent,
//! 2 Resolve, 3 Error (which only a rendezvous sends), 4 Data. Any other
//! kind: the peer (re)opens its session. Commands: to a node (kind % 5)
//! bind, unbind, resolve, send_datagram, handle_timeout; to a rendezvous
//! (kind % 2) handle_timeout, restore a record.
//!
//! After each op every queued datagram is delivered (SUT to peers and back)
//! until the world is quiet; at the end the SUT's timers run once more.
//! Checked throughout: nothing panics; delivery settles at a fixed instant
//! (no endless ping-pong); after draining, `poll_timeout` never reports
//! queued output; after `handle_timeout(now)` it never stays due at or
//! before `now` (a driver sleeping until it would spin).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use pilot_proto::addr::{Address, Hostname, SocketAddress};
use pilot_proto::io::{Timer, Transmit};
use pilot_proto::msg::{Certificate, ErrorCode, Message, Query, Register, Registered, Resolved};
use pilot_proto::node::{Node, NodeConfig};
use pilot_proto::rendezvous::{Record, Rendezvous, RendezvousConfig};
use pilot_proto::tunnel::{PeerKey, TunnelConfig, Tunnels};
use pilot_proto::wire::describe;
use pilot_proto::{overlay, Identity, PublicKey, SocketId, Timestamp};

/// Wall clock at `Timestamp::ZERO`, microseconds.
pub const WALL: u64 = 1_800_000_000_000_000;
/// Where the rendezvous listens.
pub const RV: &str = "192.0.2.1:9000";
/// The node under test, or the first agent of a rendezvous under test.
pub const ALICE: &str = "198.51.100.1:4000";
/// An agent.
pub const BOB: &str = "203.0.113.1:4000";
/// Raw datagrams come from one of these.
pub const SOURCES: [&str; 6] = [
    RV,
    ALICE,
    BOB,
    "203.0.113.1:4001",
    "198.18.0.9:53",
    "[2001:db8::66]:6666",
];
/// The address the stand-in rendezvous gives the node.
pub const ALICE_ADDR: Address = Address::new(0, 0x10);
/// Bob's address, in his certificate.
pub const BOB_ADDR: Address = Address::new(0, 0x11);
/// Ops per input; more are ignored, so a run stays short.
pub const MAX_OPS: usize = 64;
/// Delivery rounds at one instant before the world counts as looping.
const MAX_ROUNDS: usize = 64;
/// Packets kept for replay and mutation.
const LOG: usize = 64;

/// With `PILOT_WORLD_TRACE` set, prints what happens (to debug a crash:
/// `PILOT_WORLD_TRACE=1 cargo +nightly fuzz run node_datagram crash-...`).
fn trace(now: Timestamp, what: &str) {
    static ON: OnceLock<bool> = OnceLock::new();
    if *ON.get_or_init(|| std::env::var_os("PILOT_WORLD_TRACE").is_some()) {
        eprintln!("{now} {what}");
    }
}

pub fn ep(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

struct Ids {
    rv: Identity,
    alice: Identity,
    bob: Identity,
    bob_cert: Vec<u8>,
}

/// Identities are slow to derive; every run uses the same ones.
fn ids() -> &'static Ids {
    static IDS: OnceLock<Ids> = OnceLock::new();
    IDS.get_or_init(|| {
        let rv = Identity::from_seed(&[1; 32]);
        let alice = Identity::from_seed(&[2; 32]);
        let bob = Identity::from_seed(&[3; 32]);
        let not_after = WALL / 1_000_000 + 3600;
        let mut bob_cert = Vec::new();
        Certificate::issue(&rv, BOB_ADDR, bob.public(), not_after).encode(&mut bob_cert);
        Ids {
            rv,
            alice,
            bob,
            bob_cert,
        }
    })
}

fn x25519(key: &PublicKey) -> PeerKey {
    key.x25519().expect("test keys are valid points")
}

/// Reads the program; past its end every field reads as zero.
pub struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Cursor(data)
    }
    fn op(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u8(&mut self) -> u8 {
        self.op().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16()).min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head
    }
}

/// What an honest peer does with what it receives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Answers the node's registrations and lookups (per the flags).
    StandInRendezvous,
    /// An agent; remembers the address it was given.
    Agent,
}

struct Peer {
    role: Role,
    addr: SocketAddr,
    identity: Identity,
    tunnels: Tunnels,
    /// The last request ID it received (stand-in rendezvous).
    last_req: u32,
    /// The address a rendezvous under test gave it.
    address: Option<Address>,
}

impl Peer {
    fn new(
        role: Role,
        addr: &str,
        identity: &Identity,
        seed: u8,
        sut: (PeerKey, SocketAddr),
    ) -> Self {
        let mut tunnels = Tunnels::new(
            TunnelConfig::default(),
            identity.x25519_secret(),
            &[seed; 32],
            WALL,
        );
        tunnels.set_endpoint(sut.0, sut.1);
        Peer {
            role,
            addr: ep(addr),
            identity: identity.clone(),
            tunnels,
            last_req: 0,
            address: None,
        }
    }
}

enum Sut {
    Node(Box<Node>),
    Rv(Box<Rendezvous>),
}

impl Sut {
    fn handle_datagram(&mut self, now: Timestamp, socket: SocketId, from: SocketAddr, data: &[u8]) {
        match self {
            Sut::Node(n) => n.handle_datagram(now, socket, from, data),
            Sut::Rv(r) => r.handle_datagram(now, socket, from, data),
        }
    }
    fn handle_timeout(&mut self, now: Timestamp) {
        match self {
            Sut::Node(n) => n.handle_timeout(now),
            Sut::Rv(r) => r.handle_timeout(now),
        }
    }
    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Sut::Node(n) => n.poll_transmit(),
            Sut::Rv(r) => r.poll_transmit(),
        }
    }
    /// Drains events, rendering each (Display must not panic either), and
    /// socket requests (taken as done, as a driver would: what is sent
    /// from an extra socket is delivered like the rest).
    fn drain_events(&mut self, now: Timestamp) {
        let ops = match self {
            Sut::Node(n) => core::iter::from_fn(|| n.poll_socket_op()).count(),
            Sut::Rv(r) => core::iter::from_fn(|| r.poll_socket_op()).count(),
        };
        if ops > 0 {
            trace(now, &format!("{ops} socket ops"));
        }
        let text = match self {
            Sut::Node(n) => core::iter::from_fn(|| n.poll_event())
                .map(|e| e.to_string())
                .collect::<Vec<_>>(),
            Sut::Rv(r) => core::iter::from_fn(|| r.poll_event())
                .map(|e| e.to_string())
                .collect(),
        };
        for e in text {
            trace(now, &e);
        }
    }
    fn poll_timeout(&self) -> Option<(Timestamp, Timer)> {
        match self {
            Sut::Node(n) => n.poll_timeout(),
            Sut::Rv(r) => r.poll_timeout(),
        }
    }
}

/// The SUT, its peers, the clock and the packets seen so far.
pub struct World {
    sut: Sut,
    sut_addr: SocketAddr,
    sut_key: PeerKey,
    peers: Vec<Peer>,
    now: Timestamp,
    log: Vec<Vec<u8>>,
    logged: usize,
    answer_register: bool,
    answer_resolve: bool,
}

/// Runs `data` against a `Node`; returns the last datagrams seen on the
/// wire (seeds for mutation).
pub fn run_node(data: &[u8]) -> Vec<Vec<u8>> {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let mut w = World::node(flags);
    w.run(&mut c);
    w.log
}

/// Runs `data` against a `Rendezvous`; returns the last datagrams seen on
/// the wire (seeds for mutation).
pub fn run_rendezvous(data: &[u8]) -> Vec<Vec<u8>> {
    let mut c = Cursor::new(data);
    let flags = c.u8();
    let mut w = World::rendezvous(flags);
    w.run(&mut c);
    w.log
}

fn pick_hostname(b: u8) -> Option<Hostname> {
    match b % 5 {
        0 => None,
        1 => Hostname::new("alice").ok(),
        2 => Hostname::new("bob").ok(),
        3 => Hostname::new(&"x".repeat(Hostname::MAX_LEN)).ok(),
        _ => Hostname::new("carol-7").ok(),
    }
}

fn pick_address(b: u8) -> Address {
    match b % 6 {
        0 => ALICE_ADDR,
        1 => BOB_ADDR,
        2 => Address::new(0, 0x12),
        3 => Address::new(7, 0x11),
        4 => Address::new(0, Address::BROADCAST_NODE),
        _ => Address::UNSPECIFIED,
    }
}

fn pick_query(b: u8) -> Query {
    match b % 3 {
        0 => Query::Address(pick_address(b / 3)),
        _ => match pick_hostname(b / 3) {
            Some(h) => Query::Hostname(h),
            None => Query::Hostname(Hostname::new("bob").expect("valid")),
        },
    }
}

fn pick_port(b: u8) -> u16 {
    match b % 4 {
        0 => 7,
        1 => 5000,
        2 => 6000,
        _ => u16::from(b),
    }
}

fn pick_source(b: u8) -> SocketAddr {
    ep(SOURCES[usize::from(b) % SOURCES.len()])
}

impl World {
    fn node(flags: u8) -> Self {
        let ids = ids();
        let alice_key = x25519(&ids.alice.public());
        let mut cfg = NodeConfig::new(ids.alice.clone(), ids.rv.public(), ep(RV));
        cfg.hostname = Hostname::new("alice").ok();
        cfg.public = true;
        cfg.wall_origin_micros = WALL;
        // Alice trusts bob, so bob's sessions and datagrams reach the data
        // path (untrusted peers stop at the handshake).
        cfg.trust = pilot_proto::trust::TrustState {
            trusted: vec![pilot_proto::trust::Trusted {
                address: BOB_ADDR,
                key: ids.bob.public(),
                hostname: Hostname::new("bob").ok(),
                since: 0,
            }],
            ..Default::default()
        };
        let node = Node::new(cfg, &[12; 32], Timestamp::ZERO);
        let sut = (alice_key, ep(ALICE));
        let rv = Peer::new(Role::StandInRendezvous, RV, &ids.rv, 11, sut);
        let mut bob = Peer::new(Role::Agent, BOB, &ids.bob, 13, sut);
        bob.tunnels.set_local_payload(ids.bob_cert.clone());
        World {
            sut: Sut::Node(Box::new(node)),
            sut_addr: ep(ALICE),
            sut_key: alice_key,
            peers: vec![rv, bob],
            now: Timestamp::ZERO,
            log: Vec::new(),
            logged: 0,
            answer_register: flags & 1 != 0,
            answer_resolve: flags & 2 != 0,
        }
    }

    fn rendezvous(flags: u8) -> Self {
        let ids = ids();
        let rv_key = x25519(&ids.rv.public());
        let mut cfg = RendezvousConfig::new(ids.rv.clone());
        cfg.wall_origin_micros = WALL;
        let rv = Rendezvous::new(cfg, &[11; 32], Timestamp::ZERO);
        let sut = (rv_key, ep(RV));
        let alice = Peer::new(Role::Agent, ALICE, &ids.alice, 12, sut);
        let bob = Peer::new(Role::Agent, BOB, &ids.bob, 13, sut);
        World {
            sut: Sut::Rv(Box::new(rv)),
            sut_addr: ep(RV),
            sut_key: rv_key,
            peers: vec![alice, bob],
            now: Timestamp::ZERO,
            log: Vec::new(),
            logged: 0,
            answer_register: flags & 1 != 0,
            answer_resolve: flags & 2 != 0,
        }
    }

    fn run(&mut self, c: &mut Cursor<'_>) {
        for _ in 0..MAX_OPS {
            let Some(op) = c.op() else { break };
            trace(self.now, &format!("op {}", op % 8));
            match op % 8 {
                0 => {
                    let from = pick_source(c.u8());
                    let bytes = c.bytes();
                    self.sut
                        .handle_datagram(self.now, SocketId::PRIMARY, from, bytes);
                }
                1 => self.mutate(c),
                2 => {
                    let pick = usize::from(c.u8());
                    let from = pick_source(c.u8());
                    if !self.log.is_empty() {
                        let packet = self.log[pick % self.log.len()].clone();
                        self.sut
                            .handle_datagram(self.now, SocketId::PRIMARY, from, &packet);
                    }
                }
                3 => {
                    let t = c.u8();
                    let unit = match t >> 6 {
                        0 => Duration::from_millis(1),
                        1 => Duration::from_millis(100),
                        2 => Duration::from_secs(1),
                        _ => Duration::from_secs(10),
                    };
                    self.now = self.now + unit * u32::from(t & 63);
                    self.timers();
                }
                4 => {
                    let next = self
                        .peers
                        .iter()
                        .filter_map(|p| p.tunnels.poll_timeout())
                        .chain(self.sut.poll_timeout())
                        .map(|(t, _)| t)
                        .min();
                    if let Some(t) = next {
                        self.now = self.now.max(t);
                    }
                    self.timers();
                }
                5 => {
                    let peer = usize::from(c.u8()) % self.peers.len();
                    let bytes = c.bytes();
                    let (now, key) = (self.now, self.sut_key);
                    let _ = self.peers[peer].tunnels.send(now, &key, bytes);
                }
                6 => self.message(c),
                _ => self.command(c),
            }
            self.pump();
        }
        // Whatever the input left behind, the timers must cope with it.
        self.timers();
    }

    fn mutate(&mut self, c: &mut Cursor<'_>) {
        let pick = usize::from(c.u8());
        let edit = c.u8();
        let at = usize::from(c.u16());
        let val = c.u8();
        let from = pick_source(c.u8());
        if self.log.is_empty() {
            return;
        }
        let mut p = self.log[pick % self.log.len()].clone();
        let len = p.len().max(1);
        match edit % 5 {
            0 if !p.is_empty() => p[at % len] ^= 1 << (val % 8),
            1 if !p.is_empty() => p[at % len] = val,
            2 => p.truncate(at % (len + 1)),
            3 => p.resize(p.len() + 1 + at % 64, val),
            // Keep the type byte, randomise a 4-byte field (index, counter).
            _ if p.len() >= 8 => {
                let i = 4 + (at % (p.len() - 7)).min(p.len() - 8);
                p[i..i + 4]
                    .copy_from_slice(&u32::from(val).wrapping_mul(0x0101_0101).to_le_bytes());
            }
            _ => {}
        }
        self.sut
            .handle_datagram(self.now, SocketId::PRIMARY, from, &p);
    }

    fn message(&mut self, c: &mut Cursor<'_>) {
        let peer = usize::from(c.u8()) % self.peers.len();
        let kind = c.u8();
        let now = self.now;
        let ids = ids();
        let not_after = (WALL + now.as_micros()) / 1_000_000 + 3600;
        let msg: Option<Vec<u8>> = match (matches!(self.sut, Sut::Node(_)), peer, kind % 6) {
            // To a node, from the stand-in rendezvous.
            (true, 0, 0) => {
                let req = self.peers[0].last_req.wrapping_add(u32::from(c.u8() % 2));
                let address = pick_address(c.u8());
                let observed = pick_source(c.u8());
                let (refresh_secs, ttl_secs) = (c.u16(), c.u16());
                let b = c.u8();
                let key = if b & 1 == 0 {
                    ids.alice.public()
                } else {
                    ids.bob.public()
                };
                let cert_addr = if b & 2 == 0 { address } else { BOB_ADDR };
                let cert = Certificate::issue(&ids.rv, cert_addr, key, not_after);
                Some(
                    Message::Registered(Registered {
                        req,
                        address,
                        observed,
                        refresh_secs,
                        ttl_secs,
                        cert,
                    })
                    .to_vec(),
                )
            }
            (true, 0, 1) => {
                let req = self.peers[0].last_req.wrapping_add(u32::from(c.u8() % 2));
                let address = pick_address(c.u8());
                let key = match c.u8() % 4 {
                    0 => ids.bob.public(),
                    1 => ids.alice.public(),
                    2 => ids.rv.public(),
                    // Not a curve point.
                    _ => PublicKey([0xFF; 32]),
                };
                let flags = c.u8();
                let hostname = pick_hostname(c.u8());
                let n = usize::from(c.u8() % 9);
                let endpoints = (0..n)
                    .map(|i| pick_source((i as u8).wrapping_add(flags)))
                    .collect();
                Some(
                    Message::Resolved(Resolved {
                        req,
                        address,
                        key,
                        public: flags & 1 != 0,
                        online: flags & 2 != 0,
                        hostname,
                        endpoints,
                    })
                    .to_vec(),
                )
            }
            (true, 0, 2) => {
                let req = self.peers[0].last_req.wrapping_add(u32::from(c.u8() % 2));
                let code = ErrorCode::from_u8(c.u8());
                let message = String::from_utf8_lossy(c.bytes()).into_owned();
                Some(Message::Error { req, code, message }.to_vec())
            }
            // To a node, from bob: an overlay datagram.
            (true, _, 0..=2) => {
                // Now and then a source address bob does not hold.
                let src_addr = match c.u8() % 4 {
                    0 => pick_address(c.u8()),
                    _ => BOB_ADDR,
                };
                let src = SocketAddress::new(src_addr, pick_port(c.u8()));
                let dst_addr = match (c.u8() % 4, self.node_address()) {
                    (0, _) | (_, None) => pick_address(c.u8()),
                    (_, Some(a)) => a,
                };
                let dst = SocketAddress::new(dst_addr, pick_port(c.u8()));
                let payload = c.bytes();
                let mut m = vec![pilot_proto::msg::KIND_DATA];
                overlay::encode_udp(src, dst, payload, &mut m);
                Some(m)
            }
            // To a rendezvous, from an agent: a registration signed for
            // this session, by this agent or by another.
            (false, _, k @ (0 | 1)) => {
                let key = self.sut_key;
                if !self.peers[peer].tunnels.has_session(&key, now) {
                    self.peers[peer].tunnels.connect(now, &key);
                    self.pump();
                }
                let hash = self.peers[peer]
                    .tunnels
                    .handshake_hash(&key, now)
                    .unwrap_or([0; 32]);
                let signer = if k == 0 {
                    self.peers[peer].identity.clone()
                } else {
                    self.peers[1 - peer].identity.clone()
                };
                let req = u32::from(c.u8());
                let public = c.u8() & 1 != 0;
                let hostname = pick_hostname(c.u8());
                Some(
                    Message::Register(Register::new(&signer, &hash, req, public, hostname, &[]))
                        .to_vec(),
                )
            }
            (false, _, 2) => {
                let req = u32::from(c.u8());
                let b = c.u8();
                let query = match (b % 3, self.peers[1 - peer].address) {
                    (0, Some(a)) => Query::Address(a),
                    _ => pick_query(b / 3),
                };
                Some(Message::Resolve { req, query }.to_vec())
            }
            // Messages only a rendezvous sends, or data, to a rendezvous.
            (false, _, 3) => Some(
                Message::Error {
                    req: 1,
                    code: ErrorCode::BadRequest,
                    message: "x".into(),
                }
                .to_vec(),
            ),
            (false, _, 4) => Some(Message::Data(c.bytes()).to_vec()),
            // Anyone: open (or reopen) a session.
            _ => {
                let key = self.sut_key;
                self.peers[peer].tunnels.connect(now, &key);
                None
            }
        };
        if let Some(m) = msg {
            let key = self.sut_key;
            let _ = self.peers[peer].tunnels.send(now, &key, &m);
        }
    }

    fn node_address(&self) -> Option<Address> {
        match &self.sut {
            Sut::Node(n) => n.address(),
            Sut::Rv(_) => None,
        }
    }

    fn command(&mut self, c: &mut Cursor<'_>) {
        let kind = c.u8();
        let now = self.now;
        match &mut self.sut {
            Sut::Node(n) => match kind % 7 {
                0 => {
                    let _ = n.bind(pick_port(c.u8()));
                }
                1 => n.unbind(pick_port(c.u8())),
                2 => {
                    let _ = n.resolve(now, pick_query(c.u8()));
                }
                3 => {
                    let src = pick_port(c.u8());
                    let dst = SocketAddress::new(pick_address(c.u8()), pick_port(c.u8()));
                    // Sizes around the largest datagram, or small.
                    let len = match c.u8() {
                        b if b < 4 => overlay::MAX_DATAGRAM - 1 + usize::from(b),
                        b => usize::from(b),
                    };
                    let _ = n.send_datagram(now, src, dst, &vec![0x5A; len]);
                }
                // Live registration changes, answered (or refused, or
                // not) by the stand-in rendezvous.
                4 => {
                    let _ = n.set_hostname(now, pick_hostname(c.u8()));
                }
                5 => {
                    let _ = n.set_public(now, c.u8() & 1 != 0);
                }
                _ => n.handle_timeout(now),
            },
            Sut::Rv(r) => match kind % 2 {
                0 => r.handle_timeout(now),
                _ => {
                    let ids = ids();
                    let b = c.u8();
                    let key = match b % 3 {
                        0 => ids.alice.public(),
                        1 => ids.bob.public(),
                        _ => ids.rv.public(),
                    };
                    r.restore(Record {
                        address: Address::new(0, 0x10 + u32::from(c.u8() % 4)),
                        key,
                        hostname: pick_hostname(b / 3),
                        public: b & 0x80 != 0,
                        endpoint: None,
                        expires: None,
                    });
                }
            },
        }
    }

    fn log(&mut self, packet: &[u8]) {
        if self.log.len() < LOG {
            self.log.push(packet.to_vec());
        } else {
            self.log[self.logged % LOG] = packet.to_vec();
        }
        self.logged += 1;
    }

    /// Delivers every queued datagram, SUT to peers and back, until quiet.
    fn pump(&mut self) {
        let now = self.now;
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            while let Some(t) = self.sut.poll_transmit() {
                moved = true;
                trace(
                    now,
                    &format!("sut -> {}: {}", t.destination, describe(&t.payload)),
                );
                self.log(&t.payload);
                if let Some(i) = self.peers.iter().position(|p| p.addr == t.destination) {
                    self.peer_receive(i, &t.payload);
                }
            }
            self.sut.drain_events(now);
            for i in 0..self.peers.len() {
                while let Some(t) = self.peers[i].tunnels.poll_transmit() {
                    moved = true;
                    let from = self.peers[i].addr;
                    trace(
                        now,
                        &format!("{from} -> {}: {}", t.destination, describe(&t.payload)),
                    );
                    self.log(&t.payload);
                    if t.destination == self.sut_addr {
                        self.sut
                            .handle_datagram(now, SocketId::PRIMARY, from, &t.payload);
                    }
                }
                while self.peers[i].tunnels.poll_event().is_some() {}
            }
            if !moved {
                self.sut.drain_events(now);
                // The drain rule: with nothing queued, no output is due.
                if let Some((_, Timer::Output)) = self.sut.poll_timeout() {
                    panic!("poll_timeout reports queued output after a full drain");
                }
                return;
            }
        }
        panic!("datagrams still flowing after {MAX_ROUNDS} rounds at {now:?}");
    }

    fn peer_receive(&mut self, i: usize, packet: &[u8]) {
        let now = self.now;
        let from = self.sut_addr;
        let inbound = match self.peers[i].tunnels.handle_datagram(
            now,
            SocketId::PRIMARY,
            from,
            packet,
            &mut |_, _| true,
        ) {
            Ok(Some(m)) => m,
            _ => return,
        };
        let Ok(msg) = Message::decode(&inbound.plaintext) else {
            return;
        };
        let ids = ids();
        let reply = match (self.peers[i].role, msg) {
            (Role::StandInRendezvous, Message::Register(r)) => {
                self.peers[i].last_req = r.req;
                if !self.answer_register {
                    return;
                }
                let not_after = (WALL + now.as_micros()) / 1_000_000 + 3600;
                let cert = Certificate::issue(&ids.rv, ALICE_ADDR, r.key, not_after);
                Message::Registered(Registered {
                    req: r.req,
                    address: ALICE_ADDR,
                    observed: inbound.from.addr().unwrap_or(from),
                    refresh_secs: 25,
                    ttl_secs: 90,
                    cert,
                })
                .to_vec()
            }
            (Role::StandInRendezvous, Message::Resolve { req, query }) => {
                self.peers[i].last_req = req;
                if !self.answer_resolve {
                    return;
                }
                let bob = match &query {
                    Query::Address(a) => *a == BOB_ADDR,
                    Query::Hostname(h) => h.as_str() == "bob",
                };
                if bob {
                    Message::Resolved(Resolved {
                        req,
                        address: BOB_ADDR,
                        key: ids.bob.public(),
                        public: true,
                        online: true,
                        hostname: Hostname::new("bob").ok(),
                        endpoints: vec![ep(BOB)],
                    })
                    .to_vec()
                } else {
                    Message::Error {
                        req,
                        code: ErrorCode::NotFound,
                        message: format!("no public node `{query}`"),
                    }
                    .to_vec()
                }
            }
            (Role::Agent, Message::Registered(r)) => {
                self.peers[i].address = Some(r.address);
                return;
            }
            _ => return,
        };
        let _ = self.peers[i].tunnels.send(now, &inbound.peer, &reply);
    }

    /// Runs every timer due at `now`, then checks the SUT is not left
    /// due at or before `now`: a driver sleeping until `poll_timeout` would
    /// spin.
    fn timers(&mut self) {
        let now = self.now;
        for p in &mut self.peers {
            p.tunnels.handle_timeout(now);
        }
        // Peers may answer what the SUT sends with something that is due at
        // once, so allow a few rounds before calling it a spin.
        for _ in 0..4 {
            self.sut.handle_timeout(now);
            self.pump();
            match self.sut.poll_timeout() {
                Some((t, _)) if t <= now => continue,
                _ => return,
            }
        }
        let due = self.sut.poll_timeout();
        panic!("after handle_timeout({now:?}) the SUT is still due: {due:?}");
    }
}
