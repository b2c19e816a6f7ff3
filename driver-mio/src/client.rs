//! A small blocking client of the daemon's local IPC, for `pilotctl` and
//! Rust applications.
//!
//! One [`Client`] is one connection. Everything the daemon sends arrives
//! on it in order and is sorted as it comes: responses by request ID,
//! events into a queue ([`Client::next_event`]), stream bytes into a buffer
//! per stream ([`Client::read_stream`]). So a call waiting for one thing
//! keeps everything else that arrives meanwhile; nothing is lost or handed
//! to the wrong caller. While a call waits it also keeps writing what is
//! queued and reading what arrives, so writing a lot to a stream whose
//! peer echoes it back cannot deadlock on a full socket (the echoes are
//! buffered in memory until read).
//!
//! ```no_run
//! use driver_mio::client::Client;
//! use std::io::{Read, Write};
//!
//! let mut client = Client::connect("/home/me/.pilot/pilot.sock")?;
//! let info = client.info()?;
//! let mut stream = client.connect_stream("0:0000.0000.0010", 7)?;
//! stream.write_all(b"hello")?;
//! stream.shutdown()?;
//! let mut echoed = Vec::new();
//! stream.read_to_end(&mut echoed)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! All the streams of one connection share its socket: while the daemon
//! holds back one stream's bytes (its peer is not reading), requests
//! written after them wait too. Give a busy stream its own `Client`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use mio::{Events, Interest, Poll, Token};

use crate::ipc::api::{codes, Event, Request, Response};
use crate::ipc::frame::{self, Frame, FrameDecoder, FrameError, Kind};

/// How long a call waits for the daemon unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest data frame body the client writes.
const DATA_CHUNK: usize = 64 << 10;

/// `write_stream` queues at most this much in the client at a time.
const OUT_HIGH_WATER: usize = 1 << 20;

/// Bytes read per round before the client looks at what it has.
const READ_ROUND: usize = 1 << 20;

/// What went wrong talking to the daemon. [`code`](Self::code) maps each
/// to one of the stable codes of [`crate::ipc::api::codes`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No daemon: no socket at the path, or nothing listening on it.
    #[error("daemon not running ({what} {})", path.display())]
    NotRunning { path: PathBuf, what: &'static str },
    /// The socket is there but connecting failed otherwise (permissions...).
    #[error("cannot connect to the daemon at {}: {source}", path.display())]
    Connect { path: PathBuf, source: io::Error },
    /// The daemon did not answer (or the stream made no progress) in time.
    #[error("no answer from the daemon within {0:?}")]
    Timeout(Duration),
    /// The daemon refused the request.
    #[error("{message}")]
    Remote {
        code: String,
        message: String,
        hint: String,
    },
    /// The daemon closed the connection (it stopped, most likely).
    #[error("the daemon closed the connection")]
    Disconnected,
    /// The request cannot be sent as asked (too large for a frame...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The daemon sent something this client cannot make sense of; the
    /// connection is no longer usable.
    #[error("the daemon sent something unexpected: {0}")]
    Protocol(String),
    /// Reading or writing the socket failed.
    #[error("IPC I/O error: {0}")]
    Io(#[from] io::Error),
}

impl ClientError {
    /// The stable error code (`pilotctl --json`'s `code`).
    pub fn code(&self) -> &str {
        match self {
            ClientError::NotRunning { .. } | ClientError::Disconnected => codes::NOT_RUNNING,
            ClientError::Timeout(_) => codes::TIMEOUT,
            ClientError::Remote { code, .. } => code,
            ClientError::Invalid(_) => codes::INVALID_ARGUMENT,
            ClientError::Connect { .. } | ClientError::Protocol(_) | ClientError::Io(_) => {
                codes::INTERNAL
            }
        }
    }

    /// What the user might do about it.
    pub fn hint(&self) -> String {
        match self {
            ClientError::NotRunning { .. } => {
                "start the daemon first, or point PILOT_HOME at the running one".into()
            }
            ClientError::Connect { .. } => {
                "the socket must belong to you (mode 0600); is the daemon running as another user?"
                    .into()
            }
            ClientError::Timeout(_) => {
                "the daemon is busy or stuck; try again, or check its log".into()
            }
            ClientError::Remote { hint, .. } => hint.clone(),
            ClientError::Disconnected => "the daemon stopped; check its log".into(),
            ClientError::Invalid(_) => String::new(),
            ClientError::Protocol(_) => "pilotctl and the daemon may be different versions".into(),
            ClientError::Io(_) => String::new(),
        }
    }
}

/// A connection to the daemon. See the module documentation.
#[derive(Debug)]
pub struct Client {
    path: PathBuf,
    stream: mio::net::UnixStream,
    poll: Poll,
    events: Events,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    timeout: Duration,
    next_id: u32,
    /// Requests waiting for their response.
    waiting: BTreeSet<u32>,
    /// Requests that timed out: their late responses are dropped.
    abandoned: BTreeSet<u32>,
    responses: BTreeMap<u32, Response>,
    pushed: VecDeque<Event>,
    streams: BTreeMap<u32, StreamBuf>,
    /// An error response with ID 0: about the connection, which then ends.
    fatal: Option<(String, String, String)>,
    /// The daemon closed its end.
    closed: bool,
    /// The daemon broke the protocol; nothing more is read.
    broken: Option<String>,
    scratch: Vec<u8>,
}

/// What reading or half-closing a stream the peer reset answers.
fn reset_error() -> ClientError {
    ClientError::Remote {
        code: codes::CONNECTION_FAILED.into(),
        message: "the peer reset the stream".into(),
        hint: "is something serving that port on the peer?".into(),
    }
}

#[derive(Debug, Default)]
struct StreamBuf {
    chunks: VecDeque<Vec<u8>>,
    /// `Finished` or `Closed` arrived: no data follows.
    ended: bool,
    /// The peer reset the stream: its end is an error, not end of data
    /// (as ECONNRESET is for a TCP socket).
    reset: bool,
}

impl Client {
    /// Connects to the daemon's socket.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_path_buf();
        let std_stream = match std::os::unix::net::UnixStream::connect(&path) {
            Ok(s) => s,
            // A home that is a file (ENOTDIR) holds no socket either.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Err(ClientError::NotRunning {
                    path,
                    what: "no socket at",
                })
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                return Err(ClientError::NotRunning {
                    path,
                    what: "nothing listening on",
                })
            }
            Err(source) => return Err(ClientError::Connect { path, source }),
        };
        std_stream.set_nonblocking(true)?;
        let mut stream = mio::net::UnixStream::from_std(std_stream);
        let poll = Poll::new()?;
        poll.registry().register(
            &mut stream,
            Token(0),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(Client {
            path,
            stream,
            poll,
            events: Events::with_capacity(4),
            decoder: FrameDecoder::new(),
            out: Vec::new(),
            out_pos: 0,
            timeout: DEFAULT_TIMEOUT,
            next_id: 1,
            waiting: BTreeSet::new(),
            abandoned: BTreeSet::new(),
            responses: BTreeMap::new(),
            pushed: VecDeque::new(),
            streams: BTreeMap::new(),
            fatal: None,
            closed: false,
            broken: None,
            scratch: vec![0; 64 << 10],
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The timeout of the convenience calls and of [`StreamHandle`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the timeout of the convenience calls and of [`StreamHandle`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends a request and waits for its response: the `data` of an `ok`,
    /// [`ClientError::Remote`] for an `error`. Events and stream bytes
    /// that arrive meanwhile are kept for later.
    pub fn request(
        &mut self,
        req: Request,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        self.usable()?;
        let id = self.fresh_id();
        frame::encode_request(id, &req, &mut self.out)
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.waiting.insert(id);
        let result = self.wait(timeout, |c| c.responses.remove(&id).map(Ok));
        self.waiting.remove(&id);
        match result {
            Ok(Response::Ok { data }) => Ok(data),
            Ok(Response::Error {
                code,
                message,
                hint,
            }) => Err(ClientError::Remote {
                code,
                message,
                hint,
            }),
            Err(e) => {
                if matches!(e, ClientError::Timeout(_)) {
                    self.abandoned.insert(id);
                }
                Err(e)
            }
        }
    }

    /// The next pushed event, waiting up to `timeout`; `Ok(None)` if none
    /// came in time.
    pub fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, ClientError> {
        match self.wait(timeout, |c| c.pushed.pop_front().map(Ok)) {
            Ok(event) => Ok(Some(event)),
            Err(ClientError::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes bytes to a stream. Returns once they are all handed to the
    /// daemon's socket. Fails with `Timeout` when the daemon took nothing
    /// for the client's timeout (the unsent bytes stay queued and go out
    /// with any later call).
    pub fn write_stream(&mut self, stream: u32, bytes: &[u8]) -> Result<(), ClientError> {
        self.usable()?;
        let mut rest = bytes;
        let mut deadline = Instant::now().checked_add(self.timeout);
        loop {
            while !rest.is_empty() && self.queued() < OUT_HIGH_WATER {
                let (piece, tail) = rest.split_at(rest.len().min(DATA_CHUNK));
                // Cannot fail: a piece is far under the frame limit.
                let _ = frame::encode(Kind::Data, stream, piece, &mut self.out);
                rest = tail;
            }
            let before = self.queued();
            self.io_round()?;
            if rest.is_empty() && self.queued() == 0 {
                return Ok(());
            }
            self.usable()?;
            if self.queued() < before {
                deadline = Instant::now().checked_add(self.timeout);
                continue;
            }
            if !self.sleep(deadline)? {
                return Err(ClientError::Timeout(self.timeout));
            }
        }
    }

    /// Waits until everything queued has been written to the socket.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.wait(timeout, |c| (c.queued() == 0).then_some(Ok(())))
    }

    /// The next bytes of a stream: `Ok(Some(bytes))` (never empty),
    /// `Ok(None)` at its end (after `Event::Finished` or `Event::Closed`
    /// for it), `Err(Timeout)` if nothing came in time, `Err(Remote)` with
    /// `connection_failed` after the bytes that came if the peer reset it
    /// (say, nothing served the port on its side).
    pub fn read_stream(
        &mut self,
        stream: u32,
        timeout: Duration,
    ) -> Result<Option<Vec<u8>>, ClientError> {
        self.wait(timeout, |c| {
            let buf = c.streams.get_mut(&stream)?;
            match buf.chunks.pop_front() {
                Some(chunk) => Some(Ok(Some(chunk))),
                None if buf.reset => Some(Err(reset_error())),
                None if buf.ended => Some(Ok(None)),
                None => None,
            }
        })
    }

    /// Forgets what is buffered for a stream (after closing it).
    pub fn forget_stream(&mut self, stream: u32) {
        self.streams.remove(&stream);
    }

    /// A handle on a stream (one from `Event::Incoming`, or from
    /// [`open_stream`](Self::open_stream)), implementing `Read` and `Write`.
    pub fn stream(&mut self, stream: u32) -> StreamHandle<'_> {
        StreamHandle {
            client: self,
            stream,
            chunk: Vec::new(),
            pos: 0,
        }
    }

    /// Opens a stream to `peer` (address or hostname) on `port`.
    pub fn connect_stream(
        &mut self,
        peer: &str,
        port: u16,
    ) -> Result<StreamHandle<'_>, ClientError> {
        let stream = self.open_stream(peer, port)?;
        Ok(self.stream(stream))
    }

    /// The daemon's identity and state.
    pub fn info(&mut self) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Info)
    }

    /// Looks a node up (address or hostname).
    pub fn resolve(&mut self, peer: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Resolve { peer: peer.into() })
    }

    /// Registers under another hostname (`None`: none); answered once the
    /// rendezvous accepted (`already_exists` if the name is taken).
    pub fn set_hostname(
        &mut self,
        hostname: Option<&str>,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Request::SetHostname {
            hostname: hostname.map(Into::into),
        })
    }

    /// Becomes findable by anyone (`true`) or only by trusted peers.
    pub fn set_visibility(&mut self, public: bool) -> Result<serde_json::Value, ClientError> {
        self.call(Request::SetVisibility { public })
    }

    /// Asks a peer for trust.
    pub fn handshake(
        &mut self,
        peer: &str,
        reason: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Handshake {
            peer: peer.into(),
            reason: reason.into(),
        })
    }

    /// Trust requests waiting for our decision.
    pub fn pending(&mut self) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Pending)
    }

    /// Approves a pending trust request.
    pub fn approve(&mut self, node: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Approve { node: node.into() })
    }

    /// Rejects a pending trust request.
    pub fn reject(&mut self, node: &str, reason: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Reject {
            node: node.into(),
            reason: reason.into(),
        })
    }

    /// The peers we trust.
    pub fn trusted(&mut self) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Trusted)
    }

    /// Revokes trust in a peer.
    pub fn untrust(&mut self, node: &str) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Untrust { node: node.into() })
    }

    /// Receives datagrams on a port (as `Event::Datagram`).
    pub fn bind(&mut self, port: u16) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Bind { port, force: false })
    }

    /// Stops receiving datagrams on a port.
    pub fn unbind(&mut self, port: u16) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Unbind { port })
    }

    /// Sends a datagram.
    pub fn send_datagram(
        &mut self,
        peer: &str,
        port: u16,
        src_port: u16,
        data: &[u8],
    ) -> Result<serde_json::Value, ClientError> {
        self.call(Request::SendDatagram {
            peer: peer.into(),
            port,
            src_port,
            data_b64: base64::engine::general_purpose::STANDARD.encode(data),
        })
    }

    /// Accepts streams on a port (as `Event::Incoming`).
    pub fn listen(&mut self, port: u16) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Listen { port })
    }

    /// Stops accepting streams on a port.
    pub fn unlisten(&mut self, port: u16) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Unlisten { port })
    }

    /// Opens a stream; returns its ID (the response's `data.stream`).
    pub fn open_stream(&mut self, peer: &str, port: u16) -> Result<u32, ClientError> {
        let data = self.call(Request::Connect {
            peer: peer.into(),
            port,
        })?;
        data.get("stream")
            .and_then(serde_json::Value::as_u64)
            .and_then(|s| u32::try_from(s).ok())
            .ok_or_else(|| {
                ClientError::Protocol(format!("connect answered without a stream id: {data}"))
            })
    }

    /// Half-closes a stream: we send no more (the peer reads its end).
    pub fn shutdown_stream(&mut self, stream: u32) -> Result<(), ClientError> {
        let result = self.call(Request::Shutdown { stream }).map(drop);
        // The peer reset it first (its `Closed` came before this answer):
        // say so rather than that the stream is unknown.
        match result {
            Err(ClientError::Remote { .. })
                if self.streams.get(&stream).is_some_and(|b| b.reset) =>
            {
                Err(reset_error())
            }
            other => other,
        }
    }

    /// Closes a stream and forgets what is buffered for it.
    pub fn close_stream(&mut self, stream: u32) -> Result<(), ClientError> {
        let result = self.call(Request::Close { stream }).map(drop);
        self.forget_stream(stream);
        result
    }

    /// Peers we trust or hold a session with, and their traffic.
    pub fn peers(&mut self) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Peers)
    }

    /// Every open stream of the agent.
    pub fn connections(&mut self) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Connections)
    }

    /// Aborts any stream of the agent (its owner sees it closed).
    pub fn disconnect(&mut self, stream: u32) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Disconnect { stream })
    }

    /// Publishes on our event stream.
    pub fn publish(&mut self, topic: &str, data: &[u8]) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Publish {
            topic: topic.into(),
            data_b64: base64::engine::general_purpose::STANDARD.encode(data),
        })
    }

    /// Stops the daemon.
    pub fn stop(&mut self) -> Result<serde_json::Value, ClientError> {
        self.call(Request::Stop)
    }

    fn call(&mut self, req: Request) -> Result<serde_json::Value, ClientError> {
        self.request(req, self.timeout)
    }

    fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.waiting.contains(&id) && !self.abandoned.contains(&id) {
                return id;
            }
        }
    }

    fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Fails once the connection can no longer carry anything new.
    fn usable(&self) -> Result<(), ClientError> {
        if let Some(why) = &self.broken {
            return Err(ClientError::Protocol(why.clone()));
        }
        if self.closed {
            return Err(match &self.fatal {
                Some((code, message, hint)) => ClientError::Remote {
                    code: code.clone(),
                    message: message.clone(),
                    hint: hint.clone(),
                },
                None => ClientError::Disconnected,
            });
        }
        Ok(())
    }

    /// Runs I/O until `ready` has an answer, the connection fails or
    /// `timeout` passes. `ready` is asked first, so what is buffered comes
    /// out even after the daemon has gone.
    fn wait<T>(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut(&mut Client) -> Option<Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            if let Some(answer) = ready(self) {
                return answer;
            }
            self.usable()?;
            if self.io_round()? {
                continue;
            }
            if !self.sleep(deadline)? {
                return Err(ClientError::Timeout(timeout));
            }
        }
    }

    /// Waits for the socket until `deadline` (`None`: forever); `false`
    /// once the deadline has passed.
    fn sleep(&mut self, deadline: Option<Instant>) -> Result<bool, ClientError> {
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(false);
                }
                Some(left)
            }
            None => None,
        };
        match self.poll.poll(&mut self.events, left) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes what the socket takes, reads what is there and sorts it.
    /// Returns whether anything moved.
    fn io_round(&mut self) -> Result<bool, ClientError> {
        let mut moved = false;
        while self.out_pos < self.out.len() && !self.closed {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => {
                    self.out_pos += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if gone(&e) => {
                    // Read what the daemon said before it went.
                    self.out.clear();
                    self.out_pos = 0;
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos >= DATA_CHUNK && self.out_pos >= self.out.len() / 2 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }

        let mut read = 0;
        while !self.closed && self.broken.is_none() && read < READ_ROUND {
            match self.stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.closed = true;
                    moved = true;
                }
                Ok(n) => {
                    self.decoder.push(&self.scratch[..n]);
                    read += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if gone(&e) => {
                    self.closed = true;
                    moved = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        while self.broken.is_none() {
            match self.decoder.next_frame() {
                Ok(Some(f)) => self.dispatch(f),
                Ok(None) => break,
                Err(e) => self.broken = Some(e.to_string()),
            }
        }
        Ok(moved)
    }

    fn dispatch(&mut self, f: Frame) {
        match f.kind {
            Kind::Response => match frame::decode_response(&f) {
                Ok(resp) => {
                    if f.id == 0 {
                        if let Response::Error {
                            code,
                            message,
                            hint,
                        } = resp
                        {
                            self.fatal = Some((code, message, hint));
                        }
                    } else if self.waiting.contains(&f.id) {
                        self.responses.insert(f.id, resp);
                    } else if !self.abandoned.remove(&f.id) {
                        tracing::debug!(id = f.id, "IPC response to no request; dropped");
                    }
                }
                Err(e) => self.broken = Some(e.to_string()),
            },
            Kind::Event => match frame::decode_event(&f) {
                Ok(event) => {
                    match &event {
                        Event::Incoming { stream, .. } => {
                            self.streams.entry(*stream).or_default();
                        }
                        Event::Finished { stream } => {
                            self.streams.entry(*stream).or_default().ended = true;
                        }
                        Event::Closed { stream, reason } => {
                            let buf = self.streams.entry(*stream).or_default();
                            buf.ended = true;
                            buf.reset =
                                *reason == pilot_proto::stream::CloseReason::Reset.to_string();
                        }
                        _ => {}
                    }
                    self.pushed.push_back(event);
                }
                // A newer daemon's event this client does not know.
                Err(e) if !e.is_fatal() => {
                    tracing::debug!(error = %e, "unknown IPC event skipped");
                }
                Err(e) => self.broken = Some(e.to_string()),
            },
            Kind::Data => {
                if !f.body.is_empty() {
                    self.streams
                        .entry(f.id)
                        .or_default()
                        .chunks
                        .push_back(f.body);
                }
            }
            Kind::Request => {
                let e = FrameError::UnexpectedKind {
                    kind: f.kind,
                    id: f.id,
                };
                self.broken = Some(e.to_string());
            }
        }
    }
}

fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

/// A stream as `std::io::Read` + `Write`, borrowing its [`Client`].
/// Reads and writes wait up to the client's timeout (then fail with
/// `TimedOut`); a read returns 0 at the stream's end. Dropping the handle
/// leaves the stream open: call [`close`](Self::close).
#[derive(Debug)]
pub struct StreamHandle<'a> {
    client: &'a mut Client,
    stream: u32,
    chunk: Vec<u8>,
    pos: usize,
}

impl StreamHandle<'_> {
    /// The stream's ID.
    pub fn id(&self) -> u32 {
        self.stream
    }

    /// Half-closes: we send no more; reading goes on to the peer's end.
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        self.client.shutdown_stream(self.stream)
    }

    /// Closes the stream.
    pub fn close(self) -> Result<(), ClientError> {
        self.client.close_stream(self.stream)
    }
}

impl Read for StreamHandle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pos == self.chunk.len() {
            let timeout = self.client.timeout;
            match self
                .client
                .read_stream(self.stream, timeout)
                .map_err(to_io)?
            {
                Some(chunk) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for StreamHandle<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.client.write_stream(self.stream, buf).map_err(to_io)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let timeout = self.client.timeout;
        self.client.flush(timeout).map_err(to_io)
    }
}

fn to_io(e: ClientError) -> io::Error {
    match e {
        ClientError::Io(e) => e,
        ClientError::Timeout(_) => io::Error::new(io::ErrorKind::TimedOut, e),
        ClientError::Disconnected => io::Error::new(io::ErrorKind::ConnectionAborted, e),
        e => io::Error::other(e),
    }
}
