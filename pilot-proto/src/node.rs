//! The agent's brain: registration, lookups, sessions with peers and
//! datagrams to virtual ports.
//!
//! # Driving a node
//!
//! After any input (`handle_datagram`, `handle_timeout` or a command),
//! drain [`Node::poll_transmit`] until `None`, then [`Node::poll_event`]
//! until `None`, then read [`Node::poll_timeout`]. `poll_timeout` returns
//! the last `now` while output is queued; `handle_timeout` is idempotent
//! and safe to call early.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use crate::addr::{Address, Hostname, SocketAddress};
use crate::identity::{Identity, PublicKey};
use crate::io::{earliest, SocketId, Timer, Transmit};
use crate::msg::{Certificate, ErrorCode, Message, Query, Register, Resolved, CERT_LEN};
use crate::overlay::{self, MAX_DATAGRAM};
use crate::rng::Stream;
use crate::stats::{DropReason, Stats};
use crate::stream::{StreamConfig, StreamError, StreamEvent};
use crate::time::Timestamp;
use crate::trust::{Pending, TrustRequest, TrustState, Trusted};
use crate::tunnel::{
    PathInfo, PeerKey, PeerStats, Route, SendError, TunnelConfig, TunnelEvent, Tunnels,
};
use crate::wire::{self, Packet};

mod hardnat;
mod punch;
mod registration;
mod streams;
mod trust;

pub use hardnat::{
    NatReport, BIRTHDAY_PROBES, BIRTHDAY_ROUNDS, BIRTHDAY_SOCKETS, HARD_ATTEMPT, PREDICT_WINDOW,
};
pub use streams::{Delivered, ServiceConfig};
pub use trust::{RequestError, MAX_PENDING};

/// How a node behaves.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The agent's identity.
    pub identity: Identity,
    /// The rendezvous's pinned public key.
    pub rendezvous_key: PublicKey,
    /// Where the rendezvous listens.
    pub rendezvous_addr: SocketAddr,
    /// Hostname to register, if any.
    pub hostname: Option<Hostname>,
    /// Findable by anyone (otherwise private, the default).
    pub public: bool,
    /// Wall-clock microseconds since the Unix epoch at `Timestamp::ZERO`.
    pub wall_origin_micros: u64,
    /// Wait this long for a registration answer before retrying.
    pub register_timeout: Duration,
    /// The longest wait between registration attempts.
    pub max_backoff: Duration,
    /// Resend a lookup after this long without an answer.
    pub resolve_retry: Duration,
    /// Give a lookup up after this long.
    pub resolve_timeout: Duration,
    /// Datagrams waiting for a lookup are dropped after this long.
    pub queue_timeout: Duration,
    /// Datagrams that may wait per unresolved peer.
    pub max_waiting: usize,
    /// Approve every trust request at once (service agents).
    pub auto_approve: bool,
    /// Trust state saved by a previous run (see [`Node::trust_state`]).
    pub trust: TrustState,
    /// Resend an unacknowledged request to the rendezvous after this long.
    pub request_retry: Duration,
    /// Give a request to the rendezvous up after this long.
    pub request_timeout: Duration,
    /// Stream buffers, limits and congestion control.
    pub streams: StreamConfig,
    /// The built-in services offered.
    pub services: ServiceConfig,
    /// Handshake and session settings. Its relay is always the
    /// rendezvous (through our primary socket).
    pub tunnel: TunnelConfig,
    /// Our own endpoints on the local network, registered so that peers
    /// behind the same NAT can try them (at most four are sent).
    pub lan_endpoints: Vec<SocketAddr>,
    /// The rendezvous's second (reflect) port, if it has one: with it the
    /// node classifies its NAT and can cross symmetric NATs.
    pub reflect_addr: Option<SocketAddr>,
    /// Reach the rendezvous over the compat carrier
    /// ([`SocketId::CARRIER`]) and every peer through its relay: no UDP
    /// candidates advertised, no punching, no direct paths.
    pub relay_only: bool,
    /// How long registration may go unanswered before the rendezvous
    /// counts as silent ([`Node::rendezvous_silent`]): a driver that
    /// knows the rendezvous by name then looks the name up again.
    pub rendezvous_silent_after: Duration,
}

impl NodeConfig {
    /// Defaults for an agent with `identity` that registers with the
    /// rendezvous at `rendezvous_addr` holding `rendezvous_key`.
    pub fn new(identity: Identity, rendezvous_key: PublicKey, rendezvous_addr: SocketAddr) -> Self {
        NodeConfig {
            identity,
            rendezvous_key,
            rendezvous_addr,
            hostname: None,
            public: false,
            wall_origin_micros: 0,
            register_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(30),
            resolve_retry: Duration::from_secs(1),
            resolve_timeout: Duration::from_secs(10),
            queue_timeout: Duration::from_secs(15),
            max_waiting: 64,
            auto_approve: false,
            trust: TrustState::default(),
            request_retry: Duration::from_secs(1),
            request_timeout: Duration::from_secs(15),
            streams: StreamConfig::default(),
            services: ServiceConfig::default(),
            tunnel: TunnelConfig::default(),
            lan_endpoints: Vec::new(),
            reflect_addr: None,
            relay_only: false,
            rendezvous_silent_after: Duration::from_secs(10),
        }
    }
}

/// The socket the rendezvous is reached through.
fn rendezvous_socket(relay_only: bool) -> SocketId {
    if relay_only {
        SocketId::CARRIER
    } else {
        SocketId::PRIMARY
    }
}

/// What we know about a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its address.
    pub address: Address,
    /// Its Ed25519 identity.
    pub key: PublicKey,
    /// Its hostname, if any.
    pub hostname: Option<Hostname>,
    /// Public visibility.
    pub public: bool,
    /// Registered and fresh when looked up.
    pub online: bool,
    /// Underlay endpoints to try.
    pub endpoints: Vec<SocketAddr>,
}

/// A peer as diagnostics see it ([`Node::peer_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its address.
    pub address: Address,
    /// Its hostname when trust was granted, if trusted.
    pub hostname: Option<Hostname>,
    /// We trust it.
    pub trusted: bool,
    /// Path, session and traffic (all zero while the tunnel layer holds
    /// nothing for it).
    pub stats: PeerStats,
    /// The direct candidates known for it, and how each stands.
    pub paths: Vec<PathInfo>,
}

/// Why a lookup failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResolveError {
    /// No such node, or it is private.
    NotFound,
    /// The rendezvous did not answer in time.
    Timeout,
    /// The rendezvous refused.
    Refused(ErrorCode),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound => f.write_str("not found"),
            ResolveError::Timeout => f.write_str("the rendezvous did not answer"),
            ResolveError::Refused(c) => write!(f, "refused: {c}"),
        }
    }
}

/// Why a command was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandError {
    /// We have no address yet: wait for `Event::Registered`.
    NotRegistered,
    /// The payload exceeds the largest datagram.
    TooLarge {
        /// The largest payload allowed.
        max: usize,
    },
    /// Not a unicast address of a node.
    InvalidDestination,
    /// The peer named is this node itself.
    IsSelf,
    /// Too many datagrams already wait for this peer.
    QueueFull,
    /// The port is already bound.
    PortInUse,
    /// We do not trust this peer: run a trust handshake first.
    NotTrusted,
    /// No pending request or trusted peer by that name.
    NotFound,
    /// Already trusted.
    AlreadyTrusted,
    /// The stream layer refused.
    Stream(StreamError),
    /// An argument is malformed (a topic, say).
    InvalidArgument,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::NotRegistered => f.write_str("not registered with the rendezvous yet"),
            CommandError::TooLarge { max } => write!(f, "payload larger than {max} bytes"),
            CommandError::InvalidDestination => f.write_str("destination is not a node address"),
            CommandError::IsSelf => f.write_str("that is this agent itself, not a peer"),
            CommandError::QueueFull => f.write_str("too many datagrams waiting for this peer"),
            CommandError::PortInUse => f.write_str("port already bound"),
            CommandError::NotTrusted => {
                f.write_str("peer not trusted: run a trust handshake first")
            }
            CommandError::NotFound => f.write_str("no such pending request or trusted peer"),
            CommandError::AlreadyTrusted => f.write_str("peer already trusted"),
            CommandError::Stream(e) => write!(f, "stream: {e}"),
            CommandError::InvalidArgument => f.write_str("invalid argument"),
        }
    }
}

/// Why datagrams to a peer were given up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unreachable {
    /// The lookup failed.
    Resolve(ResolveError),
    /// The peer is not online.
    Offline,
    /// No handshake answer.
    HandshakeTimeout,
    /// Waited too long.
    QueueTimeout,
    /// The registry holds another key for the address than the one we
    /// pinned when trust was granted.
    KeyMismatch,
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Resolve(e) => write!(f, "lookup failed: {e}"),
            Unreachable::Offline => f.write_str("peer offline"),
            Unreachable::HandshakeTimeout => f.write_str("no handshake answer"),
            Unreachable::QueueTimeout => f.write_str("timed out waiting"),
            Unreachable::KeyMismatch => {
                f.write_str("the registry's key for this address is not the pinned one")
            }
        }
    }
}

/// Why a session with a peer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEnd {
    /// It carried nothing for its whole lifetime and was not renewed.
    Expired,
    /// The peer said it is going away.
    PeerLeft,
    /// Trust ended (we or the peer revoked it).
    TrustEnded,
    /// The tunnel layer forgot the peer.
    Forgotten,
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionEnd::Expired => "expired",
            SessionEnd::PeerLeft => "peer left",
            SessionEnd::TrustEnded => "trust ended",
            SessionEnd::Forgotten => "forgotten",
        })
    }
}

/// Something the application should know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Registered (first time, or the address or public endpoint changed).
    Registered {
        /// Our address.
        address: Address,
        /// Our public endpoint as the rendezvous sees it.
        public_endpoint: SocketAddr,
    },
    /// The rendezvous refused our registration.
    RegistrationFailed {
        /// Why.
        code: ErrorCode,
        /// Detail.
        message: String,
    },
    /// A lookup finished.
    Resolved {
        /// The ID `resolve` returned.
        id: u32,
        /// The answer.
        result: Result<PeerInfo, ResolveError>,
    },
    /// An encrypted session with a peer is up (`rekey`: a new session
    /// replaced one that was up already).
    SessionEstablished {
        /// The peer.
        peer: Address,
        /// True if a session with this peer was up before this one.
        rekey: bool,
    },
    /// The last session with a peer ended; a new one is set up when
    /// traffic needs it.
    SessionClosed {
        /// The peer.
        peer: Address,
        /// Why.
        reason: SessionEnd,
    },
    /// Registration is not getting through: the rendezvous answered none
    /// of our latest handshakes (it is down or unreachable, or the key we
    /// pinned for it is not its key; a wrong key cannot be told apart,
    /// since a rendezvous silently drops handshakes not meant for it).
    /// Reported once per outage; the node keeps trying.
    RendezvousUnreachable {
        /// Handshakes sent without an answer so far.
        attempts: u32,
    },
    /// A datagram arrived on a bound port.
    Datagram {
        /// Sender and its port.
        from: SocketAddress,
        /// Our port it arrived on.
        port: u16,
        /// Payload.
        data: Vec<u8>,
    },
    /// Someone asks for our trust; `approve` or `reject` it.
    TrustRequested {
        /// The requester.
        from: Address,
        /// Its hostname.
        hostname: Option<Hostname>,
        /// Its key's fingerprint.
        fingerprint: crate::identity::Fingerprint,
        /// Why it asks.
        reason: String,
    },
    /// We now trust this peer (and it trusts us).
    Trusted {
        /// The peer.
        peer: Address,
        /// Its hostname.
        hostname: Option<Hostname>,
    },
    /// A peer rejected our request.
    TrustRejected {
        /// The peer.
        peer: Address,
        /// Why.
        reason: String,
    },
    /// A peer revoked its trust; sessions with it are closed.
    TrustRevoked {
        /// The peer.
        peer: Address,
    },
    /// A change of hostname or visibility ([`Node::set_hostname`],
    /// [`Node::set_public`]) finished: the rendezvous holds it (`Ok`),
    /// refused it (the node went back to the registration the rendezvous
    /// holds), or did not answer in time (the node keeps trying).
    RegistrationChanged {
        /// The ID the command returned.
        id: u32,
        /// How it went.
        result: Result<(), RequestError>,
    },
    /// A request to the rendezvous (handshake, approve, reject, untrust)
    /// finished.
    RequestDone {
        /// The ID the command returned.
        id: u32,
        /// How it went.
        result: Result<(), RequestError>,
    },
    /// Something happened on an application stream.
    Stream(StreamEvent),
    /// A message or file arrived through the data exchange service.
    Message(Delivered),
    /// The path carrying a peer's traffic changed: a direct path was
    /// validated, or it failed and traffic fell back to the relay.
    PathChanged {
        /// The peer.
        peer: Address,
        /// The route now in use.
        route: Option<Route>,
    },
    /// We classified our NAT's mapping behaviour (after registering, or
    /// after our public endpoint changed).
    NatClassified {
        /// What we found.
        kind: crate::nat::NatKind,
    },
    /// Datagrams to a peer were dropped.
    Unreachable {
        /// The peer.
        peer: Address,
        /// Why.
        reason: Unreachable,
        /// How many datagrams were lost.
        dropped: usize,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Registered {
                address,
                public_endpoint,
            } => write!(
                f,
                "registered as {address} (public endpoint {public_endpoint})"
            ),
            Event::RegistrationFailed { code, message } => {
                write!(f, "registration refused: {code}: {message}")
            }
            Event::Resolved { id, result: Ok(p) } => {
                write!(f, "resolved #{id}: {}", p.address)?;
                if let Some(h) = &p.hostname {
                    write!(f, " ({h})")?;
                }
                for e in &p.endpoints {
                    write!(f, " {e}")?;
                }
                Ok(())
            }
            Event::Resolved { id, result: Err(e) } => write!(f, "resolve #{id} failed: {e}"),
            Event::SessionEstablished { peer, rekey: false } => write!(f, "session with {peer}"),
            Event::SessionEstablished { peer, rekey: true } => {
                write!(f, "session with {peer} (rekey)")
            }
            Event::SessionClosed { peer, reason } => {
                write!(f, "session with {peer} closed: {reason}")
            }
            Event::RendezvousUnreachable { attempts } => {
                write!(
                    f,
                    "rendezvous unreachable ({attempts} handshakes unanswered)"
                )
            }
            Event::PathChanged {
                peer,
                route: Some(r),
            } => write!(f, "path to {peer}: {r}"),
            Event::PathChanged { peer, route: None } => write!(f, "path to {peer}: none"),
            Event::NatClassified { kind } => match kind {
                crate::nat::NatKind::Sequential { stride } => {
                    write!(f, "nat {} (stride {stride})", kind.as_str())
                }
                _ => write!(f, "nat {}", kind.as_str()),
            },
            Event::Datagram { from, port, data } => {
                write!(f, "datagram {from} -> :{port} ({}B)", data.len())
            }
            Event::Unreachable {
                peer,
                reason,
                dropped,
            } => write!(f, "unreachable {peer}: {reason} ({dropped} dropped)"),
            Event::TrustRequested {
                from,
                hostname,
                fingerprint,
                reason,
            } => {
                write!(f, "trust requested by {from}")?;
                if let Some(h) = hostname {
                    write!(f, " ({h})")?;
                }
                write!(f, " key {fingerprint}: {reason:?}")
            }
            Event::Trusted { peer, .. } => write!(f, "trusted {peer}"),
            Event::Stream(e) => write!(f, "stream {e:?}"),
            Event::Message(m) => {
                write!(
                    f,
                    "message #{} {:?} from {} ({}B)",
                    m.id,
                    m.kind,
                    m.from,
                    m.payload.len()
                )?;
                if let Some(n) = &m.name {
                    write!(f, " file {n:?}")?;
                }
                Ok(())
            }
            Event::TrustRejected { peer, reason } => write!(f, "rejected by {peer}: {reason:?}"),
            Event::TrustRevoked { peer } => write!(f, "trust revoked by {peer}"),
            Event::RegistrationChanged { id, result: Ok(()) } => {
                write!(f, "registration change #{id} done")
            }
            Event::RegistrationChanged { id, result: Err(e) } => {
                write!(f, "registration change #{id} failed: {e}")
            }
            Event::RequestDone { id, result: Ok(()) } => write!(f, "request #{id} done"),
            Event::RequestDone { id, result: Err(e) } => write!(f, "request #{id} failed: {e}"),
        }
    }
}

/// Unanswered handshakes with the rendezvous before
/// [`Event::RendezvousUnreachable`].
const UNREACHABLE_AFTER: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegState {
    /// No answer yet; retry at `retry_at`.
    Trying {
        attempt: u32,
        retry_at: Timestamp,
        req: Option<u32>,
    },
    /// Registered; refresh at `refresh_at`.
    Registered { refresh_at: Timestamp },
}

struct PendingResolve {
    query: Query,
    req: u32,
    started: Timestamp,
    retry_at: Timestamp,
    /// Reported to the application as `Event::Resolved`.
    user_id: Option<u32>,
}

struct Known {
    key: PublicKey,
    x25519: PeerKey,
}

/// An agent's protocol state machine.
pub struct Node {
    config: NodeConfig,
    tunnels: Tunnels,
    rng: Stream,
    rv: PeerKey,
    reg: RegState,
    address: Option<Address>,
    public_endpoint: Option<SocketAddr>,
    /// The rendezvous holds our registration until then (its TTL after
    /// the last answer), refreshes in flight or not.
    registered_until: Option<Timestamp>,
    next_req: u32,
    resolves: BTreeMap<u32, PendingResolve>,
    peers: BTreeMap<Address, Known>,
    by_key: BTreeMap<PeerKey, Address>,
    /// Overlay packets waiting for a lookup, by destination.
    waiting: BTreeMap<Address, VecDeque<(Timestamp, Vec<u8>)>>,
    bound: BTreeSet<u16>,
    trusted: BTreeMap<Address, Trusted>,
    pending_in: BTreeMap<Address, Pending>,
    /// When each pending request arrived, as a sequence number (oldest
    /// lowest), and whether its key was known to us then: which to drop
    /// when the list is full.
    pending_order: BTreeMap<Address, (u64, bool)>,
    pending_seq: u64,
    /// Our requests the targets have not answered.
    outgoing: Vec<TrustRequest>,
    last_issued_at: u64,
    /// The newest request seen per requester, to refuse replays.
    seen_requests: BTreeMap<PublicKey, u64>,
    rv_requests: BTreeMap<u32, trust::RvRequest>,
    /// Hostname or visibility changes waiting for the rendezvous.
    reg_changes: Vec<registration::Change>,
    /// The hostname and visibility the rendezvous last accepted.
    confirmed: Option<registration::Profile>,
    /// When registration began trying without an answer (cleared when the
    /// rendezvous accepts a Register).
    trying_since: Option<Timestamp>,
    streams: Option<streams::StreamState>,
    stream_seed: [u8; 32],
    /// Hole punching per peer: when we may ask again.
    punches: BTreeMap<Address, punch::PunchState>,
    /// Our NAT's classification, and hard-NAT punching.
    hardnat: hardnat::HardNat,
    /// Peers with a session up (reported by `SessionEstablished`, not yet
    /// by `SessionClosed`).
    sessions_up: BTreeSet<Address>,
    /// `RendezvousUnreachable` was reported and no session with the
    /// rendezvous came up since.
    rv_unreachable_reported: bool,
    /// Rejected trust requests, ours and others', newest last.
    rejected: VecDeque<crate::trust::Rejected>,
    events: VecDeque<Event>,
    now: Timestamp,
}

impl Node {
    /// A node seeded with `seed` (all its randomness), started at `now`.
    /// Registration begins at once.
    pub fn new(config: NodeConfig, seed: &[u8; 32], now: Timestamp) -> Self {
        let mut tunnel = config.tunnel;
        let socket = rendezvous_socket(config.relay_only);
        tunnel.relay = Some((socket, config.rendezvous_addr));
        tunnel.relay_only = config.relay_only;
        let mut tunnels = Tunnels::new(
            tunnel,
            config.identity.x25519_secret(),
            seed,
            config.wall_origin_micros,
        );
        // A rendezvous key that is not a valid point can never complete a
        // handshake; registration then retries and the driver reports it.
        let rv = config.rendezvous_key.x25519().unwrap_or([0; 32]);
        tunnels.set_route(
            rv,
            Route::Direct {
                socket,
                addr: config.rendezvous_addr,
            },
        );
        let saved = config.trust.clone();
        let mut node = Node {
            config,
            tunnels,
            rng: Stream::derive(seed, "node wire"),
            rv,
            reg: RegState::Trying {
                attempt: 0,
                retry_at: now,
                req: None,
            },
            address: None,
            public_endpoint: None,
            registered_until: None,
            next_req: 1,
            resolves: BTreeMap::new(),
            peers: BTreeMap::new(),
            by_key: BTreeMap::new(),
            waiting: BTreeMap::new(),
            bound: BTreeSet::new(),
            trusted: BTreeMap::new(),
            pending_in: BTreeMap::new(),
            pending_order: BTreeMap::new(),
            pending_seq: 0,
            outgoing: Vec::new(),
            last_issued_at: 0,
            seen_requests: BTreeMap::new(),
            rv_requests: BTreeMap::new(),
            reg_changes: Vec::new(),
            confirmed: None,
            trying_since: None,
            streams: None,
            stream_seed: Stream::derive(seed, "streams").bytes32(),
            punches: BTreeMap::new(),
            hardnat: hardnat::HardNat::default(),
            sessions_up: BTreeSet::new(),
            rv_unreachable_reported: false,
            rejected: VecDeque::new(),
            events: VecDeque::new(),
            now,
        };
        node.restore_trust(saved);
        node
    }

    /// True while the node reaches the rendezvous over the compat carrier
    /// and its peers through the relay only ([`NodeConfig::relay_only`]).
    pub fn is_relay_only(&self) -> bool {
        self.config.relay_only
    }

    /// Moves the node between UDP and the compat carrier (the driver's
    /// `auto` transport found one of them unusable). Packets to the
    /// rendezvous and relayed packets go through the new socket at once,
    /// on the same sessions, and the node registers again now, so the
    /// rendezvous learns its new endpoint (and that it has, or has no
    /// longer, UDP candidates) without waiting for a refresh.
    pub fn set_relay_only(&mut self, now: Timestamp, relay_only: bool) {
        self.now = now;
        if self.config.relay_only == relay_only {
            return;
        }
        self.config.relay_only = relay_only;
        let socket = rendezvous_socket(relay_only);
        let addr = self.config.rendezvous_addr;
        self.tunnels.set_relay_via(Some((socket, addr)), relay_only);
        self.tunnels
            .set_route(self.rv, Route::Direct { socket, addr });
        if relay_only {
            self.stop_reflect();
        }
        self.register_now(now);
    }

    /// The driver's carrier connection to the rendezvous was lost and is
    /// back (a new TCP connection, so a new address at the rendezvous):
    /// register again now rather than at the next refresh, so that relayed
    /// packets and pushed messages find us at once. Address, trust and
    /// sessions are kept; what the rendezvous queued for us while we were
    /// away arrives once we are registered again.
    ///
    /// A new handshake comes first: a lost carrier often means the
    /// rendezvous restarted and forgot our session, and a Register sent
    /// on a forgotten session would only be dropped. The registration
    /// goes out as soon as the new session is up.
    pub fn rendezvous_reconnected(&mut self, now: Timestamp) {
        self.now = now;
        self.reg = RegState::Trying {
            attempt: 0,
            retry_at: now + self.config.register_timeout,
            req: None,
        };
        let rv = self.rv;
        // Also when a handshake is under way: its initiation most likely
        // went nowhere while the carrier was down.
        self.tunnels.reconnect(now, &rv);
    }

    fn register_now(&mut self, now: Timestamp) {
        self.reg = RegState::Trying {
            attempt: 0,
            retry_at: now,
            req: None,
        };
        self.registration_step(now);
    }

    /// The LAN endpoints registered: none on the carrier, where peers must
    /// not try UDP to us.
    fn advertised_lan(&self) -> &[SocketAddr] {
        if self.config.relay_only {
            &[]
        } else {
            &self.config.lan_endpoints
        }
    }

    /// Our address, once registered.
    pub fn address(&self) -> Option<Address> {
        self.address
    }

    /// The hostname we register.
    pub fn hostname(&self) -> Option<&Hostname> {
        self.config.hostname.as_ref()
    }

    /// The rendezvous's address (its main port).
    pub fn rendezvous_addr(&self) -> SocketAddr {
        self.config.rendezvous_addr
    }

    /// How long the rendezvous has left registration unanswered, in whole
    /// [`NodeConfig::rendezvous_silent_after`] periods: 0 while registered
    /// or for less than one period, then 1, 2, ... A driver acts once per
    /// period, when the count goes up (a rendezvous known by a DNS name is
    /// looked up again: it may have moved). Read after the node's
    /// `handle_*` calls; it only changes with time and answers.
    pub fn rendezvous_silent(&self) -> u32 {
        let Some(since) = self.trying_since else {
            return 0;
        };
        if !matches!(self.reg, RegState::Trying { .. }) {
            return 0;
        }
        let period = self.config.rendezvous_silent_after.as_micros().max(1);
        let silent = self.now.saturating_since(since).as_micros() / period;
        u32::try_from(silent).unwrap_or(u32::MAX)
    }

    /// The rendezvous moved to `addr` (its name now resolves there): the
    /// node handshakes and registers with it now, keeping its identity,
    /// trust and peers. Nothing happens if `addr` is the address in use.
    /// The reflect port, if it was on the old address, moves along.
    pub fn set_rendezvous_addr(&mut self, now: Timestamp, addr: SocketAddr) {
        self.now = now;
        let old = self.config.rendezvous_addr;
        if old == addr {
            return;
        }
        self.config.rendezvous_addr = addr;
        if let Some(r) = self.config.reflect_addr.as_mut() {
            if r.ip() == old.ip() {
                r.set_ip(addr.ip());
            }
        }
        let socket = rendezvous_socket(self.config.relay_only);
        self.tunnels
            .set_relay_via(Some((socket, addr)), self.config.relay_only);
        self.tunnels
            .set_route(self.rv, Route::Direct { socket, addr });
        let rv = self.rv;
        self.tunnels.reconnect(now, &rv);
        self.reg = RegState::Trying {
            attempt: 0,
            retry_at: now + self.config.register_timeout,
            req: None,
        };
    }

    /// Our public endpoint as the rendezvous last saw it.
    pub fn public_endpoint(&self) -> Option<SocketAddr> {
        self.public_endpoint
    }

    /// True while the rendezvous holds a fresh registration for us (a
    /// refresh may be in flight).
    pub fn is_registered(&self) -> bool {
        self.registered_until.is_some_and(|t| self.now < t)
    }

    /// Our identity's public key.
    pub fn public_key(&self) -> PublicKey {
        self.config.identity.public()
    }

    /// Counters: one set for the node and its tunnel layer.
    pub fn stats(&self) -> &Stats {
        self.tunnels.stats()
    }

    /// True if an encrypted session with `peer` is up.
    pub fn has_session(&self, peer: Address) -> bool {
        self.peers
            .get(&peer)
            .is_some_and(|k| self.tunnels.has_session(&k.x25519, self.now))
    }

    /// Every peer we trust or hold a session with (the rendezvous is not
    /// one), by address, with its path, session state and traffic as of
    /// `now`.
    pub fn peer_stats(&self, now: Timestamp) -> Vec<PeerStatus> {
        let addresses: BTreeSet<Address> = self
            .trusted
            .keys()
            .chain(self.peers.keys())
            .copied()
            .collect();
        addresses
            .into_iter()
            .map(|address| {
                let trusted = self.trusted.get(&address);
                let x = self.peers.get(&address).map(|k| k.x25519);
                let stats = x
                    .and_then(|x| self.tunnels.peer_stats(&x, now))
                    .unwrap_or_default();
                PeerStatus {
                    address,
                    hostname: trusted.and_then(|t| t.hostname.clone()),
                    trusted: trusted.is_some(),
                    stats,
                    paths: x.map(|x| self.tunnels.paths(&x)).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The round trip to the rendezvous, as its latest handshake measured.
    pub fn rendezvous_rtt(&self, now: Timestamp) -> Option<Duration> {
        self.tunnels.peer_stats(&self.rv, now).and_then(|s| s.rtt)
    }

    /// The identity key behind a peer's address, as far as we know it.
    pub fn peer_key(&self, peer: Address) -> Option<PublicKey> {
        self.peers.get(&peer).map(|k| k.key)
    }

    /// Peers and receiver indices held by the tunnel layer.
    pub fn state_size(&self) -> (usize, usize) {
        self.tunnels.state_size()
    }

    /// Access to the tunnel layer (tests of counter limits and rekeying).
    pub fn tunnels_mut(&mut self) -> &mut Tunnels {
        &mut self.tunnels
    }

    fn wall_secs(&self, now: Timestamp) -> u64 {
        self.config
            .wall_origin_micros
            .saturating_add(now.as_micros())
            / 1_000_000
    }

    fn fresh_req(&mut self) -> u32 {
        let r = self.next_req;
        self.next_req = self.next_req.wrapping_add(1).max(1);
        r
    }

    // ---- commands ----

    /// Receives datagrams sent to `port`.
    pub fn bind(&mut self, port: u16) -> Result<(), CommandError> {
        if !self.bound.insert(port) {
            return Err(CommandError::PortInUse);
        }
        Ok(())
    }

    /// Stops receiving datagrams on `port`.
    pub fn unbind(&mut self, port: u16) {
        self.bound.remove(&port);
    }

    /// Looks a node up at the rendezvous. The answer arrives as
    /// `Event::Resolved` with the returned ID. Lookups made before
    /// registration wait for it.
    pub fn resolve(&mut self, now: Timestamp, query: Query) -> u32 {
        self.now = now;
        let req = self.fresh_req();
        self.resolves.insert(
            req,
            PendingResolve {
                query,
                req,
                started: now,
                retry_at: now,
                user_id: Some(req),
            },
        );
        self.send_resolves(now);
        self.drain_tunnel_events(now);
        req
    }

    /// Sends `data` from our port `src_port` to `dst`. Looks the peer up
    /// and opens a session first if needed; the datagram waits meanwhile.
    pub fn send_datagram(
        &mut self,
        now: Timestamp,
        src_port: u16,
        dst: SocketAddress,
        data: &[u8],
    ) -> Result<(), CommandError> {
        self.now = now;
        if data.len() > MAX_DATAGRAM {
            return Err(CommandError::TooLarge { max: MAX_DATAGRAM });
        }
        if dst.addr.is_unspecified() || dst.addr.is_broadcast() {
            return Err(CommandError::InvalidDestination);
        }
        let Some(me) = self.address else {
            return Err(CommandError::NotRegistered);
        };
        self.not_me(dst.addr)?;
        if !self.trusted.contains_key(&dst.addr) {
            return Err(CommandError::NotTrusted);
        }
        let mut packet = Vec::with_capacity(1 + overlay::UDP_HEADER_LEN + data.len());
        packet.push(crate::msg::KIND_DATA);
        overlay::encode_udp(SocketAddress::new(me, src_port), dst, data, &mut packet);
        let result = self.send_to_peer(now, dst.addr, packet);
        self.drain_tunnel_events(now);
        result
    }

    fn send_to_peer(
        &mut self,
        now: Timestamp,
        peer: Address,
        msg: Vec<u8>,
    ) -> Result<(), CommandError> {
        if let Some(x) = self.peers.get(&peer).map(|k| k.x25519) {
            // A trusted peer is always routable through the relay (again,
            // if a Bye made the tunnel layer forget it): the first packet
            // leaves at once, and punching runs beside it.
            if self.trusted.contains_key(&peer) {
                self.tunnels.set_relay(x, peer.to_bytes());
            }
            if self.tunnels.routable(&x) {
                let result = match self.tunnels.send(now, &x, &msg) {
                    Ok(()) => Ok(()),
                    Err(SendError::QueueFull) => Err(CommandError::QueueFull),
                    Err(_) => Err(CommandError::InvalidDestination),
                };
                self.maybe_punch(now, peer);
                return result;
            }
        }
        let queue = self.waiting.entry(peer).or_default();
        if queue.len() >= self.config.max_waiting {
            self.tunnels.stats_mut().send_dropped += 1;
            return Err(CommandError::QueueFull);
        }
        queue.push_back((now, msg));
        let resolving = self
            .resolves
            .values()
            .any(|r| r.query == Query::Address(peer));
        if !resolving {
            let req = self.fresh_req();
            self.resolves.insert(
                req,
                PendingResolve {
                    query: Query::Address(peer),
                    req,
                    started: now,
                    retry_at: now,
                    user_id: None,
                },
            );
            self.send_resolves(now);
        }
        Ok(())
    }

    // ---- inputs ----

    /// Handles one datagram that our socket `socket` received from `from`.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.now = now;
        let rv = self.rv;
        let rv_key = self.config.rendezvous_key;
        let wall = self.wall_secs(now);
        let by_key = &self.by_key;
        let trusted = &self.trusted;
        // Peers prove who they are with a certificate from our
        // rendezvous; a peer we looked up must present the address we
        // looked it up by.
        let mut accept = |peer: &PeerKey, payload: &[u8]| -> bool {
            if *peer == rv {
                return true;
            }
            // Only trusted peers get a session, and only with the key we
            // pinned for them.
            match verified_cert(payload, &rv_key, wall, peer) {
                Some(cert) => {
                    by_key.get(peer).is_none_or(|a| *a == cert.address)
                        && trusted
                            .get(&cert.address)
                            .is_some_and(|t| t.key == cert.key)
                }
                None => false,
            }
        };
        if data.first() == Some(&wire::TYPE_REFLECT) {
            match wire::decode(data) {
                Ok(Packet::Reflect { token, .. }) => self.on_reflect_to_us(now, socket, token),
                _ => self.tunnels.stats_mut().drop(DropReason::Malformed),
            }
            return;
        }
        if data.first() == Some(&wire::TYPE_REFLECTED) {
            match wire::decode(data) {
                Ok(Packet::Reflected { token, observed }) => {
                    self.on_reflected(now, socket, from, token, observed)
                }
                _ => self.tunnels.stats_mut().drop(DropReason::Malformed),
            }
            return;
        }
        // Relayed packets come from the rendezvous, wrapped; nobody else
        // relays for us.
        let result = if data.first() == Some(&wire::TYPE_RELAY) {
            match wire::decode(data) {
                Ok(Packet::Relay { address, inner }) if from == self.config.rendezvous_addr => self
                    .tunnels
                    .handle_relayed(now, address, inner, &mut accept),
                Ok(_) => Err(DropReason::Unexpected),
                Err(_) => Err(DropReason::Malformed),
            }
        } else {
            self.tunnels
                .handle_datagram(now, socket, from, data, &mut accept)
        };
        // A packet that confirms a session comes with the session's event:
        // learn the peer's address before reading what it sent.
        self.drain_tunnel_events(now);
        match result {
            Err(reason) => self.tunnels.stats_mut().drop(reason),
            Ok(None) => {}
            Ok(Some(inbound)) if inbound.peer == self.rv => {
                self.on_rendezvous_message(now, &inbound.plaintext)
            }
            Ok(Some(inbound)) => self.on_peer_message(inbound.peer, &inbound.plaintext),
        }
        self.drain_tunnel_events(now);
    }

    fn on_rendezvous_message(&mut self, now: Timestamp, plaintext: &[u8]) {
        let msg = match Message::decode(plaintext) {
            Ok(m) => m,
            Err(_) => return self.tunnels.stats_mut().drop(DropReason::Malformed),
        };
        match msg {
            Message::Registered(r) => {
                let RegState::Trying { req: Some(req), .. } = self.reg else {
                    return self.tunnels.stats_mut().drop(DropReason::Unexpected);
                };
                if r.req != req {
                    return self.tunnels.stats_mut().drop(DropReason::Unexpected);
                }
                if r.cert.key != self.config.identity.public() || r.cert.address != r.address {
                    return self.tunnels.stats_mut().drop(DropReason::Unexpected);
                }
                self.start_streams(now, r.address);
                let changed =
                    self.address != Some(r.address) || self.public_endpoint != Some(r.observed);
                if self.public_endpoint.is_some_and(|e| e != r.observed) {
                    // We moved (NAT rebinding, another network): peers
                    // must learn our new endpoint, so punch again.
                    self.endpoints_changed(now);
                }
                self.address = Some(r.address);
                self.public_endpoint = Some(r.observed);
                let mut payload = Vec::with_capacity(CERT_LEN);
                r.cert.encode(&mut payload);
                self.tunnels.set_local_payload(payload);
                let refresh = Duration::from_secs(u64::from(r.refresh_secs.max(1)));
                self.registered_until = Some(now + Duration::from_secs(u64::from(r.ttl_secs)));
                self.reg = RegState::Registered {
                    refresh_at: now + refresh,
                };
                self.trying_since = None;
                if changed {
                    self.events.push_back(Event::Registered {
                        address: r.address,
                        public_endpoint: r.observed,
                    });
                    self.start_reflect(now);
                }
                self.registration_accepted();
                // Lookups and requests made before registration go now.
                self.send_resolves(now);
                self.rv_request_timers(now);
            }
            Message::Resolved(r) => self.on_resolved(now, r),
            Message::Ack { req } => {
                if !self.nat_report_acked(req) {
                    self.on_rv_ack(req)
                }
            }
            Message::TrustRequested {
                id,
                request,
                hostname,
            } => {
                self.ack_push(now, id);
                self.on_trust_requested(now, request, hostname);
            }
            Message::TrustApproved {
                id,
                approval,
                hostname,
                endpoint,
            } => {
                self.ack_push(now, id);
                self.on_trust_approved(now, approval, hostname, endpoint);
            }
            Message::TrustRejected {
                id,
                rejecter,
                issued_at,
                reason,
            } => {
                self.ack_push(now, id);
                self.on_trust_rejected(now, rejecter, issued_at, reason);
            }
            Message::TrustRevoked { id, peer } => {
                self.ack_push(now, id);
                self.on_trust_revoked(now, peer);
            }
            Message::Error { req, code, message } => {
                self.on_rendezvous_error(now, req, code, message)
            }
            Message::PunchGo {
                peer,
                delay_ms,
                endpoints,
                nat,
            } => self.on_punch_go(now, peer, delay_ms, &endpoints, nat),
            Message::ReflectPort { port } => self.on_reflect_port(now, port),
            _ => self.tunnels.stats_mut().drop(DropReason::Unexpected),
        }
    }

    fn on_rendezvous_error(&mut self, now: Timestamp, req: u32, code: ErrorCode, message: String) {
        if self.rv_requests.contains_key(&req) {
            if code == ErrorCode::NotRegistered {
                // The rendezvous forgot us (it restarted and lost our
                // session): register again, and the request goes once more
                // on its retry timer, as a lookup does. Failing it instead
                // left every request refused until the next refresh.
                self.start_registration(now);
                return;
            }
            return self.fail_rv_request(req, RequestError::Refused(code, message));
        }
        if let RegState::Trying {
            req: Some(r),
            attempt,
            ..
        } = self.reg
        {
            if r == req {
                if self.registration_refused(now, code, &message) {
                    return;
                }
                // Hostname conflicts will not fix themselves quickly: wait
                // long before asking again, and say so once.
                let retry_at = now + self.config.max_backoff;
                self.reg = RegState::Trying {
                    attempt: attempt + 1,
                    retry_at,
                    req: None,
                };
                self.events
                    .push_back(Event::RegistrationFailed { code, message });
                return;
            }
        }
        let Some(pending) = self.resolves.remove(&req) else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        let error = match code {
            ErrorCode::NotFound => ResolveError::NotFound,
            ErrorCode::NotRegistered => {
                // The rendezvous forgot us (restart): register again and
                // ask once more after.
                self.resolves.insert(req, pending);
                self.start_registration(now);
                return;
            }
            other => ResolveError::Refused(other),
        };
        self.finish_resolve(pending, Err(error));
    }

    fn on_resolved(&mut self, now: Timestamp, r: Resolved) {
        let Some(pending) = self.resolves.remove(&r.req) else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        let info = PeerInfo {
            address: r.address,
            key: r.key,
            hostname: r.hostname,
            public: r.public,
            online: r.online,
            endpoints: r.endpoints,
        };
        // Only a trusted peer's endpoint is used, and only if the registry
        // still names the key we pinned: a lying registry cannot redirect
        // an established trust to another key.
        let pinned = self.trusted.get(&info.address).map(|t| t.key);
        if pinned.is_some() && pinned != Some(info.key) {
            self.release_waiting_with(info.address, Unreachable::KeyMismatch);
        } else if let Some(known) = self.peers.get(&info.address) {
            // Candidates only: they carry data once validated.
            let x = known.x25519;
            self.tunnels.add_candidates(x, &info.endpoints);
        }
        let _ = now;
        self.finish_resolve(pending, Ok(info));
    }

    fn finish_resolve(&mut self, pending: PendingResolve, result: Result<PeerInfo, ResolveError>) {
        if let Query::Address(peer) = pending.query {
            self.release_waiting(peer, &result);
        }
        if let Query::Hostname(_) = pending.query {
            if let Ok(info) = &result {
                self.release_waiting(info.address, &result);
            }
        }
        if let Some(id) = pending.user_id {
            self.events.push_back(Event::Resolved { id, result });
        }
    }

    fn release_waiting(&mut self, peer: Address, result: &Result<PeerInfo, ResolveError>) {
        let Some(queue) = self.waiting.remove(&peer) else {
            return;
        };
        let reason = match result {
            Ok(info) if info.online && !info.endpoints.is_empty() => None,
            Ok(_) => Some(Unreachable::Offline),
            Err(e) => Some(Unreachable::Resolve(e.clone())),
        };
        if let Some(reason) = reason {
            self.waiting.insert(peer, queue);
            return self.release_waiting_with(peer, reason);
        }
        let Some(x) = self.peers.get(&peer).map(|k| k.x25519) else {
            return;
        };
        for (_, msg) in queue {
            if self.tunnels.send(self.now, &x, &msg).is_err() {
                self.tunnels.stats_mut().send_dropped += 1;
            }
        }
    }

    /// Drops what waits for `peer`, telling the application why.
    fn release_waiting_with(&mut self, peer: Address, reason: Unreachable) {
        let Some(queue) = self.waiting.remove(&peer) else {
            return;
        };
        self.tunnels.stats_mut().send_dropped += queue.len() as u64;
        self.events.push_back(Event::Unreachable {
            peer,
            reason,
            dropped: queue.len(),
        });
    }

    fn on_peer_message(&mut self, peer: PeerKey, plaintext: &[u8]) {
        let Some(&peer_addr) = self.by_key.get(&peer) else {
            return self.tunnels.stats_mut().drop(DropReason::Unexpected);
        };
        let packet = match Message::decode(plaintext) {
            Ok(Message::Data(p)) => p,
            Ok(Message::Revoke) => return self.on_trust_revoked(self.now, peer_addr),
            Ok(Message::Bye) => {
                // The peer is going away: its streams end now and its next
                // start opens a fresh session.
                let now = self.now;
                self.session_closed(peer_addr, SessionEnd::PeerLeft);
                self.abort_streams_with(now, peer_addr);
                self.tunnels.remove_peer(&peer);
                return;
            }
            Ok(_) => return self.tunnels.stats_mut().drop(DropReason::Unexpected),
            Err(_) => return self.tunnels.stats_mut().drop(DropReason::Malformed),
        };
        let (src, dst, proto) = match overlay::header(packet) {
            Ok(h) => h,
            Err(_) => return self.tunnels.stats_mut().drop(DropReason::Malformed),
        };
        // The session proves the peer's key; the certificate binds the key
        // to an address. Anything else in the source is a lie.
        if src != peer_addr || Some(dst) != self.address {
            return self.tunnels.stats_mut().drop(DropReason::Spoofed);
        }
        if proto == overlay::PROTO_TCP {
            return self.on_stream_packet(self.now, packet);
        }
        let (src, dst, payload) = match overlay::decode(packet) {
            Ok(overlay::Packet::Udp { src, dst, payload }) => (src, dst, payload),
            Err(_) => return self.tunnels.stats_mut().drop(DropReason::Malformed),
        };
        if dst.port == crate::addr::ports::ECHO
            && self.config.services.echo
            && !self.bound.contains(&dst.port)
        {
            // Datagram echo: the answer goes back from port 7.
            let now = self.now;
            let payload = payload.to_vec();
            let _ = self.send_datagram(now, dst.port, src, &payload);
            return;
        }
        if !self.bound.contains(&dst.port) {
            return self.tunnels.stats_mut().drop(DropReason::PortUnreachable);
        }
        self.tunnels.stats_mut().delivered += 1;
        self.events.push_back(Event::Datagram {
            from: src,
            port: dst.port,
            data: payload.to_vec(),
        });
    }

    /// Reports the end of the session with `peer`, if one was up.
    fn session_closed(&mut self, peer: Address, reason: SessionEnd) {
        if self.sessions_up.remove(&peer) {
            self.events.push_back(Event::SessionClosed { peer, reason });
        }
    }

    fn drain_tunnel_events(&mut self, now: Timestamp) {
        while let Some(ev) = self.tunnels.poll_event() {
            match ev {
                TunnelEvent::Established { peer, .. } if peer == self.rv => {
                    self.rv_unreachable_reported = false;
                    // A new session with the rendezvous: (re)register on it
                    // at once unless a registration is fresh.
                    if let RegState::Trying { .. } = self.reg {
                        self.reg = RegState::Trying {
                            attempt: 0,
                            retry_at: now,
                            req: None,
                        };
                        self.send_register(now);
                    }
                    self.send_resolves(now);
                    self.rv_request_timers(now);
                }
                TunnelEvent::Established { peer, payload } => {
                    let cert = verified_cert(
                        &payload,
                        &self.config.rendezvous_key,
                        self.wall_secs(now),
                        &peer,
                    );
                    let Some(cert) = cert else { continue };
                    // A trusted peer that reached us first: ours to keep.
                    self.tunnels.keep(&peer);
                    self.by_key.insert(peer, cert.address);
                    self.tunnels.set_relay(peer, cert.address.to_bytes());
                    self.peers.insert(
                        cert.address,
                        Known {
                            key: cert.key,
                            x25519: peer,
                        },
                    );
                    let rekey = !self.sessions_up.insert(cert.address);
                    self.events.push_back(Event::SessionEstablished {
                        peer: cert.address,
                        rekey,
                    });
                }
                TunnelEvent::HandshakeFailed { peer, dropped } if peer != self.rv => {
                    if let Some(&address) = self.by_key.get(&peer) {
                        self.events.push_back(Event::Unreachable {
                            peer: address,
                            reason: Unreachable::HandshakeTimeout,
                            dropped,
                        });
                    }
                }
                TunnelEvent::HandshakeFailed { .. } => {}
                TunnelEvent::SessionExpired { peer } => {
                    if let Some(&address) = self.by_key.get(&peer) {
                        self.session_closed(address, SessionEnd::Expired);
                    }
                }
                TunnelEvent::Forgotten { peer } => {
                    // Only peers we never kept are forgotten, so this is
                    // rare here; what we knew of it goes with it.
                    if let Some(address) = self.by_key.remove(&peer) {
                        self.session_closed(address, SessionEnd::Forgotten);
                        if self.peers.get(&address).is_some_and(|k| k.x25519 == peer) {
                            self.peers.remove(&address);
                        }
                    }
                }
                TunnelEvent::PathChanged { peer, route } => {
                    if let Some(&address) = self.by_key.get(&peer) {
                        self.path_changed(now, address, route);
                        self.events.push_back(Event::PathChanged {
                            peer: address,
                            route,
                        });
                    }
                }
            }
        }
    }

    // ---- registration ----

    fn start_registration(&mut self, now: Timestamp) {
        self.reg = RegState::Trying {
            attempt: 0,
            retry_at: now,
            req: None,
        };
        self.registration_step(now);
    }

    fn backoff(&mut self, attempt: u32) -> Duration {
        let base = Duration::from_secs(1u64 << attempt.min(6)).min(self.config.max_backoff);
        // ±20 % so a fleet restarted together spreads out.
        let spread = base.as_micros() as u64 / 5;
        let jitter = self.rng.below(2 * spread + 1);
        Duration::from_micros(base.as_micros() as u64 - spread + jitter)
    }

    fn send_register(&mut self, now: Timestamp) {
        let Some(hash) = self.tunnels.handshake_hash(&self.rv, now) else {
            return;
        };
        let req = self.fresh_req();
        let msg = Register::new(
            &self.config.identity,
            &hash,
            req,
            self.config.public,
            self.config.hostname.clone(),
            self.advertised_lan(),
        );
        let attempt = match self.reg {
            RegState::Trying { attempt, .. } => attempt,
            RegState::Registered { .. } => 0,
        };
        self.reg = RegState::Trying {
            attempt,
            // The session is up, so only the request or its answer was
            // lost: retry soon (2, 2, 4, 8 s), whatever the handshake
            // phase's backoff had grown to.
            retry_at: now
                + self
                    .config
                    .register_timeout
                    .max(self.backoff(attempt.min(3))),
            req: Some(req),
        };
        let rv = self.rv;
        let _ = self
            .tunnels
            .send(now, &rv, &Message::Register(msg).to_vec());
    }

    fn registration_step(&mut self, now: Timestamp) {
        if matches!(self.reg, RegState::Trying { .. }) && self.trying_since.is_none() {
            self.trying_since = Some(now);
        }
        match self.reg {
            RegState::Registered { refresh_at } if now >= refresh_at => {
                self.reg = RegState::Trying {
                    attempt: 0,
                    retry_at: now,
                    req: None,
                };
                self.registration_step(now);
            }
            RegState::Registered { .. } => {}
            RegState::Trying {
                attempt, retry_at, ..
            } if now >= retry_at => {
                if self.tunnels.has_session(&self.rv, now) {
                    self.send_register(now);
                    if let RegState::Trying { req, retry_at, .. } = self.reg {
                        self.reg = RegState::Trying {
                            attempt: attempt + 1,
                            retry_at,
                            req,
                        };
                    }
                } else {
                    // Two handshakes (about 3 s) without an answer: say so
                    // once; the node keeps trying.
                    if attempt >= UNREACHABLE_AFTER && !self.rv_unreachable_reported {
                        self.rv_unreachable_reported = true;
                        self.events
                            .push_back(Event::RendezvousUnreachable { attempts: attempt });
                    }
                    let rv = self.rv;
                    self.tunnels.connect(now, &rv);
                    let wait = self.backoff(attempt);
                    self.reg = RegState::Trying {
                        attempt: attempt + 1,
                        retry_at: now + wait,
                        req: None,
                    };
                }
            }
            RegState::Trying { .. } => {}
        }
    }

    // ---- lookups ----

    /// True if requests to the rendezvous can go now. If we are
    /// registered but the session lapsed (a refresh interval longer than
    /// a session's life, a failed rekey), starts a new one: the requests go
    /// when it is up.
    fn rendezvous_ready(&mut self, now: Timestamp) -> bool {
        if self.address.is_none() {
            return false;
        }
        if self.tunnels.has_session(&self.rv, now) {
            return true;
        }
        let rv = self.rv;
        self.tunnels.connect(now, &rv);
        false
    }

    /// Whether requests to the rendezvous can be sent without waiting.
    fn rendezvous_connected(&self) -> bool {
        self.address.is_some() && self.tunnels.has_session(&self.rv, self.now)
    }

    fn send_resolves(&mut self, now: Timestamp) {
        if self.resolves.is_empty() || !self.rendezvous_ready(now) {
            return;
        }
        let due: Vec<(u32, Query)> = self
            .resolves
            .values()
            .filter(|r| r.retry_at <= now)
            .map(|r| (r.req, r.query.clone()))
            .collect();
        let rv = self.rv;
        for (req, query) in due {
            let msg = Message::Resolve { req, query }.to_vec();
            let _ = self.tunnels.send(now, &rv, &msg);
            if let Some(r) = self.resolves.get_mut(&req) {
                r.retry_at = now + self.config.resolve_retry;
            }
        }
    }

    fn resolve_timers(&mut self, now: Timestamp) {
        let expired: Vec<u32> = self
            .resolves
            .values()
            .filter(|r| now >= r.started + self.config.resolve_timeout)
            .map(|r| r.req)
            .collect();
        for req in expired {
            if let Some(p) = self.resolves.remove(&req) {
                self.finish_resolve(p, Err(ResolveError::Timeout));
            }
        }
        self.send_resolves(now);
    }

    fn queue_timers(&mut self, now: Timestamp) {
        let timeout = self.config.queue_timeout;
        let mut gone = Vec::new();
        for (peer, q) in self.waiting.iter_mut() {
            let before = q.len();
            q.retain(|(at, _)| now < *at + timeout);
            if before != q.len() {
                gone.push((*peer, before - q.len()));
            }
        }
        self.waiting.retain(|_, q| !q.is_empty());
        for (peer, dropped) in gone {
            self.tunnels.stats_mut().send_dropped += dropped as u64;
            self.events.push_back(Event::Unreachable {
                peer,
                reason: Unreachable::QueueTimeout,
                dropped,
            });
        }
    }

    /// Tells the rendezvous and every peer with a session that we are
    /// shutting down, so they drop our sessions (and the rendezvous marks
    /// us offline) at once instead of timing out. Call before stopping,
    /// then drain the transmits.
    pub fn shutdown(&mut self, now: Timestamp) {
        self.now = now;
        let bye = Message::Bye.to_vec();
        let mut keys: Vec<PeerKey> = self.peers.values().map(|k| k.x25519).collect();
        keys.push(self.rv);
        for x in keys {
            if self.tunnels.has_session(&x, now) {
                let _ = self.tunnels.send(now, &x, &bye);
            }
        }
    }

    /// Runs every timer that is due. Idempotent; safe to call early.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.now = now;
        self.tunnels.handle_timeout(now);
        self.drain_tunnel_events(now);
        self.registration_step(now);
        self.resolve_timers(now);
        self.rv_request_timers(now);
        self.registration_change_timers(now);
        self.queue_timers(now);
        self.stream_timers(now);
        self.reflect_timer(now);
        self.birthday_timers(now);
        self.punch_timers(now);
        self.drain_tunnel_events(now);
    }

    // ---- outputs ----

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.hardnat
            .out
            .pop_front()
            .or_else(|| self.tunnels.poll_transmit())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` next, and why.
    pub fn poll_timeout(&self) -> Option<(Timestamp, Timer)> {
        if self.tunnels.has_output()
            || !self.events.is_empty()
            || !self.hardnat.out.is_empty()
            || !self.hardnat.socket_ops.is_empty()
        {
            return Some((self.now, Timer::Output));
        }
        let mut next = self.tunnels.poll_timeout();
        next = earliest(next, self.reflect_deadline());
        next = earliest(next, self.birthday_deadline());
        next = earliest(next, self.punch_deadline());
        next = earliest(
            next,
            Some(match self.reg {
                RegState::Trying { retry_at, .. } => (retry_at, Timer::Register),
                RegState::Registered { refresh_at } => (refresh_at, Timer::Refresh),
            }),
        );
        let connected = self.rendezvous_connected();
        for r in self.resolves.values() {
            let give_up = r.started + self.config.resolve_timeout;
            let at = if connected {
                r.retry_at.min(give_up)
            } else {
                give_up
            };
            next = earliest(next, Some((at, Timer::Resolve)));
        }
        next = earliest(next, self.rv_request_deadline());
        next = earliest(next, self.registration_change_deadline());
        next = earliest(next, self.stream_deadline());
        for q in self.waiting.values() {
            if let Some((at, _)) = q.front() {
                next = earliest(
                    next,
                    Some((*at + self.config.queue_timeout, Timer::QueueExpiry)),
                );
            }
        }
        next
    }
}

/// The certificate in a handshake payload, if it is one our rendezvous
/// signed, still valid, for the key that did the handshake.
fn verified_cert(
    payload: &[u8],
    issuer: &PublicKey,
    wall_secs: u64,
    peer: &PeerKey,
) -> Option<Certificate> {
    if payload.len() != CERT_LEN {
        return None;
    }
    let cert = Certificate::decode(&mut crate::codec::Reader::new(payload)).ok()?;
    if cert.key.x25519().ok()? != *peer || !cert.verify(issuer, wall_secs) {
        return None;
    }
    Some(cert)
}
