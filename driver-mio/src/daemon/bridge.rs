//! Overlay streams joined to local TCP connections, inside the daemon.
//!
//! Two kinds of connection are bridged, with the same code:
//!
//! - the gateway's: a local TCP client (curl, a browser) connected to a
//!   mapped address; the daemon opens an overlay stream to the mapped
//!   agent's same port;
//! - the serving side's: an overlay stream arrived on a port no overlay
//!   application or built-in service listens on, from a peer the
//!   [`BridgePolicy`] admits; the daemon connects to the local TCP
//!   service on `127.0.0.1:PORT` (then `[::1]:PORT`).
//!
//! Each [`Conn`] owns one TCP socket (a mio token of its own) and one
//! overlay stream (the agent routes that stream's events here). Bytes
//! move through one bounded buffer per direction: nothing more is read
//! from a side while its buffer toward the other holds bytes, so a slow
//! reader slows the writer at the other end (TCP's window locally, the
//! stream's window across the overlay). End of data on one side becomes a
//! half-close on the other (`shutdown(Write)` / `stream_shutdown`), and a
//! reset or failure on one side resets the other: a refused local port
//! resets the stream, and a reset stream resets the TCP connection.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::ops::RangeInclusive;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use pilot_proto::addr::{Address, PeerRef};
use pilot_proto::node::Node;
use pilot_proto::stream::{CloseReason, StreamEvent, StreamId};
use pilot_proto::Timestamp;
use tracing::debug;

/// How much one direction of one connection holds at most.
const CHUNK: usize = 64 * 1024;

/// Which incoming streams the daemon may bridge to local TCP services.
/// The default admits every port from every trusted peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BridgePolicy {
    /// The local ports that may be reached.
    pub ports: PortSet,
    /// The peers that may reach them (always trusted ones).
    pub peers: PeerSet,
}

impl BridgePolicy {
    /// Whether the node must accept streams to ports no overlay
    /// application listens on (the bridge resets what it cannot serve).
    pub fn accepts_any_port(&self) -> bool {
        self.ports != PortSet::None
    }
}

/// A set of TCP ports: `all`, `none`, or a list like `80,8000-8099`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PortSet {
    /// Every port.
    #[default]
    All,
    /// No port: nothing is bridged.
    None,
    /// These ports.
    Only(Vec<RangeInclusive<u16>>),
}

/// A set of peers: `all` (every trusted peer) or a list of addresses and
/// hostnames.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PeerSet {
    /// Every trusted peer.
    #[default]
    AllTrusted,
    /// These trusted peers.
    Only(Vec<PeerRef>),
}

impl PortSet {
    /// Parses `all`, `none` or `80,8000-8099`.
    pub fn parse(text: &str) -> Result<PortSet, String> {
        match text.trim() {
            "all" | "" => return Ok(PortSet::All),
            "none" => return Ok(PortSet::None),
            _ => {}
        }
        let port = |p: &str| -> Result<u16, String> {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("`{}` is not a port (1-65535)", p.trim())),
            }
        };
        let mut out = Vec::new();
        for part in text.split(',') {
            let range = match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (port(a)?, port(b)?);
                    if a > b {
                        return Err(format!("`{}` is an empty range", part.trim()));
                    }
                    a..=b
                }
                None => {
                    let p = port(part)?;
                    p..=p
                }
            };
            out.push(range);
        }
        Ok(PortSet::Only(out))
    }

    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        match self {
            PortSet::All => true,
            PortSet::None => false,
            PortSet::Only(r) => r.iter().any(|r| r.contains(&port)),
        }
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortSet::All => f.write_str("all"),
            PortSet::None => f.write_str("none"),
            PortSet::Only(r) => {
                let parts: Vec<String> = r
                    .iter()
                    .map(|r| {
                        if r.start() == r.end() {
                            r.start().to_string()
                        } else {
                            format!("{}-{}", r.start(), r.end())
                        }
                    })
                    .collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl PeerSet {
    /// Parses `all` or a comma-separated list of addresses and hostnames.
    pub fn parse(text: &str) -> Result<PeerSet, String> {
        match text.trim() {
            "all" | "" => return Ok(PeerSet::AllTrusted),
            _ => {}
        }
        text.split(',')
            .map(|p| PeerRef::parse(p.trim()).map_err(|e| format!("`{}`: {e}", p.trim())))
            .collect::<Result<Vec<_>, _>>()
            .map(PeerSet::Only)
    }

    /// Whether a trusted peer with this address and hostname is in the set.
    pub fn contains(
        &self,
        address: Address,
        hostname: Option<&pilot_proto::addr::Hostname>,
    ) -> bool {
        match self {
            PeerSet::AllTrusted => true,
            PeerSet::Only(list) => list.iter().any(|p| match p {
                PeerRef::Address(a) => *a == address,
                PeerRef::Hostname(h) => Some(h) == hostname,
            }),
        }
    }
}

impl fmt::Display for PeerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerSet::AllTrusted => f.write_str("all"),
            PeerSet::Only(list) => {
                let parts: Vec<String> = list.iter().map(|p| p.to_string()).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// One TCP connection joined to one overlay stream.
struct Conn {
    stream: StreamId,
    tcp: TcpStream,
    token: Token,
    /// Serving side: the local addresses still to try after the one in
    /// progress; `connecting` is true until the TCP connect completes.
    fallbacks: Vec<SocketAddr>,
    connecting: bool,
    /// Gateway side: false until the overlay stream is connected.
    overlay_open: bool,
    to_tcp: Buffer,
    to_node: Buffer,
    /// The stream ended (read returned 0) / we sent FIN on TCP.
    node_eof: bool,
    tcp_shut: bool,
    /// TCP ended (read returned 0) / we half-closed the stream.
    tcp_eof: bool,
    node_shut: bool,
}

/// Bytes on their way from one side to the other.
#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    at: usize,
}

impl Buffer {
    fn pending(&self) -> &[u8] {
        &self.bytes[self.at..]
    }
    fn is_empty(&self) -> bool {
        self.at >= self.bytes.len()
    }
    fn consume(&mut self, n: usize) {
        self.at += n;
        if self.is_empty() {
            self.bytes.clear();
            self.at = 0;
        }
    }
}

/// Why a connection must end now with a reset on both sides.
struct Broken;

/// A TCP socket closed with an RST instead of a FIN, so the client sees
/// the connection fail rather than end.
fn reset(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// Closes a TCP connection with an RST at once.
pub fn reset_now(tcp: TcpStream) {
    reset(&tcp);
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl Conn {
    fn new(stream: StreamId, tcp: TcpStream, token: Token) -> Self {
        Conn {
            stream,
            tcp,
            token,
            fallbacks: Vec::new(),
            connecting: false,
            overlay_open: false,
            to_tcp: Buffer::default(),
            to_node: Buffer::default(),
            node_eof: false,
            tcp_shut: false,
            tcp_eof: false,
            node_shut: false,
        }
    }

    /// Moves what can move without blocking; true if anything did.
    fn service(&mut self, node: &mut Node, now: Timestamp) -> Result<bool, Broken> {
        if self.connecting {
            return Ok(false);
        }
        let mut moved = false;
        // Stream -> TCP.
        loop {
            if !self.to_tcp.is_empty() {
                match self.tcp.write(self.to_tcp.pending()) {
                    Ok(0) => return Err(Broken),
                    Ok(n) => {
                        self.to_tcp.consume(n);
                        moved = true;
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Broken),
                }
            } else if self.node_eof || !self.overlay_open {
                break;
            } else {
                self.to_tcp.bytes.resize(CHUNK, 0);
                match node.stream_read(now, self.stream, &mut self.to_tcp.bytes) {
                    Ok(0) => {
                        self.to_tcp.bytes.clear();
                        self.node_eof = true;
                    }
                    Ok(n) => {
                        self.to_tcp.bytes.truncate(n);
                        moved = true;
                    }
                    Err(_) => {
                        // Nothing buffered yet, or the stream is going:
                        // its `Closed` event ends the connection.
                        self.to_tcp.bytes.clear();
                        break;
                    }
                }
            }
        }
        if self.node_eof && self.to_tcp.is_empty() && !self.tcp_shut {
            let _ = self.tcp.shutdown(Shutdown::Write);
            self.tcp_shut = true;
            moved = true;
        }
        // TCP -> stream.
        loop {
            if !self.to_node.is_empty() {
                if !self.overlay_open {
                    break;
                }
                match node.stream_write(now, self.stream, self.to_node.pending()) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        self.to_node.consume(n);
                        moved = true;
                    }
                }
            } else if self.tcp_eof {
                break;
            } else {
                self.to_node.bytes.resize(CHUNK, 0);
                match self.tcp.read(&mut self.to_node.bytes) {
                    Ok(0) => {
                        self.to_node.bytes.clear();
                        self.tcp_eof = true;
                    }
                    Ok(n) => {
                        self.to_node.bytes.truncate(n);
                        moved = true;
                    }
                    Err(e) => {
                        self.to_node.bytes.clear();
                        match e.kind() {
                            io::ErrorKind::WouldBlock => break,
                            io::ErrorKind::Interrupted => {}
                            _ => return Err(Broken),
                        }
                    }
                }
            }
        }
        if self.tcp_eof && self.to_node.is_empty() && self.overlay_open && !self.node_shut {
            node.stream_shutdown(now, self.stream);
            self.node_shut = true;
            moved = true;
        }
        Ok(moved)
    }
}

/// The daemon's bridged connections.
pub struct Bridge {
    registry: Registry,
    conns: BTreeMap<StreamId, Conn>,
    by_token: BTreeMap<Token, StreamId>,
    /// Connections that may have something to move.
    dirty: BTreeSet<StreamId>,
}

/// What [`Bridge::handle_event`] found.
pub enum Handled {
    /// Not a bridged connection's token.
    NotMine,
    /// Done.
    Done,
}

impl Bridge {
    /// No connections yet; sockets are registered with `registry`.
    pub fn new(registry: Registry) -> Self {
        Bridge {
            registry,
            conns: BTreeMap::new(),
            by_token: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// How many connections are bridged now.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True if no connection is bridged.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// A local TCP client accepted by the gateway, joined to `stream`
    /// (just opened toward the mapped agent; `Connected` follows).
    pub fn adopt_outgoing(
        &mut self,
        tokens: &mut crate::tokens::Tokens,
        stream: StreamId,
        mut tcp: TcpStream,
    ) -> io::Result<()> {
        let _ = tcp.set_nodelay(true);
        let token = tokens.take();
        if let Err(e) =
            self.registry
                .register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)
        {
            tokens.give_back(token);
            return Err(e);
        }
        self.by_token.insert(token, stream);
        self.conns.insert(stream, Conn::new(stream, tcp, token));
        self.dirty.insert(stream);
        Ok(())
    }

    /// Whether `token` is one of the bridged connections'.
    pub fn owns(&self, token: Token) -> bool {
        self.by_token.contains_key(&token)
    }

    /// A readiness event for one of our connections.
    pub fn handle_event(
        &mut self,
        node: &mut Node,
        tokens: &mut crate::tokens::Tokens,
        now: Timestamp,
        token: Token,
    ) -> Handled {
        let Some(&id) = self.by_token.get(&token) else {
            return Handled::NotMine;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return Handled::Done;
        };
        if conn.connecting {
            match connect_result(&conn.tcp) {
                Some(Ok(())) => {
                    conn.connecting = false;
                    let _ = conn.tcp.set_nodelay(true);
                }
                Some(Err(e)) => {
                    debug!(stream = id.0, error = %e, "local service refused");
                    self.next_fallback(node, tokens, now, id);
                    return Handled::Done;
                }
                None => return Handled::Done,
            }
        }
        self.dirty.insert(id);
        Handled::Done
    }

    /// An event of a stream the agent routes to the bridge.
    pub fn on_stream_event(
        &mut self,
        node: &mut Node,
        tokens: &mut crate::tokens::Tokens,
        now: Timestamp,
        e: StreamEvent,
    ) {
        match e {
            StreamEvent::Incoming { id, port, .. } => {
                let candidates = vec![
                    SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
                ];
                self.connect_local(node, tokens, now, id, candidates);
            }
            StreamEvent::Connected { id } => {
                if let Some(c) = self.conns.get_mut(&id) {
                    c.overlay_open = true;
                    self.dirty.insert(id);
                }
            }
            StreamEvent::Readable { id }
            | StreamEvent::Writable { id }
            | StreamEvent::Finished { id }
                if self.conns.contains_key(&id) =>
            {
                self.dirty.insert(id);
            }
            StreamEvent::Closed { id, reason } => {
                if let Some(c) = self.conns.remove(&id) {
                    debug!(stream = id.0, %reason, "bridged stream closed");
                    self.forget(tokens, c, reason != CloseReason::Normal);
                }
            }
            _ => {}
        }
    }

    /// Moves bytes on every connection that may have something to move;
    /// true if anything moved (the node then has output to drain).
    pub fn service(
        &mut self,
        node: &mut Node,
        tokens: &mut crate::tokens::Tokens,
        now: Timestamp,
    ) -> bool {
        let mut moved = false;
        while let Some(id) = self.dirty.pop_first() {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            match conn.service(node, now) {
                Ok(m) => moved |= m,
                Err(Broken) => {
                    moved = true;
                    node.stream_abort(now, id);
                    if let Some(c) = self.conns.remove(&id) {
                        self.forget(tokens, c, true);
                    }
                }
            }
        }
        moved
    }

    /// Ends every connection with a reset (the daemon stops).
    pub fn close_all(
        &mut self,
        node: &mut Node,
        tokens: &mut crate::tokens::Tokens,
        now: Timestamp,
    ) {
        let ids: Vec<StreamId> = self.conns.keys().copied().collect();
        for id in ids {
            node.stream_abort(now, id);
            if let Some(c) = self.conns.remove(&id) {
                self.forget(tokens, c, true);
            }
        }
    }

    /// Serving side: starts connecting `id` to the first of `candidates`
    /// that can be tried; resets the stream if none can.
    fn connect_local(
        &mut self,
        node: &mut Node,
        tokens: &mut crate::tokens::Tokens,
        now: Timestamp,
        id: StreamId,
        mut candidates: Vec<SocketAddr>,
    ) {
        while !candidates.is_empty() {
            let addr = candidates.remove(0);
            let mut tcp = match TcpStream::connect(addr) {
                Ok(t) => t,
                Err(e) => {
                    debug!(stream = id.0, %addr, error = %e, "cannot connect locally");
                    continue;
                }
            };
            let token = tokens.take();
            if self
                .registry
                .register(&mut tcp, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                tokens.give_back(token);
                continue;
            }
            let mut conn = Conn::new(id, tcp, token);
            conn.fallbacks = candidates;
            conn.connecting = true;
            conn.overlay_open = true;
            self.by_token.insert(token, id);
            self.conns.insert(id, conn);
            return;
        }
        // Nothing to connect to: the peer sees its stream reset.
        node.stream_abort(now, id);
    }

    /// The local connect of `id` failed: try the next address, or reset.
    fn next_fallback(
        &mut self,
        node: &mut Node,
        tokens: &mut crate::tokens::Tokens,
        now: Timestamp,
        id: StreamId,
    ) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        let rest = c.fallbacks.clone();
        self.forget(tokens, c, false);
        self.connect_local(node, tokens, now, id, rest);
    }

    fn forget(&mut self, tokens: &mut crate::tokens::Tokens, mut c: Conn, rst: bool) {
        if rst {
            reset(&c.tcp);
        }
        let _ = self.registry.deregister(&mut c.tcp);
        self.by_token.remove(&c.token);
        tokens.give_back(c.token);
        self.dirty.remove(&c.stream);
    }
}

/// The outcome of a non-blocking connect: `None` while in progress.
fn connect_result(tcp: &TcpStream) -> Option<io::Result<()>> {
    match tcp.take_error() {
        Ok(Some(e)) | Err(e) => return Some(Err(e)),
        Ok(None) => {}
    }
    match tcp.peer_addr() {
        Ok(_) => Some(Ok(())),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => None,
        Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_sets_parse_and_print() {
        assert_eq!(PortSet::parse("all").unwrap(), PortSet::All);
        assert_eq!(PortSet::parse("none").unwrap(), PortSet::None);
        let s = PortSet::parse("80, 8000-8099").unwrap();
        assert!(s.contains(80) && s.contains(8050) && !s.contains(81));
        assert_eq!(s.to_string(), "80,8000-8099");
        for bad in ["0", "x", "90-80", "70000", "80,"] {
            assert!(PortSet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_sets_parse_and_match() {
        let a = Address::new(0, 4);
        assert!(PeerSet::parse("all").unwrap().contains(a, None));
        let s = PeerSet::parse("0:0000.0000.0004,agent-alpha").unwrap();
        assert!(s.contains(a, None));
        let h = pilot_proto::addr::Hostname::new("agent-alpha").unwrap();
        assert!(s.contains(Address::new(0, 5), Some(&h)));
        assert!(!s.contains(Address::new(0, 5), None));
        assert_eq!(s.to_string(), "0:0000.0000.0004,agent-alpha");
        assert!(PeerSet::parse("Bad Name").is_err());
    }
}
