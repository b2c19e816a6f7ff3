//! The daemon's side of the local IPC: a Unix socket listener and its
//! clients, driven by the daemon's own `mio::Poll`.
//!
//! # Tokens
//!
//! The server takes a contiguous range of `mio::Token`s at [`IpcServer::bind`]:
//! the first for the listener, one per client for the rest (so the range's
//! length minus one also caps the number of clients). The daemon keeps its
//! own tokens (UDP sockets, signals, timers...) outside that range and
//! hands every event to [`IpcServer::handle_event`], which says whether it
//! was the server's. Tokens of departed clients are reused; client IDs
//! ([`ClientId`]) never are.
//!
//! # The loop
//!
//! ```text
//! loop {
//!     let timeout = if ipc.has_backlog() { Some(Duration::ZERO) } else { core_deadline };
//!     poll.poll(&mut events, timeout)?;
//!     for event in &events {
//!         if ipc.handle_event(event) { continue; }
//!         // ... the daemon's own tokens
//!     }
//!     while let Some(ev) = ipc.poll_event() {
//!         // Request -> answer now or later with send_response (same id)
//!         // Data -> into the core's stream; pause_reading if it is full
//!         // Writable -> retry send_data for that client's streams
//!         // Disconnected -> forget the client and its streams
//!     }
//!     // ... drain the core; send_event / send_data what it produced
//! }
//! ```
//!
//! `handle_event` only notes readiness and flushes queued output; reading,
//! accepting and decoding happen in [`IpcServer::poll_event`], one frame at
//! a time, round-robin over the clients, so that [`IpcServer::pause_reading`]
//! takes effect at once and no client can hog a loop turn. Per drain (until
//! `poll_event` returns `None`) at most [`IpcConfig::read_budget`] bytes are
//! read from sockets; if that cut a drain short, or the `send_*` calls made
//! since queued an event (a write error disconnects a client),
//! [`IpcServer::has_backlog`] is true and the next poll should not sleep.
//!
//! # Flow control
//!
//! Each client has one write queue. Control frames (responses, events) are
//! always queued, up to [`IpcConfig::max_queue`]; a client that lets its
//! queue grow past that by not reading is disconnected. Stream bytes
//! ([`IpcServer::send_data`]) are only taken while the queue is under
//! [`IpcConfig::high_water`]: beyond it `send_data` takes part or nothing,
//! the daemon leaves the rest in the core's stream buffer, and retries
//! when [`ServerEvent::Writable`] arrives for that client (once its queue is
//! back under half the high-water mark). In the other direction the
//! daemon calls `pause_reading(client, true)` while the stream a client
//! writes to is full; everything that client sends, requests included,
//! then waits in its socket, in order, until `pause_reading(client, false)`.
//!
//! Requests are bounded the same way: a client is not read while
//! [`IpcConfig::max_in_flight`] of its requests await their responses, or
//! while its write queue holds [`IpcConfig::high_water`] bytes or more, so
//! a client that pipelines requests without reading the answers makes
//! the daemon hold at most that much for it (its further requests wait in
//! its own socket buffer). It is read again as the answers go out.
//!
//! # Idle clients
//!
//! A client that holds nothing open is closed after
//! [`IpcConfig::idle_timeout`] without traffic: call
//! [`IpcServer::expire_idle`] each loop turn (and wake for
//! [`IpcServer::idle_deadline`]), saying which clients hold something
//! (a stream, a port) and must stay. It is sent an error frame (request
//! ID 0, code `timeout`) first. So is a client turned away because
//! [`IpcConfig::max_clients`] are connected (code `internal`).
//!
//! # Hang-ups
//!
//! A client that closes its connection right after writing still has
//! everything it wrote delivered, in order, before its `Disconnected`:
//! once a write to it fails with a broken pipe, what is sent to it is
//! silently dropped (sends succeed) while the rest of its input is read.
//! A paused client's hang-up is only noticed once it is resumed (its
//! input must be read to the end first), so resume a client when the
//! stream it was feeding closes. Since `send_data` to such a client takes
//! everything, never loop on it until it refuses with a source that
//! does not run dry (send what one buffer holds per loop turn): the
//! `Disconnected` only comes from a later `poll_event`.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};

use crate::ipc::api::{self, Response};
use crate::ipc::frame::{self, FrameDecoder, FrameError, Kind, MAX_BODY};

/// Tunables of an [`IpcServer`]; `Default` suits the daemon.
#[derive(Clone, Debug)]
pub struct IpcConfig {
    /// The largest frame accepted from a client (at most
    /// [`frame::MAX_FRAME`]).
    pub max_frame: u32,
    /// `send_data` takes no more stream bytes once a client's write queue
    /// holds this many bytes.
    pub high_water: usize,
    /// A client whose write queue would grow past this is disconnected
    /// (it stopped reading while responses and events kept coming).
    pub max_queue: usize,
    /// Clients at once (also capped by the token range).
    pub max_clients: usize,
    /// Bytes read from all client sockets per drain of `poll_event`.
    pub read_budget: usize,
    /// The largest data frame body `send_data` writes; smaller frames let
    /// responses and events slip in between stream bytes sooner.
    pub data_chunk: usize,
    /// A client is not read while this many of its requests are not yet
    /// answered (at least 1).
    pub max_in_flight: usize,
    /// A client holding nothing open is closed after this long without
    /// traffic (`None`: never).
    pub idle_timeout: Option<Duration>,
}

impl Default for IpcConfig {
    fn default() -> Self {
        IpcConfig {
            max_frame: frame::MAX_FRAME,
            high_water: 4 << 20,
            max_queue: 16 << 20,
            max_clients: 256,
            read_budget: 4 << 20,
            data_chunk: 64 << 10,
            max_in_flight: 64,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// How long a client holding nothing open may stay silent by default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connected client, for as long as it is connected. Never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl core::fmt::Display for ClientId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ipc-client-{}", self.0)
    }
}

/// What happened, for the daemon to act on. Every client produces exactly
/// one `Connected` first and exactly one `Disconnected` last.
#[derive(Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client connected.
    Connected { client: ClientId },
    /// A request; answer it with [`IpcServer::send_response`] and this `id`,
    /// now or later (requests may be answered in any order).
    Request {
        client: ClientId,
        id: u32,
        req: api::Request,
    },
    /// Stream bytes from a client.
    Data {
        client: ClientId,
        stream: u32,
        bytes: Vec<u8>,
    },
    /// A client's write queue drained after `send_data` took less than it
    /// was offered: retry the streams waiting on this client.
    Writable { client: ClientId },
    /// A client sent something that is not a frame of this protocol. It
    /// has been sent an error response and is being disconnected (a
    /// `Disconnected` follows).
    Malformed { client: ClientId, error: FrameError },
    /// A client is gone; forget it and close what it had open.
    Disconnected {
        client: ClientId,
        reason: DisconnectReason,
    },
}

/// Why a client went away.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// It closed (or reset) the connection.
    Closed,
    /// It sent a malformed frame (see the `Malformed` event before).
    Malformed,
    /// It stopped reading while its write queue passed `max_queue`.
    Overflow,
    /// The daemon called [`IpcServer::close`].
    ByServer,
    /// It held nothing open and was silent for [`IpcConfig::idle_timeout`].
    Idle,
    /// Reading or writing its socket failed.
    Io(io::ErrorKind),
}

/// Why a send did not (fully) happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The client's write queue is at its high-water mark; wait for
    /// [`ServerEvent::Writable`].
    #[error("the client's write queue is full")]
    Full,
    /// No such client (it disconnected, maybe just now for not reading;
    /// a `Disconnected` event says so).
    #[error("no such client")]
    Gone,
    /// The response or event does not fit in one frame.
    #[error("message of {len} bytes does not fit in a frame")]
    TooLarge { len: usize },
}

/// Why [`IpcServer::bind`] (or [`prepare_socket_dir`]) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The socket's directory does not exist (it is not created silently;
    /// see [`prepare_socket_dir`]).
    #[error("socket directory {} does not exist", dir.display())]
    MissingDirectory { dir: PathBuf },
    /// A daemon already answers on this socket.
    #[error("a daemon is already running (it answers on {})", path.display())]
    AlreadyRunning { path: PathBuf },
    /// Something that is not a socket sits at the path; it is left alone.
    #[error("{} exists and is not a socket", path.display())]
    NotASocket { path: PathBuf },
    /// The path does not fit in a Unix socket address.
    #[error("socket path {} is too long ({len} bytes, at most {MAX_SOCKET_PATH})", path.display())]
    PathTooLong { path: PathBuf, len: usize },
    /// The token range has no room for the listener and a client.
    #[error("token range {start}..{end} is too small (needs at least 2 tokens)")]
    Tokens { start: usize, end: usize },
    /// A system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl BindError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> BindError {
        BindError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The longest socket path (bytes) a Unix socket address holds on Linux.
pub const MAX_SOCKET_PATH: usize = 107;

/// Creates `dir` and any missing parents with mode 0700 (the daemon calls
/// this for its own home; [`IpcServer::bind`] never creates directories).
/// An existing directory is left as it is.
pub fn prepare_socket_dir(dir: &Path) -> Result<(), BindError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(BindError::io("create directory", dir, e)),
    }
}

/// The local IPC server. See the module documentation for the loop.
#[derive(Debug)]
pub struct IpcServer {
    config: IpcConfig,
    path: PathBuf,
    /// The socket file's (device, inode), so that drop removes it only if
    /// it is still ours.
    identity: (u64, u64),
    listener: UnixListener,
    registry: Registry,
    tokens: Range<usize>,
    /// Token slot (token - tokens.start - 1) to client.
    slots: Vec<Option<ClientId>>,
    free_slots: Vec<usize>,
    clients: BTreeMap<ClientId, Client>,
    next_client: u64,
    /// Events produced outside of reading (accepts, write errors...).
    events: VecDeque<ServerEvent>,
    /// Clients that may have a frame to decode or bytes to read.
    ready: VecDeque<ClientId>,
    /// Clients with bytes to read once the next drain starts.
    deferred: Vec<ClientId>,
    accept_pending: bool,
    read_this_drain: usize,
    scratch: Vec<u8>,
}

#[derive(Debug)]
struct Client {
    token: Token,
    slot: usize,
    stream: UnixStream,
    decoder: FrameDecoder,
    out: Vec<u8>,
    /// Bytes of `out` already written.
    out_pos: usize,
    /// The socket may have unread bytes (readiness not yet used up).
    readable: bool,
    /// The socket may take more bytes.
    writable: bool,
    paused: bool,
    /// In `ready` or `deferred`.
    queued: bool,
    /// `send_data` took less than offered since the last `Writable`.
    blocked: bool,
    /// The client no longer reads (it closed the connection): what is sent
    /// to it is dropped, and what it sent before closing is still read.
    write_dead: bool,
    /// Requests delivered to the daemon and not yet answered.
    in_flight: usize,
    /// When bytes last moved either way (for the idle timeout).
    last_active: Instant,
}

impl Client {
    fn queued_bytes(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether reading this client waits: the daemon paused it, or it has
    /// not taken the answers to what it asked already.
    fn held(&self, config: &IpcConfig) -> bool {
        self.paused
            || self.in_flight >= config.max_in_flight.max(1)
            || self.queued_bytes() >= config.high_water
    }

    /// Whether it may be closed for idling, if the daemon agrees.
    fn quiet(&self) -> bool {
        self.in_flight == 0 && self.queued_bytes() == 0 && !self.paused
    }

    /// Writes what the socket takes. `Err` means the client is gone.
    fn flush(&mut self) -> io::Result<()> {
        while self.writable && !self.write_dead && self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    self.last_active = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // It hung up; what it sent before may still be unread.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => self.write_dead = true,
                Err(e) => return Err(e),
            }
        }
        if self.write_dead {
            self.out.clear();
            self.out_pos = 0;
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= 64 << 10 && self.out_pos >= self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

impl IpcServer {
    /// Listens on `path`, registering with `registry` under `tokens.start`
    /// and later its clients under the rest of `tokens`.
    ///
    /// The socket's directory must exist. A live daemon answering on
    /// `path` makes this fail with [`BindError::AlreadyRunning`]; a stale
    /// socket file (nobody answers) is replaced; anything else at `path` is
    /// refused. The socket file gets mode 0600. Two daemons starting at
    /// the same instant can both see a stale socket: the daemon should
    /// hold its pid-file lock before binding.
    pub fn bind(
        path: &Path,
        registry: &Registry,
        tokens: Range<usize>,
        config: IpcConfig,
    ) -> Result<IpcServer, BindError> {
        if tokens.end < tokens.start.saturating_add(2) {
            return Err(BindError::Tokens {
                start: tokens.start,
                end: tokens.end,
            });
        }
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(BindError::PathTooLong {
                path: path.to_path_buf(),
                len,
            });
        }
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(BindError::MissingDirectory {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BindError::MissingDirectory {
                    dir: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(BindError::io("inspect", dir, e)),
        }
        remove_stale(path)?;

        let mut listener = UnixListener::bind(path).map_err(|e| BindError::io("bind", path, e))?;
        // The directory (0700) keeps others out between bind and chmod.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| BindError::io("chmod", path, e))?;
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| BindError::io("inspect", path, e))?;
        registry
            .register(&mut listener, Token(tokens.start), Interest::READABLE)
            .map_err(|e| BindError::io("register", path, e))?;
        let registry = registry
            .try_clone()
            .map_err(|e| BindError::io("register", path, e))?;
        let slot_count = (tokens.end - tokens.start - 1).min(config.max_clients.max(1));
        let scratch = vec![0; 64 << 10];
        Ok(IpcServer {
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            listener,
            registry,
            slots: vec![None; slot_count],
            free_slots: (0..slot_count).rev().collect(),
            tokens,
            clients: BTreeMap::new(),
            next_client: 1,
            events: VecDeque::new(),
            ready: VecDeque::new(),
            deferred: Vec::new(),
            accept_pending: false,
            read_this_drain: 0,
            scratch,
            config,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Notes a readiness event. Returns `false` (and does nothing) when
    /// the token is not the server's.
    pub fn handle_event(&mut self, event: &mio::event::Event) -> bool {
        let token = event.token().0;
        if !self.tokens.contains(&token) {
            return false;
        }
        if token == self.tokens.start {
            self.accept_pending = true;
            return true;
        }
        // A stale token (its client left in this batch) finds nothing.
        let Some(Some(id)) = self.slots.get(token - self.tokens.start - 1).copied() else {
            return true;
        };
        let Some(c) = self.clients.get_mut(&id) else {
            return true;
        };
        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
        c.readable |= readable;
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            c.writable = true;
            self.flush(id);
        }
        self.wake(id);
        true
    }

    /// The next thing that happened, `None` when there is nothing more for
    /// now. Reads and decodes as it goes; drain it after every poll.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        loop {
            if let Some(ev) = self.events.pop_front() {
                return Some(ev);
            }
            if self.accept_pending && self.read_this_drain < self.config.read_budget {
                self.accept();
                continue;
            }
            let Some(id) = self.ready.pop_front() else {
                self.read_this_drain = 0;
                self.ready.extend(self.deferred.drain(..));
                return None;
            };
            if let Some(ev) = self.step(id) {
                return Some(ev);
            }
        }
    }

    /// Whether `poll_event` has more to give without new readiness: a
    /// drain was cut short by the read budget, a connection is waiting to
    /// be accepted, or sends queued an event. Poll with a zero timeout.
    pub fn has_backlog(&self) -> bool {
        !self.events.is_empty() || !self.ready.is_empty() || self.accept_pending
    }

    /// Queues the response to request `id` (0 for an error about the
    /// connection itself) and writes what the socket takes. Answer every
    /// request exactly once: unanswered ones count against
    /// [`IpcConfig::max_in_flight`].
    pub fn send_response(
        &mut self,
        client: ClientId,
        id: u32,
        resp: &Response,
    ) -> Result<(), SendError> {
        let mut bytes = Vec::new();
        frame::encode_response(id, resp, &mut bytes).map_err(too_large)?;
        if id != 0 {
            if let Some(c) = self.clients.get_mut(&client) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
        }
        let sent = self.send_control(client, &bytes);
        self.wake(client);
        sent
    }

    /// Queues an event (ID 0) and writes what the socket takes.
    pub fn send_event(&mut self, client: ClientId, event: &api::Event) -> Result<(), SendError> {
        let mut bytes = Vec::new();
        frame::encode_event(event, &mut bytes).map_err(too_large)?;
        self.send_control(client, &bytes)
    }

    /// Queues stream bytes, as many as the client's queue has room for
    /// under the high-water mark, and returns how many it took (all of
    /// `bytes` or a prefix; `Ok(0)` only for empty `bytes`). `Err(Full)`:
    /// none taken. When it took less than offered, a
    /// [`ServerEvent::Writable`] follows once the client has read enough.
    /// A client that hung up takes (and drops) everything until its
    /// `Disconnected`, so `Full` is no loop bound (see "Hang-ups").
    pub fn send_data(
        &mut self,
        client: ClientId,
        stream: u32,
        bytes: &[u8],
    ) -> Result<usize, SendError> {
        let chunk = self.config.data_chunk.clamp(1, MAX_BODY);
        let high_water = self.config.high_water;
        let c = self.clients.get_mut(&client).ok_or(SendError::Gone)?;
        let room = high_water.saturating_sub(c.queued_bytes());
        let take = bytes.len().min(room);
        if take < bytes.len() {
            c.blocked = true;
        }
        if take == 0 && !bytes.is_empty() {
            return Err(SendError::Full);
        }
        for piece in bytes[..take].chunks(chunk) {
            // Cannot fail: pieces are at most MAX_BODY.
            let _ = frame::encode(Kind::Data, stream, piece, &mut c.out);
        }
        self.flush(client);
        Ok(take)
    }

    /// Stops (`true`) or resumes (`false`) reading a client. While paused,
    /// nothing more from it is delivered, not even frames already read:
    /// they wait, in order, for the resume. Writing to it goes on.
    pub fn pause_reading(&mut self, client: ClientId, paused: bool) {
        let Some(c) = self.clients.get_mut(&client) else {
            return;
        };
        c.paused = paused;
        self.wake(client);
    }

    /// Closes the clients that hold nothing open (by the server's count
    /// and by `holds`, the daemon's) and moved no byte for the idle
    /// timeout, each with an error frame first. Returns how many.
    pub fn expire_idle(&mut self, now: Instant, holds: impl Fn(ClientId) -> bool) -> usize {
        let Some(limit) = self.config.idle_timeout else {
            return 0;
        };
        let idle: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(id, c)| {
                c.quiet() && now.saturating_duration_since(c.last_active) >= limit && !holds(**id)
            })
            .map(|(id, _)| *id)
            .collect();
        for &id in &idle {
            tracing::debug!(client = %id, "IPC client idle; closing");
            let resp = error_response(
                api::codes::TIMEOUT,
                format!(
                    "connection closed after {} s without traffic while holding nothing open",
                    limit.as_secs()
                ),
                "connect again when there is something to ask",
            );
            if let Some(c) = self.clients.get_mut(&id) {
                let _ = frame::encode_response(0, &resp, &mut c.out);
                let _ = c.flush();
            }
            self.drop_client(id, DisconnectReason::Idle);
        }
        idle.len()
    }

    /// When [`expire_idle`](Self::expire_idle) may next find a client to
    /// close (`None`: no timeout, or no client that could be idle).
    pub fn idle_deadline(&self) -> Option<Instant> {
        let limit = self.config.idle_timeout?;
        self.clients
            .values()
            .filter(|c| c.quiet())
            .map(|c| c.last_active + limit)
            .min()
    }

    /// Whether a client's reading is paused.
    pub fn is_paused(&self, client: ClientId) -> bool {
        self.clients.get(&client).is_some_and(|c| c.paused)
    }

    /// Disconnects a client, after writing what of its queue the socket
    /// takes right now. A `Disconnected { reason: ByServer }` follows.
    /// Returns `false` for an unknown client.
    pub fn close(&mut self, client: ClientId) -> bool {
        let Some(c) = self.clients.get_mut(&client) else {
            return false;
        };
        let _ = c.flush();
        self.drop_client(client, DisconnectReason::ByServer);
        true
    }

    /// The connected clients.
    pub fn clients(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.clients.keys().copied()
    }

    /// Bytes waiting in a client's write queue.
    pub fn queued(&self, client: ClientId) -> Option<usize> {
        self.clients.get(&client).map(Client::queued_bytes)
    }

    fn send_control(&mut self, client: ClientId, bytes: &[u8]) -> Result<(), SendError> {
        let max_queue = self.config.max_queue;
        let c = self.clients.get_mut(&client).ok_or(SendError::Gone)?;
        if c.queued_bytes() + bytes.len() > max_queue {
            tracing::warn!(%client, queued = c.queued_bytes(), "IPC client is not reading; disconnecting");
            self.drop_client(client, DisconnectReason::Overflow);
            return Err(SendError::Gone);
        }
        c.out.extend_from_slice(bytes);
        self.flush(client);
        Ok(())
    }

    /// Flushes a client's queue; drops it on a write error, and signals
    /// `Writable` when a blocked queue got low enough.
    fn flush(&mut self, id: ClientId) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if let Err(e) = c.flush() {
            tracing::debug!(client = %id, error = %e, "IPC client write failed");
            self.drop_client(id, DisconnectReason::Io(e.kind()));
            return;
        }
        if c.blocked && c.queued_bytes() <= self.config.high_water / 2 {
            c.blocked = false;
            self.events.push_back(ServerEvent::Writable { client: id });
        }
        self.wake(id);
    }

    /// Queues a client for reading if it is no longer held and may have
    /// something to read or decode.
    fn wake(&mut self, id: ClientId) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if !c.queued && !c.held(&self.config) && (c.readable || c.decoder.has_frame()) {
            c.queued = true;
            self.ready.push_back(id);
        }
    }

    /// Accepts one connection (the loop in `poll_event` comes back until
    /// the listener would block).
    fn accept(&mut self) {
        let (mut stream, _) = match self.listener.accept() {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.accept_pending = false;
                return;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => {
                // Out of file descriptors and the like: the listener will
                // signal again when a new client knocks.
                tracing::warn!(error = %e, "IPC accept failed");
                self.accept_pending = false;
                return;
            }
        };
        // Count accepts against the budget so a connect storm yields.
        self.read_this_drain += 1024;
        let Some(slot) = self.free_slots.pop() else {
            tracing::warn!("IPC client refused: too many clients");
            let mut bytes = Vec::new();
            let _ = frame::encode_response(
                0,
                &error_response(
                    api::codes::INTERNAL,
                    "too many clients connected to the daemon".into(),
                    "close other pilotctl or application connections and retry",
                ),
                &mut bytes,
            );
            let _ = stream.write(&bytes);
            // What it sent already is read and dropped: closing with unread
            // input would reset the connection, and a reset may hide the
            // error frame from simple clients or end their read in an error.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                match stream.read(&mut sink) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
            return;
        };
        let token = Token(self.tokens.start + 1 + slot);
        if let Err(e) =
            self.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            tracing::warn!(error = %e, "IPC client registration failed");
            self.free_slots.push(slot);
            return;
        }
        let id = ClientId(self.next_client);
        self.next_client += 1;
        self.slots[slot] = Some(id);
        // Whatever the client sent before registering is read on the
        // first pass; readiness is edge-triggered.
        self.clients.insert(
            id,
            Client {
                token,
                slot,
                stream,
                decoder: FrameDecoder::with_max(self.config.max_frame),
                out: Vec::new(),
                out_pos: 0,
                readable: true,
                writable: true,
                paused: false,
                queued: true,
                blocked: false,
                write_dead: false,
                in_flight: 0,
                last_active: Instant::now(),
            },
        );
        self.ready.push_back(id);
        self.events.push_back(ServerEvent::Connected { client: id });
    }

    /// One step for a client from `ready`: a decoded frame, or a read.
    fn step(&mut self, id: ClientId) -> Option<ServerEvent> {
        let c = self.clients.get_mut(&id)?;
        c.queued = false;
        if c.held(&self.config) {
            return None;
        }
        match c.decoder.next_frame() {
            Ok(Some(f)) => {
                c.queued = true;
                self.ready.push_back(id);
                return self.frame_event(id, f);
            }
            Ok(None) => {}
            Err(e) => {
                self.malformed(id, e);
                return None;
            }
        }
        if !c.readable {
            return None;
        }
        if self.read_this_drain >= self.config.read_budget {
            c.queued = true;
            self.deferred.push(id);
            return None;
        }
        match c.stream.read(&mut self.scratch) {
            Ok(0) => {
                if c.decoder.buffered() > 0 {
                    tracing::debug!(client = %id, bytes = c.decoder.buffered(), "IPC client left mid-frame");
                }
                self.drop_client(id, DisconnectReason::Closed);
            }
            Ok(n) => {
                c.decoder.push(&self.scratch[..n]);
                c.last_active = Instant::now();
                self.read_this_drain += n;
                c.queued = true;
                self.ready.push_front(id);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.readable = false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                c.queued = true;
                self.ready.push_front(id);
            }
            // Closing with our replies unread resets the connection (after
            // everything it sent has been read): a hang-up like any other.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                self.drop_client(id, DisconnectReason::Closed);
            }
            Err(e) => {
                tracing::debug!(client = %id, error = %e, "IPC client read failed");
                self.drop_client(id, DisconnectReason::Io(e.kind()));
            }
        }
        None
    }

    fn frame_event(&mut self, client: ClientId, f: frame::Frame) -> Option<ServerEvent> {
        match f.kind {
            Kind::Data => Some(ServerEvent::Data {
                client,
                stream: f.id,
                bytes: f.body,
            }),
            Kind::Request => match frame::decode_request(&f) {
                Ok(req) => {
                    if let Some(c) = self.clients.get_mut(&client) {
                        c.in_flight += 1;
                    }
                    Some(ServerEvent::Request {
                        client,
                        id: f.id,
                        req,
                    })
                }
                Err(e) if !e.is_fatal() => {
                    // Well-framed JSON that is no request we know: refuse
                    // the request, keep the connection.
                    tracing::debug!(%client, error = %e, "IPC request refused");
                    // Counted like any request, so that its answer
                    // balances the count.
                    if let Some(c) = self.clients.get_mut(&client) {
                        c.in_flight += 1;
                    }
                    let resp = error_response(
                        api::codes::INVALID_ARGUMENT,
                        e.to_string(),
                        "this daemon does not know that request; is pilotctl newer than the daemon?",
                    );
                    let _ = self.send_response(client, e.reply_id(), &resp);
                    None
                }
                Err(e) => {
                    self.malformed(client, e);
                    None
                }
            },
            kind @ (Kind::Response | Kind::Event) => {
                self.malformed(client, FrameError::UnexpectedKind { kind, id: f.id });
                None
            }
        }
    }

    /// Answers a malformed frame with an error and disconnects the client.
    fn malformed(&mut self, client: ClientId, error: FrameError) {
        tracing::debug!(%client, %error, "IPC client sent a malformed frame");
        let resp = error_response(
            api::codes::INVALID_ARGUMENT,
            error.to_string(),
            "the client does not speak Pilot's IPC framing (len u32 BE, kind u8, id u32 BE, body); the connection is closed",
        );
        let reply_id = error.reply_id();
        if let Some(c) = self.clients.get_mut(&client) {
            let _ = frame::encode_response(reply_id, &resp, &mut c.out);
            let _ = c.flush();
        }
        self.events
            .push_back(ServerEvent::Malformed { client, error });
        self.drop_client(client, DisconnectReason::Malformed);
    }

    fn drop_client(&mut self, id: ClientId, reason: DisconnectReason) {
        let Some(mut c) = self.clients.remove(&id) else {
            return;
        };
        let _ = self.registry.deregister(&mut c.stream);
        debug_assert_eq!(c.token.0, self.tokens.start + 1 + c.slot);
        self.slots[c.slot] = None;
        self.free_slots.push(c.slot);
        tracing::debug!(client = %id, ?reason, "IPC client disconnected");
        self.events
            .push_back(ServerEvent::Disconnected { client: id, reason });
    }
}

impl Drop for IpcServer {
    /// Removes the socket file, unless another daemon has replaced it.
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.identity {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Refuses a live daemon or a non-socket at `path`; removes a stale socket.
fn remove_stale(path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(BindError::io("inspect", path, e)),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::AlreadyRunning {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing stale IPC socket");
            match std::fs::remove_file(path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(BindError::io("remove stale socket", path, e)),
            }
        }
        Err(e) => Err(BindError::io("probe", path, e)),
    }
}

fn error_response(code: &str, message: String, hint: &str) -> Response {
    Response::Error {
        code: code.into(),
        message,
        hint: hint.into(),
    }
}

fn too_large(e: FrameError) -> SendError {
    match e {
        FrameError::TooLong { len, .. } => SendError::TooLarge {
            len: usize::try_from(len).unwrap_or(usize::MAX),
        },
        // Serialising the api types cannot fail otherwise; treat it the same.
        _ => SendError::TooLarge { len: 0 },
    }
}
