//! What `pilotctl` and applications say to the daemon, and what it
//! answers: the typed (JSON) bodies of IPC control frames. Stream bytes
//! travel in raw data frames instead (see `frame`).

use serde::{Deserialize, Serialize};

/// A request; the daemon answers each with exactly one [`Response`]
/// carrying the same request ID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// The daemon's identity and state.
    Info,
    /// Look a node up (address or hostname).
    Resolve { peer: String },
    /// Register under another hostname (`None`: none) from now on;
    /// answered once the rendezvous accepted or refused it, and kept in
    /// the settings for the next start. While the rendezvous does not
    /// answer, the answer is `"pending": true` (saved, and registered as
    /// soon as it answers), at once when the agent is not registered.
    SetHostname { hostname: Option<String> },
    /// Be findable by anyone (`public`) or only by trusted peers; answered
    /// and kept like `SetHostname`.
    SetVisibility { public: bool },
    /// Which incoming streams the daemon bridges to local TCP services,
    /// from now on (`None`: unchanged): `ports` is `all`, `none` or a list
    /// like `80,8000-8099`; `peers` is `all` (every trusted peer) or
    /// addresses and hostnames. Answers the policy now in force.
    SetBridge {
        #[serde(default)]
        ports: Option<String>,
        #[serde(default)]
        peers: Option<String>,
    },
    /// Ask a peer (address or hostname) for trust.
    Handshake { peer: String, reason: String },
    /// Requests waiting for our decision.
    Pending,
    /// Approve a pending request.
    Approve { node: String },
    /// Reject a pending request.
    Reject { node: String, reason: String },
    /// Peers we trust.
    Trusted,
    /// Revoke trust.
    Untrust { node: String },
    /// Receive datagrams on a port (pushed as `Event::Datagram`). A port
    /// a built-in service holds (7, echo) is refused unless `force`.
    Bind {
        port: u16,
        #[serde(default)]
        force: bool,
    },
    /// Stop receiving datagrams on a port.
    Unbind { port: u16 },
    /// Send a datagram (data base64).
    SendDatagram {
        peer: String,
        port: u16,
        src_port: u16,
        data_b64: String,
    },
    /// Accept streams on a port (pushed as `Event::Incoming`).
    Listen { port: u16 },
    /// Stop accepting streams on a port.
    Unlisten { port: u16 },
    /// Open a stream; answered once it is connected (or failed).
    Connect { peer: String, port: u16 },
    /// Half-close a stream: we send no more.
    Shutdown { stream: u32 },
    /// Close a stream.
    Close { stream: u32 },
    /// Peers we trust or hold a session with: path, session state,
    /// handshake RTT and traffic.
    Peers,
    /// What the node knows of its NAT (mapping, port allocation, public
    /// addresses, rendezvous reachability); with `fresh`, classified
    /// again first (answered when done, within about 3 s).
    Netcheck {
        #[serde(default)]
        fresh: bool,
    },
    /// Every open stream of this agent (clients' and built-in services').
    Connections,
    /// One screen about this agent: itself, its trusted peers, and the
    /// trust requests pending, outgoing and rejected (`pilotctl status`).
    Status,
    /// Abort any stream of this agent (its owner gets `Event::Closed`).
    Disconnect { stream: u32 },
    /// Publish on our event stream.
    Publish { topic: String, data_b64: String },
    /// Stop the daemon.
    Stop,
    /// Start the gateway (`subnet` default 10.4.0.0/16) serving `ports`,
    /// mapping each of `peers` to the next free address of the subnet.
    GatewayStart {
        subnet: Option<String>,
        ports: Vec<u16>,
        #[serde(default)]
        peers: Vec<String>,
    },
    /// Map one more agent (to `local_ip`, or the next free address).
    GatewayMap {
        peer: String,
        local_ip: Option<String>,
    },
    /// Remove a mapping.
    GatewayUnmap { local_ip: String },
    /// The gateway's subnet, ports and mappings.
    GatewayList,
    /// Stop the gateway: every mapping and alias goes.
    GatewayStop,
}

/// The answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// Done; `data` depends on the request.
    Ok { data: serde_json::Value },
    /// Refused, with a stable code, a message and a hint.
    Error {
        code: String,
        message: String,
        hint: String,
    },
}

/// Something the daemon pushes without being asked (request ID 0).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A datagram arrived on a bound port.
    Datagram {
        from: String,
        port: u16,
        data_b64: String,
    },
    /// A stream arrived on a listened port; its data follows in data frames.
    Incoming {
        stream: u32,
        port: u16,
        from: String,
    },
    /// The peer finished sending on a stream (end of its data frames).
    Finished { stream: u32 },
    /// A stream closed.
    Closed { stream: u32, reason: String },
    /// Someone asks for our trust.
    TrustRequested {
        from: String,
        hostname: Option<String>,
        fingerprint: String,
        reason: String,
    },
    /// We now trust a peer.
    Trusted { peer: String },
    /// A peer rejected our request.
    TrustRejected { peer: String, reason: String },
    /// A peer revoked its trust.
    TrustRevoked { peer: String },
    /// The path to a peer changed: `path` is `direct` (then `endpoint`
    /// says where), `relay` or `none`.
    PathChanged {
        peer: String,
        path: String,
        endpoint: Option<String>,
    },
    /// A message or file arrived through data exchange.
    Message {
        from: String,
        id: u32,
        kind: String,
        name: Option<String>,
        data_b64: String,
    },
}

/// Stable error codes (also `pilotctl`'s).
pub mod codes {
    pub const INVALID_ARGUMENT: &str = "invalid_argument";
    pub const NOT_FOUND: &str = "not_found";
    pub const ALREADY_EXISTS: &str = "already_exists";
    pub const NOT_RUNNING: &str = "not_running";
    pub const NOT_TRUSTED: &str = "not_trusted";
    pub const CONNECTION_FAILED: &str = "connection_failed";
    pub const TIMEOUT: &str = "timeout";
    pub const INTERNAL: &str = "internal";
    pub const NOT_REGISTERED: &str = "not_registered";
}
