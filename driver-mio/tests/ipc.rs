//! The local IPC end to end, in process: an `IpcServer` on its own
//! `mio::Poll` in a thread, driven by a tiny fake daemon, and clients (the
//! client library, or raw frames on a plain Unix socket).
//!
//! The fake daemon: `Info` → `{"address":"0:0000.0000.0010"}`; `Connect` →
//! a fresh stream ID; data frames echoed on their stream (with the flow
//! control a real daemon uses: what `send_data` refuses is kept, the client
//! paused, and both resumed on `Writable`); `Shutdown` → `Finished` after
//! the echoes; `Publish` → an event, then the response; `Handshake` held
//! until an `Approve` (answered first); `Listen{port}` pauses the caller
//! until someone sends `Unlisten{port}`; `Bind{9999}` floods the caller
//! with data; anything else → an error.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use driver_mio::client::{Client, ClientError};
use driver_mio::ipc::api::{self, Event, Request, Response};
use driver_mio::ipc::frame::{self, Frame, FrameDecoder, FrameError, Kind};
use driver_mio::ipc::server::{
    BindError, ClientId, DisconnectReason, IpcConfig, IpcServer, SendError, ServerEvent,
};
use mio::{Events, Poll, Token, Waker};
use serde_json::json;

const T: Duration = Duration::from_secs(10);
const WAKER: Token = Token(0);
const IPC_TOKENS: std::ops::Range<usize> = 10..20;
const FLOOD_STREAM: u32 = 9999;
/// Flood chunks (64 KiB) per loop turn of the fake daemon: far more than
/// any high-water mark of these tests, far less than forever.
const FLOOD_PER_TURN: usize = 64;

#[derive(Default, Debug)]
struct Stats {
    malformed: Vec<FrameError>,
    disconnected: Vec<DisconnectReason>,
    data_bytes: usize,
    flood_refusals: usize,
    writable: usize,
    max_flood_queue: usize,
    foreign_tokens: usize,
    /// Requests the fake daemon was handed.
    requests: usize,
    /// The longest write queue any client had after a response.
    max_reply_queue: usize,
}

struct Daemon {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    stats: Arc<Mutex<Stats>>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ipc")
        .tempdir_in(std::env::temp_dir())
        .unwrap()
}

impl Daemon {
    fn start() -> Daemon {
        Daemon::start_with(IpcConfig::default())
    }

    fn start_with(config: IpcConfig) -> Daemon {
        let dir = temp_dir();
        let path = dir.path().join("s");
        assert!(path.as_os_str().len() < 100, "{}", path.display());
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).unwrap());
        let server = IpcServer::bind(&path, poll.registry(), IPC_TOKENS, config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(Stats::default()));
        let thread = {
            let (stop, stats) = (stop.clone(), stats.clone());
            std::thread::spawn(move || FakeDaemon::new(server, stats).run(poll, &stop))
        };
        Daemon {
            path,
            stop,
            waker,
            stats,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        let mut c = Client::connect(&self.path).unwrap();
        c.set_timeout(T);
        c
    }

    fn raw(&self) -> Raw {
        Raw::connect(&self.path)
    }

    fn stats<R>(&self, f: impl FnOnce(&Stats) -> R) -> R {
        f(&self.stats.lock().unwrap())
    }

    /// Waits (bounded) until the daemon's stats satisfy `f`.
    fn wait_for(&self, what: &str, f: impl Fn(&Stats) -> bool) {
        let deadline = Instant::now() + T;
        while !self.stats(&f) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        let Some(t) = self.thread.take() else {
            return;
        };
        // Bounded: a daemon thread stuck in a loop turn fails the test
        // instead of hanging it (the thread is left behind).
        let deadline = Instant::now() + T;
        while !t.is_finished() {
            if Instant::now() >= deadline {
                if !std::thread::panicking() {
                    panic!("the fake daemon did not stop within {T:?}");
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let result = t.join();
        if !std::thread::panicking() {
            result.expect("fake daemon panicked");
        }
    }
}

/// What the fake daemon still owes a client, in order.
enum Owed {
    Data(u32, Vec<u8>),
    Finished(u32),
}

struct FakeDaemon {
    server: IpcServer,
    stats: Arc<Mutex<Stats>>,
    owed: BTreeMap<ClientId, VecDeque<Owed>>,
    /// Clients paused because their echoes back up.
    echo_paused: BTreeSet<ClientId>,
    /// Clients paused by `Listen{port}`, by port.
    listen_paused: BTreeMap<u16, ClientId>,
    /// Clients being flooded, and whether `send_data` last refused.
    floods: BTreeMap<ClientId, bool>,
    held_handshake: Option<(ClientId, u32)>,
    next_stream: u32,
    /// Clients that bound a port: they hold something and are never idle.
    holders: BTreeSet<ClientId>,
}

impl FakeDaemon {
    fn new(server: IpcServer, stats: Arc<Mutex<Stats>>) -> FakeDaemon {
        FakeDaemon {
            server,
            stats,
            owed: BTreeMap::new(),
            echo_paused: BTreeSet::new(),
            listen_paused: BTreeMap::new(),
            floods: BTreeMap::new(),
            held_handshake: None,
            next_stream: 100,
            holders: BTreeSet::new(),
        }
    }

    fn run(mut self, mut poll: Poll, stop: &AtomicBool) {
        let mut events = Events::with_capacity(64);
        while !stop.load(Ordering::SeqCst) {
            let timeout = if self.server.has_backlog() {
                Duration::ZERO
            } else {
                Duration::from_millis(100)
            };
            poll.poll(&mut events, Some(timeout)).unwrap();
            for event in events.iter() {
                if !self.server.handle_event(event) {
                    assert_eq!(event.token(), WAKER);
                    self.stats.lock().unwrap().foreign_tokens += 1;
                }
            }
            let holders = &self.holders;
            self.server
                .expire_idle(Instant::now(), |c| holders.contains(&c));
            while let Some(ev) = self.server.poll_event() {
                self.on(ev);
            }
            self.flood();
        }
    }

    fn on(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Connected { client } => {
                self.owed.insert(client, VecDeque::new());
            }
            ServerEvent::Request { client, id, req } => self.request(client, id, req),
            ServerEvent::Data {
                client,
                stream,
                bytes,
            } => {
                self.stats.lock().unwrap().data_bytes += bytes.len();
                self.owe(client, Owed::Data(stream, bytes));
            }
            ServerEvent::Writable { client } => {
                self.stats.lock().unwrap().writable += 1;
                if let Some(refused) = self.floods.get_mut(&client) {
                    *refused = false;
                }
                self.pay(client);
            }
            ServerEvent::Malformed { error, .. } => {
                self.stats.lock().unwrap().malformed.push(error);
            }
            ServerEvent::Disconnected { client, reason } => {
                self.owed.remove(&client);
                self.echo_paused.remove(&client);
                self.floods.remove(&client);
                self.holders.remove(&client);
                self.listen_paused.retain(|_, c| *c != client);
                self.stats.lock().unwrap().disconnected.push(reason);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    fn request(&mut self, client: ClientId, id: u32, req: Request) {
        self.stats.lock().unwrap().requests += 1;
        let ok = |data| Response::Ok { data };
        let resp = match req {
            Request::Info => ok(json!({"address": "0:0000.0000.0010"})),
            Request::Connect { .. } => {
                self.next_stream += 1;
                ok(json!({ "stream": self.next_stream }))
            }
            Request::Shutdown { stream } => {
                self.owe(client, Owed::Finished(stream));
                ok(json!(null))
            }
            Request::Close { .. } => ok(json!(null)),
            Request::Publish { topic, .. } => {
                let _ = self
                    .server
                    .send_event(client, &Event::Trusted { peer: topic });
                ok(json!({"published": true}))
            }
            Request::Handshake { .. } => {
                self.held_handshake = Some((client, id));
                return;
            }
            Request::Approve { .. } => {
                let _ = self
                    .server
                    .send_response(client, id, &ok(json!("approved")));
                if let Some((c, held)) = self.held_handshake.take() {
                    let _ = self.server.send_response(c, held, &ok(json!("handshake")));
                }
                return;
            }
            Request::Listen { port } => {
                self.listen_paused.insert(port, client);
                let _ = self.server.send_response(client, id, &ok(json!(null)));
                self.server.pause_reading(client, true);
                return;
            }
            Request::Unlisten { port } => {
                if let Some(c) = self.listen_paused.remove(&port) {
                    self.repause(c);
                }
                ok(json!(null))
            }
            Request::Bind { port, .. } if port as u32 == FLOOD_STREAM => {
                self.floods.insert(client, false);
                ok(json!(null))
            }
            Request::Bind { .. } => {
                self.holders.insert(client);
                ok(json!(null))
            }
            other => Response::Error {
                code: api::codes::NOT_FOUND.into(),
                message: format!("the fake daemon does not do {other:?}"),
                hint: String::new(),
            },
        };
        // Gone (it hung up already): the Disconnected event follows.
        let _ = self.server.send_response(client, id, &resp);
        if let Some(q) = self.server.queued(client) {
            let mut stats = self.stats.lock().unwrap();
            stats.max_reply_queue = stats.max_reply_queue.max(q);
        }
    }

    fn owe(&mut self, client: ClientId, owed: Owed) {
        if let Some(q) = self.owed.get_mut(&client) {
            q.push_back(owed);
        }
        self.pay(client);
    }

    /// Sends what is owed, in order, as far as the client's queue takes it;
    /// pauses the client while echoes are held back.
    fn pay(&mut self, client: ClientId) {
        let Some(q) = self.owed.get_mut(&client) else {
            return;
        };
        while let Some(front) = q.front_mut() {
            match front {
                Owed::Data(stream, bytes) => match self.server.send_data(client, *stream, bytes) {
                    Ok(n) if n == bytes.len() => {
                        q.pop_front();
                    }
                    Ok(n) => {
                        bytes.drain(..n);
                        break;
                    }
                    Err(SendError::Full) => break,
                    // Gone: the Disconnected event follows.
                    Err(_) => return,
                },
                Owed::Finished(stream) => {
                    let stream = *stream;
                    let _ = self.server.send_event(client, &Event::Finished { stream });
                    q.pop_front();
                }
            }
        }
        if q.is_empty() {
            self.echo_paused.remove(&client);
        } else {
            self.echo_paused.insert(client);
        }
        self.repause(client);
    }

    fn repause(&mut self, client: ClientId) {
        let paused =
            self.echo_paused.contains(&client) || self.listen_paused.values().any(|c| *c == client);
        self.server.pause_reading(client, paused);
    }

    /// Feeds each flooded client until `send_data` refuses, but at most
    /// [`FLOOD_PER_TURN`] chunks per loop turn, like a real daemon (which
    /// sends what one core buffer holds): a client that hung up takes
    /// everything (`send_data` drops it silently until its `Disconnected`),
    /// so refusal alone never ends the loop; the next poll notices the
    /// hang-up.
    fn flood(&mut self) {
        let chunk = vec![0xab; 64 << 10];
        for (&client, refused) in self.floods.iter_mut() {
            for _ in 0..FLOOD_PER_TURN {
                if *refused {
                    break;
                }
                match self.server.send_data(client, FLOOD_STREAM, &chunk) {
                    Ok(n) if n == chunk.len() => {}
                    Ok(_) | Err(SendError::Full) => *refused = true,
                    // Gone (it hung up): the Disconnected event follows.
                    Err(_) => break,
                }
            }
            let Some(queued) = self.server.queued(client) else {
                continue;
            };
            if !*refused {
                continue;
            }
            let mut stats = self.stats.lock().unwrap();
            stats.flood_refusals += 1;
            stats.max_flood_queue = stats.max_flood_queue.max(queued);
        }
    }
}

/// A client speaking raw frames over a plain blocking socket.
struct Raw {
    sock: UnixStream,
    decoder: FrameDecoder,
}

impl Raw {
    fn connect(path: &Path) -> Raw {
        let sock = UnixStream::connect(path).unwrap();
        sock.set_read_timeout(Some(T)).unwrap();
        sock.set_write_timeout(Some(T)).unwrap();
        Raw {
            sock,
            decoder: FrameDecoder::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    fn request(&mut self, id: u32, req: &Request) {
        let mut out = Vec::new();
        frame::encode_request(id, req, &mut out).unwrap();
        self.send(&out);
    }

    /// The next frame; `None` once the daemon closed the connection.
    fn frame(&mut self) -> Option<Frame> {
        let mut buf = [0; 4096];
        loop {
            if let Some(f) = self.decoder.next_frame().unwrap() {
                return Some(f);
            }
            match self.sock.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("raw read: {e}"),
            }
        }
    }

    fn response(&mut self) -> (u32, Response) {
        let f = self.frame().expect("a response, not the end");
        (f.id, frame::decode_response(&f).unwrap())
    }
}

fn remote_code(e: &ClientError) -> &str {
    match e {
        ClientError::Remote { code, .. } => code,
        other => panic!("not a remote error: {other:?}"),
    }
}

#[test]
fn requests_and_responses_match_by_id() {
    let d = Daemon::start();
    let mut c = d.client();
    assert_eq!(c.info().unwrap(), json!({"address": "0:0000.0000.0010"}));
    let e = c.resolve("bob").unwrap_err();
    assert_eq!(remote_code(&e), "not_found");
    assert_eq!(e.code(), "not_found");
    assert_eq!(c.info().unwrap()["address"], "0:0000.0000.0010");

    // Several in flight at once on a raw connection, answered in order.
    let mut raw = d.raw();
    let mut out = Vec::new();
    frame::encode_request(5, &Request::Info, &mut out).unwrap();
    frame::encode_request(6, &Request::Resolve { peer: "bob".into() }, &mut out).unwrap();
    frame::encode_request(7, &Request::Info, &mut out).unwrap();
    raw.send(&out);
    let got: Vec<(u32, bool)> = (0..3)
        .map(|_| {
            let (id, r) = raw.response();
            (id, matches!(r, Response::Ok { .. }))
        })
        .collect();
    assert_eq!(got, [(5, true), (6, false), (7, true)]);
}

#[test]
fn responses_may_come_in_any_order() {
    let d = Daemon::start();
    let mut raw = d.raw();
    raw.request(
        41,
        &Request::Handshake {
            peer: "bob".into(),
            reason: String::new(),
        },
    );
    raw.request(42, &Request::Approve { node: "x".into() });
    let (first, r1) = raw.response();
    let (second, r2) = raw.response();
    assert_eq!((first, second), (42, 41));
    assert_eq!(
        r1,
        Response::Ok {
            data: json!("approved")
        }
    );
    assert_eq!(
        r2,
        Response::Ok {
            data: json!("handshake")
        }
    );
}

#[test]
fn events_are_never_taken_for_replies() {
    let d = Daemon::start();
    // On the wire: the event (kind 3, id 0) comes before the response.
    let mut raw = d.raw();
    raw.request(
        1,
        &Request::Publish {
            topic: "news".into(),
            data_b64: String::new(),
        },
    );
    let ev = raw.frame().unwrap();
    assert_eq!((ev.kind, ev.id), (Kind::Event, 0));
    assert_eq!(
        frame::decode_event(&ev).unwrap(),
        Event::Trusted {
            peer: "news".into()
        }
    );
    let (id, _) = raw.response();
    assert_eq!(id, 1);

    // The library returns the response and keeps the events, in order.
    let mut c = d.client();
    assert_eq!(c.publish("a", b"").unwrap(), json!({"published": true}));
    assert_eq!(c.publish("b", b"").unwrap(), json!({"published": true}));
    assert_eq!(c.info().unwrap()["address"], "0:0000.0000.0010");
    let short = Duration::from_millis(50);
    assert_eq!(
        c.next_event(short).unwrap(),
        Some(Event::Trusted { peer: "a".into() })
    );
    assert_eq!(
        c.next_event(short).unwrap(),
        Some(Event::Trusted { peer: "b".into() })
    );
    assert_eq!(c.next_event(short).unwrap(), None);
}

#[test]
fn malformed_frames_get_an_error_and_a_disconnect() {
    let d = Daemon::start();
    let mut bystander = d.client();
    assert!(bystander.info().is_ok());

    let mut not_json = Vec::new();
    frame::encode(Kind::Request, 9, b"{\"op\":", &mut not_json).unwrap();
    let mut response_from_client = Vec::new();
    frame::encode(Kind::Response, 3, b"{}", &mut response_from_client).unwrap();
    let cases: [(&str, Vec<u8>, u32, &str); 4] = [
        (
            "bad kind",
            vec![0, 0, 0, 5, 9, 0, 0, 0, 1],
            0,
            "unknown frame kind 9",
        ),
        ("bad JSON", not_json, 9, "request 9: body is not JSON"),
        (
            "length 2",
            vec![0, 0, 0, 2, 1, 1],
            0,
            "frame length 2 is under the minimum 5",
        ),
        (
            "wrong direction",
            response_from_client,
            0,
            "unexpected response frame",
        ),
    ];
    for (i, (name, bytes, want_id, want_message)) in cases.into_iter().enumerate() {
        let mut raw = d.raw();
        raw.send(&bytes);
        let (id, resp) = raw.response();
        assert_eq!(id, want_id, "{name}");
        match resp {
            Response::Error { code, message, .. } => {
                assert_eq!(code, "invalid_argument", "{name}");
                assert!(message.contains(want_message), "{name}: {message}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(raw.frame().is_none(), "{name}: still connected");
        d.wait_for("the malformed count", |s| s.malformed.len() == i + 1);
        // Nobody else noticed.
        assert_eq!(bystander.info().unwrap()["address"], "0:0000.0000.0010");
    }
    d.wait_for("four disconnects", |s| {
        s.disconnected
            .iter()
            .filter(|r| **r == DisconnectReason::Malformed)
            .count()
            == 4
    });
}

#[test]
fn unknown_request_is_refused_but_the_connection_stays() {
    let d = Daemon::start();
    let mut raw = d.raw();
    let mut out = Vec::new();
    frame::encode(Kind::Request, 12, br#"{"op":"teleport"}"#, &mut out).unwrap();
    raw.send(&out);
    let (id, resp) = raw.response();
    assert_eq!(id, 12);
    match resp {
        Response::Error { code, message, .. } => {
            assert_eq!(code, "invalid_argument");
            assert!(message.contains("teleport"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    raw.request(13, &Request::Info);
    assert_eq!(raw.response().0, 13);
    assert!(d.stats(|s| s.malformed.is_empty()));
}

#[test]
fn oversized_length_is_refused_without_allocating() {
    let d = Daemon::start();
    let mut raw = d.raw();
    raw.send(&[0xff, 0xff, 0xff, 0xff]);
    let (id, resp) = raw.response();
    assert_eq!(id, 0);
    match resp {
        Response::Error { message, .. } => {
            assert!(
                message.contains("frame length 4294967295 is over the maximum 1048576"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(raw.frame().is_none());
    d.wait_for("the malformed report", |s| {
        s.malformed
            == [FrameError::TooLong {
                len: 0xffff_ffff,
                max: frame::MAX_FRAME,
            }]
    });
    assert!(d.client().info().is_ok());
}

#[test]
fn slow_reader_is_refused_data_and_others_go_on() {
    let high_water = 256 << 10;
    let d = Daemon::start_with(IpcConfig {
        high_water,
        ..IpcConfig::default()
    });
    // The slow client asks for a flood, then reads nothing.
    let mut slow = d.raw();
    slow.request(
        1,
        &Request::Bind {
            port: 9999,
            force: false,
        },
    );
    d.wait_for("send_data to refuse", |s| s.flood_refusals > 0);

    // Another client is served promptly while the flood is stuck.
    let mut other = d.client();
    for _ in 0..20 {
        let start = Instant::now();
        assert!(other.info().is_ok());
        assert!(start.elapsed() < Duration::from_secs(2));
    }
    // The queue stayed near the high-water mark: one chunk over at most.
    let max_queue = d.stats(|s| s.max_flood_queue);
    assert!(max_queue >= high_water / 2, "queue {max_queue}");
    assert!(max_queue <= high_water + (64 << 10), "queue {max_queue}");
    let writable_before = d.stats(|s| s.writable);

    // Once the slow client reads, the daemon hears it can send again.
    let (id, _) = slow.response();
    assert_eq!(id, 1);
    let mut flood_bytes = 0;
    while flood_bytes < 4 * high_water {
        let f = slow.frame().unwrap();
        assert_eq!((f.kind, f.id), (Kind::Data, FLOOD_STREAM));
        assert!(f.body.iter().all(|b| *b == 0xab));
        flood_bytes += f.body.len();
    }
    d.wait_for("a Writable event", |s| s.writable > writable_before);
    drop(slow);
    d.wait_for("the slow client's disconnect", |s| {
        !s.disconnected.is_empty()
    });
    assert!(other.info().is_ok());
}

#[test]
fn paused_client_waits_until_resumed() {
    let d = Daemon::start();
    let mut paused = d.client();
    paused.listen(1).unwrap(); // the fake daemon pauses us after answering
    paused.write_stream(5, b"hello").unwrap();
    let mut other = d.client();
    for _ in 0..5 {
        other.info().unwrap();
    }
    assert_eq!(d.stats(|s| s.data_bytes), 0, "read while paused");
    other.unlisten(1).unwrap();
    assert_eq!(paused.read_stream(5, T).unwrap().unwrap(), b"hello");
    assert_eq!(d.stats(|s| s.data_bytes), 5);
}

#[test]
fn what_a_client_wrote_before_hanging_up_is_all_read() {
    // The echoes fit under the high-water mark: the daemon never pauses
    // this client, which reads nothing; its writes fail once it is gone.
    let d = Daemon::start();
    let mut raw = d.raw();
    let mut out = Vec::new();
    for _ in 0..64 {
        frame::encode(Kind::Data, 5, &[7; 16 << 10], &mut out).unwrap();
    }
    raw.send(&out);
    drop(raw);
    d.wait_for("the disconnect", |s| !s.disconnected.is_empty());
    assert_eq!(
        d.stats(|s| s.disconnected.clone()),
        [DisconnectReason::Closed]
    );
    assert_eq!(d.stats(|s| s.data_bytes), 64 * (16 << 10));
}

#[test]
fn stream_handle_round_trip_with_backpressure() {
    // A high-water mark under one data frame makes every echo back up, so
    // the daemon pauses and resumes the client many times on the way.
    let d = Daemon::start_with(IpcConfig {
        high_water: 4 << 10,
        ..IpcConfig::default()
    });
    let mut c = d.client();
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut s = c.connect_stream("0:0000.0000.0010", 7).unwrap();
    assert_eq!(s.id(), 101);
    s.write_all(&data).unwrap();
    s.shutdown().unwrap();
    let mut echoed = Vec::new();
    s.read_to_end(&mut echoed).unwrap();
    assert!(echoed == data, "echo differs ({} bytes)", echoed.len());
    s.close().unwrap();
    assert!(d.stats(|s| s.writable) > 0);
}

#[test]
fn streams_and_events_are_buffered_apart() {
    let d = Daemon::start();
    let mut c = d.client();
    let a = c.open_stream("x", 7).unwrap();
    let b = c.open_stream("x", 7).unwrap();
    c.write_stream(a, b"to a").unwrap();
    c.write_stream(b, b"to b").unwrap();
    c.shutdown_stream(b).unwrap();
    c.publish("e", b"").unwrap();
    // Read in another order than they came.
    assert_eq!(c.read_stream(b, T).unwrap().unwrap(), b"to b");
    assert_eq!(c.read_stream(b, T).unwrap(), None);
    assert_eq!(c.read_stream(b, T).unwrap(), None);
    assert_eq!(c.read_stream(a, T).unwrap().unwrap(), b"to a");
    let err = c.read_stream(a, Duration::from_millis(50)).unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
    assert_eq!(err.code(), "timeout");
    let events: Vec<Event> = std::iter::from_fn(|| c.next_event(Duration::ZERO).unwrap()).collect();
    assert_eq!(
        events,
        [
            Event::Finished { stream: b },
            Event::Trusted { peer: "e".into() }
        ]
    );
}

#[test]
fn socket_file_is_private_and_removed_on_drop() {
    let d = Daemon::start();
    let mode = std::fs::metadata(&d.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let dir = temp_dir();
    let sock = dir.path().join("s");
    let poll = Poll::new().unwrap();
    let server = IpcServer::bind(&sock, poll.registry(), 1..3, IpcConfig::default()).unwrap();
    assert_eq!(server.path(), sock);
    drop(server);
    assert!(!sock.exists(), "socket file left behind");

    // Drop leaves alone a socket that is no longer ours.
    let server = IpcServer::bind(&sock, poll.registry(), 1..3, IpcConfig::default()).unwrap();
    std::fs::rename(&sock, dir.path().join("old")).unwrap();
    let _other = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(server);
    assert!(sock.exists(), "removed another daemon's socket");
}

#[test]
fn bind_refuses_a_live_daemon() {
    let d = Daemon::start();
    let poll = Poll::new().unwrap();
    let err = IpcServer::bind(&d.path, poll.registry(), 1..3, IpcConfig::default()).unwrap_err();
    assert!(matches!(err, BindError::AlreadyRunning { .. }), "{err:?}");
    assert!(err.to_string().contains("already running"), "{err}");
    // The live daemon is untouched.
    assert!(d.client().info().is_ok());
}

#[test]
fn bind_into_a_missing_directory_names_it() {
    let dir = temp_dir();
    let missing = dir.path().join("nope");
    let poll = Poll::new().unwrap();
    let err = IpcServer::bind(
        &missing.join("s"),
        poll.registry(),
        1..3,
        IpcConfig::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, BindError::MissingDirectory { dir } if *dir == missing),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    assert!(!missing.exists(), "bind created the directory");

    // The daemon may ask for it to be made, private.
    driver_mio::ipc::server::prepare_socket_dir(&missing).unwrap();
    let mode = std::fs::metadata(&missing).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "mode {mode:o}");
    IpcServer::bind(
        &missing.join("s"),
        poll.registry(),
        1..3,
        IpcConfig::default(),
    )
    .unwrap();
}

#[test]
fn stale_socket_is_replaced_but_other_files_are_not() {
    let dir = temp_dir();
    let path = dir.path().join("s");
    // A listener that died without cleaning up leaves its socket file.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let err = Client::connect(&path).unwrap_err();
    assert_eq!(err.code(), "not_running");

    let poll = Poll::new().unwrap();
    let server = IpcServer::bind(&path, poll.registry(), 1..3, IpcConfig::default()).unwrap();
    assert!(Client::connect(&path).is_ok());
    drop(server);

    std::fs::write(&path, b"precious").unwrap();
    let err = IpcServer::bind(&path, poll.registry(), 1..3, IpcConfig::default()).unwrap_err();
    assert!(matches!(err, BindError::NotASocket { .. }), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn client_says_when_no_daemon_runs() {
    let dir = temp_dir();
    let path = dir.path().join("s");
    let err = Client::connect(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("daemon not running (no socket at {})", path.display())
    );
    assert_eq!(err.code(), "not_running");
    assert!(!err.hint().is_empty());
}

#[test]
fn client_sees_the_daemon_go() {
    let d = Daemon::start();
    let mut c = d.client();
    assert!(c.info().is_ok());
    drop(d);
    let err = c.info().unwrap_err();
    assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    assert_eq!(err.code(), "not_running");
}

#[test]
fn foreign_tokens_are_left_to_the_daemon() {
    let d = Daemon::start();
    d.waker.wake().unwrap();
    d.wait_for("the waker event", |s| s.foreign_tokens > 0);
    assert!(d.client().info().is_ok());
}

#[test]
fn too_many_clients_are_turned_away() {
    // 10..20 leaves 9 client slots.
    let d = Daemon::start();
    let mut clients: Vec<Client> = (0..9).map(|_| d.client()).collect();
    for c in &mut clients {
        c.info().unwrap();
    }
    let mut extra = d.raw();
    let (id, resp) = extra.response();
    assert_eq!(id, 0);
    assert!(matches!(resp, Response::Error { .. }), "{resp:?}");
    assert!(extra.frame().is_none());
    drop(clients.pop());
    d.wait_for("a slot to free", |s| !s.disconnected.is_empty());
    assert!(d.client().info().is_ok());
}

#[test]
fn pipelined_requests_wait_until_their_answers_are_read() {
    // A client that writes requests without reading the answers: the
    // daemon stops reading it once its queue of answers reaches the
    // high-water mark, instead of reading on and queueing (or, as before,
    // overflowing max_queue and cutting the client off).
    let high_water = 16 << 10;
    let d = Daemon::start_with(IpcConfig {
        high_water,
        max_queue: 64 << 10,
        ..IpcConfig::default()
    });
    const N: u32 = 20_000;
    let mut raw = d.raw();
    let mut all = Vec::new();
    for id in 1..=N {
        frame::encode_request(id, &Request::Info, &mut all).unwrap();
    }
    let mut writer = raw.sock.try_clone().unwrap();
    let writing = std::thread::spawn(move || writer.write_all(&all));
    d.wait_for("the answers to back up", |s| {
        s.max_reply_queue >= high_water
    });
    for want in 1..=N {
        let (id, resp) = raw.response();
        assert_eq!(id, want);
        assert!(matches!(resp, Response::Ok { .. }), "{resp:?}");
    }
    writing.join().unwrap().unwrap();
    let (max, requests) = d.stats(|s| (s.max_reply_queue, s.requests));
    assert_eq!(requests, N as usize);
    // Over the mark by at most the answers still in flight (64 x ~60 B).
    assert!(max <= high_water + (8 << 10), "queue grew to {max}");
    assert!(d.stats(|s| s.disconnected.is_empty()));
}

#[test]
fn idle_clients_holding_nothing_are_closed_with_an_error() {
    let d = Daemon::start_with(IpcConfig {
        idle_timeout: Some(Duration::from_millis(200)),
        ..IpcConfig::default()
    });
    let mut holder = d.client();
    holder.bind(5).unwrap();
    let mut idle = d.raw();
    let (id, resp) = idle.response();
    assert_eq!(id, 0);
    match resp {
        Response::Error { code, .. } => assert_eq!(code, api::codes::TIMEOUT),
        other => panic!("{other:?}"),
    }
    assert!(idle.frame().is_none());
    d.wait_for("the idle disconnect", |s| {
        s.disconnected == [DisconnectReason::Idle]
    });
    // The one holding a port stays, however long it was silent.
    assert!(holder.info().is_ok());
}

#[test]
fn a_refused_client_reads_the_error_and_then_the_end() {
    // 10..20 leaves 9 client slots. The refused client has already sent a
    // request: it still gets the error frame and a clean end, no reset.
    let d = Daemon::start();
    let mut clients: Vec<Client> = (0..9).map(|_| d.client()).collect();
    for c in &mut clients {
        c.info().unwrap();
    }
    let mut extra = d.raw();
    let mut out = Vec::new();
    frame::encode_request(1, &Request::Info, &mut out).unwrap();
    // Refused before it wrote, the write fails; either way the error
    // frame is there to read.
    let _ = extra.sock.write_all(&out);
    let (id, resp) = extra.response();
    assert_eq!(id, 0);
    assert!(matches!(resp, Response::Error { .. }), "{resp:?}");
    let mut buf = [0; 16];
    assert_eq!(extra.sock.read(&mut buf).unwrap(), 0, "a clean end");
}
