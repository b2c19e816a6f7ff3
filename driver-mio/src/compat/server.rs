//! The rendezvous's carrier listener: TLS, then a WebSocket upgrade on
//! [`WS_PATH`](super::WS_PATH), then one binary message per datagram.
//!
//! Every connection costs bounded memory (rustls's buffers, tungstenite's
//! 4 KiB read buffer, at most [`MAX_WRITE_BUFFER`](super::MAX_WRITE_BUFFER)
//! queued for writing); connections still in their handshake are capped
//! and timed out, open ones are capped and closed when silent. Refusals
//! are clear: a TLS alert for anything that is not TLS, HTTP 404 for a
//! wrong path, HTTP 400 for a request that is no WebSocket upgrade (and
//! 431 for a request head past [`MAX_REQUEST`] bytes), each with a
//! one-line body saying where the carrier is, a WebSocket close for an
//! oversized message.
//!
//! The request head is read and checked here (httparse) before tungstenite
//! sees it: tungstenite answers a callback's refusal (a wrong path) but
//! closes a request that is no upgrade without a word, and takes the
//! connection with it. A head that passes is replayed to tungstenite,
//! which does the handshake itself.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use tungstenite::handshake::server::{Callback, ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::{Message, WebSocket};

use super::tlsio::TlsIo;
use super::{ws_config, MAX_MESSAGE, WS_PATH};

/// Limits of the listener.
#[derive(Clone, Debug)]
pub struct CarrierLimits {
    /// Connections in their TLS or WebSocket handshake at once; past it,
    /// the oldest handshake is closed for each new connection.
    pub max_handshaking: usize,
    /// Open carrier connections at once.
    pub max_open: usize,
    /// A handshake not done by then is closed (slowloris).
    pub handshake_timeout: Duration,
    /// An open connection silent this long is closed (agents ping every
    /// 25 s and refresh their registration).
    pub idle_timeout: Duration,
}

impl Default for CarrierLimits {
    fn default() -> Self {
        CarrierLimits {
            max_handshaking: 256,
            max_open: 16_384,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Counters of the listener.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CarrierStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed because of the caps (a new one past the open
    /// cap, the oldest handshake past the handshake cap).
    pub refused: u64,
    /// Handshakes that failed (not TLS, wrong path, no upgrade).
    pub handshake_failed: u64,
    /// Handshakes closed for taking too long.
    pub handshake_timeouts: u64,
    /// Open connections closed for silence.
    pub idle_closed: u64,
    /// Open connections closed for a protocol error (oversized message,
    /// bad frame) or by the peer.
    pub closed: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped: no connection for the address, or its write
    /// buffer full.
    pub dropped_out: u64,
    /// Messages ignored (text, or not a datagram).
    pub ignored_in: u64,
}

/// The largest HTTP request head taken before the upgrade.
pub const MAX_REQUEST: usize = 8 * 1024;

/// The headers taken in a request head.
const MAX_HEADERS: usize = 32;

/// Refuses every path but the carrier's (a second line behind
/// [`check_request`], which refuses them first).
pub struct PathCheck;

impl Callback for PathCheck {
    fn on_request(self, request: &Request, response: Response) -> Result<Response, ErrorResponse> {
        if request.uri().path() == WS_PATH {
            return Ok(response);
        }
        let mut refusal = ErrorResponse::new(Some("no carrier at this path\n".into()));
        *refusal.status_mut() = tungstenite::http::StatusCode::NOT_FOUND;
        Err(refusal)
    }
}

/// Bytes already read from `inner`, handed out again before it.
pub struct Replay<S> {
    head: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: Read> Read for Replay<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.head[self.pos..self.pos + n]);
            self.pos += n;
            if self.pos == self.head.len() {
                // Nothing kept once it is handed out.
                self.head = Vec::new();
                self.pos = 0;
            }
            return Ok(n);
        }
        self.inner.read(buf)
    }
}

impl<S: Write> Write for Replay<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What a complete request head gets: None to go on with the upgrade,
/// or the status line and the one-line body of a refusal.
pub fn check_request(req: &httparse::Request<'_, '_>) -> Option<(&'static str, &'static str)> {
    const NOT_HERE: &str =
        "not found: the Pilot carrier is a WebSocket upgrade at /pilot/v1/carrier\n";
    const NO_UPGRADE: &str =
        "this endpoint speaks WebSocket only: send a GET with Upgrade: websocket to /pilot/v1/carrier\n";
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or("");
    if path != WS_PATH {
        return Some(("404 Not Found", NOT_HERE));
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let connection_upgrade = header("connection").is_some_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    let upgrade_websocket =
        header("upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let upgrade = req.method == Some("GET")
        && req.version == Some(1)
        && connection_upgrade
        && upgrade_websocket
        && header("sec-websocket-version").is_some_and(|v| v.trim() == "13")
        && header("sec-websocket-key").is_some();
    if !upgrade {
        return Some(("400 Bad Request", NO_UPGRADE));
    }
    None
}

/// The HTTP answer of a refusal.
pub fn refusal(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

type Io = Replay<TlsIo<TcpStream>>;

/// A connection in its TLS handshake or still sending its request head.
struct Pending {
    io: TlsIo<TcpStream>,
    head: Vec<u8>,
}

enum State {
    Request(Box<Pending>),
    Handshake(Box<MidHandshake<ServerHandshake<Io, PathCheck>>>),
    Open(Box<WebSocket<Io>>),
}

struct Conn {
    state: Option<State>,
    peer: SocketAddr,
    since: Instant,
    last_heard: Instant,
}

/// The listener and its connections.
pub struct CarrierServer {
    listener: TcpListener,
    listener_token: Token,
    first_token: usize,
    conns: HashMap<Token, Conn>,
    by_peer: HashMap<SocketAddr, Token>,
    free: Vec<usize>,
    next: usize,
    handshaking: usize,
    tls: Arc<rustls::ServerConfig>,
    limits: CarrierLimits,
    stats: CarrierStats,
    last_sweep: Instant,
}

impl std::fmt::Debug for CarrierServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarrierServer")
            .field("listen", &self.listener.local_addr().ok())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl CarrierServer {
    /// Listens on `addr`; the listener takes `listener_token`, connections
    /// take tokens from `first_token` up.
    pub fn bind(
        addr: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        limits: CarrierLimits,
        registry: &Registry,
        listener_token: Token,
        first_token: usize,
    ) -> io::Result<Self> {
        let mut listener = TcpListener::bind(addr)?;
        registry.register(&mut listener, listener_token, Interest::READABLE)?;
        Ok(CarrierServer {
            listener,
            listener_token,
            first_token,
            conns: HashMap::new(),
            by_peer: HashMap::new(),
            free: Vec::new(),
            next: first_token,
            handshaking: 0,
            tls,
            limits,
            stats: CarrierStats::default(),
            last_sweep: Instant::now(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// Counters.
    pub fn stats(&self) -> CarrierStats {
        self.stats
    }

    /// Connections held now: (in handshake, open).
    pub fn connections(&self) -> (usize, usize) {
        (self.handshaking, self.conns.len() - self.handshaking)
    }

    /// New connections use this certificate (SIGHUP).
    pub fn set_tls(&mut self, tls: Arc<rustls::ServerConfig>) {
        self.tls = tls;
    }

    /// True if the token is the listener's or a connection's.
    pub fn owns(&self, token: Token) -> bool {
        token == self.listener_token || self.conns.contains_key(&token)
    }

    /// When [`CarrierServer::sweep`] has work: in a second while anything
    /// is held.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.conns.is_empty()).then(|| self.last_sweep + Duration::from_secs(1))
    }

    /// A readiness event: accepts, drives handshakes, reads datagrams
    /// (each handed to `deliver` with the connection's peer address).
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        token: Token,
        deliver: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        if token == self.listener_token {
            return self.accept(registry);
        }
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let outcome = drive(conn, &mut self.stats, deliver);
        match outcome {
            Drive::Pending => {}
            Drive::Opened => {
                self.handshaking -= 1;
                let peer = conn.peer;
                tracing::debug!(%peer, "carrier connection open");
                if let Some(old) = self.by_peer.insert(peer, token) {
                    if old != token {
                        self.close(registry, old);
                    }
                }
                // Data may have come with the upgrade.
                if let Some(conn) = self.conns.get_mut(&token) {
                    if let Drive::Closed = drive(conn, &mut self.stats, deliver) {
                        self.close(registry, token);
                    }
                }
            }
            Drive::Closed => self.close(registry, token),
        }
    }

    /// Sends one datagram on the connection of `peer`. False if it was
    /// dropped (no such connection, or its buffer is full): counted.
    pub fn send(&mut self, registry: &Registry, peer: SocketAddr, payload: &[u8]) -> bool {
        let Some(&token) = self.by_peer.get(&peer) else {
            self.stats.dropped_out += 1;
            return false;
        };
        let Some(Conn {
            state: Some(State::Open(ws)),
            ..
        }) = self.conns.get_mut(&token)
        else {
            self.stats.dropped_out += 1;
            return false;
        };
        match ws.send(Message::Binary(payload.to_vec().into())) {
            Ok(()) => {
                self.stats.datagrams_out += 1;
                true
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                // Queued in the bounded write buffer; goes out when
                // the socket is writable.
                self.stats.datagrams_out += 1;
                true
            }
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                self.stats.dropped_out += 1;
                false
            }
            Err(_) => {
                self.stats.dropped_out += 1;
                self.close(registry, token);
                false
            }
        }
    }

    /// Closes handshakes past their time and silent connections; call
    /// when [`CarrierServer::deadline`] is reached (earlier is harmless).
    pub fn sweep(&mut self, registry: &Registry, now: Instant) {
        if now < self.last_sweep + Duration::from_secs(1) {
            return;
        }
        self.last_sweep = now;
        let mut expired = Vec::new();
        for (t, c) in &self.conns {
            match c.state {
                Some(State::Request(_) | State::Handshake(_))
                    if now.duration_since(c.since) >= self.limits.handshake_timeout =>
                {
                    self.stats.handshake_timeouts += 1;
                    expired.push(*t);
                }
                Some(State::Open(_))
                    if now.duration_since(c.last_heard) >= self.limits.idle_timeout =>
                {
                    self.stats.idle_closed += 1;
                    expired.push(*t);
                }
                _ => {}
            }
        }
        for t in expired {
            self.close(registry, t);
        }
    }

    fn accept(&mut self, registry: &Registry) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and the like: try again on the next event.
                    tracing::warn!(error = %e, "accepting a carrier connection");
                    return;
                }
            };
            self.stats.accepted += 1;
            let open = self.conns.len() - self.handshaking;
            if open >= self.limits.max_open {
                // Dropped: the peer sees the connection closed.
                self.stats.refused += 1;
                continue;
            }
            if self.handshaking >= self.limits.max_handshaking {
                // The oldest handshake goes, not the newcomer: idle
                // connections cannot lock agents out, they only shorten
                // each other's time.
                let oldest = self
                    .conns
                    .iter()
                    .filter(|(_, c)| {
                        matches!(c.state, Some(State::Request(_) | State::Handshake(_)))
                    })
                    .min_by_key(|(_, c)| c.since)
                    .map(|(t, _)| *t);
                if let Some(t) = oldest {
                    self.stats.refused += 1;
                    self.close(registry, t);
                }
            }
            let _ = stream.set_nodelay(true);
            let token = Token(self.free.pop().unwrap_or_else(|| {
                self.next += 1;
                self.next - 1
            }));
            if let Err(e) =
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                tracing::warn!(error = %e, "registering a carrier connection");
                self.free.push(token.0);
                continue;
            }
            let tls = match rustls::ServerConnection::new(self.tls.clone()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "creating a TLS session");
                    let _ = registry.deregister(&mut stream);
                    self.free.push(token.0);
                    continue;
                }
            };
            let io = TlsIo {
                conn: rustls::Connection::Server(tls),
                sock: stream,
            };
            let now = Instant::now();
            self.handshaking += 1;
            let conn = Conn {
                state: Some(State::Request(Box::new(Pending {
                    io,
                    head: Vec::new(),
                }))),
                peer,
                since: now,
                last_heard: now,
            };
            self.conns.insert(token, conn);
            let conn = self.conns.get_mut(&token).expect("inserted");
            // Nothing is delivered before the upgrade is done.
            match drive(conn, &mut self.stats, &mut |_, _| {}) {
                Drive::Pending => {}
                Drive::Opened => {
                    self.handshaking -= 1;
                    self.by_peer.insert(peer, token);
                }
                Drive::Closed => self.close(registry, token),
            }
        }
    }

    fn close(&mut self, registry: &Registry, token: Token) {
        let Some(conn) = self.conns.remove(&token) else {
            return;
        };
        if self.by_peer.get(&conn.peer) == Some(&token) {
            self.by_peer.remove(&conn.peer);
        }
        match conn.state {
            Some(State::Request(mut req)) => {
                self.handshaking -= 1;
                let _ = registry.deregister(&mut req.io.sock);
            }
            Some(State::Handshake(mut mid)) => {
                self.handshaking -= 1;
                let _ = registry.deregister(&mut mid.get_mut().get_mut().inner.sock);
            }
            Some(State::Open(mut ws)) => {
                let _ = ws.flush();
                let _ = registry.deregister(&mut ws.get_mut().inner.sock);
            }
            None => self.handshaking -= 1,
        }
        if token.0 >= self.first_token {
            self.free.push(token.0);
        }
    }
}

enum Drive {
    Pending,
    Opened,
    Closed,
}

/// Where a WebSocket handshake step left `conn`: open, waiting for more
/// bytes, or failed (counted and closed).
fn handshake_step(
    step: Result<WebSocket<Io>, HandshakeError<ServerHandshake<Io, PathCheck>>>,
    conn: &mut Conn,
    stats: &mut CarrierStats,
) -> Drive {
    match step {
        Ok(ws) => {
            conn.state = Some(State::Open(Box::new(ws)));
            Drive::Opened
        }
        Err(HandshakeError::Interrupted(mid)) => {
            conn.state = Some(State::Handshake(Box::new(mid)));
            Drive::Pending
        }
        Err(HandshakeError::Failure(e)) => {
            stats.handshake_failed += 1;
            tracing::debug!(peer = %conn.peer, error = %e, "carrier handshake failed");
            Drive::Closed
        }
    }
}

fn drive(
    conn: &mut Conn,
    stats: &mut CarrierStats,
    deliver: &mut dyn FnMut(SocketAddr, &[u8]),
) -> Drive {
    match conn.state.take() {
        Some(State::Request(req)) => match read_request(req, conn.peer) {
            Head::Pending(req) => {
                conn.state = Some(State::Request(req));
                Drive::Pending
            }
            Head::Refused => {
                stats.handshake_failed += 1;
                Drive::Closed
            }
            Head::Upgrade(io) => handshake_step(
                tungstenite::accept_hdr_with_config(*io, PathCheck, Some(ws_config())),
                conn,
                stats,
            ),
        },
        Some(State::Handshake(mid)) => handshake_step((*mid).handshake(), conn, stats),
        Some(State::Open(mut ws)) => {
            let peer = conn.peer;
            let alive = loop {
                match ws.read() {
                    Ok(Message::Binary(b)) => {
                        conn.last_heard = Instant::now();
                        if b.len() <= MAX_MESSAGE {
                            stats.datagrams_in += 1;
                            deliver(peer, &b);
                        }
                    }
                    Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {
                        conn.last_heard = Instant::now();
                    }
                    Ok(Message::Close(_)) => {}
                    Ok(_) => stats.ignored_in += 1,
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        break true
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "carrier connection closed");
                        break false;
                    }
                }
            };
            // Pongs, close frames and anything the socket refused before.
            let flushed = match ws.flush() {
                Ok(()) => true,
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(_) => false,
            };
            if alive && flushed {
                conn.state = Some(State::Open(ws));
                Drive::Pending
            } else {
                stats.closed += 1;
                conn.state = Some(State::Open(ws));
                Drive::Closed
            }
        }
        None => Drive::Closed,
    }
}

enum Head {
    /// More bytes (or the TLS handshake) to come.
    Pending(Box<Pending>),
    /// Refused (answered if it was HTTP over TLS), or gone.
    Refused,
    /// A WebSocket upgrade on the carrier's path, to replay to tungstenite.
    Upgrade(Box<Io>),
}

/// Reads the TLS handshake and the request head, at most [`MAX_REQUEST`]
/// bytes; a request that is no upgrade on the carrier's path is answered
/// with an HTTP error and a one-line body, then closed.
fn read_request(mut req: Box<Pending>, peer: SocketAddr) -> Head {
    let mut buf = [0u8; 2048];
    loop {
        let room = MAX_REQUEST - req.head.len();
        if room == 0 {
            tracing::debug!(%peer, "carrier request head too large");
            answer(
                &mut req.io,
                "431 Request Header Fields Too Large",
                "request head too large: the Pilot carrier takes at most 8192 bytes\n",
            );
            return Head::Refused;
        }
        let take = room.min(buf.len());
        match req.io.read(&mut buf[..take]) {
            Ok(0) => return Head::Refused,
            Ok(n) => req.head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Head::Pending(req),
            Err(e) => {
                // Not TLS (rustls sent its alert), or the socket failed.
                tracing::debug!(%peer, error = %e, "carrier handshake failed");
                return Head::Refused;
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let verdict = match parsed.parse(&req.head) {
            Ok(httparse::Status::Partial) => continue,
            Ok(httparse::Status::Complete(_)) => check_request(&parsed),
            Err(httparse::Error::TooManyHeaders) => Some((
                "431 Request Header Fields Too Large",
                "too many header fields: the Pilot carrier takes at most 32\n",
            )),
            Err(_) => Some((
                "400 Bad Request",
                "not an HTTP request: this endpoint speaks WebSocket at /pilot/v1/carrier\n",
            )),
        };
        match verdict {
            None => {
                let Pending { io, head } = *req;
                return Head::Upgrade(Box::new(Replay {
                    head,
                    pos: 0,
                    inner: io,
                }));
            }
            Some((status, body)) => {
                tracing::debug!(%peer, status, "carrier request refused");
                answer(&mut req.io, status, body);
                return Head::Refused;
            }
        }
    }
}

/// Writes an HTTP refusal and the TLS close; what the socket does not
/// take at once is lost (it is a few hundred bytes, the socket is new).
fn answer(io: &mut TlsIo<TcpStream>, status: &str, body: &str) {
    let _ = io.write_all(refusal(status, body).as_bytes());
    io.conn.send_close_notify();
    let _ = io.write_out();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &[u8]) -> Option<&'static str> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        assert!(req.parse(head).unwrap().is_complete());
        check_request(&req).map(|(status, _)| status)
    }

    const UPGRADE: &[u8] = b"GET /pilot/v1/carrier HTTP/1.1\r\nHost: x\r\n\
        Connection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

    #[test]
    fn an_upgrade_on_the_path_passes_and_the_rest_is_refused() {
        assert_eq!(verdict(UPGRADE), None);
        let query = String::from_utf8_lossy(UPGRADE).replace("carrier ", "carrier?x=1 ");
        assert_eq!(verdict(query.as_bytes()), None);
        let cases: [(&str, &str, &str); 5] = [
            ("/pilot/v1/carrier ", "/ ", "404 Not Found"),
            ("GET ", "POST ", "400 Bad Request"),
            ("HTTP/1.1", "HTTP/1.0", "400 Bad Request"),
            ("Upgrade: WebSocket", "Upgrade: h2c", "400 Bad Request"),
            (
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Version: 8",
                "400 Bad Request",
            ),
        ];
        for (from, to, status) in cases {
            let head = String::from_utf8_lossy(UPGRADE).replacen(from, to, 1);
            assert_eq!(verdict(head.as_bytes()), Some(status), "{head}");
        }
        let no_key = String::from_utf8_lossy(UPGRADE)
            .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "");
        assert_eq!(verdict(no_key.as_bytes()), Some("400 Bad Request"));
    }

    #[test]
    fn a_refusal_is_one_line_with_its_length() {
        let r = refusal("404 Not Found", "not here\n");
        assert!(r.starts_with("HTTP/1.1 404 Not Found\r\n"), "{r}");
        assert!(r.contains("Content-Length: 9\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nnot here\n"), "{r}");
    }

    #[test]
    fn replay_hands_out_the_head_then_the_stream() {
        let mut r = Replay {
            head: b"abc".to_vec(),
            pos: 0,
            inner: std::io::Cursor::new(b"def".to_vec()),
        };
        let mut out = Vec::new();
        let mut buf = [0u8; 2];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"abcdef");
        assert!(r.head.is_empty() && r.head.capacity() == 0);
    }
}
