//! The daemon's plumbing between IPC clients and the node: requests become
//! node commands, node events become responses and pushed events. No
//! protocol decision is made here; this only routes and translates.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use base64::Engine as _;
use pilot_proto::addr::{ports, Address, Hostname, PeerRef, SocketAddress};
use pilot_proto::msg::{ErrorCode, Query};
use pilot_proto::node::{CommandError, Event, Node, RequestError, ResolveError};
use pilot_proto::stream::{StreamError, StreamEvent, StreamId};
use pilot_proto::tunnel::{Route, SessionState};
use pilot_proto::Timestamp;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::bridge::BridgePolicy;
use crate::ipc::api::{self, codes, Request, Response};

pub use crate::ipc::server::ClientId;

/// Something for the IPC server to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Out {
    /// The answer to request `id` of `client`.
    Response {
        /// The client.
        client: ClientId,
        /// Its request ID.
        id: u32,
        /// The answer.
        response: Response,
    },
    /// An event pushed to `client`.
    Event {
        /// The client.
        client: ClientId,
        /// The event.
        event: api::Event,
    },
    /// Stream bytes for `client`.
    Data {
        /// The client.
        client: ClientId,
        /// The stream.
        stream: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
}

/// Things the daemon must do besides answering: persist, stop.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Trust state changed: write it out.
    pub trust_changed: bool,
    /// The hostname or visibility the node registers changed (or went
    /// back after a refusal): write it into the settings.
    pub registration_changed: bool,
    /// A client asked the daemon to stop.
    pub stop: bool,
    /// Messages and files that arrived through data exchange, to store.
    pub delivered: Vec<pilot_proto::node::Delivered>,
}

/// Stream bytes a client sent that the node did not take yet.
#[derive(Default)]
struct Pending {
    bytes: VecDeque<u8>,
    shutdown: bool,
}

/// The routing state between clients and the node.
pub struct Agent {
    /// The node itself.
    pub node: Node,
    started: Timestamp,
    out: VecDeque<Out>,
    effects: Effects,
    /// Node request IDs (lookups, trust requests) to the client waiting.
    deferred: BTreeMap<u32, (ClientId, u32)>,
    /// Trust requests on their way, to the peer as named: logged as sent
    /// once the rendezvous took them (a name it does not know is not).
    handshakes: BTreeMap<u32, String>,
    /// Lookups of a hostname this agent does not know, to the request
    /// that named it: run again by address once it is found.
    resolving: BTreeMap<u32, (ClientId, u32, Request)>,
    /// Streams being connected: stream to (client, request ID).
    connecting: BTreeMap<StreamId, (ClientId, u32)>,
    stream_owner: BTreeMap<StreamId, ClientId>,
    /// Bytes from clients waiting for room in the node's send buffer.
    to_node: BTreeMap<StreamId, Pending>,
    /// Streams whose data waits in the node because the client is full.
    to_client_blocked: BTreeSet<StreamId>,
    /// Bytes read from the node that the client's queue did not take.
    carry: BTreeMap<StreamId, Vec<u8>>,
    /// Streams whose peer finished: `Finished` goes to the client after
    /// the last byte, not before.
    finishing: BTreeSet<StreamId>,
    datagram_ports: BTreeMap<u16, ClientId>,
    stream_ports: BTreeMap<u16, ClientId>,
    clients: BTreeSet<ClientId>,
    /// The ports of the built-in services that run, with their names.
    services: BTreeMap<u16, &'static str>,
    /// Streams owned by a bridged TCP connection rather than a client
    /// (see `bridge.rs`): their events go to the bridge.
    bridged: BTreeSet<StreamId>,
    to_bridge: VecDeque<StreamEvent>,
    /// Which incoming streams may be bridged to local TCP services.
    bridge_policy: BridgePolicy,
    /// Gateway requests, for the daemon's gateway to answer.
    gateway_requests: VecDeque<(ClientId, u32, Request)>,
    /// How the daemon reaches the rendezvous (`pilotctl info`), kept up
    /// to date by the event loop. Never holds proxy credentials.
    pub transport: Value,
    /// `Netcheck` requests waiting for the classification they started.
    netchecks: Vec<(ClientId, u32)>,
    /// The rendezvous's name as given (`HOST:PORT`), when it was given
    /// by DNS name (`pilotctl info`).
    pub rendezvous_name: Option<String>,
    /// The rendezvous's last refusal of this agent's registration, until
    /// the node registers: the node asks again every half minute and is
    /// refused the same way, which is logged once. `info` shows it, so
    /// `daemon start` answers with it instead of waiting.
    refused: Option<Refusal>,
}

/// A registration the rendezvous refused: for the log (once) and `info`.
#[derive(Debug, PartialEq)]
struct Refusal {
    hostname: Option<String>,
    code: ErrorCode,
    message: String,
}

impl Refusal {
    /// `{code, reason, message}`: `code` is the CLI's error code for it.
    fn json(&self) -> Value {
        json!({
            "code": refusal_code(self.code),
            "reason": self.code.to_string(),
            "message": self.message,
            "hostname": self.hostname,
        })
    }
}

/// The CLI's error code for a rendezvous's refusal.
fn refusal_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::HostnameTaken => codes::ALREADY_EXISTS,
        ErrorCode::InvalidHostname => codes::INVALID_ARGUMENT,
        ErrorCode::NotFound => codes::NOT_FOUND,
        ErrorCode::NotRegistered => codes::NOT_REGISTERED,
        _ => codes::CONNECTION_FAILED,
    }
}

fn error(code: &str, message: impl Into<String>, hint: impl Into<String>) -> Response {
    Response::Error {
        code: code.into(),
        message: message.into(),
        hint: hint.into(),
    }
}

/// What a valid hostname looks like.
pub const HOSTNAME_HINT: &str =
    "hostnames are 1-63 lower-case letters, digits and '-', starting with a letter (e.g. agent-alpha)";

fn ok(data: Value) -> Response {
    Response::Ok { data }
}

/// What `info` says of our NAT: the mapping behaviour the node's last
/// classification found, and how far it got.
fn nat_summary(n: &Node) -> Value {
    let report = n.nat_report();
    let state = if n.nat_classifying() {
        "classifying"
    } else if report.is_some() {
        "classified"
    } else if n.reflect_addr().is_none() {
        "no_reflect_port"
    } else {
        "not_yet"
    };
    let kind = report.map(|r| r.info.kind).unwrap_or_default();
    json!({
        "mapping": kind.as_str(),
        "stride": match kind {
            pilot_proto::nat::NatKind::Sequential { stride } => Some(stride),
            _ => None,
        },
        "state": state,
    })
}

/// `pilotctl netcheck`: what the node knows of its NAT and of the
/// rendezvous's reachability over UDP.
fn netcheck(n: &Node) -> Value {
    use pilot_proto::nat::NatKind;
    let report = n.nat_report();
    let seen = report.map(|r| r.seen).unwrap_or_default();
    let show = |e: Option<std::net::SocketAddr>| e.map(|e| e.to_string());
    let mut addresses: Vec<String> = seen
        .iter()
        .flatten()
        .chain(n.public_endpoint().iter())
        .map(|e| e.ip().to_string())
        .collect();
    addresses.sort();
    addresses.dedup();
    let (allocation, stride) = match report.map(|r| r.info.kind) {
        Some(NatKind::EndpointIndependent) => ("preserved per socket", None),
        Some(NatKind::Sequential { stride }) => ("sequential", Some(stride)),
        Some(NatKind::Random) => ("random", None),
        _ => ("unknown", None),
    };
    let mut v = nat_summary(n);
    v["allocation"] = json!(allocation);
    v["stride"] = json!(stride);
    v["last_port"] = json!(report.map(|r| r.info.last_port));
    v["filtering"] = json!(report.map(|r| r.filtering).unwrap_or_default().as_str());
    v["hairpinning"] = json!(report.and_then(|r| r.hairpinning));
    v["public_addresses"] = json!(addresses);
    v["rendezvous"] = json!({
        "address": n.rendezvous_addr().to_string(),
        "udp": n.is_registered(),
        "reflect_address": n.reflect_addr().map(|a| a.to_string()),
        "reflect_udp": report.map(|r| r.seen[1].is_some()),
    });
    v["observed"] = json!({
        "primary_to_main": show(seen[0].or(n.public_endpoint())),
        "primary_to_reflect": show(seen[1]),
        "fresh_to_main": show(seen[2]),
        "fresh_to_reflect": show(seen[3]),
    });
    v
}

/// Decodes a request's base64 payload, or says what is wrong with it.
fn unbase64(text: &str) -> Result<Vec<u8>, Response> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| {
            error(
                codes::INVALID_ARGUMENT,
                format!("data is not base64: {e}"),
                "",
            )
        })
}

/// Takes out of `owners` every entry that belongs to `client`.
/// The built-in services that run, by port.
fn running_services(services: &pilot_proto::node::ServiceConfig) -> BTreeMap<u16, &'static str> {
    [
        (services.echo, ports::ECHO, "echo"),
        (
            services.data_exchange,
            ports::DATA_EXCHANGE,
            "data exchange",
        ),
        (services.event_stream, ports::EVENT_STREAM, "event stream"),
    ]
    .into_iter()
    .filter(|(on, _, _)| *on)
    .map(|(_, port, name)| (port, name))
    .collect()
}

/// The refusal of a port a built-in service holds, the same for datagrams
/// and streams.
fn service_port(port: u16, name: &str) -> Response {
    error(
        codes::ALREADY_EXISTS,
        format!("port {port} is held by the built-in {name} service"),
        "pick another port, or start the daemon with --no-services (datagrams: --force takes the port from echo)",
    )
}

fn take_owned<K: Ord + Copy>(owners: &mut BTreeMap<K, ClientId>, client: ClientId) -> Vec<K> {
    let mine: Vec<K> = owners
        .iter()
        .filter(|(_, c)| **c == client)
        .map(|(k, _)| *k)
        .collect();
    for k in &mine {
        owners.remove(k);
    }
    mine
}

/// The stream an event is about.
fn stream_of(e: &StreamEvent) -> Option<StreamId> {
    match *e {
        StreamEvent::Incoming { id, .. }
        | StreamEvent::Connected { id }
        | StreamEvent::Readable { id }
        | StreamEvent::Writable { id }
        | StreamEvent::Finished { id }
        | StreamEvent::Closed { id, .. } => Some(id),
        _ => None,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Maps a command error to a stable code, message and hint.
pub fn command_error(e: &CommandError) -> Response {
    match e {
        CommandError::NotRegistered => error(
            codes::NOT_REGISTERED,
            "the daemon is not registered with the rendezvous yet",
            "check `pilotctl info` and the rendezvous address; registration retries by itself",
        ),
        CommandError::NotTrusted => error(
            codes::NOT_TRUSTED,
            "this peer is not trusted",
            "run `pilotctl handshake <peer>` and wait for the peer to approve",
        ),
        CommandError::NotFound => error(
            codes::NOT_FOUND,
            e.to_string(),
            "see `pilotctl pending` and `pilotctl trust`",
        ),
        CommandError::AlreadyTrusted => {
            error(codes::ALREADY_EXISTS, e.to_string(), "see `pilotctl trust`")
        }
        CommandError::PortInUse => error(codes::ALREADY_EXISTS, e.to_string(), "pick another port"),
        CommandError::Stream(StreamError::PortInUse) => error(
            codes::ALREADY_EXISTS,
            "port already in use",
            "pick another port",
        ),
        CommandError::Stream(StreamError::TooManyStreams | StreamError::PortLimit) => error(
            codes::CONNECTION_FAILED,
            e.to_string(),
            "close some streams and retry",
        ),
        CommandError::TooLarge { .. }
        | CommandError::InvalidDestination
        | CommandError::InvalidArgument => error(codes::INVALID_ARGUMENT, e.to_string(), ""),
        CommandError::IsSelf => error(
            codes::INVALID_ARGUMENT,
            "that is this agent itself, not a peer",
            "name another agent (see `pilotctl trust`); `pilotctl info` shows this one",
        ),
        CommandError::Stream(StreamError::InvalidPort | StreamError::InvalidDestination) => error(
            codes::INVALID_ARGUMENT,
            e.to_string(),
            "ports are 1-65535, and the peer is another agent",
        ),
        CommandError::Stream(StreamError::UnknownStream | StreamError::Closed) => {
            error(codes::NOT_FOUND, e.to_string(), "the stream is closed")
        }
        _ => error(codes::INTERNAL, e.to_string(), ""),
    }
}

/// Maps a failed lookup to a stable code, message and hint.
fn resolve_error(e: &ResolveError) -> Response {
    match e {
        ResolveError::NotFound => error(
            codes::NOT_FOUND,
            "no such node, or it is private",
            "private nodes are visible only to peers that trust them",
        ),
        ResolveError::Timeout => error(
            codes::TIMEOUT,
            "the rendezvous did not answer",
            "check `pilotctl info`",
        ),
        ResolveError::Refused(ErrorCode::NotRegistered) => error(
            codes::NOT_REGISTERED,
            "the rendezvous does not know this agent (yet)",
            "registration retries by itself; check `pilotctl info`",
        ),
        e => error(codes::CONNECTION_FAILED, e.to_string(), ""),
    }
}

impl Agent {
    /// Routing for `node`, started at `now`.
    pub fn new(node: Node, now: Timestamp) -> Self {
        Agent {
            node,
            started: now,
            out: VecDeque::new(),
            effects: Effects::default(),
            deferred: BTreeMap::new(),
            handshakes: BTreeMap::new(),
            netchecks: Vec::new(),
            rendezvous_name: None,
            refused: None,
            resolving: BTreeMap::new(),
            connecting: BTreeMap::new(),
            stream_owner: BTreeMap::new(),
            to_node: BTreeMap::new(),
            to_client_blocked: BTreeSet::new(),
            carry: BTreeMap::new(),
            finishing: BTreeSet::new(),
            datagram_ports: BTreeMap::new(),
            stream_ports: BTreeMap::new(),
            clients: BTreeSet::new(),
            services: running_services(&pilot_proto::node::ServiceConfig::default()),
            bridged: BTreeSet::new(),
            to_bridge: VecDeque::new(),
            bridge_policy: BridgePolicy::default(),
            gateway_requests: VecDeque::new(),
            transport: json!({"mode": "udp", "active": "udp"}),
        }
    }

    /// Sets which incoming streams may be bridged to local TCP services.
    pub fn with_bridge_policy(mut self, policy: BridgePolicy) -> Self {
        self.bridge_policy = policy;
        self
    }

    /// Opens a stream whose owner is a bridged TCP connection: its
    /// events come out of [`Agent::take_bridge_event`].
    pub fn bridge_connect(
        &mut self,
        now: Timestamp,
        dst: SocketAddress,
    ) -> Result<StreamId, CommandError> {
        let id = self.node.connect(now, dst)?;
        self.bridged.insert(id);
        Ok(id)
    }

    /// The next event of a bridged stream (incoming ones included).
    pub fn take_bridge_event(&mut self) -> Option<StreamEvent> {
        self.to_bridge.pop_front()
    }

    /// The next gateway request, for the daemon's gateway.
    pub fn take_gateway_request(&mut self) -> Option<(ClientId, u32, Request)> {
        self.gateway_requests.pop_front()
    }

    /// Answers request `id` of `client` (for requests answered elsewhere).
    pub fn answer(&mut self, client: ClientId, id: u32, response: Response) {
        self.respond(client, id, response);
    }

    /// The bridge policy as `info` and `SetBridge` show it.
    fn bridge_json(&self) -> Value {
        json!({
            "ports": self.bridge_policy.ports.to_string(),
            "peers": self.bridge_policy.peers.to_string(),
        })
    }

    /// Whether an incoming stream on `port` from `from` may be bridged.
    fn may_bridge(&self, port: u16, from: Address) -> bool {
        self.bridge_policy.ports.contains(port)
            && self.node.trusted().any(|t| {
                t.address == from && self.bridge_policy.peers.contains(from, t.hostname.as_ref())
            })
    }

    /// Tells the routing which built-in services run (all, by default),
    /// so that a client cannot silently take a service's port.
    pub fn with_services(mut self, services: &pilot_proto::node::ServiceConfig) -> Self {
        self.services = running_services(services);
        self
    }

    /// The next thing to send to a client.
    pub fn poll_out(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// What the daemon must do besides answering.
    pub fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    /// True (once) if the registered hostname or visibility changed. The
    /// daemon persists that before it sends the answers waiting in the
    /// queue, so a client told `ok` finds the change saved.
    pub fn take_registration_changed(&mut self) -> bool {
        std::mem::take(&mut self.effects.registration_changed)
    }

    /// Messages and files delivered since the last call. The daemon
    /// stores them before it sends anything more: the data-exchange ack
    /// that tells the sender they arrived goes out after they are on disk.
    pub fn take_delivered(&mut self) -> Vec<pilot_proto::node::Delivered> {
        std::mem::take(&mut self.effects.delivered)
    }

    /// What the node registers: the answer to a hostname or visibility
    /// change, `pending` while the rendezvous has not taken it yet.
    fn registration(&self, pending: bool) -> Value {
        let n = &self.node;
        json!({
            "address": n.address().map(|a| a.to_string()),
            "hostname": n.hostname().map(|h| h.to_string()),
            "public": n.is_public(),
            "pending": pending,
        })
    }

    /// A hostname or visibility change the node started as `rid`. With a
    /// registration in place it is answered when the rendezvous takes or
    /// refuses it (or, silent, as pending after the node's request
    /// timeout); without one the rendezvous is out of reach, so it is
    /// answered at once: saved, and pending until the node registers.
    fn registration_change(&mut self, client: ClientId, id: u32, rid: u32) -> Option<Response> {
        if self.node.is_registered() {
            self.deferred.insert(rid, (client, id));
            return None;
        }
        self.effects.registration_changed = true;
        Some(ok(self.registration(true)))
    }

    /// A client connected.
    pub fn client_connected(&mut self, client: ClientId) {
        self.clients.insert(client);
    }

    /// Whether a client holds something open (a stream, a bound or
    /// listened port, a request still being worked on): such a client is
    /// not closed for idling.
    pub fn holds(&self, client: ClientId) -> bool {
        self.stream_owner.values().any(|c| *c == client)
            || self.datagram_ports.values().any(|c| *c == client)
            || self.stream_ports.values().any(|c| *c == client)
            || self.deferred.values().any(|(c, _)| *c == client)
            || self.resolving.values().any(|(c, _, _)| *c == client)
            || self.connecting.values().any(|(c, _)| *c == client)
            || self.netchecks.iter().any(|(c, _)| *c == client)
    }

    /// A client went away: its streams close and its ports are released.
    pub fn client_gone(&mut self, now: Timestamp, client: ClientId) {
        self.clients.remove(&client);
        for s in take_owned(&mut self.stream_owner, client) {
            self.node.stream_close(now, s);
            self.forget_stream(s);
        }
        for p in take_owned(&mut self.datagram_ports, client) {
            self.node.unbind(p);
        }
        for p in take_owned(&mut self.stream_ports, client) {
            self.node.unlisten(p);
        }
        self.deferred.retain(|_, (c, _)| *c != client);
        self.resolving.retain(|_, (c, _, _)| *c != client);
        self.connecting.retain(|_, (c, _)| *c != client);
        self.netchecks.retain(|(c, _)| *c != client);
    }

    fn forget_stream(&mut self, s: StreamId) {
        self.stream_owner.remove(&s);
        self.to_node.remove(&s);
        self.to_client_blocked.remove(&s);
        self.carry.remove(&s);
        self.finishing.remove(&s);
        self.connecting.remove(&s);
    }

    /// The IPC server took only `taken` of a data frame's bytes: keep the
    /// rest, in order, for when the client has room again.
    pub fn unsent(&mut self, stream: u32, rest: &[u8]) {
        let s = StreamId(stream);
        if !self.stream_owner.contains_key(&s) {
            return;
        }
        let c = self.carry.entry(s).or_default();
        let mut v = rest.to_vec();
        v.extend_from_slice(c);
        *c = v;
        self.to_client_blocked.insert(s);
    }

    fn respond(&mut self, client: ClientId, id: u32, response: Response) {
        self.out.push_back(Out::Response {
            client,
            id,
            response,
        });
    }

    fn broadcast(&mut self, event: api::Event) {
        for client in self.clients.iter().copied().collect::<Vec<_>>() {
            self.out.push_back(Out::Event {
                client,
                event: event.clone(),
            });
        }
    }

    /// A peer's hostname for the log, when this agent knows it (trusted,
    /// pending, or rejected), else `-`.
    fn name_of(&self, a: Address) -> String {
        let n = &self.node;
        n.trusted()
            .find(|t| t.address == a)
            .and_then(|t| t.hostname.as_ref())
            .or_else(|| {
                n.pending()
                    .find(|p| p.request.from == a)
                    .and_then(|p| p.hostname.as_ref())
            })
            .or_else(|| {
                n.rejected()
                    .filter(|r| r.peer == a)
                    .last()
                    .and_then(|r| r.hostname.as_ref())
            })
            .map_or_else(|| "-".to_string(), |h| h.to_string())
    }

    /// A peer's hostname for the log (see [`Agent::name_of`]).
    pub fn hostname_of(&self, a: Address) -> String {
        self.name_of(a)
    }

    /// Reads a peer as a user names one: by address, by hostname, or by
    /// node ID (`node_id` in `pending`, `trust`, `peers`), which names a
    /// node of this agent's network.
    fn peer_ref(&self, peer: &str) -> Result<PeerRef, Response> {
        let network = self.node.address().map_or(0, |a| a.network());
        PeerRef::parse_in(peer.trim(), network).map_err(|e| {
            error(
                codes::INVALID_ARGUMENT,
                e.to_string(),
                "addresses look like 0:0000.0000.002A, node IDs like 42; hostnames are lower-case letters, digits and '-'",
            )
        })
    }

    /// Resolves a peer named by address, node ID or hostname: hostnames
    /// of trusted peers and pending requesters are known locally, and our
    /// own maps to our address (the node then refuses it as `IsSelf`).
    pub fn peer_address(&self, peer: &str) -> Result<Address, Response> {
        match self.peer_ref(peer)? {
            PeerRef::Address(a) => Ok(a),
            PeerRef::Hostname(h) => self.known_hostname(&h).ok_or_else(|| {
                error(
                    codes::NOT_FOUND,
                    format!("no trusted peer or pending request named `{h}`"),
                    "use the peer's address, or see `pilotctl trust` and `pilotctl pending`",
                )
            }),
        }
    }

    /// The address behind a hostname this agent knows without asking:
    /// its own, a trusted peer's, a pending requester's.
    fn known_hostname(&self, h: &Hostname) -> Option<Address> {
        self.node
            .hostname()
            .filter(|mine| *mine == h)
            .and_then(|_| self.node.address())
            .or_else(|| {
                self.node
                    .trusted()
                    .find(|t| t.hostname.as_ref() == Some(h))
                    .map(|t| t.address)
            })
            .or_else(|| {
                self.node
                    .pending()
                    .find(|p| p.hostname.as_ref() == Some(h))
                    .map(|p| p.request.from)
            })
    }

    /// A stream or datagram to a hostname this agent does not know is
    /// looked up at the rendezvous first, and the request runs again by
    /// the address found: a findable peer that is not trusted then gets
    /// `not_trusted`, as by address, and a private or missing one
    /// `not_found`. Returns the request back if it needs no lookup.
    fn resolve_first(
        &mut self,
        now: Timestamp,
        client: ClientId,
        id: u32,
        req: Request,
    ) -> Option<Request> {
        let (Request::Connect { peer, .. } | Request::SendDatagram { peer, .. }) = &req else {
            return Some(req);
        };
        let Ok(PeerRef::Hostname(h)) = self.peer_ref(peer) else {
            return Some(req);
        };
        // Unregistered, there is nobody to ask: the name stays unknown
        // (`not_found`) at once rather than after a lookup's timeout.
        if self.known_hostname(&h).is_some() || !self.node.is_registered() {
            return Some(req);
        }
        let rid = self.node.resolve(now, Query::Hostname(h));
        self.resolving.insert(rid, (client, id, req));
        None
    }

    fn query(&self, peer: &str) -> Result<Query, Response> {
        Ok(match self.peer_ref(peer)? {
            PeerRef::Address(a) => Query::Address(a),
            PeerRef::Hostname(h) => Query::Hostname(h),
        })
    }

    /// Peers with their path, session and traffic (`pilotctl peers`).
    pub fn peers(&self, now: Timestamp) -> Value {
        let peers = self.node.peer_stats(now);
        Value::Array(
            peers
                .iter()
                .map(|p| {
                    let s = &p.stats;
                    let established = s.state == SessionState::Established;
                    // Truthful: direct only over a validated path, relay
                    // only while a session carries data through it.
                    let path = match s.route {
                        Some(Route::Direct { .. }) if s.endpoint.is_some() && established => {
                            "direct"
                        }
                        Some(Route::Relay(_)) if established => "relay",
                        _ => "none",
                    };
                    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                    let candidates: Vec<Value> = p
                        .paths
                        .iter()
                        .filter_map(|c| {
                            Some(json!({
                                "endpoint": c.route.addr()?.to_string(),
                                "state": c.state.to_string(),
                                "rtt_ms": c.rtt.map(ms),
                                "probes": c.probes_sent,
                            }))
                        })
                        .collect();
                    json!({
                        "node": p.address.to_string(),
                        "node_id": p.address.node(),
                        "hostname": p.hostname.as_ref().map(|h| h.to_string()),
                        "trusted": p.trusted,
                        "path": path,
                        // What the path rides on: a direct path is UDP; the
                        // relay is reached over UDP or the compat carrier.
                        "transport": match path {
                            "direct" => Some("udp"),
                            "relay" if self.node.is_relay_only() => Some("compat"),
                            "relay" => Some("udp"),
                            _ => None,
                        },
                        "endpoint": s.endpoint.map(|e| e.to_string()),
                        "state": s.state.to_string(),
                        // The path's smoothed RTT when direct, else the
                        // latest handshake's (through the relay).
                        "rtt_ms": s.path_rtt.filter(|_| path == "direct").or(s.rtt).map(ms),
                        "probes_sent": s.probes_sent,
                        "candidates": candidates,
                        "last_handshake_secs": s.last_handshake.map(|t| now.saturating_since(t).as_secs_f64()),
                        "last_seen_secs": s.last_heard.map(|t| now.saturating_since(t).as_secs_f64()),
                        "bytes_in": s.bytes_in,
                        "bytes_out": s.bytes_out,
                        "packets_in": s.packets_in,
                        "packets_out": s.packets_out,
                    })
                })
                .collect(),
        )
    }

    /// Every stream of this agent (`pilotctl connections`).
    pub fn connections(&self, now: Timestamp) -> Value {
        let hostname = |a: pilot_proto::Address| {
            self.node
                .trusted()
                .find(|t| t.address == a)
                .and_then(|t| t.hostname.as_ref().map(|h| h.to_string()))
        };
        let streams = self.node.stream_infos().into_iter().map(|s| {
            json!({
                "kind": "stream",
                "id": s.id.0,
                "peer": s.remote.addr.to_string(),
                "peer_hostname": hostname(s.remote.addr),
                "local_port": s.local.port,
                "remote_port": s.remote.port,
                "state": s.state.to_string(),
                "bytes_sent": s.bytes_out,
                "bytes_received": s.bytes_in,
                "age_secs": now.saturating_since(s.created).as_secs_f64(),
                // Streams no client owns are the built-in services'.
                "owner": if self.stream_owner.contains_key(&s.id) {
                    "client"
                } else if self.bridged.contains(&s.id) {
                    "bridge"
                } else {
                    "service"
                },
            })
        });
        // Then the ports that wait for peers, as `ss -l` lists them: the
        // built-in services' and those clients listen or bind on.
        let port = |kind: &str, port: u16, state: &str, owner: &str, service: Option<&str>| {
            json!({
                "kind": kind,
                "id": null,
                "peer": null,
                "peer_hostname": null,
                "local_port": port,
                "remote_port": null,
                "state": state,
                "owner": owner,
                "service": service,
            })
        };
        let services = self
            .services
            .iter()
            .map(|(p, name)| port("stream", *p, "LISTEN", "service", Some(name)));
        let listening = self
            .stream_ports
            .keys()
            .map(|p| port("stream", *p, "LISTEN", "client", None));
        let bound = self
            .datagram_ports
            .keys()
            .map(|p| port("datagram", *p, "BOUND", "client", None));
        Value::Array(
            streams
                .chain(services)
                .chain(listening)
                .chain(bound)
                .collect(),
        )
    }

    /// Everything `pilotctl status` shows, in one answer: this agent, its
    /// trusted peers, and trust requests pending (ours to decide),
    /// outgoing (the peer's to decide) and rejected (either way, with the
    /// reason). Times are wall-clock seconds (`since`, `at`).
    pub fn status(&self, now: Timestamp) -> Value {
        let n = &self.node;
        let peers: Vec<Value> = match self.peers(now) {
            Value::Array(all) => all.into_iter().filter(|p| p["trusted"] == true).collect(),
            _ => Vec::new(),
        };
        let network = n.address().map_or(0, |a| a.network());
        let outgoing: Vec<Value> = n
            .outgoing()
            .map(|r| {
                let node_id = match &r.to {
                    Query::Address(a) if a.network() == network => Some(a.node()),
                    _ => None,
                };
                json!({
                    "to": r.to.to_string(),
                    "node_id": node_id,
                    "reason": r.reason,
                    "since": r.issued_at / 1_000_000,
                })
            })
            .collect();
        let rejected: Vec<Value> = n
            .rejected()
            .map(|r| {
                json!({
                    "node": r.peer.to_string(),
                    "node_id": r.peer.node(),
                    "hostname": r.hostname.as_ref().map(|h| h.to_string()),
                    "by": if r.by_peer { "peer" } else { "us" },
                    "reason": r.reason,
                    "at": r.at,
                })
            })
            .collect();
        let on = |port| self.services.contains_key(&port);
        json!({
            "agent": {
                "address": n.address().map(|a| a.to_string()),
                "node_id": n.address().map(|a| a.node()),
                "hostname": n.hostname().map(|h| h.to_string()),
                "public": n.is_public(),
                "fingerprint": n.public_key().fingerprint().to_string(),
                "rendezvous": n.rendezvous_addr().to_string(),
                "registered": n.is_registered(),
                "public_endpoint": n.public_endpoint().map(|e| e.to_string()),
                "transport": self.transport["active"].clone(),
                "transport_mode": self.transport["mode"].clone(),
                "services": {
                    "echo": on(ports::ECHO),
                    "data_exchange": on(ports::DATA_EXCHANGE),
                    "event_stream": on(ports::EVENT_STREAM),
                },
                "auto_approve": n.auto_approves(),
                "uptime_secs": now.saturating_since(self.started).as_secs(),
            },
            "peers": peers,
            "pending": self.pending_list(),
            "outgoing": outgoing,
            "rejected": rejected,
        })
    }

    /// Requests waiting for our decision (`pilotctl pending`).
    fn pending_list(&self) -> Value {
        Value::Array(
            self.node
                .pending()
                .map(|p| {
                    json!({
                        "node": p.request.from.to_string(),
                        "node_id": p.request.from.node(),
                        "hostname": p.hostname.as_ref().map(|h| h.to_string()),
                        "fingerprint": p.request.from_key.fingerprint().to_string(),
                        "reason": p.request.reason,
                    })
                })
                .collect(),
        )
    }

    /// The daemon's identity and state (`pilotctl info`).
    pub fn info(&self, now: Timestamp) -> Value {
        let n = &self.node;
        let stats = n.stats();
        let ss = n.stream_stats();
        json!({
            "address": n.address().map(|a| a.to_string()),
            "node_id": n.address().map(|a| a.node()),
            "hostname": n.hostname().map(|h| h.to_string()),
            "public_key": n.public_key().to_string(),
            "fingerprint": n.public_key().fingerprint().to_string(),
            "registered": n.is_registered(),
            "registration_refused": self.refused.as_ref().map(Refusal::json),
            "public_endpoint": n.public_endpoint().map(|e| e.to_string()),
            "transport": self.transport.clone(),
            "rendezvous": {
                "name": self.rendezvous_name,
                "address": n.rendezvous_addr().to_string(),
            },
            "nat": nat_summary(n),
            "peers": n.trusted().count(),
            "pending": n.pending().count(),
            "streams": n.stream_infos().len(),
            "stream_syns_refused": ss.syn_refused,
            "stream_syns_dropped": ss.syn_dropped,
            "uptime_secs": now.saturating_since(self.started).as_secs(),
            "datagrams_in": stats.datagrams_in,
            "datagrams_out": stats.datagrams_out,
            "dropped": stats.dropped(),
            "bridge": self.bridge_json(),
        })
    }

    /// Handles one request.
    pub fn handle_request(&mut self, now: Timestamp, client: ClientId, id: u32, req: Request) {
        let answer = self.request(now, client, id, req);
        if let Some(r) = answer {
            self.respond(client, id, r);
        }
    }

    /// A trust command sent to the rendezvous: answered when it is done.
    fn defer_trust(
        &mut self,
        client: ClientId,
        id: u32,
        r: Result<u32, CommandError>,
    ) -> Option<Response> {
        match r {
            Ok(rid) => {
                self.effects.trust_changed = true;
                self.deferred.insert(rid, (client, id));
                None
            }
            Err(e) => Some(command_error(&e)),
        }
    }

    fn request(
        &mut self,
        now: Timestamp,
        client: ClientId,
        id: u32,
        req: Request,
    ) -> Option<Response> {
        let req = self.resolve_first(now, client, id, req)?;
        let r = match req {
            Request::Info => ok(self.info(now)),
            Request::Resolve { peer } => match self.query(&peer) {
                Ok(q) => {
                    let rid = self.node.resolve(now, q);
                    self.deferred.insert(rid, (client, id));
                    return None;
                }
                Err(e) => e,
            },
            Request::SetHostname { hostname } => {
                let hostname = match hostname.as_deref().map(Hostname::new).transpose() {
                    Ok(h) => h,
                    Err(e) => {
                        return Some(error(
                            codes::INVALID_ARGUMENT,
                            format!("bad hostname: {e}"),
                            HOSTNAME_HINT,
                        ))
                    }
                };
                let rid = self.node.set_hostname(now, hostname);
                return self.registration_change(client, id, rid);
            }
            Request::SetBridge { ports, peers } => {
                let ports = ports
                    .as_deref()
                    .map(super::bridge::PortSet::parse)
                    .transpose();
                let peers = peers
                    .as_deref()
                    .map(super::bridge::PeerSet::parse)
                    .transpose();
                match (ports, peers) {
                    (Ok(ports), Ok(peers)) => {
                        if let Some(p) = ports {
                            self.bridge_policy.ports = p;
                        }
                        if let Some(p) = peers {
                            self.bridge_policy.peers = p;
                        }
                        self.node
                            .set_accept_any(self.bridge_policy.accepts_any_port());
                        ok(json!({ "bridge": self.bridge_json() }))
                    }
                    (Err(e), _) | (_, Err(e)) => error(
                        codes::INVALID_ARGUMENT,
                        e,
                        "ports: all, none or a list like 80,8000-8099; peers: all, or addresses and hostnames",
                    ),
                }
            }
            Request::SetVisibility { public } => {
                let rid = self.node.set_public(now, public);
                return self.registration_change(client, id, rid);
            }
            Request::Handshake { reason, .. } | Request::Reject { reason, .. }
                if reason.len() > pilot_proto::trust::MAX_REASON =>
            {
                error(
                    codes::INVALID_ARGUMENT,
                    format!(
                        "the reason is {} bytes, over the limit of {}",
                        reason.len(),
                        pilot_proto::trust::MAX_REASON
                    ),
                    "say it in fewer words; the peer sees the reason with the request",
                )
            }
            Request::Handshake { peer, reason } => match self.query(&peer) {
                Ok(q) => {
                    let r = self.node.handshake(now, q, &reason);
                    if let Ok(rid) = r {
                        self.handshakes.insert(rid, peer.trim().to_string());
                    }
                    return self.defer_trust(client, id, r);
                }
                Err(e) => e,
            },
            Request::Pending => ok(self.pending_list()),
            Request::Status => ok(self.status(now)),
            Request::Approve { node } => match self.peer_address(&node) {
                Ok(a) => {
                    let r = self.node.approve(now, a);
                    return self.defer_trust(client, id, r);
                }
                Err(e) => e,
            },
            Request::Reject { node, reason } => match self.peer_address(&node) {
                Ok(a) => {
                    let hostname = self.name_of(a);
                    let r = self.node.reject(now, a, &reason);
                    if r.is_ok() {
                        info!(peer = %a, %hostname, reason = %reason, "trust request rejected");
                    }
                    return self.defer_trust(client, id, r);
                }
                Err(e) => e,
            },
            Request::Trusted => ok(Value::Array(
                self.node
                    .trusted()
                    .map(|t| {
                        json!({
                            "node": t.address.to_string(),
                            "node_id": t.address.node(),
                            "hostname": t.hostname.as_ref().map(|h| h.to_string()),
                            "fingerprint": t.key.fingerprint().to_string(),
                            "public_key": t.key.to_string(),
                            "since": t.since,
                            "connected": self.node.has_session(t.address),
                        })
                    })
                    .collect(),
            )),
            Request::Untrust { node } => match self.peer_address(&node) {
                Ok(a) => {
                    let hostname = self.name_of(a);
                    let r = self.node.untrust(now, a);
                    if r.is_ok() {
                        info!(peer = %a, %hostname, "trust revoked");
                    }
                    return self.defer_trust(client, id, r);
                }
                Err(e) => e,
            },
            // Only echo takes datagrams; every service takes streams.
            Request::Bind { port, force } if port == ports::ECHO && !force => {
                match self.services.get(&port) {
                    Some(name) => service_port(port, name),
                    None => self.bind(client, port),
                }
            }
            Request::Bind { port, .. } => self.bind(client, port),
            Request::Listen { port } if self.services.contains_key(&port) => {
                let name = self.services.get(&port).copied().unwrap_or("built-in");
                service_port(port, name)
            }
            Request::Unbind { port } => {
                if self.datagram_ports.get(&port) == Some(&client) {
                    self.node.unbind(port);
                    self.datagram_ports.remove(&port);
                }
                ok(json!({ "port": port }))
            }
            Request::SendDatagram {
                peer,
                port,
                src_port,
                data_b64,
            } => {
                let data = match unbase64(&data_b64) {
                    Ok(d) => d,
                    Err(e) => return Some(e),
                };
                match self.peer_address(&peer) {
                    Ok(a) => match self.node.send_datagram(
                        now,
                        src_port,
                        SocketAddress::new(a, port),
                        &data,
                    ) {
                        Ok(()) => ok(json!({ "sent": data.len() })),
                        Err(e) => command_error(&e),
                    },
                    Err(e) => e,
                }
            }
            Request::Listen { port } => match self.node.listen(port) {
                Ok(()) => {
                    self.stream_ports.insert(port, client);
                    ok(json!({ "port": port }))
                }
                Err(e) => command_error(&e),
            },
            Request::Unlisten { port } => {
                if self.stream_ports.get(&port) == Some(&client) {
                    self.node.unlisten(port);
                    self.stream_ports.remove(&port);
                }
                ok(json!({ "port": port }))
            }
            Request::Connect { peer, port } => match self.peer_address(&peer) {
                Ok(a) => match self.node.connect(now, SocketAddress::new(a, port)) {
                    Ok(s) => {
                        self.stream_owner.insert(s, client);
                        self.connecting.insert(s, (client, id));
                        return None;
                    }
                    Err(e) => command_error(&e),
                },
                Err(e) => e,
            },
            Request::Shutdown { stream } => {
                let s = StreamId(stream);
                if self.stream_owner.get(&s) != Some(&client) {
                    return Some(error(codes::NOT_FOUND, format!("no stream {stream}"), ""));
                }
                // Data still queued for the node goes first.
                let pending = self.to_node.entry(s).or_default();
                pending.shutdown = true;
                self.flush_to_node(now, s);
                ok(json!({ "stream": stream }))
            }
            Request::Close { stream } => {
                let s = StreamId(stream);
                if self.stream_owner.get(&s) != Some(&client) {
                    return Some(error(codes::NOT_FOUND, format!("no stream {stream}"), ""));
                }
                self.node.stream_close(now, s);
                ok(json!({ "stream": stream }))
            }
            Request::Peers => ok(self.peers(now)),
            Request::Netcheck { fresh } => {
                if fresh && self.node.reclassify(now) {
                    self.netchecks.push((client, id));
                    return None;
                }
                ok(netcheck(&self.node))
            }
            Request::Connections => ok(self.connections(now)),
            Request::Disconnect { stream } => {
                let s = StreamId(stream);
                if self.node.stream_info(s).is_none() {
                    return Some(error(
                        codes::NOT_FOUND,
                        format!("no stream {stream}"),
                        "see `pilotctl connections`",
                    ));
                }
                // The owner hears `closed` when the node reports it.
                self.node.stream_abort(now, s);
                ok(json!({ "stream": stream, "closed": true }))
            }
            Request::Publish { topic, data_b64 } => {
                let data = match unbase64(&data_b64) {
                    Ok(d) => d,
                    Err(e) => return Some(e),
                };
                match self.node.publish(now, &topic, &data) {
                    Ok(n) => ok(json!({ "subscribers": n })),
                    Err(CommandError::InvalidArgument) => error(
                        codes::INVALID_ARGUMENT,
                        format!("`{topic}` is not a valid topic"),
                        "topics are dot-separated printable segments, e.g. tasks.new",
                    ),
                    Err(e) => command_error(&e),
                }
            }
            Request::Stop => {
                self.effects.stop = true;
                ok(json!({ "stopping": true }))
            }
            gateway @ (Request::GatewayStart { .. }
            | Request::GatewayMap { .. }
            | Request::GatewayUnmap { .. }
            | Request::GatewayList
            | Request::GatewayStop) => {
                self.gateway_requests.push_back((client, id, gateway));
                return None;
            }
        };
        Some(r)
    }

    /// Binds a datagram port for a client.
    fn bind(&mut self, client: ClientId, port: u16) -> Response {
        match self.node.bind(port) {
            Ok(()) => {
                self.datagram_ports.insert(port, client);
                ok(json!({ "port": port }))
            }
            Err(e) => command_error(&e),
        }
    }

    /// Stream bytes from a client. Returns false if the client should be
    /// paused (the node's buffer for that stream is full).
    pub fn client_data(
        &mut self,
        now: Timestamp,
        client: ClientId,
        stream: u32,
        bytes: &[u8],
    ) -> bool {
        let s = StreamId(stream);
        if self.stream_owner.get(&s) != Some(&client) {
            // Data for a stream this client does not own is dropped; the
            // stream may just have closed.
            return true;
        }
        self.to_node.entry(s).or_default().bytes.extend(bytes);
        self.flush_to_node(now, s);
        self.to_node
            .get(&s)
            .is_none_or(|p| p.bytes.len() < (1 << 20))
    }

    /// True if the client's queued bytes toward the node are under the
    /// high-water mark (the daemon resumes reading the client then).
    pub fn client_may_send(&self, client: ClientId) -> bool {
        self.to_node
            .iter()
            .filter(|(s, _)| self.stream_owner.get(s) == Some(&client))
            .all(|(_, p)| p.bytes.len() < (1 << 20))
    }

    fn flush_to_node(&mut self, now: Timestamp, s: StreamId) {
        let Some(p) = self.to_node.get_mut(&s) else {
            return;
        };
        while !p.bytes.is_empty() {
            let (head, _) = p.bytes.as_slices();
            match self.node.stream_write(now, s, head) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    p.bytes.drain(..n);
                }
            }
        }
        if p.bytes.is_empty() && p.shutdown {
            self.to_node.remove(&s);
            self.node.stream_shutdown(now, s);
        }
    }

    /// Called when a client can take more data again.
    pub fn client_writable(
        &mut self,
        now: Timestamp,
        client: ClientId,
        room: impl Fn(ClientId) -> usize,
    ) {
        let blocked: Vec<StreamId> = self
            .to_client_blocked
            .iter()
            .filter(|s| self.stream_owner.get(s) == Some(&client))
            .copied()
            .collect();
        for s in blocked {
            self.to_client_blocked.remove(&s);
            self.read_to_client(now, s, &room);
        }
    }

    /// Moves readable stream data to its owner while the owner has room.
    fn read_to_client(&mut self, now: Timestamp, s: StreamId, room: &impl Fn(ClientId) -> usize) {
        let Some(&client) = self.stream_owner.get(&s) else {
            return;
        };
        if let Some(carried) = self.carry.remove(&s) {
            self.out.push_back(Out::Data {
                client,
                stream: s.0,
                bytes: carried,
            });
        }
        loop {
            let room = room(client).min(64 * 1024);
            if room == 0 {
                // The client is slow: leave the data in the node, whose
                // window then tells the peer to wait.
                self.to_client_blocked.insert(s);
                return;
            }
            let mut buf = vec![0u8; room];
            match self.node.stream_read(now, s, &mut buf) {
                Ok(0) => {
                    if self.finishing.remove(&s) {
                        self.out.push_back(Out::Event {
                            client,
                            event: api::Event::Finished { stream: s.0 },
                        });
                    }
                    return;
                }
                Ok(n) => self.out.push_back(Out::Data {
                    client,
                    stream: s.0,
                    bytes: buf[..n].to_vec(),
                }),
                Err(_) => return,
            }
        }
    }

    /// Drains the node's events into responses, pushes and effects. Call
    /// after every input to the node. `room` tells how many more bytes a
    /// client's queue takes (0: full).
    pub fn drain_node(&mut self, now: Timestamp, room: impl Fn(ClientId) -> usize) {
        while let Some(e) = self.node.poll_event() {
            self.on_node_event(now, e, &room);
        }
        // Client bytes waiting for the node: the node may have room now.
        let waiting: Vec<StreamId> = self.to_node.keys().copied().collect();
        for s in waiting {
            self.flush_to_node(now, s);
        }
    }

    fn on_node_event(&mut self, now: Timestamp, e: Event, room: &impl Fn(ClientId) -> usize) {
        match e {
            Event::Resolved { id, result } => {
                if let Some((client, rid, mut req)) = self.resolving.remove(&id) {
                    match result {
                        Ok(p) => {
                            if let Request::Connect { peer, .. }
                            | Request::SendDatagram { peer, .. } = &mut req
                            {
                                *peer = p.address.to_string();
                            }
                            self.handle_request(now, client, rid, req);
                        }
                        Err(e) => self.respond(client, rid, resolve_error(&e)),
                    }
                } else if let Some((client, rid)) = self.deferred.remove(&id) {
                    let r = match result {
                        Ok(p) => ok(json!({
                            "address": p.address.to_string(),
                            "node_id": p.address.node(),
                            "hostname": p.hostname.as_ref().map(|h| h.to_string()),
                            "public_key": p.key.to_string(),
                            "fingerprint": p.key.fingerprint().to_string(),
                            "public": p.public,
                            "online": p.online,
                            "endpoints": p.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
                        })),
                        Err(e) => resolve_error(&e),
                    };
                    self.respond(client, rid, r);
                }
            }
            Event::RegistrationChanged { id, result } => {
                self.effects.registration_changed = true;
                if let Some((client, rid)) = self.deferred.remove(&id) {
                    let r = match result {
                        Ok(()) => ok(self.registration(false)),
                        Err(RequestError::Refused(ErrorCode::HostnameTaken, message)) => error(
                            codes::ALREADY_EXISTS,
                            message,
                            "choose another hostname; the agent keeps its previous one",
                        ),
                        Err(RequestError::Refused(code, message)) => error(
                            refusal_code(code),
                            format!("the rendezvous refused: {code}: {message}"),
                            "the agent keeps its previous registration",
                        ),
                        // Saved (the flag above) and still being tried:
                        // not a failure.
                        Err(RequestError::Timeout) => ok(self.registration(true)),
                        Err(e) => error(codes::INTERNAL, e.to_string(), ""),
                    };
                    self.respond(client, rid, r);
                }
            }
            Event::RegistrationFailed { code, message } => {
                let refusal = Refusal {
                    hostname: self.node.hostname().map(|h| h.to_string()),
                    code,
                    message,
                };
                if self.refused.as_ref() != Some(&refusal) {
                    warn!(
                        rendezvous = %self.node.rendezvous_addr(),
                        hostname = %refusal.hostname.as_deref().unwrap_or("-"),
                        %code,
                        // Not `message`: that is the line's own text to a
                        // formatter, which would print it without its name.
                        detail = %refusal.message,
                        "registration refused by the rendezvous"
                    );
                    self.refused = Some(refusal);
                }
                self.effects.registration_changed = true;
            }
            Event::Registered {
                address,
                public_endpoint,
            } => {
                self.refused = None;
                info!(
                    %address,
                    hostname = %self.node.hostname().map_or("-", |h| h.as_str()),
                    public = self.node.is_public(),
                    %public_endpoint,
                    rendezvous = %self.node.rendezvous_addr(),
                    "registered"
                );
            }
            Event::RendezvousUnreachable { attempts } => warn!(
                rendezvous = %self.node.rendezvous_addr(),
                attempts,
                "registration failing: the rendezvous does not answer (is it running and \
                 reachable over UDP, and is --rendezvous-key its public key?); retrying"
            ),
            Event::SessionEstablished { peer, rekey } => {
                let hostname = self.name_of(peer);
                if rekey {
                    debug!(%peer, %hostname, "session rekeyed");
                } else {
                    info!(%peer, %hostname, "session up");
                }
            }
            Event::SessionClosed { peer, reason } => {
                info!(%peer, hostname = %self.name_of(peer), %reason, "session down");
            }
            Event::Unreachable {
                peer,
                reason,
                dropped,
            } => debug!(%peer, %reason, dropped, "peer unreachable; datagrams dropped"),
            Event::NatClassified { kind } => {
                info!(nat = kind.as_str(), "NAT classified");
                let answer = netcheck(&self.node);
                for (client, id) in std::mem::take(&mut self.netchecks) {
                    self.respond(client, id, ok(answer.clone()));
                }
            }
            Event::RequestDone { id, result } => {
                self.effects.trust_changed = true;
                if let Some(peer) = self.handshakes.remove(&id) {
                    match &result {
                        Ok(()) => info!(%peer, "trust request sent"),
                        Err(e) => info!(%peer, error = %e, "trust request not sent"),
                    }
                }
                if let Some((client, rid)) = self.deferred.remove(&id) {
                    let r = match result {
                        Ok(()) => ok(json!({ "done": true })),
                        Err(RequestError::Refused(code, message)) => {
                            error(refusal_code(code), format!("{code}: {message}"), "")
                        }
                        Err(RequestError::Timeout) => error(
                            codes::TIMEOUT,
                            "the rendezvous did not answer",
                            "check `pilotctl info`: is the daemon registered?",
                        ),
                        Err(e) => error(codes::INTERNAL, e.to_string(), ""),
                    };
                    self.respond(client, rid, r);
                }
            }
            Event::TrustRequested {
                from,
                hostname,
                fingerprint,
                reason,
            } => {
                info!(
                    peer = %from,
                    hostname = %hostname.as_ref().map_or("-", |h| h.as_str()),
                    %fingerprint,
                    "trust request received"
                );
                self.effects.trust_changed = true;
                self.broadcast(api::Event::TrustRequested {
                    from: from.to_string(),
                    hostname: hostname.map(|h| h.to_string()),
                    fingerprint: fingerprint.to_string(),
                    reason,
                });
            }
            Event::Trusted { peer, hostname } => {
                info!(
                    %peer,
                    hostname = %hostname.as_ref().map_or("-", |h| h.as_str()),
                    "peer trusted"
                );
                self.effects.trust_changed = true;
                self.broadcast(api::Event::Trusted {
                    peer: peer.to_string(),
                });
            }
            Event::TrustRejected { peer, reason } => {
                info!(%peer, hostname = %self.name_of(peer), %reason, "trust request rejected by the peer");
                self.effects.trust_changed = true;
                self.broadcast(api::Event::TrustRejected {
                    peer: peer.to_string(),
                    reason,
                });
            }
            Event::TrustRevoked { peer } => {
                info!(%peer, hostname = %self.name_of(peer), "trust revoked by the peer");
                self.effects.trust_changed = true;
                self.broadcast(api::Event::TrustRevoked {
                    peer: peer.to_string(),
                });
            }
            Event::Datagram { from, port, data } => {
                if let Some(&client) = self.datagram_ports.get(&port) {
                    self.out.push_back(Out::Event {
                        client,
                        event: api::Event::Datagram {
                            from: from.to_string(),
                            port,
                            data_b64: b64(&data),
                        },
                    });
                }
            }
            Event::PathChanged { peer, route } => {
                let (path, endpoint) = match route {
                    Some(Route::Direct { addr, .. }) => ("direct", Some(addr.to_string())),
                    Some(Route::Relay(_)) => ("relay", None),
                    _ => ("none", None),
                };
                info!(peer = %peer, path, endpoint = endpoint.as_deref().unwrap_or("-"), "path changed");
                self.broadcast(api::Event::PathChanged {
                    peer: peer.to_string(),
                    path: path.into(),
                    endpoint,
                });
            }
            Event::Message(m) => {
                self.broadcast(api::Event::Message {
                    from: m.from.to_string(),
                    id: m.id,
                    kind: format!("{:?}", m.kind).to_lowercase(),
                    name: m.name.clone(),
                    data_b64: b64(&m.payload),
                });
                self.effects.delivered.push(m);
            }
            Event::Stream(se) => self.on_stream_event(now, se, room),
            _ => {}
        }
    }

    fn on_stream_event(
        &mut self,
        now: Timestamp,
        e: StreamEvent,
        room: &impl Fn(ClientId) -> usize,
    ) {
        if let Some(id) = stream_of(&e).filter(|id| self.bridged.contains(id)) {
            if matches!(e, StreamEvent::Closed { .. }) {
                self.bridged.remove(&id);
            }
            self.to_bridge.push_back(e);
            return;
        }
        match e {
            StreamEvent::Incoming { id, port, from } => match self.stream_ports.get(&port) {
                Some(&client) => {
                    self.stream_owner.insert(id, client);
                    self.out.push_back(Out::Event {
                        client,
                        event: api::Event::Incoming {
                            stream: id.0,
                            port,
                            from: from.to_string(),
                        },
                    });
                }
                None if self.may_bridge(port, from.addr) => {
                    self.bridged.insert(id);
                    self.to_bridge.push_back(e);
                }
                None => self.node.stream_abort(now, id),
            },
            StreamEvent::Connected { id } => {
                if let Some((client, rid)) = self.connecting.remove(&id) {
                    self.respond(client, rid, ok(json!({ "stream": id.0 })));
                }
                self.flush_to_node(now, id);
            }
            StreamEvent::Readable { id } => self.read_to_client(now, id, room),
            StreamEvent::Writable { id } => self.flush_to_node(now, id),
            StreamEvent::Finished { id } => {
                self.finishing.insert(id);
                self.read_to_client(now, id, room);
            }
            StreamEvent::Closed { id, reason } => {
                if let Some((client, rid)) = self.connecting.remove(&id) {
                    let r = match reason {
                        pilot_proto::stream::CloseReason::Refused => error(
                            codes::CONNECTION_FAILED,
                            "connection refused: nothing listens on that port",
                            "check the port on the peer",
                        ),
                        pilot_proto::stream::CloseReason::TimedOut => error(
                            codes::TIMEOUT,
                            "the peer did not answer",
                            "is it online? does it trust you? see `pilotctl trust`",
                        ),
                        other => error(
                            codes::CONNECTION_FAILED,
                            format!("stream closed: {other}"),
                            "",
                        ),
                    };
                    self.respond(client, rid, r);
                } else if let Some(&client) = self.stream_owner.get(&id) {
                    self.out.push_back(Out::Event {
                        client,
                        event: api::Event::Closed {
                            stream: id.0,
                            reason: reason.to_string(),
                        },
                    });
                }
                self.forget_stream(id);
            }
            _ => {}
        }
    }
}
