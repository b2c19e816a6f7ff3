//! Tunnels: Noise IK handshakes and transport sessions with a set of
//! peers, each named by its static X25519 key. Both `Node` and
//! `Rendezvous` own one.
//!
//! The tunnel layer does no protocol decisions above "who may complete a
//! handshake with us", which its owner answers through an `accept`
//! callback, and "which path carries a peer's packets", which lives in
//! [`paths`]: direct candidates validated inside the session, and the
//! rendezvous's relay as the floor.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec::Vec;
use core::net::SocketAddr;
use core::time::Duration;

use crate::cookie::{self, CookieChecker, MacVerdict, SourceLimits, COOKIE_SECRET_LIFETIME};
use crate::io::{earliest, SocketId, Timer, Transmit};
use crate::noise::{self, Initiator, Responder, Split};
use crate::rng::Stream;
use crate::session::{OpenError, SealError, Session, SessionLimits};
use crate::stats::{DropReason, Stats};
use crate::time::Timestamp;
use crate::wire::{self, Packet, MAC_LEN, MAX_HANDSHAKE_PAYLOAD};

pub mod paths;
mod timers;

use paths::{PathAction, PathSet};
pub use paths::{PathConfig, PathInfo, PathState, RelayTag, Route, Spray, SprayPlan};
use timers::PeerTimers;

/// Plaintext kind of a path challenge (inside a session): kind, then an
/// 8-byte token the peer must echo on the same path.
pub const KIND_PATH_CHALLENGE: u8 = 0x20;
/// Plaintext kind of a path response: kind, then the challenge's token.
pub const KIND_PATH_RESPONSE: u8 = 0x21;
/// Length of a path challenge or response plaintext.
pub const PATH_MSG_LEN: usize = 9;

/// A peer's static X25519 public key: the tunnel's name for it.
pub type PeerKey = [u8; 32];

/// The Noise prologue: binds every handshake to this protocol version.
pub const PROLOGUE: &[u8] = b"pilot/1";

/// Timers and limits of the tunnel layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Session lifetime and counter limits.
    pub limits: SessionLimits,
    /// Wait this long for a handshake response before retransmitting.
    pub rekey_timeout: Duration,
    /// Give up a handshake (and drop queued data) after this long.
    pub rekey_attempt_time: Duration,
    /// Answer received data with a keepalive if we sent nothing this long.
    pub keepalive_timeout: Duration,
    /// Handshakes per second above which we demand cookies.
    pub load_threshold: u32,
    /// What each source may send under load.
    pub source_limits: SourceLimits,
    /// How long a peer created by its own handshake is remembered unless
    /// the owner keeps it ([`Tunnels::keep`]).
    pub probation: Duration,
    /// Most peers on probation at once; the oldest is forgotten first.
    pub max_probation: usize,
    /// Plaintexts queued per peer while a handshake is under way.
    pub max_queued: usize,
    /// Most peers remembered; new responders are refused beyond it.
    pub max_peers: usize,
    /// Never start a handshake (the rendezvous): peers always come to us,
    /// and a vanished peer must not cost us retransmissions. Such a tunnel
    /// also follows each peer to wherever its authenticated packets come
    /// from, instead of validating paths: it only ever answers.
    pub responder_only: bool,
    /// The rendezvous that relays for us: our socket and its address.
    /// Relayed packets go there wrapped (see [`wire::relay`]).
    pub relay: Option<(SocketId, SocketAddr)>,
    /// Take no direct candidates: peers are reached through the relay
    /// only (an agent on the compat carrier, which has no UDP socket to
    /// send probes from). Routes set explicitly (the rendezvous's) stay.
    pub relay_only: bool,
    /// Path probing and liveness.
    pub paths: PathConfig,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        TunnelConfig {
            limits: SessionLimits::default(),
            rekey_timeout: Duration::from_secs(5),
            rekey_attempt_time: Duration::from_secs(90),
            keepalive_timeout: Duration::from_secs(10),
            load_threshold: 200,
            source_limits: SourceLimits::default(),
            probation: Duration::from_secs(10),
            max_probation: 4096,
            max_queued: 128,
            max_peers: 1 << 20,
            responder_only: false,
            relay: None,
            relay_only: false,
            paths: PathConfig::default(),
        }
    }
}

/// Something the tunnel layer tells its owner.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TunnelEvent {
    /// A new session with `peer` is ready to carry data. `payload` is what
    /// the peer put in its handshake after any timestamp (a certificate).
    Established {
        /// The peer.
        peer: PeerKey,
        /// The peer's handshake payload.
        payload: Vec<u8>,
    },
    /// A handshake with `peer` was given up; `dropped` queued messages
    /// were lost.
    HandshakeFailed {
        /// The peer.
        peer: PeerKey,
        /// Queued plaintexts discarded.
        dropped: usize,
    },
    /// The path carrying data to `peer` changed (a direct path was
    /// validated, or failed and data fell back to the relay).
    PathChanged {
        /// The peer.
        peer: PeerKey,
        /// The route now in use (None: no route at all).
        route: Option<Route>,
    },
    /// A peer that only handshook with us was forgotten, with all its
    /// sessions: nothing kept it through its probation, or newer peers
    /// on probation needed the room. The owner drops what it holds for it.
    Forgotten {
        /// The peer.
        peer: PeerKey,
    },
    /// The last session with `peer` passed its lifetime and none replaced
    /// it: the peer has no session until the next handshake.
    SessionExpired {
        /// The peer.
        peer: PeerKey,
    },
}

/// Why `send` failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// We know no endpoint for this peer.
    NoEndpoint,
    /// The queue for this peer is full; the message was dropped.
    QueueFull,
}

/// Where a peer's session stands, for diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// No usable session and no handshake under way.
    #[default]
    None,
    /// A handshake is under way (ours, or theirs awaiting confirmation)
    /// and no usable session exists.
    Handshaking,
    /// A confirmed, unexpired session carries data (a rekey may be under
    /// way beside it).
    Established,
}

impl core::fmt::Display for SessionState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            SessionState::None => "none",
            SessionState::Handshaking => "handshaking",
            SessionState::Established => "established",
        })
    }
}

/// One peer's path, session and traffic, for diagnostics
/// ([`Tunnels::peer_stats`]). Counters cover whole outer datagrams (UDP
/// payloads: handshakes, transport packets, keepalives) that we sent to
/// the peer or that authenticated as the peer's; they live as long as the
/// tunnel layer remembers the peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerStats {
    /// The route data takes now: a validated direct path, the relay, or
    /// (no path validated and no relay) the candidate we try.
    pub route: Option<Route>,
    /// The validated direct endpoint data goes to, if any.
    pub endpoint: Option<SocketAddr>,
    /// Smoothed round trip of the direct path in use.
    pub path_rtt: Option<Duration>,
    /// Path probes sent to this peer.
    pub probes_sent: u64,
    /// Of the last spray of probes (port prediction, birthday probing)
    /// that ended with a direct path: which probe found it, counted from
    /// 1, or how many it had sent when the path was found another way
    /// (the peer's probe through a mapping one of ours opened).
    pub spray_hit: Option<u32>,
    /// Where the session stands.
    pub state: SessionState,
    /// Round-trip time measured by the latest completed handshake: from
    /// our initiation to its response when we initiated, from our response
    /// to the first packet on the new session when we answered. Each
    /// rehandshake (rekey, restart) refreshes it; it includes the peer's
    /// handshake processing.
    pub rtt: Option<Duration>,
    /// When the latest session with the peer was established.
    pub last_handshake: Option<Timestamp>,
    /// When a datagram from the peer last authenticated (handshakes,
    /// keepalives and data alike).
    pub last_heard: Option<Timestamp>,
    /// Datagrams from the peer that authenticated.
    pub packets_in: u64,
    /// Their bytes.
    pub bytes_in: u64,
    /// Datagrams sent to the peer.
    pub packets_out: u64,
    /// Their bytes.
    pub bytes_out: u64,
}

/// A decrypted message from a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inbound {
    /// Who sent it.
    pub peer: PeerKey,
    /// The path it came on.
    pub from: Route,
    /// The plaintext (never empty: keepalives are absorbed).
    pub plaintext: Vec<u8>,
    /// The handshake hash of the session it arrived on.
    pub handshake_hash: [u8; 32],
    /// When the session it arrived on was created here. A peer's sessions
    /// are created in the order of its initiations (their timestamps only
    /// increase), so this orders messages across rekeys.
    pub session_created: Timestamp,
}

struct Pending {
    initiator: Initiator,
    local_index: u32,
    /// The paths this attempt's initiation went out on.
    routes: Vec<Route>,
    started: Timestamp,
    /// When this attempt's initiation went out: its response measures the
    /// round trip.
    sent_at: Timestamp,
    retry_at: Timestamp,
    /// Initiations sent in this attempt, retransmissions included.
    sent: u32,
    mac1: [u8; 16],
    /// A cookie reply already made this attempt retry at once.
    cookie_retried: bool,
}

struct Peer {
    paths: PathSet,
    current: Option<Session>,
    previous: Option<Session>,
    /// A responder's session, usable once the initiator's first packet
    /// proves it got our response.
    next: Option<Session>,
    pending: Option<Pending>,
    cookie: Option<([u8; 16], Timestamp)>,
    queue: VecDeque<Vec<u8>>,
    last_sent: Timestamp,
    last_data_received: Option<Timestamp>,
    /// The first data we sent since the peer was last heard from: if it
    /// stays unanswered, the session is presumed dead (the peer restarted)
    /// and a new handshake starts.
    unanswered_since: Option<Timestamp>,
    persistent_keepalive: Option<Duration>,
    /// The newest handshake timestamp accepted from this peer.
    last_init_timestamp: u64,
    /// The peer's handshake payload, until the session is confirmed.
    next_payload: Vec<u8>,
    /// When we sent the response that `next` waits to be confirmed by,
    /// and on which path the initiation came.
    next_sent_at: Option<Timestamp>,
    next_route: Option<Route>,
    /// Last non-empty plaintext we sent (probes excluded): the peer is
    /// active, and its paths are kept alive, for a while after.
    last_data_sent: Option<Timestamp>,
    /// Latest handshake round trip, and when that session was established.
    rtt: Option<Duration>,
    established_at: Option<Timestamp>,
    /// When a datagram from the peer last authenticated.
    last_heard: Option<Timestamp>,
    /// Traffic counters (see [`PeerStats`]).
    packets_in: u64,
    bytes_in: u64,
    packets_out: u64,
    bytes_out: u64,
    /// While on probation, when it ends (None: kept).
    probation_until: Option<Timestamp>,
    /// The earliest of its timers, as entered in `Tunnels::timers`.
    deadline: Option<(Timestamp, Timer)>,
}

impl Peer {
    fn new(follow: bool) -> Self {
        Peer {
            probation_until: None,
            deadline: None,
            paths: PathSet::new(follow),
            current: None,
            previous: None,
            next: None,
            pending: None,
            cookie: None,
            queue: VecDeque::new(),
            last_sent: Timestamp::ZERO,
            last_data_received: None,
            unanswered_since: None,
            persistent_keepalive: None,
            last_init_timestamp: 0,
            next_payload: Vec::new(),
            next_sent_at: None,
            next_route: None,
            last_data_sent: None,
            last_heard: None,
            rtt: None,
            established_at: None,
            packets_in: 0,
            bytes_in: 0,
            packets_out: 0,
            bytes_out: 0,
        }
    }

    /// Counts a datagram of `len` bytes sent to the peer on `route` (a
    /// relayed one is that much longer on the wire).
    fn count_out(&mut self, route: &Route, len: usize) {
        self.packets_out += 1;
        self.bytes_out += wire_len(route, len) as u64;
    }

    /// Counts a datagram that authenticated as the peer's.
    fn count_in(&mut self, now: Timestamp, len: usize) {
        self.packets_in += 1;
        self.last_heard = Some(now);
        self.bytes_in += len as u64;
    }

    /// A new session is in use: the handshake that made it took `rtt`.
    fn established(&mut self, now: Timestamp, rtt: Option<Duration>) {
        self.established_at = Some(now);
        if rtt.is_some() {
            self.rtt = rtt;
        }
    }

    fn stats(&self, now: Timestamp) -> PeerStats {
        let state = if self.usable(now).is_some() {
            SessionState::Established
        } else if self.pending.is_some() || self.next.as_ref().is_some_and(|s| !s.expired(now)) {
            SessionState::Handshaking
        } else {
            SessionState::None
        };
        let route = self.paths.route();
        PeerStats {
            route,
            endpoint: self.paths.active().and_then(|r| r.addr()),
            path_rtt: self.paths.active_rtt(),
            probes_sent: self.paths.probes_sent(),
            spray_hit: self.paths.spray_hit,
            state,
            rtt: self.rtt,
            last_handshake: self.established_at,
            last_heard: self.last_heard,
            packets_in: self.packets_in,
            bytes_in: self.bytes_in,
            packets_out: self.packets_out,
            bytes_out: self.bytes_out,
        }
    }

    /// The cookie the peer gave us, while it is still valid for mac2.
    fn fresh_cookie(&self, now: Timestamp) -> Option<[u8; 16]> {
        self.cookie
            .filter(|(_, at)| now.saturating_since(*at) < COOKIE_SECRET_LIFETIME)
            .map(|(c, _)| c)
    }

    fn usable(&self, now: Timestamp) -> Option<&Session> {
        self.current.as_ref().filter(|s| !s.expired(now))
    }

    /// Data went either way recently: keep the peer's paths alive.
    fn active(&self, now: Timestamp, idle_after: Duration) -> bool {
        [self.last_data_sent, self.last_data_received]
            .into_iter()
            .flatten()
            .any(|t| now.saturating_since(t) < idle_after)
    }

    fn slot_mut(&mut self, index: u32) -> Option<(&mut Session, bool)> {
        if let Some(s) = self.current.as_mut().filter(|s| s.local_index() == index) {
            return Some((s, false));
        }
        if let Some(s) = self.previous.as_mut().filter(|s| s.local_index() == index) {
            return Some((s, false));
        }
        if let Some(s) = self.next.as_mut().filter(|s| s.local_index() == index) {
            return Some((s, true));
        }
        None
    }
}

/// The set of tunnels one endpoint keeps.
pub struct Tunnels {
    config: TunnelConfig,
    secret: [u8; 32],
    public: [u8; 32],
    checker: CookieChecker,
    wire_rng: Stream,
    secret_rng: Stream,
    /// Our handshake payload (a certificate), sent in every handshake.
    local_payload: Vec<u8>,
    /// Wall-clock microseconds at `Timestamp::ZERO`: the handshake
    /// timestamp that defeats replayed initiations.
    wall_origin: u64,
    last_sent_timestamp: u64,
    peers: BTreeMap<PeerKey, Peer>,
    indices: BTreeMap<u32, PeerKey>,
    /// Peers on probation, by when it ends (oldest first). An entry whose
    /// peer was kept or removed since is skipped when reached.
    probation: VecDeque<(Timestamp, PeerKey)>,
    /// Peers on probation now.
    on_probation: usize,
    /// Every peer's earliest deadline, so that neither `poll_timeout` nor
    /// `handle_timeout` walks all peers. Kept by `reindex` after anything
    /// that changes a peer.
    timers: BTreeSet<(Timestamp, PeerKey)>,
    /// Peers a datagram changed, to reindex once it is handled.
    touched: Vec<PeerKey>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<TunnelEvent>,
    stats: Stats,
}

/// The length on the wire of a tunnel packet of `len` bytes sent on
/// `route`.
fn wire_len(route: &Route, len: usize) -> usize {
    match route {
        Route::Direct { .. } => len,
        Route::Relay(_) => len + wire::RELAY_HEADER_LEN,
    }
}

fn remove_session_index(indices: &mut BTreeMap<u32, PeerKey>, s: &Option<Session>) {
    if let Some(s) = s {
        indices.remove(&s.local_index());
    }
}

/// The peer that owns our receiver index `index`.
fn peer_by_index<'a>(
    indices: &BTreeMap<u32, PeerKey>,
    peers: &'a mut BTreeMap<PeerKey, Peer>,
    index: u32,
) -> Result<(PeerKey, &'a mut Peer), DropReason> {
    let peer = *indices.get(&index).ok_or(DropReason::UnknownSession)?;
    let p = peers.get_mut(&peer).ok_or(DropReason::UnknownSession)?;
    Ok((peer, p))
}

/// Moves the current session to `previous` (still accepted for receiving).
/// With no current session, `previous` stays: it may be the one a dead-peer
/// check retired, and the peer may still be sending on it.
fn retire_current(indices: &mut BTreeMap<u32, PeerKey>, p: &mut Peer) {
    if p.current.is_none() {
        return;
    }
    remove_session_index(indices, &p.previous);
    p.previous = p.current.take();
}

impl Tunnels {
    /// Tunnels for the endpoint whose static X25519 secret is `secret`.
    pub fn new(config: TunnelConfig, secret: [u8; 32], seed: &[u8; 32], wall_origin: u64) -> Self {
        let public = noise::x25519_public(&secret);
        Tunnels {
            config,
            secret,
            public,
            checker: CookieChecker::with_limits(
                &public,
                config.load_threshold,
                config.source_limits,
            ),
            wire_rng: Stream::derive(seed, "tunnel wire"),
            secret_rng: Stream::derive(seed, "tunnel secret"),
            local_payload: Vec::new(),
            wall_origin,
            last_sent_timestamp: 0,
            peers: BTreeMap::new(),
            indices: BTreeMap::new(),
            probation: VecDeque::new(),
            on_probation: 0,
            timers: BTreeSet::new(),
            touched: Vec::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Our static X25519 public key.
    pub fn public_key(&self) -> &PeerKey {
        &self.public
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counters, for the owner to add its own drops to.
    pub fn stats_mut(&mut self) -> &mut Stats {
        &mut self.stats
    }

    /// Sets what we send in our handshakes (truncated to what fits).
    pub fn set_local_payload(&mut self, payload: Vec<u8>) {
        let mut payload = payload;
        payload.truncate(MAX_HANDSHAKE_PAYLOAD - 8);
        self.local_payload = payload;
    }

    /// Changes where relayed packets go (our socket and the rendezvous's
    /// address) and whether direct candidates are taken at all: the
    /// driver moved between UDP and the compat carrier.
    pub fn set_relay_via(&mut self, relay: Option<(SocketId, SocketAddr)>, relay_only: bool) {
        self.config.relay = relay;
        self.config.relay_only = relay_only;
        // Deadlines are computed from the config too.
        let keys: Vec<PeerKey> = self.peers.keys().copied().collect();
        for k in &keys {
            self.reindex(k);
        }
    }

    /// Adds a peer reached at `endpoint` without validation (the
    /// rendezvous an agent is configured with), or makes `endpoint` its
    /// path.
    pub fn set_endpoint(&mut self, peer: PeerKey, endpoint: SocketAddr) {
        self.set_route(peer, Route::direct(endpoint));
    }

    /// Like [`Tunnels::set_endpoint`], for any route.
    pub fn set_route(&mut self, peer: PeerKey, route: Route) {
        self.keep(&peer);
        let follow = self.config.responder_only;
        self.peers
            .entry(peer)
            .or_insert_with(|| Peer::new(follow))
            .paths
            .configure(route);
        self.reindex(&peer);
    }

    /// Ends `peer`'s probation: it stays until removed. Peers the owner
    /// names itself (endpoints, candidates, relay) are kept already.
    pub fn keep(&mut self, peer: &PeerKey) {
        if let Some(p) = self.peers.get_mut(peer) {
            if p.probation_until.take().is_some() {
                self.on_probation -= 1;
            }
        }
        self.trim_probation();
    }

    /// Recomputes `key`'s earliest deadline and its entry in the timer
    /// index. Everything that changes a peer ends with this.
    fn reindex(&mut self, key: &PeerKey) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        let next = PeerTimers::of(p, &self.config).earliest();
        if p.deadline == next {
            return;
        }
        if let Some((at, _)) = p.deadline {
            self.timers.remove(&(at, *key));
        }
        if let Some((at, _)) = next {
            self.timers.insert((at, *key));
        }
        p.deadline = next;
    }

    /// Drops entries at the front of the probation queue whose peer was
    /// kept or removed since, so that the front names the next probation
    /// that really ends (what `poll_timeout` reports).
    fn trim_probation(&mut self) {
        while let Some((at, key)) = self.probation.front() {
            let live = self
                .peers
                .get(key)
                .is_some_and(|p| p.probation_until == Some(*at));
            if live {
                break;
            }
            self.probation.pop_front();
        }
    }

    /// True while `peer` is known and on probation.
    pub fn on_probation(&self, peer: &PeerKey) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.probation_until.is_some())
    }

    /// Forgets `peer` if it is still on probation (and says so).
    fn forget(&mut self, peer: &PeerKey) {
        if self.on_probation(peer) {
            self.remove_peer(peer);
            self.stats.peers_forgotten += 1;
            self.events
                .push_back(TunnelEvent::Forgotten { peer: *peer });
        }
    }

    /// Makes room for one more peer on probation: forgets the oldest ones
    /// while the probation table is full.
    fn make_probation_room(&mut self) {
        while self.on_probation >= self.config.max_probation.max(1) {
            let Some((_, key)) = self.probation.pop_front() else {
                break;
            };
            self.forget(&key);
        }
        // Entries of peers kept or removed since linger until reached;
        // keep them from piling up.
        if self.probation.len() > self.config.max_probation.max(1).saturating_mul(2) {
            let peers = &self.peers;
            self.probation.retain(|(at, key)| {
                peers
                    .get(key)
                    .is_some_and(|p| p.probation_until == Some(*at))
            });
        }
    }

    /// The validated direct endpoint we send to, if any.
    pub fn endpoint(&self, peer: &PeerKey) -> Option<SocketAddr> {
        self.peers
            .get(peer)
            .and_then(|p| p.paths.active())
            .and_then(|r| r.addr())
    }

    /// The route the next packet to `peer` takes.
    pub fn route(&self, peer: &PeerKey) -> Option<Route> {
        self.peers.get(peer).and_then(|p| p.paths.route())
    }

    /// True if we can send to `peer` at all (a path, the relay or a
    /// candidate to try).
    pub fn routable(&self, peer: &PeerKey) -> bool {
        self.peers.get(peer).is_some_and(|p| p.paths.routable())
    }

    /// Adds direct candidates for `peer` (creating it if needed). They
    /// carry data only once validated.
    pub fn add_candidates(&mut self, peer: PeerKey, candidates: &[SocketAddr]) {
        self.keep(&peer);
        if self.config.relay_only {
            return;
        }
        let follow = self.config.responder_only;
        let p = self.peers.entry(peer).or_insert_with(|| Peer::new(follow));
        for c in candidates {
            p.paths.add(Route::direct(*c));
        }
        self.reindex(&peer);
    }

    /// Lets `peer` be reached through the relay, which knows it by `tag`
    /// (creating the peer if needed). Ignored without a relay configured.
    /// Emits no event, though the relay may become the active route.
    pub fn set_relay(&mut self, peer: PeerKey, tag: RelayTag) {
        if self.config.relay.is_none() {
            return;
        }
        self.keep(&peer);
        let follow = self.config.responder_only;
        let p = self.peers.entry(peer).or_insert_with(|| Peer::new(follow));
        if p.paths.relay == Some(tag) {
            return;
        }
        p.paths.relay = Some(tag);
        // The owner knows what it just did: no event.
        p.paths.reselect();
        self.reindex(&peer);
    }

    /// Starts probing `peer`'s candidates at `at` (or as soon as a session
    /// can carry the probes).
    pub fn schedule_punch(&mut self, peer: &PeerKey, at: Timestamp) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.paths.schedule_punch(at);
        }
        self.reindex(peer);
    }

    /// Starts a spray of path challenges to `peer` (see [`Spray`]).
    pub fn start_spray(&mut self, peer: &PeerKey, spray: Spray) {
        let token = self.wire_rng.next_u64();
        if let Some(p) = self.peers.get_mut(peer) {
            p.paths.start_spray(spray, token);
        }
    }

    /// True while a spray to `peer` is under way.
    pub fn is_spraying(&self, peer: &PeerKey) -> bool {
        self.peers.get(peer).is_some_and(|p| p.paths.spraying())
    }

    /// Our sockets that some peer's validated direct path uses.
    pub fn sockets_in_use(&self) -> BTreeSet<SocketId> {
        self.peers
            .values()
            .flat_map(|p| p.paths.candidates.iter())
            .filter(|c| c.state == PathState::Validated)
            .filter_map(|c| match c.route {
                Route::Direct { socket, .. } => Some(socket),
                Route::Relay(_) => None,
            })
            .collect()
    }

    /// True if a validated direct path carries `peer`'s data.
    pub fn is_direct(&self, peer: &PeerKey) -> bool {
        self.peers.get(peer).is_some_and(|p| p.paths.is_direct())
    }

    /// True while probes to `peer` are scheduled or going out.
    pub fn is_probing(&self, peer: &PeerKey) -> bool {
        self.peers.get(peer).is_some_and(|p| p.paths.probing())
    }

    /// `peer`'s direct candidates and their state.
    pub fn paths(&self, peer: &PeerKey) -> Vec<PathInfo> {
        self.peers
            .get(peer)
            .map(|p| p.paths.info())
            .unwrap_or_default()
    }

    /// Sends a keepalive to `peer` every `interval` (to keep NAT mappings).
    pub fn set_persistent_keepalive(&mut self, peer: &PeerKey, interval: Option<Duration>) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.persistent_keepalive = interval;
        }
        self.reindex(peer);
    }

    /// Forgets a peer and all its sessions.
    pub fn remove_peer(&mut self, peer: &PeerKey) {
        let Some(p) = self.peers.remove(peer) else {
            return;
        };
        if let Some((at, _)) = p.deadline {
            self.timers.remove(&(at, *peer));
        }
        if p.probation_until.is_some() {
            self.on_probation -= 1;
            self.trim_probation();
        }
        remove_session_index(&mut self.indices, &p.current);
        remove_session_index(&mut self.indices, &p.previous);
        remove_session_index(&mut self.indices, &p.next);
        if let Some(h) = &p.pending {
            self.indices.remove(&h.local_index);
        }
    }

    /// True if a confirmed, unexpired session with `peer` exists.
    pub fn has_session(&self, peer: &PeerKey, now: Timestamp) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.usable(now).is_some())
    }

    /// The handshake hash of the current session with `peer`.
    pub fn handshake_hash(&self, peer: &PeerKey, now: Timestamp) -> Option<[u8; 32]> {
        self.peers
            .get(peer)
            .and_then(|p| p.usable(now))
            .map(|s| *s.handshake_hash())
    }

    /// One peer's path, session state and traffic, if we know the peer.
    pub fn peer_stats(&self, peer: &PeerKey, now: Timestamp) -> Option<PeerStats> {
        self.peers.get(peer).map(|p| p.stats(now))
    }

    /// Mutable access to the current session (tests of counter limits;
    /// what it changes moves no timer).
    pub fn current_session_mut(&mut self, peer: &PeerKey) -> Option<&mut Session> {
        self.peers.get_mut(peer).and_then(|p| p.current.as_mut())
    }

    /// Queues `payload` for `route`: as it is for a direct route, wrapped
    /// for the relay otherwise.
    fn emit(&mut self, route: Route, payload: Vec<u8>) {
        let transmit = match route {
            Route::Direct { socket, addr } => Transmit::new(socket, addr, payload),
            Route::Relay(tag) => {
                let Some((socket, relay)) = self.config.relay else {
                    self.stats.send_dropped += 1;
                    return;
                };
                Transmit::new(socket, relay, wire::relay(tag, &payload))
            }
        };
        self.stats.datagrams_out += 1;
        self.transmits.push_back(transmit);
    }

    /// Seals `plaintext` in the current session and sends it on `route`
    /// (a path control message: probes are not data and do not count for
    /// liveness). Returns false without a usable session.
    fn send_control(
        &mut self,
        now: Timestamp,
        peer: &PeerKey,
        route: Route,
        plaintext: &[u8],
    ) -> bool {
        let Some(p) = self.peers.get_mut(peer) else {
            return false;
        };
        let Some(s) = p.current.as_mut().filter(|s| !s.expired(now)) else {
            return false;
        };
        let mut out = Vec::new();
        if s.seal(now, plaintext, &mut out).is_err() {
            return false;
        }
        p.count_out(&route, out.len());
        self.emit(route, out);
        true
    }

    /// Sends `plaintext` to `peer`, starting a handshake if needed (the
    /// message then waits in a bounded queue).
    pub fn send(
        &mut self,
        now: Timestamp,
        peer: &PeerKey,
        plaintext: &[u8],
    ) -> Result<(), SendError> {
        let result = self.send_inner(now, peer, plaintext);
        self.reindex(peer);
        result
    }

    fn send_inner(
        &mut self,
        now: Timestamp,
        peer: &PeerKey,
        plaintext: &[u8],
    ) -> Result<(), SendError> {
        let Some(p) = self.peers.get_mut(peer) else {
            return Err(SendError::NoEndpoint);
        };
        let Some(route) = p.paths.route() else {
            return Err(SendError::NoEndpoint);
        };
        if let Some(s) = p.current.as_mut() {
            let mut out = Vec::new();
            match s.seal(now, plaintext, &mut out) {
                Ok(()) => {
                    let rekey = s.wants_rekey(now);
                    p.last_sent = now;
                    if !plaintext.is_empty() {
                        p.last_data_sent = Some(now);
                        p.paths.sent_data(now, route);
                        if p.unanswered_since.is_none() {
                            p.unanswered_since = Some(now);
                        }
                    }
                    p.count_out(&route, out.len());
                    let start = rekey && p.pending.is_none();
                    self.emit(route, out);
                    if start {
                        self.initiate(now, peer);
                    }
                    return Ok(());
                }
                Err(SealError::CounterExhausted | SealError::Expired) => {}
            }
        }
        let result = if p.queue.len() >= self.config.max_queued {
            p.queue.pop_front();
            self.stats.send_dropped += 1;
            Err(SendError::QueueFull)
        } else {
            Ok(())
        };
        p.queue.push_back(plaintext.to_vec());
        if p.pending.is_none() {
            self.initiate(now, peer);
        }
        result
    }

    /// Starts a handshake with `peer` now, replacing one under way (its
    /// initiation may have been lost: the way to the peer just came back).
    pub fn reconnect(&mut self, now: Timestamp, peer: &PeerKey) {
        if self.peers.contains_key(peer) {
            self.initiate(now, peer);
        }
        self.reindex(peer);
    }

    /// Starts a handshake with `peer` now unless one is under way.
    pub fn connect(&mut self, now: Timestamp, peer: &PeerKey) {
        if self.peers.get(peer).is_some_and(|p| p.pending.is_none()) {
            self.initiate(now, peer);
        }
        self.reindex(peer);
    }

    fn fresh_index(&mut self) -> u32 {
        loop {
            let i = self.wire_rng.next_u32();
            if i != 0 && !self.indices.contains_key(&i) {
                return i;
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        // Up to a third of a second, so peers that lost packets together
        // do not retry in lockstep.
        Duration::from_micros(self.wire_rng.below(333_333))
    }

    /// Builds and queues a handshake initiation to `peer` (first send or
    /// retransmission: each attempt uses a fresh ephemeral key).
    fn initiate(&mut self, now: Timestamp, peer: &PeerKey) {
        if self.config.responder_only {
            return;
        }
        let index = self.fresh_index();
        let ephemeral = self.secret_rng.bytes32();
        let jitter = self.jitter();
        let wall = self.wall_origin.saturating_add(now.as_micros());
        let timestamp = wall.max(self.last_sent_timestamp + 1);
        self.last_sent_timestamp = timestamp;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let routes = p.paths.handshake_routes();
        if routes.is_empty() {
            return;
        }
        let mut payload = Vec::with_capacity(8 + self.local_payload.len());
        payload.extend_from_slice(&timestamp.to_be_bytes());
        payload.extend_from_slice(&self.local_payload);
        let mut pkt = Vec::with_capacity(256);
        wire::put_header(&mut pkt, wire::TYPE_INIT, index);
        let initiator =
            match Initiator::start(PROLOGUE, &self.secret, peer, &ephemeral, &payload, &mut pkt) {
                Ok(i) => i,
                Err(_) => return,
            };
        pkt.extend_from_slice(&[0; 2 * MAC_LEN]);
        let cookie = p.fresh_cookie(now);
        let mac1 = cookie::seal_macs(&mut pkt, &cookie::mac1_key(peer), cookie.as_ref());
        let (started, sent, cookie_retried) = match &p.pending {
            Some(old) => {
                self.indices.remove(&old.local_index);
                (old.started, old.sent, old.cookie_retried)
            }
            None => (now, 0, false),
        };
        // First contact should not wait 5 s for one lost packet: retry
        // after 1, 2 and 4 s, then every `rekey_timeout`.
        let backoff = Duration::from_secs(1u64 << sent.min(8)).min(self.config.rekey_timeout);
        p.pending = Some(Pending {
            initiator,
            local_index: index,
            routes: routes.clone(),
            started,
            sent_at: now,
            retry_at: now + backoff + jitter,
            sent: sent + 1,
            mac1,
            cookie_retried,
        });
        p.last_sent = now;
        for route in &routes {
            p.count_out(route, pkt.len());
        }
        self.indices.insert(index, *peer);
        // The same initiation on every route: the peer answers the first
        // copy on the route it came (later copies are replays to it), so
        // a direct path that works is found by the handshake itself.
        for route in routes {
            self.emit(route, pkt.clone());
        }
        self.stats.handshakes_sent += 1;
    }

    /// Handles one datagram that socket `socket` received from `from`.
    /// Returns the decrypted message if it carried one. `accept` decides
    /// whether a peer may complete a handshake with us, given its key and
    /// handshake payload.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        data: &[u8],
        accept: &mut dyn FnMut(&PeerKey, &[u8]) -> bool,
    ) -> Result<Option<Inbound>, DropReason> {
        self.handle_packet(now, Route::Direct { socket, addr: from }, data, accept)
    }

    /// Handles a packet the relay brought from the agent it calls `tag`
    /// (already unwrapped).
    pub fn handle_relayed(
        &mut self,
        now: Timestamp,
        tag: RelayTag,
        data: &[u8],
        accept: &mut dyn FnMut(&PeerKey, &[u8]) -> bool,
    ) -> Result<Option<Inbound>, DropReason> {
        if self.config.relay.is_none() {
            self.stats.datagrams_in += 1;
            return Err(DropReason::Unexpected);
        }
        self.handle_packet(now, Route::Relay(tag), data, accept)
    }

    fn handle_packet(
        &mut self,
        now: Timestamp,
        from: Route,
        data: &[u8],
        accept: &mut dyn FnMut(&PeerKey, &[u8]) -> bool,
    ) -> Result<Option<Inbound>, DropReason> {
        let result = self.handle_packet_inner(now, from, data, accept);
        for key in core::mem::take(&mut self.touched) {
            self.reindex(&key);
        }
        result
    }

    fn handle_packet_inner(
        &mut self,
        now: Timestamp,
        from: Route,
        data: &[u8],
        accept: &mut dyn FnMut(&PeerKey, &[u8]) -> bool,
    ) -> Result<Option<Inbound>, DropReason> {
        self.stats.datagrams_in += 1;
        let packet = wire::decode(data).map_err(|_| DropReason::Malformed)?;
        // Counters see whole datagrams, relay framing included.
        let len = wire_len(&from, data.len());
        match packet {
            Packet::Init(h) => self.on_init(now, from, &h, len, accept).map(|_| None),
            Packet::Response(h) => self.on_response(now, from, &h, len, accept).map(|_| None),
            Packet::Cookie {
                receiver,
                nonce,
                sealed,
            } => self.on_cookie(now, receiver, nonce, sealed).map(|_| None),
            Packet::Transport {
                receiver,
                counter,
                ciphertext,
            } => self.on_transport(now, from, receiver, counter, ciphertext, len),
            // Relay and reflect packets are the owner's, never ours.
            Packet::Relay { .. } | Packet::Reflect { .. } | Packet::Reflected { .. } => {
                Err(DropReason::Unexpected)
            }
        }
    }

    fn check_macs(
        &mut self,
        now: Timestamp,
        from: Route,
        h: &wire::Handshake<'_>,
    ) -> Result<(), DropReason> {
        let source = from.cookie_source();
        let limit = from.limit_source();
        match self
            .checker
            .verify(now, &mut self.secret_rng, &source, limit, h)
        {
            MacVerdict::Accept => Ok(()),
            MacVerdict::BadMac1 => Err(DropReason::BadMac),
            MacVerdict::SourceLimited => {
                self.stats.handshakes_source_limited += 1;
                Err(DropReason::RateLimited)
            }
            MacVerdict::NeedCookie => {
                let reply =
                    self.checker
                        .cookie_reply(now, &mut self.secret_rng, &source, h.sender, h.mac1);
                self.emit(from, reply);
                self.stats.cookie_replies += 1;
                Err(DropReason::RateLimited)
            }
        }
    }

    fn on_init(
        &mut self,
        now: Timestamp,
        from: Route,
        h: &wire::Handshake<'_>,
        len: usize,
        accept: &mut dyn FnMut(&PeerKey, &[u8]) -> bool,
    ) -> Result<(), DropReason> {
        self.check_macs(now, from, h)?;
        let mut payload = Vec::new();
        let responder = Responder::read(PROLOGUE, &self.secret, h.noise, &mut payload)
            .map_err(|_| DropReason::AuthFailed)?;
        let remote = *responder.remote_static();
        if payload.len() < 8 {
            return Err(DropReason::Malformed);
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&payload[..8]);
        let timestamp = u64::from_be_bytes(ts);
        // A replayed initiation carries an old timestamp: refuse it before
        // allocating anything.
        if self
            .peers
            .get(&remote)
            .is_some_and(|p| timestamp <= p.last_init_timestamp)
        {
            return Err(DropReason::Replay);
        }
        if !accept(&remote, &payload[8..]) {
            return Err(DropReason::NotAllowed);
        }
        let known = self.peers.contains_key(&remote);
        if !known {
            // Nothing is kept for a peer that only handshook: it stays on
            // probation until its owner keeps it, and the oldest on
            // probation make room for it.
            self.make_probation_room();
            if self.peers.len() >= self.config.max_peers {
                return Err(DropReason::RateLimited);
            }
        }
        let index = self.fresh_index();
        let ephemeral = self.secret_rng.bytes32();
        let mut pkt = Vec::with_capacity(128);
        wire::put_header(&mut pkt, wire::TYPE_RESPONSE, index);
        pkt.extend_from_slice(&h.sender.to_le_bytes());
        let split = responder
            .reply(&ephemeral, &self.local_payload, &mut pkt)
            .map_err(|_| DropReason::AuthFailed)?;
        pkt.extend_from_slice(&[0; 2 * MAC_LEN]);
        let session = Session::new(&split, false, index, h.sender, now, self.config.limits);
        let follow = self.config.responder_only;
        let has_relay = self.config.relay.is_some();
        if !known {
            let until = now + self.config.probation;
            let mut peer = Peer::new(follow);
            peer.probation_until = Some(until);
            self.peers.insert(remote, peer);
            self.probation.push_back((until, remote));
            self.on_probation += 1;
        }
        self.touched.push(remote);
        let Some(p) = self.peers.get_mut(&remote) else {
            return Err(DropReason::UnknownSession);
        };
        let cookie = p.fresh_cookie(now);
        cookie::seal_macs(&mut pkt, &cookie::mac1_key(&remote), cookie.as_ref());
        p.last_init_timestamp = timestamp;
        match from {
            // An initiation through the relay tells us how the relay
            // knows the peer; the owner checks it against the peer's
            // certificate once the session is up.
            Route::Relay(tag) if has_relay && p.paths.relay.is_none() => {
                p.paths.relay = Some(tag);
            }
            Route::Relay(_) => {}
            Route::Direct { .. } => {
                p.paths.heard(now, from, &self.config.paths);
            }
        }
        p.next_payload = payload[8..].to_vec();
        remove_session_index(&mut self.indices, &p.next);
        p.next = Some(session);
        p.next_sent_at = Some(now);
        p.next_route = Some(from);
        p.last_sent = now;
        p.count_in(now, len);
        p.count_out(&from, pkt.len());
        self.indices.insert(index, remote);
        // The answer goes back the way the initiation came.
        self.emit(from, pkt);
        Ok(())
    }

    fn on_response(
        &mut self,
        now: Timestamp,
        from: Route,
        h: &wire::Handshake<'_>,
        len: usize,
        accept: &mut dyn FnMut(&PeerKey, &[u8]) -> bool,
    ) -> Result<(), DropReason> {
        let peer = *self
            .indices
            .get(&h.receiver)
            .ok_or(DropReason::UnknownSession)?;
        let pending_matches = self
            .peers
            .get(&peer)
            .and_then(|p| p.pending.as_ref())
            .is_some_and(|pd| pd.local_index == h.receiver);
        if !pending_matches {
            return Err(DropReason::UnknownSession);
        }
        self.check_macs(now, from, h)?;
        self.touched.push(peer);
        let paths_config = self.config.paths;
        let Some(p) = self.peers.get_mut(&peer) else {
            return Err(DropReason::UnknownSession);
        };
        let Some(pending) = p.pending.as_ref() else {
            return Err(DropReason::UnknownSession);
        };
        // Work on a copy: a forged response must not consume the real
        // handshake state.
        let mut payload = Vec::new();
        let split: Split = pending
            .initiator
            .clone()
            .finish(h.noise, &mut payload)
            .map_err(|_| DropReason::AuthFailed)?;
        if !accept(&peer, &payload) {
            return Err(DropReason::NotAllowed);
        }
        let local_index = pending.local_index;
        let rtt = now.saturating_since(pending.sent_at);
        let sent_on = pending.routes.contains(&from);
        p.pending = None;
        p.count_in(now, len);
        p.established(now, Some(rtt));
        let session = Session::new(&split, true, local_index, h.sender, now, self.config.limits);
        retire_current(&mut self.indices, p);
        p.current = Some(session);
        // A response on the path the initiation took proves that path
        // both ways; one from elsewhere only starts validating it.
        let changed = if sent_on {
            p.paths.handshake_done(now, from, rtt)
        } else {
            p.paths.heard(now, from, &paths_config) | p.paths.reselect()
        };
        self.stats.handshakes_completed += 1;
        self.events
            .push_back(TunnelEvent::Established { peer, payload });
        if changed {
            self.path_changed(&peer);
        }
        self.flush_queue(now, &peer, true);
        Ok(())
    }

    fn path_changed(&mut self, peer: &PeerKey) {
        let route = self.peers.get(peer).and_then(|p| p.paths.active());
        self.events
            .push_back(TunnelEvent::PathChanged { peer: *peer, route });
    }

    fn on_cookie(
        &mut self,
        now: Timestamp,
        receiver: u32,
        nonce: &[u8; 24],
        sealed: &[u8; 32],
    ) -> Result<(), DropReason> {
        let (peer, p) = peer_by_index(&self.indices, &mut self.peers, receiver)?;
        self.touched.push(peer);
        let pending = p
            .pending
            .as_ref()
            .filter(|pd| pd.local_index == receiver)
            .ok_or(DropReason::UnknownSession)?;
        let c = cookie::open_cookie_reply(&peer, &pending.mac1, nonce, sealed)
            .ok_or(DropReason::AuthFailed)?;
        let retry = !pending.cookie_retried;
        p.cookie = Some((c, now));
        // Retry with mac2 at once rather than after the backoff (1, 2,
        // 4 s): a responder under load is when waiting hurts most. Once
        // per attempt, so forged cookie replies cannot make us flood;
        // later ones wait for the retransmission timer.
        if retry {
            if let Some(pd) = p.pending.as_mut() {
                pd.cookie_retried = true;
            }
            self.initiate(now, &peer);
        }
        Ok(())
    }

    fn on_transport(
        &mut self,
        now: Timestamp,
        from: Route,
        receiver: u32,
        counter: u64,
        ciphertext: &[u8],
        len: usize,
    ) -> Result<Option<Inbound>, DropReason> {
        let paths_config = self.config.paths;
        let (peer, p) = peer_by_index(&self.indices, &mut self.peers, receiver)?;
        self.touched.push(peer);
        let (session, is_next) = p.slot_mut(receiver).ok_or(DropReason::UnknownSession)?;
        let mut plaintext = Vec::with_capacity(ciphertext.len());
        session
            .open(now, counter, ciphertext, &mut plaintext)
            .map_err(|e| match e {
                OpenError::Replay(_) => DropReason::Replay,
                OpenError::Auth => DropReason::AuthFailed,
                OpenError::Expired => DropReason::Expired,
            })?;
        let handshake_hash = *session.handshake_hash();
        let session_created = session.created();
        // Authenticated: the peer is alive. A new address is validated
        // before it carries anything (see `paths`).
        let mut changed = p.paths.heard(now, from, &paths_config);
        p.unanswered_since = None;
        p.count_in(now, len);
        if is_next {
            let rtt = p.next_sent_at.take().map(|t| now.saturating_since(t));
            p.established(now, rtt);
            if let (Some(route), Some(rtt)) = (p.next_route.take(), rtt) {
                if route == from {
                    changed |= p.paths.handshake_done(now, route, rtt);
                }
            }
            changed |= p.paths.reselect();
            retire_current(&mut self.indices, p);
            p.current = p.next.take();
            let payload = core::mem::take(&mut p.next_payload);
            self.stats.handshakes_completed += 1;
            self.events
                .push_back(TunnelEvent::Established { peer, payload });
            self.flush_queue(now, &peer, false);
        }
        if plaintext.len() == PATH_MSG_LEN
            && matches!(plaintext[0], KIND_PATH_CHALLENGE | KIND_PATH_RESPONSE)
        {
            let mut token = [0u8; 8];
            token.copy_from_slice(&plaintext[1..]);
            if plaintext[0] == KIND_PATH_CHALLENGE {
                // Answer on the path the challenge came on: that is the
                // path being validated (and it opens our NAT toward it).
                let mut reply = [0u8; PATH_MSG_LEN];
                reply[0] = KIND_PATH_RESPONSE;
                reply[1..].copy_from_slice(&token);
                self.send_control(now, &peer, from, &reply);
            } else if let Some(p) = self.peers.get_mut(&peer) {
                changed |= p.paths.answered(now, from, u64::from_le_bytes(token));
            }
            if changed {
                self.path_changed(&peer);
            }
            return Ok(None);
        }
        if changed {
            self.path_changed(&peer);
        }
        if plaintext.is_empty() {
            return Ok(None);
        }
        if let Some(p) = self.peers.get_mut(&peer) {
            p.last_data_received = Some(now);
        }
        Ok(Some(Inbound {
            peer,
            from,
            plaintext,
            handshake_hash,
            session_created,
        }))
    }

    /// Sends what waited for the session. An initiator with nothing queued
    /// sends a keepalive so the responder can confirm the session.
    fn flush_queue(&mut self, now: Timestamp, peer: &PeerKey, confirm: bool) {
        let queued: Vec<Vec<u8>> = match self.peers.get_mut(peer) {
            Some(p) => p.queue.drain(..).collect(),
            None => return,
        };
        if queued.is_empty() && confirm {
            let _ = self.send(now, peer, &[]);
        }
        for m in queued {
            let _ = self.send(now, peer, &m);
        }
    }

    /// The next thing the tunnel layer must do by itself.
    /// Queued output (transmits or events) is not part of it: see
    /// [`Tunnels::has_output`].
    pub fn poll_timeout(&self) -> Option<(Timestamp, Timer)> {
        // The front entry is live (see `trim_probation`).
        let probation = self
            .probation
            .front()
            .map(|(at, _)| (*at, Timer::Probation));
        let peer = self
            .timers
            .first()
            .and_then(|(_, key)| self.peers.get(key))
            .and_then(|p| p.deadline);
        let next = earliest(probation, peer);
        #[cfg(debug_assertions)]
        {
            // The index must agree with what every peer's timers say.
            let mut walked = probation;
            for p in self.peers.values() {
                walked = earliest(walked, PeerTimers::of(p, &self.config).earliest());
            }
            debug_assert_eq!(
                next.map(|(at, _)| at),
                walked.map(|(at, _)| at),
                "timer index out of date"
            );
        }
        next
    }

    /// Runs every timer that is due. Safe to call at any time.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(at, key)) = self.probation.front() {
            if at > now {
                break;
            }
            self.probation.pop_front();
            if self
                .peers
                .get(&key)
                .is_some_and(|p| p.probation_until == Some(at))
            {
                self.forget(&key);
            }
        }
        self.trim_probation();
        let due: Vec<PeerKey> = self
            .timers
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, key)| *key)
            .collect();
        for key in due {
            self.peer_timers(now, &key);
            self.reindex(&key);
        }
    }

    fn peer_timers(&mut self, now: Timestamp, key: &PeerKey) {
        let config = self.config;
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        let due = PeerTimers::of(p, &config).due(now);
        // Expire sessions past their reject time.
        if due.session_expiry {
            let mut removed = false;
            for slot in [&mut p.current, &mut p.previous, &mut p.next] {
                if slot.as_ref().is_some_and(|s| s.expired(now)) {
                    if let Some(s) = slot.take() {
                        self.indices.remove(&s.local_index());
                        removed = true;
                    }
                }
            }
            if removed && p.current.is_none() && p.previous.is_none() && p.next.is_none() {
                self.events
                    .push_back(TunnelEvent::SessionExpired { peer: *key });
            }
        }
        let mut retransmit = false;
        if due.dead_peer {
            p.unanswered_since = None;
            retransmit = true;
            // Stop sending into a session the peer has probably lost: new
            // data waits for the new handshake. The old session still
            // receives, in case the peer was only slow.
            if let Some(old) = p.current.take() {
                remove_session_index(&mut self.indices, &p.previous);
                p.previous = Some(old);
            }
        }
        if due.handshake {
            if let Some(h) = &p.pending {
                if now >= h.started + config.rekey_attempt_time {
                    self.indices.remove(&h.local_index);
                    p.pending = None;
                    let dropped = p.queue.len();
                    p.queue.clear();
                    self.stats.send_dropped += dropped as u64;
                    self.events.push_back(TunnelEvent::HandshakeFailed {
                        peer: *key,
                        dropped,
                    });
                } else if now >= h.retry_at {
                    retransmit = true;
                }
            }
        }
        let mut challenges = Vec::new();
        let mut path_changed = false;
        let mut keepalive = due.keepalive;
        if due.path {
            let rng = &mut self.wire_rng;
            path_changed = p
                .paths
                .on_timer(now, &config.paths, || rng.next_u64(), &mut challenges);
            // An active direct path idle this long gets a keepalive, so the
            // NATs on the way keep its mapping.
            keepalive |= p.paths.is_direct()
                && p.current.is_some()
                && p.active(now, config.paths.idle_after)
                && now >= p.last_sent + config.paths.keepalive;
        }
        if retransmit {
            self.initiate(now, key);
        }
        if keepalive {
            let _ = self.send(now, key, &[]);
        }
        for PathAction::Challenge(route, token) in challenges {
            let mut msg = [0u8; PATH_MSG_LEN];
            msg[0] = KIND_PATH_CHALLENGE;
            msg[1..].copy_from_slice(&token.to_le_bytes());
            self.send_control(now, key, route, &msg);
        }
        if path_changed {
            self.path_changed(key);
        }
    }

    /// How many peers and receiver indices we hold state for: an attacker
    /// must not be able to make these grow.
    pub fn state_size(&self) -> (usize, usize) {
        (self.peers.len(), self.indices.len())
    }

    /// Peers on probation now (at most `max_probation`).
    pub fn probation_size(&self) -> usize {
        self.on_probation
    }

    /// True while transmits or events wait to be polled.
    pub fn has_output(&self) -> bool {
        !self.transmits.is_empty() || !self.events.is_empty()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<TunnelEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests;
