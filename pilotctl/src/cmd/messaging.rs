//! Messaging: raw streams (`connect`, `send`, `recv`), datagrams
//! (`send --datagram`, `listen`), the data exchange service
//! (`send-message`, `send-file`, `inbox`, `received`) and the event stream
//! (`subscribe`, `publish`).
//!
//! The commands that receive (`recv`, `listen`, `subscribe`) stream: they
//! print one line per arrival as it comes (with `--json` one object per
//! line, the shape in [`DOCS`]), print nothing more on success, and end
//! with the usual error object when they fail. They say on stderr when
//! they are ready, so a script can start the sender then.
//!
//! The `pub` functions taking a `&mut Client` are the building blocks, for
//! other commands (`pilotctl demo`) to reuse.

use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, TryRecvError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Subcommand;
use driver_mio::client::{Client, ClientError};
use driver_mio::ipc::api::{Event, Request};
use pilot_proto::addr::{ports, PeerRef};
use pilot_proto::services::dataexchange::{self, Message, Sender, Status, DEFAULT_MAX_MESSAGE};
use pilot_proto::services::eventstream::{
    self, ClientDecoder, Code, Incoming, Op, DEFAULT_MAX_FRAME,
};
use pilot_proto::services::framing::LEN_SIZE;
use serde_json::{json, Map, Value};

use super::client::{default_client, failure, request, table};
use super::data_arg;
use super::CommandDoc;
use crate::output::{Failure, Success};
use crate::paths;

/// Messaging commands.
#[derive(Subcommand, Debug)]
pub enum MessagingCommand {
    /// Open a stream to a peer's port: send a message, or pipe stdio (nc).
    ///
    /// With --message: send it, half-close, print what comes back until
    /// the peer closes. Without: copy stdin to the stream and the stream
    /// to stdout, both at once and binary-safe; the end of stdin
    /// half-closes, the peer closing ends the command.
    Connect {
        /// The peer's address, node ID or hostname.
        peer: String,
        /// The peer's port.
        #[arg(default_value_t = ports::STDIO, value_parser = port_number())]
        port: u16,
        /// Send this, half-close, print what comes back until the peer
        /// closes.
        #[arg(long)]
        message: Option<String>,
        /// Seconds to wait for the stream, and for the reply (piping:
        /// for the peer to close once stdin has ended); 0: no limit.
        #[arg(long, default_value = "10", value_parser = seconds)]
        timeout: Duration,
    },
    /// Send one message over a stream (or a datagram) to a peer's port.
    Send {
        /// The peer's address, node ID or hostname.
        peer: String,
        /// The peer's port.
        #[arg(value_parser = port_number())]
        port: u16,
        /// What to send: the text, @FILE (a file's bytes), or - (stdin);
        /// @@TEXT for text that starts with @.
        #[arg(long)]
        data: String,
        /// Send a datagram instead of a stream (`listen` receives it).
        #[arg(long)]
        datagram: bool,
        /// Seconds to wait for the stream and for the peer to close it (0: no limit).
        #[arg(long, default_value = "10", value_parser = seconds)]
        timeout: Duration,
    },
    /// Receive streams on a local port, each read to its end as one message.
    Recv {
        /// Our port.
        #[arg(value_parser = port_number())]
        port: u16,
        /// Stop after this many messages.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Seconds to wait in all, fractions allowed (0: until Ctrl-C); with
        /// --raw, for each stream to arrive (it is then read to its end).
        #[arg(long, default_value = "60", value_parser = seconds)]
        timeout: Duration,
        /// Write each stream's bytes to stdout as they come, unchanged
        /// and nothing else (like `nc -l`; --json: the summary on stderr).
        #[arg(long)]
        raw: bool,
    },
    /// Receive datagrams on a local port, one line each.
    Listen {
        /// Our port.
        #[arg(value_parser = port_number())]
        port: u16,
        /// Stop after this many datagrams (default: no limit).
        #[arg(long)]
        count: Option<u32>,
        /// Seconds to wait in all, fractions allowed (0: until Ctrl-C).
        #[arg(long, default_value = "60", value_parser = seconds)]
        timeout: Duration,
        /// Take the port even from the built-in echo service (port 7).
        #[arg(long)]
        force: bool,
    },
    /// Send a text, JSON or binary message to a peer's inbox (port 1001).
    SendMessage {
        /// The peer's address, node ID or hostname.
        peer: String,
        /// The message: text, a JSON text, or base64 for binary; or
        /// @FILE (a file's contents; binary: its bytes as they are), or -
        /// (stdin); @@TEXT for text that starts with @.
        #[arg(long)]
        data: String,
        /// text, json (checked before sending) or binary (--data is
        /// base64).
        #[arg(long = "type", default_value = "text")]
        kind: String,
        /// Seconds to wait for the stream and for the peer's ack (0: no limit).
        #[arg(long, default_value = "30", value_parser = seconds)]
        timeout: Duration,
    },
    /// Send a file (at most 16 MiB) to a peer's received files (port 1001).
    SendFile {
        /// The peer's address, node ID or hostname.
        peer: String,
        /// The file; the peer sees its base name.
        path: PathBuf,
        /// Seconds to wait for the stream, for the daemon to take the data, and for the ack (0: no limit).
        #[arg(long, default_value = "30", value_parser = seconds)]
        timeout: Duration,
    },
    /// The messages in this agent's inbox, newest last (no daemon needed).
    Inbox {
        /// Remove them.
        #[arg(long)]
        clear: bool,
    },
    /// The files this agent received (no daemon needed).
    Received {
        /// Remove them.
        #[arg(long)]
        clear: bool,
    },
    /// Print the events on a peer's event stream (port 1002) matching a topic.
    Subscribe {
        /// The peer's address, node ID or hostname.
        peer: String,
        /// Topic or pattern: `tasks.new`, `tasks.*`, `*.done`, `*`.
        topic: String,
        /// Stop after this many events (default: no limit).
        #[arg(long)]
        count: Option<u32>,
        /// Seconds to wait in all, fractions allowed (0: until Ctrl-C).
        #[arg(long, default_value = "60", value_parser = seconds)]
        timeout: Duration,
    },
    /// Publish an event on a peer's (or this agent's own) event stream.
    Publish {
        /// The peer's address, node ID or hostname; this agent's own publishes
        /// locally.
        peer: String,
        /// The topic (no wildcards).
        topic: String,
        /// The event's data: the text, @FILE (a file's bytes), or -
        /// (stdin); @@TEXT for text that starts with @.
        #[arg(long)]
        data: String,
        /// Seconds to wait for the stream and the broker's answer (0: no limit).
        #[arg(long, default_value = "10", value_parser = seconds)]
        timeout: Duration,
    },
}

impl MessagingCommand {
    /// Runs the command.
    pub fn run(self, json: bool) -> Result<Success, Failure> {
        let secs = no_limit_if_zero;
        match self {
            MessagingCommand::Connect {
                peer,
                port,
                message,
                timeout,
            } => connect(&peer, port, message, secs(timeout), json),
            MessagingCommand::Send {
                peer,
                port,
                data,
                datagram,
                timeout,
            } => send(&peer, port, &data, datagram, secs(timeout)),
            MessagingCommand::Recv {
                port,
                count,
                timeout,
                raw: false,
            } => recv(port, count, timeout, json),
            MessagingCommand::Recv {
                port,
                count,
                timeout,
                raw: true,
            } => recv_raw(port, count, timeout, json),
            MessagingCommand::Listen {
                port,
                count,
                timeout,
                force,
            } => listen(port, count, timeout, force, json),
            MessagingCommand::SendMessage {
                peer,
                data,
                kind,
                timeout,
            } => send_message_cmd(&peer, &data, &kind, secs(timeout)),
            MessagingCommand::SendFile {
                peer,
                path,
                timeout,
            } => send_file(&peer, &path, secs(timeout)),
            MessagingCommand::Inbox { clear } => inbox(&paths::home(None), clear),
            MessagingCommand::Received { clear } => received(&paths::home(None), clear),
            MessagingCommand::Subscribe {
                peer,
                topic,
                count,
                timeout,
            } => subscribe_cmd(&peer, &topic, count, timeout, json),
            MessagingCommand::Publish {
                peer,
                topic,
                data,
                timeout,
            } => publish_cmd(&peer, &topic, &data, secs(timeout)),
        }
    }
}

/// A port argument: 1-65535 (port 0 is no port: streams refuse it, and
/// the daemon answered it with an `internal` error).
fn port_number() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}

/// The errors of a command that reaches a peer.
const TO_PEER: &[&str] = &[
    "not_running",
    "invalid_argument",
    "not_found",
    "not_trusted",
    "connection_failed",
    "timeout",
];

/// The errors of a command that waits on a local port (`interrupted`:
/// Ctrl-C under --json).
const ON_PORT: &[&str] = &[
    "not_running",
    "invalid_argument",
    "already_exists",
    "timeout",
    "interrupted",
];

/// What `context` says of these commands. `recv`, `listen` and
/// `subscribe` print one `returns` object per line.
pub const DOCS: &[CommandDoc] = &[
    CommandDoc {
        name: "connect",
        returns: r#"{"peer":"string","port":"number","sent":"number","closed":"bool (with --message)","reply":{"bytes":"number","data":"string","data_b64":"string (only when data is not UTF-8)"},"received":"number (without --message: stdout carries the stream, and this summary, with received instead of closed and reply, goes to stderr)"}"#,
        errors: TO_PEER,
    },
    CommandDoc {
        name: "send",
        returns: r#"{"peer":"string","port":"number","sent":"number","datagram":"bool","closed":"bool","reply":{"bytes":"number","data":"string","data_b64":"string (only when data is not UTF-8)"}}"#,
        errors: TO_PEER,
    },
    CommandDoc {
        name: "recv",
        returns: r#"{"from":"string","hostname":"string or null","from_port":"number","port":"number","bytes":"number","data":"string","data_b64":"string (only when data is not UTF-8)"}"#,
        errors: ON_PORT,
    },
    CommandDoc {
        name: "listen",
        returns: r#"{"from":"string","hostname":"string or null","from_port":"number","port":"number","bytes":"number","data":"string","data_b64":"string (only when data is not UTF-8)"}"#,
        errors: ON_PORT,
    },
    CommandDoc {
        name: "send-message",
        returns: r#"{"peer":"string","id":"number","kind":"string","bytes":"number","acknowledged":"bool"}"#,
        errors: TO_PEER,
    },
    CommandDoc {
        name: "send-file",
        returns: r#"{"peer":"string","id":"number","name":"string","bytes":"number","acknowledged":"bool"}"#,
        errors: TO_PEER,
    },
    CommandDoc {
        name: "inbox",
        returns: r#"{"messages":[{"from":"string","id":"number","kind":"string","received_at":"number","data":"string (binary: base64)","file":"string"}],"corrupt":[{"file":"string","error":"string"}],"cleared":"number"}"#,
        errors: &[],
    },
    CommandDoc {
        name: "received",
        returns: r#"{"files":[{"name":"string","size":"number","path":"string"}],"cleared":"number"}"#,
        errors: &[],
    },
    CommandDoc {
        name: "subscribe",
        returns: r#"{"topic":"string","bytes":"number","data":"string","data_b64":"string (only when data is not UTF-8)"}"#,
        errors: TO_PEER,
    },
    CommandDoc {
        name: "publish",
        returns: r#"{"peer":"string","topic":"string","bytes":"number","accepted":"bool","subscribers":"number|null (known when publishing locally)"}"#,
        errors: TO_PEER,
    },
];

// --- building blocks ---------------------------------------------------------

/// What came back on a stream before its end (or the deadline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The bytes.
    pub data: Vec<u8>,
    /// The peer ended the stream (false: the deadline came first).
    pub closed: bool,
}

/// A stream message (`recv`) or a datagram (`listen`) that arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    /// The sender's address.
    pub from: String,
    /// The sender's port.
    pub from_port: u16,
    /// Our port it arrived on.
    pub port: u16,
    /// What it carried.
    pub data: Vec<u8>,
}

/// What `--timeout S` means: `S` seconds; 0 is no limit (a century).
pub fn timeout_secs(secs: u64) -> Duration {
    match secs {
        0 => Duration::from_secs(100 * 365 * 86_400),
        s => Duration::from_secs(s),
    }
}

/// Seconds as a person wrote them: `10`, `0.5`.
pub fn shown_secs(d: Duration) -> String {
    format!("{}", (d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// `0`: no limit (a century); anything else as it is.
pub fn no_limit_if_zero(d: Duration) -> Duration {
    if d.is_zero() {
        timeout_secs(0)
    } else {
        d
    }
}

/// A number of seconds, fractions allowed (`0.5`, `3`), for clap: at most
/// a year, never negative.
pub fn seconds(text: &str) -> Result<Duration, String> {
    let shown = super::settings::quoted(text);
    let secs: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{shown} is not a number of seconds (e.g. 3 or 0.5)"))?;
    if !secs.is_finite() || !(0.0..=365.0 * 86_400.0).contains(&secs) {
        return Err(format!("{shown} is not between 0 and a year of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The instant `wait` from now.
pub fn deadline_in(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or(now + Duration::from_secs(86_400))
}

fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

fn invalid(message: impl Into<String>, hint: impl Into<String>) -> Failure {
    Failure::new("invalid_argument", message, hint)
}

/// Opens a stream to `peer` (address or hostname) on `port`, waiting up
/// to `timeout` for the peer to accept it.
pub fn open_stream(
    c: &mut Client,
    peer: &str,
    port: u16,
    timeout: Duration,
) -> Result<u32, Failure> {
    let saved = c.timeout();
    c.set_timeout(timeout);
    let result = c.open_stream(peer, port);
    c.set_timeout(saved);
    result.map_err(|e| match e {
        ClientError::Timeout(_) => Failure::new(
            "timeout",
            format!(
                "{peer} did not accept a stream on port {port} within {} s",
                shown_secs(timeout)
            ),
            "is the peer online? see `pilotctl trust` and `pilotctl ping`",
        ),
        e => failure(e),
    })
}

/// Reads `stream` until the peer ends it or `deadline` passes.
pub fn read_until_end(c: &mut Client, stream: u32, deadline: Instant) -> Result<Reply, Failure> {
    let mut data = Vec::new();
    loop {
        match c.read_stream(stream, left(deadline)) {
            Ok(Some(chunk)) => data.extend_from_slice(&chunk),
            Ok(None) => return Ok(Reply { data, closed: true }),
            Err(ClientError::Timeout(_)) => {
                return Ok(Reply {
                    data,
                    closed: false,
                })
            }
            Err(e) => return Err(failure(e)),
        }
    }
}

/// Opens a stream to `peer`:`port`, writes `data`, half-closes, and
/// collects what the peer sends back until it closes or `timeout` (which
/// bounds the whole exchange) passes. The stream is closed after.
pub fn exchange(
    c: &mut Client,
    peer: &str,
    port: u16,
    data: &[u8],
    timeout: Duration,
) -> Result<Reply, Failure> {
    let deadline = deadline_in(timeout);
    let s = open_stream(c, peer, port, timeout)?;
    let result = c
        .write_stream(s, data)
        .and_then(|()| c.shutdown_stream(s))
        .map_err(failure)
        .and_then(|()| read_until_end(c, s, deadline));
    // The peer may have closed it already.
    let _ = c.close_stream(s);
    result
}

/// The next stream to arrive on a port this client listens on, read to
/// its end as one message (what arrived by `deadline` if it does not
/// end), then closed. `None` if no stream arrived by `deadline`.
pub fn next_stream_message(c: &mut Client, deadline: Instant) -> Result<Option<Arrival>, Failure> {
    loop {
        let Some(event) = c.next_event(left(deadline)).map_err(failure)? else {
            return Ok(None);
        };
        if let Event::Incoming { stream, port, from } = event {
            let reply = read_until_end(c, stream, deadline)?;
            let _ = c.close_stream(stream);
            let (from, from_port) = split_socket(&from);
            return Ok(Some(Arrival {
                from,
                from_port,
                port,
                data: reply.data,
            }));
        }
    }
}

/// The next datagram to arrive on a port this client bound, or `None` by
/// `deadline`.
pub fn next_datagram(c: &mut Client, deadline: Instant) -> Result<Option<Arrival>, Failure> {
    loop {
        let Some(event) = c.next_event(left(deadline)).map_err(failure)? else {
            return Ok(None);
        };
        if let Event::Datagram {
            from,
            port,
            data_b64,
        } = event
        {
            let data = base64::engine::general_purpose::STANDARD
                .decode(data_b64)
                .map_err(|e| {
                    Failure::new("internal", format!("the daemon sent bad base64: {e}"), "")
                })?;
            let (from, from_port) = split_socket(&from);
            return Ok(Some(Arrival {
                from,
                from_port,
                port,
                data,
            }));
        }
    }
}

/// `N:XXXX.YYYY.YYYY:port` into address and port.
fn split_socket(s: &str) -> (String, u16) {
    match s.rsplit_once(':') {
        Some((addr, port)) if addr.contains(':') => {
            (addr.to_string(), port.parse().unwrap_or_default())
        }
        _ => (s.to_string(), 0),
    }
}

fn too_large(what: &str, len: u64) -> Failure {
    invalid(
        format!(
            "{what} is {len} bytes; data exchange takes at most {} bytes (16 MiB)",
            DEFAULT_MAX_MESSAGE
        ),
        "split it, or send it over a stream (`pilotctl send` / `connect`)",
    )
}

/// Sends one message through `peer`'s data exchange service (port 1001)
/// and waits up to `timeout` for its ack. Returns the message's id; a
/// refusal by the peer is an error naming the peer's status.
pub fn send_message(
    c: &mut Client,
    peer: &str,
    message: &Message<'_>,
    timeout: Duration,
) -> Result<u32, Failure> {
    send_message_with_progress(c, peer, message, timeout, &mut |_, _| {})
}

/// [`send_message`], calling `progress(sent, total)` (frame bytes) as the
/// message is handed to the daemon.
pub fn send_message_with_progress(
    c: &mut Client,
    peer: &str,
    message: &Message<'_>,
    timeout: Duration,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u32, Failure> {
    if message.data().len() as u64 > u64::from(DEFAULT_MAX_MESSAGE) {
        return Err(too_large("the message", message.data().len() as u64));
    }
    let mut sender = Sender::new();
    let mut frame = Vec::new();
    let id = sender
        .send(message, &mut frame)
        .map_err(|e| invalid(e.to_string(), ""))?;
    let s = open_stream(c, peer, ports::DATA_EXCHANGE, timeout)?;
    // Writing waits up to the client's timeout for the daemon to take more.
    let saved = c.timeout();
    c.set_timeout(timeout);
    let result = write_and_await_ack(c, s, &frame, &mut sender, timeout, progress);
    c.set_timeout(saved);
    let _ = c.close_stream(s);
    let status = result?;
    if status == Status::Ok {
        return Ok(id);
    }
    let code = match status {
        Status::QuotaExceeded | Status::Other(_) => "connection_failed",
        _ => "invalid_argument",
    };
    Err(Failure::new(
        code,
        format!(
            "{peer} refused the message: {status} (status {})",
            status.to_u8()
        ),
        match status {
            Status::TooLarge => "the peer's message limit is lower; send less",
            Status::QuotaExceeded => "the peer takes no more from this connection; try later",
            _ => "",
        },
    ))
}

fn write_and_await_ack(
    c: &mut Client,
    s: u32,
    frame: &[u8],
    sender: &mut Sender,
    timeout: Duration,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Status, Failure> {
    let total = frame.len() as u64;
    let mut sent = 0;
    for piece in frame.chunks(256 << 10) {
        c.write_stream(s, piece).map_err(failure)?;
        sent += piece.len() as u64;
        progress(sent, total);
    }
    c.shutdown_stream(s).map_err(failure)?;
    let deadline = deadline_in(timeout);
    loop {
        if let Some(ack) = sender.poll_ack() {
            return Ok(ack.status);
        }
        match c.read_stream(s, left(deadline)) {
            Ok(Some(chunk)) => sender.on_bytes(&chunk).map_err(|e| {
                Failure::new(
                    "connection_failed",
                    format!("the peer's data exchange answered nonsense: {e}"),
                    "",
                )
            })?,
            Ok(None) => {
                return Err(Failure::new(
                    "connection_failed",
                    "the peer closed the connection before acknowledging the message",
                    "is its data exchange service running (not started with --no-services)?",
                ))
            }
            Err(ClientError::Timeout(_)) => {
                return Err(Failure::new(
                    "timeout",
                    format!("no ack within {} s", shown_secs(timeout)),
                    "the message may or may not have arrived; check with the peer",
                ))
            }
            Err(e) => return Err(failure(e)),
        }
    }
}

/// A connection to a peer's event stream broker (port 1002).
#[derive(Debug)]
pub struct EventStream {
    stream: u32,
    decoder: ClientDecoder,
}

impl EventStream {
    /// Connects to `peer`'s broker.
    pub fn open(c: &mut Client, peer: &str, timeout: Duration) -> Result<Self, Failure> {
        Ok(EventStream {
            stream: open_stream(c, peer, ports::EVENT_STREAM, timeout)?,
            decoder: ClientDecoder::new(DEFAULT_MAX_FRAME),
        })
    }

    /// Subscribes to `pattern` and waits up to `timeout` until the
    /// broker confirms; events matching it arrive from then on.
    pub fn subscribe(
        &mut self,
        c: &mut Client,
        pattern: &str,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let mut frame = Vec::new();
        eventstream::encode_subscribe(&mut frame, pattern).map_err(|e| bad_topic(pattern, e))?;
        c.write_stream(self.stream, &frame).map_err(failure)?;
        let deadline = deadline_in(timeout);
        loop {
            match self.next(c, deadline)? {
                Some(Incoming::Reply {
                    op: Op::Subscribe,
                    code,
                    ..
                }) => return refused(code, pattern),
                Some(_) => {}
                None => return Err(no_answer(timeout)),
            }
        }
    }

    /// Publishes `data` on `topic` and waits up to `timeout` for the
    /// broker to have handled it (an unsubscribe of the topic follows the
    /// publish: its reply, in request order, says the publish was taken).
    pub fn publish(
        &mut self,
        c: &mut Client,
        topic: &str,
        data: &[u8],
        timeout: Duration,
    ) -> Result<(), Failure> {
        let mut frames = Vec::new();
        eventstream::encode_publish(&mut frames, topic, data).map_err(|e| bad_topic(topic, e))?;
        if frames.len() - LEN_SIZE > DEFAULT_MAX_FRAME as usize {
            return Err(invalid(
                format!(
                    "the event is {} bytes with its topic; a broker takes at most {DEFAULT_MAX_FRAME}",
                    frames.len() - LEN_SIZE
                ),
                "send less, or send a file with `pilotctl send-file`",
            ));
        }
        // Cannot fail: a valid topic is a valid pattern.
        let _ = eventstream::encode_unsubscribe(&mut frames, topic);
        c.write_stream(self.stream, &frames).map_err(failure)?;
        let deadline = deadline_in(timeout);
        loop {
            match self.next(c, deadline)? {
                Some(Incoming::Reply {
                    op: Op::Publish,
                    code,
                    ..
                }) => return refused(code, topic),
                Some(Incoming::Reply {
                    op: Op::Unsubscribe,
                    ..
                }) => return Ok(()),
                Some(_) => {}
                None => return Err(no_answer(timeout)),
            }
        }
    }

    /// The next event (topic, data), or `None` by `deadline`.
    pub fn next_event(
        &mut self,
        c: &mut Client,
        deadline: Instant,
    ) -> Result<Option<(String, Vec<u8>)>, Failure> {
        loop {
            match self.next(c, deadline)? {
                Some(Incoming::Event { topic, data }) => return Ok(Some((topic, data))),
                Some(Incoming::Reply { .. }) => {}
                None => return Ok(None),
            }
        }
    }

    /// Closes the connection (its subscriptions end).
    pub fn close(self, c: &mut Client) {
        let _ = c.close_stream(self.stream);
    }

    /// The next thing the broker sent, or `None` by `deadline`; the
    /// broker closing the connection is an error.
    fn next(&mut self, c: &mut Client, deadline: Instant) -> Result<Option<Incoming>, Failure> {
        loop {
            if let Some(incoming) = self.decoder.poll() {
                return Ok(Some(incoming));
            }
            match c.read_stream(self.stream, left(deadline)) {
                Ok(Some(chunk)) => self.decoder.on_bytes(&chunk).map_err(|e| {
                    Failure::new(
                        "connection_failed",
                        format!("the broker sent nonsense: {e}"),
                        "",
                    )
                })?,
                Ok(None) => return Err(Failure::new(
                    "connection_failed",
                    "the broker closed the connection",
                    "the peer may have stopped or untrusted this agent (see `pilotctl trust`), \
                         or runs without its event stream (--no-services)",
                )),
                Err(ClientError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(failure(e)),
            }
        }
    }
}

const TOPIC_HINT: &str =
    "topics are dot-separated printable segments (tasks.new); patterns may use `*` segments";

fn bad_topic(subject: &str, e: impl std::fmt::Display) -> Failure {
    invalid(format!("`{subject}`: {e}"), TOPIC_HINT)
}

fn refused(code: Code, subject: &str) -> Result<(), Failure> {
    match code {
        Code::Ok => Ok(()),
        Code::BadTopic => Err(invalid(
            format!("the broker refused `{subject}`: {code}"),
            TOPIC_HINT,
        )),
        code => Err(Failure::new(
            "connection_failed",
            format!("the broker refused `{subject}`: {code}"),
            "",
        )),
    }
}

fn no_answer(timeout: Duration) -> Failure {
    Failure::new(
        "timeout",
        format!("the broker did not answer within {} s", shown_secs(timeout)),
        "",
    )
}

/// Publishes on `peer`'s broker and waits for it to have taken the
/// event. `peer` may be this agent itself (its address or hostname): the
/// event then goes to our own broker, and the answer is how many
/// subscribers it reached (`None` for a peer's broker, which does not
/// say).
pub fn publish(
    c: &mut Client,
    peer: &str,
    topic: &str,
    data: &[u8],
    timeout: Duration,
) -> Result<Option<u64>, Failure> {
    if is_self(c, peer)? {
        let answer = c.publish(topic, data).map_err(failure)?;
        return Ok(Some(answer["subscribers"].as_u64().unwrap_or_default()));
    }
    let mut conn = EventStream::open(c, peer, timeout)?;
    let result = conn.publish(c, topic, data, timeout);
    conn.close(c);
    result.map(|()| None)
}

/// Whether `peer` names this agent (its address, node ID or hostname).
fn is_self(c: &mut Client, peer: &str) -> Result<bool, Failure> {
    let info = request(c, Request::Info)?;
    let me = |k: &str| info[k].as_str().map(str::to_string);
    let network = me("address")
        .and_then(|a| a.parse::<pilot_proto::addr::Address>().ok())
        .map_or(0, |a| a.network());
    Ok(match PeerRef::parse_in(peer.trim(), network) {
        Ok(PeerRef::Address(a)) => me("address") == Some(a.to_string()),
        Ok(PeerRef::Hostname(h)) => me("hostname") == Some(h.to_string()),
        Err(_) => false,
    })
}

/// Subscribes to `pattern` on `peer`'s broker; read events with
/// [`EventStream::next_event`].
pub fn subscribe(
    c: &mut Client,
    peer: &str,
    pattern: &str,
    timeout: Duration,
) -> Result<EventStream, Failure> {
    let mut conn = EventStream::open(c, peer, timeout)?;
    match conn.subscribe(c, pattern, timeout) {
        Ok(()) => Ok(conn),
        Err(e) => {
            conn.close(c);
            Err(e)
        }
    }
}

// --- output ------------------------------------------------------------------

/// `bytes`, `data` (UTF-8, lossy) and, when it is not UTF-8, `data_b64`.
fn data_json(data: &[u8]) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("bytes".into(), data.len().into());
    m.insert("data".into(), String::from_utf8_lossy(data).into());
    if std::str::from_utf8(data).is_err() {
        m.insert(
            "data_b64".into(),
            base64::engine::general_purpose::STANDARD
                .encode(data)
                .into(),
        );
    }
    m
}

/// Data on one line: UTF-8 with control characters escaped, otherwise
/// `base64:...`.
fn one_line(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(s) => s
            .chars()
            .map(|ch| {
                if ch.is_control() {
                    ch.escape_default().to_string()
                } else {
                    ch.to_string()
                }
            })
            .collect(),
        Err(_) => format!(
            "base64:{}",
            base64::engine::general_purpose::STANDARD.encode(data)
        ),
    }
}

impl Arrival {
    fn to_json(&self, hostname: Option<&str>) -> Value {
        let mut m = data_json(&self.data);
        m.insert("from".into(), self.from.clone().into());
        m.insert("hostname".into(), hostname.into());
        m.insert("from_port".into(), self.from_port.into());
        m.insert("port".into(), self.port.into());
        Value::Object(m)
    }

    /// One line of output: JSON or text, with the sender's hostname where
    /// the daemon knows it.
    fn line(&self, json_mode: bool, names: &mut Names) -> String {
        let host = names.get(&self.from);
        if json_mode {
            return self.to_json(host.as_deref()).to_string();
        }
        let from = match host {
            Some(h) => format!("{}:{} ({h})", self.from, self.from_port),
            None => format!("{}:{}", self.from, self.from_port),
        };
        format!("{from} -> port {}: {}", self.port, one_line(&self.data))
    }
}

/// Trusted peers' hostnames for lines printed as things arrive: asked of
/// the daemon once, and again for an address not seen before (a peer
/// trusted meanwhile), never twice for the same one.
struct Names {
    home: PathBuf,
    known: BTreeMap<String, String>,
    asked: std::collections::BTreeSet<String>,
}

impl Names {
    fn new() -> Self {
        let home = crate::paths::home(None);
        Names {
            known: known_hostnames(&home),
            home,
            asked: Default::default(),
        }
    }

    fn get(&mut self, address: &str) -> Option<String> {
        if !self.known.contains_key(address) && self.asked.insert(address.to_string()) {
            self.known = known_hostnames(&self.home);
        }
        self.known.get(address).cloned()
    }
}

/// Prints the lines `next` gives as they come, until `count` of them or
/// `None`; none at all is the failure `nothing` makes.
fn print_each(
    count: Option<u32>,
    mut next: impl FnMut() -> Result<Option<String>, Failure>,
    nothing: impl FnOnce() -> Failure,
) -> Result<Success, Failure> {
    let mut n = 0;
    while count.is_none_or(|max| n < max) {
        let Some(line) = next()? else {
            break;
        };
        crate::output::say(line);
        n += 1;
    }
    if n == 0 {
        return Err(nothing());
    }
    Ok(Success::printed())
}

fn nothing_arrived(what: &str, port_or_topic: &str, wait: Duration) -> Failure {
    Failure::new(
        "timeout",
        format!("no {what} on {port_or_topic} within {} s", shown_secs(wait)),
        "is the sender trusted and sending to this agent? `--timeout 0` waits until Ctrl-C",
    )
}

fn check_count(count: Option<u32>) -> Result<(), Failure> {
    if count == Some(0) {
        return Err(invalid("--count must be at least 1", ""));
    }
    Ok(())
}

// --- the commands --------------------------------------------------------------

fn reply_json(reply: &Reply) -> Value {
    Value::Object(data_json(&reply.data))
}

/// `pilotctl connect <peer> [port] [--message TEXT]`.
pub fn connect(
    peer: &str,
    port: u16,
    message: Option<String>,
    timeout: Duration,
    json_mode: bool,
) -> Result<Success, Failure> {
    let mut c = default_client()?;
    let Some(message) = message else {
        let s = open_stream(&mut c, peer, port, timeout)?;
        let result = pipe(&mut c, s, timeout);
        let _ = c.close_stream(s);
        let (sent, got) = result?;
        let summary = json!({ "peer": peer, "port": port, "sent": sent, "received": got });
        // stdout carries the stream's bytes only.
        if json_mode {
            eprintln!("{}", json!({ "status": "ok", "data": summary }));
        }
        return Ok(Success::printed());
    };
    let reply = exchange(&mut c, peer, port, message.as_bytes(), timeout)?;
    if !reply.closed && reply.data.is_empty() {
        return Err(Failure::new(
            "timeout",
            format!(
                "no reply from {peer} port {port} within {} s",
                shown_secs(timeout)
            ),
            "the peer keeps the stream open without answering",
        ));
    }
    if json_mode {
        return Ok(Success::new(
            json!({
                "peer": peer, "port": port, "sent": message.len(),
                "closed": reply.closed, "reply": reply_json(&reply),
            }),
            "",
        ));
    }
    let mut out = io::stdout().lock();
    out.write_all(&reply.data)
        .and_then(|()| out.flush())
        .map_err(crate::output::stdout_failure)?;
    Ok(Success::printed())
}

/// Copies stdin to the stream and the stream to stdout, both at once,
/// until the peer ends the stream. Returns (bytes sent, bytes received).
fn pipe(c: &mut Client, s: u32, timeout: Duration) -> Result<(u64, u64), Failure> {
    // stdin blocks, so a thread reads it; the client stays on this one.
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(8);
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let chunk = match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => Ok(buf[..n].to_vec()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = chunk.is_err();
            if tx.send(chunk).is_err() || failed {
                return;
            }
        }
    });
    let mut stdout = io::stdout().lock();
    let (mut sent, mut got) = (0u64, 0u64);
    // Set once stdin has ended: the peer must close by then.
    let mut closing_by: Option<Instant> = None;
    loop {
        let mut moved = false;
        for _ in 0..8 {
            if closing_by.is_some() {
                break;
            }
            match rx.try_recv() {
                Ok(Ok(chunk)) => {
                    c.write_stream(s, &chunk).map_err(failure)?;
                    sent += chunk.len() as u64;
                    moved = true;
                }
                Ok(Err(e)) => {
                    return Err(Failure::new("internal", format!("reading stdin: {e}"), ""))
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    c.shutdown_stream(s).map_err(failure)?;
                    closing_by = Some(deadline_in(timeout));
                }
            }
        }
        // Without news from stdin, wait a little for the stream.
        let wait = match closing_by {
            _ if moved => Duration::ZERO,
            Some(d) if Instant::now() >= d => {
                return Err(Failure::new(
                    "timeout",
                    format!(
                        "the peer did not close the stream within {} s of the end of input",
                        shown_secs(timeout)
                    ),
                    "",
                ))
            }
            Some(d) => left(d),
            None => Duration::from_millis(10),
        };
        match c.read_stream(s, wait) {
            Ok(Some(chunk)) => {
                stdout
                    .write_all(&chunk)
                    .and_then(|()| stdout.flush())
                    .map_err(crate::output::stdout_failure)?;
                got += chunk.len() as u64;
            }
            Ok(None) => return Ok((sent, got)),
            Err(ClientError::Timeout(_)) => {}
            Err(e) => return Err(failure(e)),
        }
    }
}

/// `pilotctl send <peer> <port> --data TEXT [--datagram]`.
pub fn send(
    peer: &str,
    port: u16,
    data: &str,
    datagram: bool,
    timeout: Duration,
) -> Result<Success, Failure> {
    let data = if datagram {
        data_arg::read(
            data,
            pilot_proto::overlay::MAX_DATAGRAM as u64,
            "send it over a stream (without --datagram)",
        )?
    } else {
        data_arg::read(
            data,
            u64::from(DEFAULT_MAX_MESSAGE),
            "stream it with `pilotctl connect PEER PORT < FILE`",
        )?
    };
    let data = data.bytes();
    let mut c = default_client()?;
    if datagram {
        c.send_datagram(peer, port, 0, data).map_err(failure)?;
        return Ok(Success::new(
            json!({
                "peer": peer, "port": port, "sent": data.len(), "datagram": true,
                "closed": false, "reply": data_json(b""),
            }),
            format!(
                "Sent a datagram of {} bytes to {peer} port {port}",
                data.len()
            ),
        ));
    }
    let reply = exchange(&mut c, peer, port, data, timeout)?;
    let outcome = match (reply.data.is_empty(), reply.closed) {
        (true, true) => "the peer closed the stream without replying".to_string(),
        (true, false) => format!("no reply within {} s", shown_secs(timeout)),
        (false, _) => format!(
            "reply ({} bytes): {}",
            reply.data.len(),
            one_line(&reply.data)
        ),
    };
    Ok(Success::new(
        json!({
            "peer": peer, "port": port, "sent": data.len(), "datagram": false,
            "closed": reply.closed, "reply": reply_json(&reply),
        }),
        format!("Sent {} bytes to {peer} port {port}; {outcome}", data.len()),
    ))
}

/// `pilotctl recv <port> [--count N] [--timeout S]`.
pub fn recv(port: u16, count: u32, timeout: Duration, json_mode: bool) -> Result<Success, Failure> {
    check_count(Some(count))?;
    let mut c = default_client()?;
    request(&mut c, Request::Listen { port })?;
    eprintln!("Receiving streams on port {port} (waiting for {count})");
    let deadline = deadline_in(no_limit_if_zero(timeout));
    let mut names = Names::new();
    print_each(
        Some(count),
        || Ok(next_stream_message(&mut c, deadline)?.map(|m| m.line(json_mode, &mut names))),
        || nothing_arrived("stream", &format!("port {port}"), timeout),
    )
}

/// `pilotctl recv <port> --raw`: each stream's bytes go to stdout as they
/// arrive, binary-safe and nothing else, as `nc -l` does: the other end
/// of `tar c dir | pilotctl connect PEER PORT`.
pub fn recv_raw(
    port: u16,
    count: u32,
    timeout: Duration,
    json_mode: bool,
) -> Result<Success, Failure> {
    check_count(Some(count))?;
    let mut c = default_client()?;
    request(&mut c, Request::Listen { port })?;
    eprintln!("Receiving streams on port {port} (waiting for {count}), raw to stdout");
    let mut out = io::stdout().lock();
    let (mut streams, mut bytes) = (0u32, 0u64);
    let mut from = Vec::new();
    while streams < count {
        let deadline = deadline_in(no_limit_if_zero(timeout));
        let stream = loop {
            match c.next_event(left(deadline)).map_err(failure)? {
                None => return Err(nothing_arrived("stream", &format!("port {port}"), timeout)),
                Some(Event::Incoming {
                    stream, from: f, ..
                }) => {
                    from.push(f);
                    break stream;
                }
                Some(_) => continue,
            }
        };
        // Read to the end, however long it takes (Ctrl-C stops it).
        let forever = deadline_in(timeout_secs(0));
        loop {
            match c.read_stream(stream, left(forever)) {
                Ok(Some(chunk)) => {
                    out.write_all(&chunk)
                        .and_then(|()| out.flush())
                        .map_err(crate::output::stdout_failure)?;
                    bytes += chunk.len() as u64;
                }
                Ok(None) => break,
                Err(e) => return Err(failure(e)),
            }
        }
        let _ = c.close_stream(stream);
        streams += 1;
    }
    if json_mode {
        let summary = json!({ "port": port, "streams": streams, "bytes": bytes, "from": from });
        eprintln!("{}", json!({ "status": "ok", "data": summary }));
    }
    Ok(Success::printed())
}

/// `pilotctl listen <port> [--count N] [--timeout S] [--force]`.
pub fn listen(
    port: u16,
    count: Option<u32>,
    timeout: Duration,
    force: bool,
    json_mode: bool,
) -> Result<Success, Failure> {
    check_count(count)?;
    let mut c = default_client()?;
    request(&mut c, Request::Bind { port, force })?;
    eprintln!("Listening for datagrams on port {port}");
    let deadline = deadline_in(no_limit_if_zero(timeout));
    let mut names = Names::new();
    print_each(
        count,
        || Ok(next_datagram(&mut c, deadline)?.map(|d| d.line(json_mode, &mut names))),
        || nothing_arrived("datagram", &format!("port {port}"), timeout),
    )
}

/// `pilotctl send-message <peer> --data TEXT [--type text|json|binary]`.
pub fn send_message_cmd(
    peer: &str,
    data: &str,
    kind: &str,
    timeout: Duration,
) -> Result<Success, Failure> {
    let given = data_arg::read(
        data,
        u64::from(DEFAULT_MAX_MESSAGE),
        "send it as a file with `pilotctl send-file`, or split it",
    )?;
    let text;
    let data = match (&given, kind) {
        (data_arg::Data::Inline(s), _) => s,
        // A file's or stdin's bytes go as they are.
        (data_arg::Data::Read(_), "binary") => "",
        (data_arg::Data::Read(b), _) => {
            text = String::from_utf8(b.clone()).map_err(|_| {
                invalid(
                    format!("--data {data}: not UTF-8 text"),
                    "use --type binary to send its bytes as they are",
                )
            })?;
            text.as_str()
        }
    };
    let bytes;
    let message = match kind {
        "text" => Message::Text(data),
        "json" => {
            pilot_proto::services::json::validate(data).map_err(|e| {
                invalid(
                    format!("--data is not valid JSON: {e}"),
                    "use --type text for free text",
                )
            })?;
            Message::Json(data)
        }
        "binary" if matches!(given, data_arg::Data::Read(_)) => Message::Binary(given.bytes()),
        "binary" => {
            bytes = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| {
                    invalid(
                        format!("--data is not base64: {e}"),
                        "with --type binary, --data is the bytes in base64",
                    )
                })?;
            Message::Binary(&bytes)
        }
        other => {
            return Err(invalid(
                format!("unknown --type `{other}`"),
                "use text, json or binary",
            ))
        }
    };
    let mut c = default_client()?;
    let id = send_message(&mut c, peer, &message, timeout)?;
    let n = message.data().len();
    Ok(Success::new(
        // `kind` as `inbox` names it; no second "status" inside the
        // answer's own: the peer acknowledged it.
        json!({ "peer": peer, "id": id, "kind": kind, "bytes": n, "acknowledged": true }),
        format!("Delivered to {peer}: {kind} message of {n} bytes (id {id}, acknowledged)"),
    ))
}

/// `pilotctl send-file <peer> <path>`.
pub fn send_file(peer: &str, path: &Path, timeout: Duration) -> Result<Success, Failure> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Failure::new(
            "not_found",
            format!("no file {shown}"),
            "check the path: the file is read on this machine, relative to the current directory",
        ),
        _ => invalid(
            format!("cannot read {shown}: {e}"),
            "check the file's permissions",
        ),
    })?;
    if !meta.is_file() {
        return Err(invalid(format!("{shown} is not a regular file"), ""));
    }
    if meta.len() > u64::from(DEFAULT_MAX_MESSAGE) {
        return Err(too_large(&shown.to_string(), meta.len()));
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| invalid(format!("{shown} has no UTF-8 file name"), ""))?;
    dataexchange::safe_file_name(name).map_err(|e| {
        invalid(
            format!("`{name}` cannot be sent as a file name: {e}"),
            "rename or copy the file",
        )
    })?;
    let data = std::fs::read(path).map_err(|e| invalid(format!("cannot read {shown}: {e}"), ""))?;
    let mut c = default_client()?;
    let show_progress = data.len() >= 1 << 20 && io::stderr().is_terminal();
    let mut progress = |sent: u64, total: u64| {
        if show_progress {
            eprint!(
                "\r{name}: {} / {} KiB ({}%)",
                sent >> 10,
                total >> 10,
                sent * 100 / total.max(1)
            );
            if sent == total {
                eprintln!();
            }
        }
    };
    let message = Message::File { name, data: &data };
    let id = send_message_with_progress(&mut c, peer, &message, timeout, &mut progress)?;
    Ok(Success::new(
        json!({ "peer": peer, "id": id, "name": name, "bytes": data.len(), "acknowledged": true }),
        format!(
            "Delivered {name} ({} bytes) to {peer} (id {id}, acknowledged)",
            data.len()
        ),
    ))
}

/// The files of a home subdirectory (not the temporary `.` ones), oldest
/// first (modification time, then name).
fn entries(dir: &Path) -> Result<Vec<(PathBuf, std::fs::Metadata)>, Failure> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Failure::new(
                "internal",
                format!("cannot list {}: {e}", dir.display()),
                "",
            ))
        }
    };
    let mut out = Vec::new();
    for entry in read.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        match entry.metadata() {
            Ok(meta) if meta.is_file() && !hidden => out.push((path, meta)),
            _ => {}
        }
    }
    out.sort_by_key(|(p, m)| (m.modified().ok(), p.clone()));
    Ok(out)
}

fn remove(files: &[(PathBuf, std::fs::Metadata)]) -> Result<usize, Failure> {
    for (p, _) in files {
        std::fs::remove_file(p).map_err(|e| {
            Failure::new(
                "internal",
                format!("cannot remove {}: {e}", p.display()),
                "",
            )
        })?;
    }
    Ok(files.len())
}

/// One stored inbox message, checked: the fields `inbox` shows.
fn inbox_record(path: &Path) -> Result<Value, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("not JSON: {e}"))?;
    for (field, ok) in [
        ("from", v["from"].is_string()),
        ("kind", v["kind"].is_string()),
        ("received_at", v["received_at"].is_u64()),
        ("data", v["data"].is_string()),
    ] {
        if !ok {
            return Err(format!("missing or wrong field `{field}`"));
        }
    }
    Ok(v)
}

/// The messages stored in `home`'s inbox, oldest first, and the files
/// there that are not readable messages (file, error).
pub fn read_inbox(home: &Path) -> Result<(Vec<Value>, Vec<Value>), Failure> {
    let mut messages = Vec::new();
    let mut corrupt = Vec::new();
    for (path, _) in entries(&home.join("inbox"))? {
        let file = path.display().to_string();
        match inbox_record(&path) {
            Ok(v) => messages.push(json!({
                "from": v["from"], "id": v["id"], "kind": v["kind"],
                "received_at": v["received_at"], "data": v["data"], "file": file,
            })),
            Err(error) => corrupt.push(json!({ "file": file, "error": error })),
        }
    }
    // Same-second arrivals keep file time order (a stable sort).
    messages.sort_by_key(|m| m["received_at"].as_u64());
    Ok((messages, corrupt))
}

/// The hostnames of trusted peers by address, from the daemon of `home`
/// if one runs there; empty otherwise (the inbox and received files are
/// read from disk and need no daemon).
fn known_hostnames(home: &Path) -> BTreeMap<String, String> {
    let Ok(mut c) = super::client::connect(&crate::paths::running_socket(None, home)) else {
        return BTreeMap::new();
    };
    let Ok(list) = super::client::request(&mut c, Request::Trusted) else {
        return BTreeMap::new();
    };
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["node"].as_str()?.to_string(),
                t["hostname"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// `ADDRESS (hostname)`, or the address alone.
fn with_hostname(address: &str, names: &BTreeMap<String, String>) -> String {
    match names.get(address) {
        Some(h) => format!("{address} ({h})"),
        None => address.to_string(),
    }
}

/// `pilotctl inbox [--clear]`.
pub fn inbox(home: &Path, clear: bool) -> Result<Success, Failure> {
    let (mut messages, corrupt) = read_inbox(home)?;
    let names = known_hostnames(home);
    for m in &mut messages {
        let host = m["from"].as_str().and_then(|a| names.get(a)).cloned();
        m["hostname"] = json!(host);
    }
    let mut cleared = 0;
    if clear {
        cleared = remove(&entries(&home.join("inbox"))?)?;
    }
    let mut lines: Vec<String> = Vec::new();
    if clear {
        lines.push(format!("Removed {cleared} messages from the inbox"));
    } else if messages.is_empty() {
        lines.push("The inbox is empty".into());
    } else {
        for m in &messages {
            let data = m["data"].as_str().unwrap_or_default();
            lines.push(format!(
                "{}  {}  {:<6}  {}",
                utc(m["received_at"].as_u64().unwrap_or_default()),
                with_hostname(m["from"].as_str().unwrap_or_default(), &names),
                m["kind"].as_str().unwrap_or_default(),
                one_line(data.as_bytes())
            ));
        }
    }
    for c in &corrupt {
        lines.push(format!(
            "unreadable: {}: {}",
            c["file"].as_str().unwrap_or_default(),
            c["error"].as_str().unwrap_or_default()
        ));
    }
    Ok(Success::new(
        json!({ "messages": messages, "corrupt": corrupt, "cleared": cleared }),
        lines.join("\n"),
    ))
}

/// Who sent a received file and when, as the daemon recorded it beside
/// the file (`received/.meta/NAME.json`); nulls for a file without one.
fn received_meta(dir: &Path, name: &str) -> (Value, Value) {
    let meta = std::fs::read(dir.join(".meta").join(format!("{name}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .unwrap_or(Value::Null);
    let from = meta["from"].as_str().map_or(Value::Null, |s| json!(s));
    let at = meta["received_at"]
        .as_u64()
        .map_or(Value::Null, |t| json!(t));
    (from, at)
}

/// `pilotctl received [--clear]`.
pub fn received(home: &Path, clear: bool) -> Result<Success, Failure> {
    let dir = home.join("received");
    let found = entries(&dir)?;
    let names = known_hostnames(home);
    let files: Vec<Value> = found
        .iter()
        .map(|(p, m)| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let (from, at) = received_meta(&dir, &name);
            let host = from.as_str().and_then(|a| names.get(a)).cloned();
            json!({
                "name": name,
                "size": m.len(),
                "path": p.display().to_string(),
                "from": from,
                "hostname": host,
                "received_at": at,
            })
        })
        .collect();
    let cleared = if clear {
        let n = remove(&found)?;
        // The records of who sent them go too (best effort: they are
        // hidden and say nothing once their file is gone).
        let _ = std::fs::remove_dir_all(dir.join(".meta"));
        n
    } else {
        0
    };
    let text = if clear {
        format!("Removed {cleared} received files")
    } else if files.is_empty() {
        "No received files".to_string()
    } else {
        let rows: Vec<Vec<String>> = files
            .iter()
            .map(|f| {
                vec![
                    f["name"].as_str().unwrap_or_default().to_string(),
                    f["size"].as_u64().unwrap_or_default().to_string(),
                    f["from"]
                        .as_str()
                        .map_or("-".into(), |a| with_hostname(a, &names)),
                    f["received_at"].as_u64().map_or("-".into(), utc),
                    f["path"].as_str().unwrap_or_default().to_string(),
                ]
            })
            .collect();
        table(
            &["NAME", "SIZE", "FROM", "RECEIVED", "PATH"],
            &rows,
            &[false, true, false, false, false],
        )
    };
    Ok(Success::new(
        json!({ "files": files, "cleared": cleared }),
        text,
    ))
}

/// `pilotctl subscribe <peer> <topic> [--count N] [--timeout S]`.
pub fn subscribe_cmd(
    peer: &str,
    topic: &str,
    count: Option<u32>,
    timeout: Duration,
    json_mode: bool,
) -> Result<Success, Failure> {
    check_count(count)?;
    eventstream::check_pattern(topic).map_err(|e| bad_topic(topic, e))?;
    let mut c = default_client()?;
    let deadline = deadline_in(no_limit_if_zero(timeout));
    let mut sub = subscribe(&mut c, peer, topic, no_limit_if_zero(timeout))?;
    eprintln!("Subscribed to `{topic}` on {peer}");
    let line = |(topic, data): (String, Vec<u8>)| {
        if json_mode {
            let mut m = data_json(&data);
            m.insert("topic".into(), topic.into());
            Value::Object(m).to_string()
        } else {
            format!("{topic}: {}", one_line(&data))
        }
    };
    let result = print_each(
        count,
        || Ok(sub.next_event(&mut c, deadline)?.map(line)),
        || nothing_arrived("event", &format!("`{topic}` at {peer}"), timeout),
    );
    sub.close(&mut c);
    result
}

/// `pilotctl publish <peer> <topic> --data TEXT`.
pub fn publish_cmd(
    peer: &str,
    topic: &str,
    data: &str,
    timeout: Duration,
) -> Result<Success, Failure> {
    eventstream::check_topic(topic).map_err(|e| bad_topic(topic, e))?;
    let given = data_arg::read(
        data,
        u64::from(DEFAULT_MAX_FRAME),
        "send less, or send a file with `pilotctl send-file`",
    )?;
    let data = given.bytes();
    let mut c = default_client()?;
    let subscribers = publish(&mut c, peer, topic, data, timeout)?;
    let reached = match subscribers {
        Some(1) => " (1 subscriber)".to_string(),
        Some(n) => format!(" ({n} subscribers)"),
        None => String::new(),
    };
    Ok(Success::new(
        json!({
            "peer": peer, "topic": topic, "bytes": data.len(), "accepted": true,
            "subscribers": subscribers,
        }),
        format!(
            "Published {} bytes on `{topic}` at {peer}{reached}",
            data.len()
        ),
    ))
}

/// Seconds since 1970 as `YYYY-MM-DD HH:MM:SSZ` (UTC).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20Z");
    }

    #[test]
    fn socket_addresses_split() {
        assert_eq!(
            split_socket("0:0000.0000.0010:4000"),
            ("0:0000.0000.0010".to_string(), 4000)
        );
        assert_eq!(
            split_socket("0:0000.0000.0010"),
            ("0:0000.0000.0010".to_string(), 0)
        );
    }

    #[test]
    fn data_is_shown_on_one_line() {
        assert_eq!(one_line(b"a\nb"), "a\\nb");
        assert_eq!(one_line(&[0xff, 0]), "base64:/wA=");
        let m = data_json(&[0xff]);
        assert_eq!(m["bytes"], 1);
        assert_eq!(m["data_b64"], "/w==");
        assert!(data_json(b"ok").get("data_b64").is_none());
    }

    #[test]
    fn received_files_line_up() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("received");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a"), "x").unwrap();
        std::fs::write(dir.join("b"), vec![0u8; 123_456]).unwrap();
        std::fs::create_dir(dir.join(".meta")).unwrap();
        std::fs::write(
            dir.join(".meta/b.json"),
            r#"{"from":"0:0000.0000.0010","received_at":1796531184,"size":123456}"#,
        )
        .unwrap();
        let out = received(home.path(), false).unwrap();
        let text = out.text;
        let columns: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|l| l.find("  /").unwrap())
            .collect();
        assert_eq!(columns.len(), 2, "{text}");
        assert_eq!(columns[0], columns[1], "{text}");
        assert!(text.starts_with("NAME "), "{text}");
        assert_eq!(
            text.lines().next().unwrap().find("PATH"),
            Some(columns[0] + 2)
        );
        // The sender and the time where the daemon recorded them.
        let b = &out.data["files"][1];
        assert_eq!(b["from"], "0:0000.0000.0010", "{b}");
        assert_eq!(b["received_at"], 1796531184u64, "{b}");
        assert!(text.contains("0:0000.0000.0010"), "{text}");
        assert!(text.contains(&utc(1796531184)), "{text}");
        assert_eq!(out.data["files"][0]["from"], Value::Null);
        // --clear takes the records too.
        received(home.path(), true).unwrap();
        assert!(!dir.join(".meta").exists());
    }

    #[test]
    fn corrupt_inbox_files_are_reported() {
        let home = tempfile::tempdir().unwrap();
        let inbox_dir = home.path().join("inbox");
        std::fs::create_dir(&inbox_dir).unwrap();
        std::fs::write(inbox_dir.join("2-a.json"), "{\"from\":1}").unwrap();
        std::fs::write(inbox_dir.join("3-b.json"), "\u{0}garbage").unwrap();
        std::fs::write(
            inbox_dir.join("1-c.json"),
            r#"{"from":"0:0000.0000.0010","id":1,"kind":"text","received_at":5,"data":"hi"}"#,
        )
        .unwrap();
        std::fs::write(inbox_dir.join(".1-c.json.tmp.1.0"), "partial").unwrap();
        let (messages, corrupt) = read_inbox(home.path()).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0]["data"], "hi");
        assert_eq!(corrupt.len(), 2);
        let cleared = inbox(home.path(), true).unwrap();
        assert_eq!(cleared.data["cleared"], 3);
        assert!(read_inbox(home.path()).unwrap().0.is_empty());
    }
}
