//! The daemon's carrier connection to its rendezvous.
//!
//! Connecting (TCP, the proxy's CONNECT, TLS, the WebSocket upgrade)
//! blocks on DNS and on each step's round trip, so it runs on a short-lived
//! thread with a timeout per step; the finished connection comes back to
//! the event loop (woken by its waker), which then runs it non-blocking.
//! A lost or failed connection is retried with exponential backoff and
//! jitter (0.5 s doubling to 30 s, each wait between half and all of it).
//! While open, a WebSocket ping goes out every 25 s so that proxies and
//! NATs keep the connection, and one that has heard nothing for 75 s is
//! given up and replaced.

use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token, Waker};
use rustls::pki_types::ServerName;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

use super::proxy::Proxy;
use super::tls::{client_config, Trust};
use super::tlsio::TlsIo;
use super::{ws_config, CarrierUrl, MAX_MESSAGE};

type Ws = WebSocket<TlsIo<TcpStream>>;

const PING_EVERY: Duration = Duration::from_secs(25);
const DEAD_AFTER: Duration = Duration::from_secs(75);
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How the carrier connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Where.
    pub url: CarrierUrl,
    /// Which certificates to accept.
    pub trust: Trust,
    /// Through which proxy, if any (its credentials never leave it).
    pub proxy: Option<Proxy>,
    /// Each step's limit (TCP connect, CONNECT, TLS, upgrade).
    pub step_timeout: Duration,
}

/// What happened to the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// Open (again): `setup` is how long TCP + proxy + TLS + upgrade took.
    Connected {
        /// The time from starting to open.
        setup: Duration,
    },
    /// An attempt failed, or the open connection was lost; retrying.
    Down(String),
}

/// Counters of the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Successful connections (1 + reconnects).
    pub connects: u64,
    /// Failed attempts and lost connections.
    pub failures: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams dropped: not connected, or the write buffer full.
    pub dropped_out: u64,
}

enum State {
    Idle,
    Connecting {
        rx: Receiver<Result<Ws, String>>,
        started: Instant,
    },
    Open {
        ws: Box<Ws>,
        last_heard: Instant,
        last_ping: Instant,
    },
    Backoff {
        until: Instant,
    },
}

/// The carrier, from the agent's side.
pub struct CarrierClient {
    opts: Arc<ClientOptions>,
    tls: Arc<rustls::ClientConfig>,
    token: Token,
    waker: Arc<Waker>,
    state: State,
    attempt: u32,
    stats: ClientStats,
    last_error: Option<String>,
}

impl std::fmt::Debug for CarrierClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CarrierClient")
            .field("url", &self.opts.url.to_string())
            .field("proxy", &self.opts.proxy)
            .field("open", &self.is_open())
            .finish_non_exhaustive()
    }
}

impl CarrierClient {
    /// A client that has not connected yet. Fails only on bad trust
    /// settings (an unreadable CA file, no system roots).
    pub fn new(opts: ClientOptions, token: Token, waker: Arc<Waker>) -> Result<Self, String> {
        let tls = client_config(&opts.trust)?;
        Ok(CarrierClient {
            opts: Arc::new(opts),
            tls,
            token,
            waker,
            state: State::Idle,
            attempt: 0,
            stats: ClientStats::default(),
            last_error: None,
        })
    }

    /// The URL it connects to.
    pub fn url(&self) -> &CarrierUrl {
        &self.opts.url
    }

    /// The proxy it connects through (shown without credentials).
    pub fn proxy(&self) -> Option<&Proxy> {
        self.opts.proxy.as_ref()
    }

    /// True while the connection is open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// True unless stopped.
    pub fn is_started(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Counters.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// Why the last attempt failed or the last connection was lost.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// The token its readiness events come with.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Starts connecting, unless already connecting or open.
    pub fn start(&mut self) {
        if matches!(self.state, State::Idle) {
            self.connect_now();
        }
    }

    /// Closes the connection and stops retrying.
    pub fn stop(&mut self, registry: &Registry) {
        if let State::Open { mut ws, .. } = std::mem::replace(&mut self.state, State::Idle) {
            let _ = ws.close(None);
            let _ = ws.flush();
            let fd = ws.get_ref().sock.as_raw_fd();
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
    }

    /// When [`CarrierClient::tick`] has work next.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Backoff { until } => Some(*until),
            State::Open {
                last_heard,
                last_ping,
                ..
            } => Some((*last_ping + PING_EVERY).min(*last_heard + DEAD_AFTER)),
            State::Idle | State::Connecting { .. } => None,
        }
    }

    /// Timers and the connecting thread's result. Call every loop turn.
    pub fn tick(&mut self, registry: &Registry, now: Instant) -> Option<ClientEvent> {
        match &mut self.state {
            State::Idle => None,
            State::Connecting { rx, started } => {
                let started = *started;
                let result = match rx.try_recv() {
                    Ok(r) => r,
                    Err(TryRecvError::Empty) => return None,
                    Err(TryRecvError::Disconnected) => Err("the connecting thread died".into()),
                };
                match result.and_then(|ws| self.open(registry, ws, now)) {
                    Ok(()) => {
                        self.attempt = 0;
                        self.stats.connects += 1;
                        self.last_error = None;
                        Some(ClientEvent::Connected {
                            setup: now.saturating_duration_since(started),
                        })
                    }
                    Err(e) => Some(self.down(registry, now, e)),
                }
            }
            State::Backoff { until } => {
                if now >= *until {
                    self.connect_now();
                }
                None
            }
            State::Open {
                ws,
                last_heard,
                last_ping,
            } => {
                if now.saturating_duration_since(*last_heard) >= DEAD_AFTER {
                    let why = format!("{} went silent", self.opts.url);
                    return Some(self.down(registry, now, why));
                }
                if now.saturating_duration_since(*last_ping) >= PING_EVERY {
                    *last_ping = now;
                    match ws.send(Message::Ping(Vec::new().into())) {
                        Ok(()) => {}
                        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                        }
                        Err(tungstenite::Error::WriteBufferFull(_)) => {}
                        Err(e) => {
                            let why = format!("{}: {e}", self.opts.url);
                            return Some(self.down(registry, now, why));
                        }
                    }
                }
                None
            }
        }
    }

    /// A readiness event for the connection: reads datagrams (each
    /// handed to `deliver`) and writes what waited for the socket.
    pub fn handle_event(
        &mut self,
        registry: &Registry,
        deliver: &mut dyn FnMut(&[u8]),
    ) -> Option<ClientEvent> {
        let State::Open { ws, last_heard, .. } = &mut self.state else {
            return None;
        };
        let mut lost = None;
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => {
                    *last_heard = Instant::now();
                    if b.len() <= MAX_MESSAGE {
                        self.stats.datagrams_in += 1;
                        deliver(&b);
                    }
                }
                Ok(Message::Close(_)) => {}
                Ok(_) => *last_heard = Instant::now(),
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    lost = Some(format!("{}: {e}", self.opts.url));
                    break;
                }
            }
        }
        if lost.is_none() {
            match ws.flush() {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => lost = Some(format!("{}: {e}", self.opts.url)),
            }
        }
        lost.map(|why| self.down(registry, Instant::now(), why))
    }

    /// Sends one datagram. False if dropped (not open, or the bounded
    /// write buffer is full): counted, never queued further.
    pub fn send(&mut self, registry: &Registry, payload: &[u8]) -> Result<bool, ClientEvent> {
        let State::Open { ws, .. } = &mut self.state else {
            self.stats.dropped_out += 1;
            return Ok(false);
        };
        match ws.send(Message::Binary(payload.to_vec().into())) {
            Ok(()) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(tungstenite::Error::WriteBufferFull(_)) => {
                self.stats.dropped_out += 1;
                return Ok(false);
            }
            Err(e) => {
                self.stats.dropped_out += 1;
                let why = format!("{}: {e}", self.opts.url);
                return Err(self.down(registry, Instant::now(), why));
            }
        }
        self.stats.datagrams_out += 1;
        Ok(true)
    }

    fn open(&mut self, registry: &Registry, ws: Ws, now: Instant) -> Result<(), String> {
        let fd = ws.get_ref().sock.as_raw_fd();
        registry
            .register(
                &mut SourceFd(&fd),
                self.token,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("registering the carrier: {e}"))?;
        self.state = State::Open {
            ws: Box::new(ws),
            last_heard: now,
            last_ping: now,
        };
        // Anything that came with the upgrade, and edge-triggered
        // readiness: read once now.
        let _ = self.waker.wake();
        Ok(())
    }

    fn down(&mut self, registry: &Registry, now: Instant, why: String) -> ClientEvent {
        if let State::Open { ws, .. } = &self.state {
            let fd = ws.get_ref().sock.as_raw_fd();
            let _ = registry.deregister(&mut SourceFd(&fd));
        }
        self.stats.failures += 1;
        let base = FIRST_BACKOFF
            .saturating_mul(1u32 << self.attempt.min(6))
            .min(MAX_BACKOFF);
        self.attempt = self.attempt.saturating_add(1);
        let mut r = [0u8; 2];
        let _ = getrandom::getrandom(&mut r);
        let jitter = f64::from(u16::from_le_bytes(r)) / f64::from(u16::MAX);
        let wait = base.mul_f64(0.5 + 0.5 * jitter);
        self.state = State::Backoff { until: now + wait };
        self.last_error = Some(why.clone());
        ClientEvent::Down(why)
    }

    fn connect_now(&mut self) {
        let (tx, rx) = mpsc::channel();
        let (opts, tls, waker) = (self.opts.clone(), self.tls.clone(), self.waker.clone());
        let spawned = std::thread::Builder::new()
            .name("pilot-carrier-connect".into())
            .spawn(move || {
                let _ = tx.send(connect(&opts, tls));
                let _ = waker.wake();
            });
        self.state = match spawned {
            Ok(_) => State::Connecting {
                rx,
                started: Instant::now(),
            },
            Err(_) => State::Backoff {
                until: Instant::now() + MAX_BACKOFF,
            },
        };
    }
}

/// TCP (directly or through the proxy), TLS, upgrade; blocking, each
/// step bounded by the step timeout.
fn connect(opts: &ClientOptions, tls: Arc<rustls::ClientConfig>) -> Result<Ws, String> {
    let url = &opts.url;
    let timeout = opts.step_timeout;
    let sock = match &opts.proxy {
        Some(p) => p.connect(&url.authority(), timeout)?,
        None => {
            let addrs: Vec<_> = (url.host.as_str(), url.port)
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {}: {e}", url.host))?
                .collect();
            let mut last = None;
            let mut sock = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(s) => {
                        sock = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            sock.ok_or_else(|| {
                format!(
                    "cannot connect to {}: {}",
                    url.authority(),
                    last.map_or("no address".into(), |e| e.to_string())
                )
            })?
        }
    };
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(timeout))
        .and_then(|_| sock.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| format!("{} is not a valid TLS server name", url.host))?;
    let conn = rustls::ClientConnection::new(tls, name).map_err(|e| e.to_string())?;
    let mut io = TlsIo {
        conn: rustls::Connection::Client(conn),
        sock,
    };
    io.handshake()
        .map_err(|e| format!("TLS with {}: {e}", url.authority()))?;
    let (mut ws, _) =
        tungstenite::client::client_with_config(url.to_string(), io, Some(ws_config())).map_err(
            |e| match e {
                HandshakeError::Failure(tungstenite::Error::Http(r)) => {
                    format!("{url} refused the WebSocket upgrade: HTTP {}", r.status())
                }
                HandshakeError::Failure(e) => format!("WebSocket upgrade at {url}: {e}"),
                HandshakeError::Interrupted(_) => format!("WebSocket upgrade at {url} timed out"),
            },
        )?;
    let sock = &ws.get_mut().sock;
    sock.set_read_timeout(None)
        .and_then(|_| sock.set_write_timeout(None))
        .and_then(|_| sock.set_nonblocking(true))
        .map_err(|e| e.to_string())?;
    Ok(ws)
}
