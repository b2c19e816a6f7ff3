//! Event stream (port 1002): publish/subscribe over topic patterns.
//!
//! An agent runs a [`Broker`] for everyone connected to its port 1002.
//! Clients subscribe to topic patterns and publish events on topics; the
//! broker forwards each published event to every connection holding a
//! matching subscription, the publisher's own connection included (the
//! broker is a plain fan-out; a client that does not want its own events
//! subscribes on another connection or ignores them). A connection matching
//! through several patterns gets each event once.
//!
//! Topics are `.`-separated segments; a pattern segment `*` matches exactly
//! one segment, except as the last segment, where it matches one or more.
//! So `*` matches every topic, `a.*` every topic below `a` (not `a`
//! itself), `a.*.c` matches `a.b.c` but not `a.b.b.c`. See [`check_topic`],
//! [`check_pattern`] and [`pattern_matches`].
//!
//! Wire format: `docs/PROTOCOL.md` §10.3.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::framing::{put_len, FrameError, FrameReader, Item};
use crate::codec::{DecodeError, Reader};

/// Client to broker: subscribe to a pattern.
pub const KIND_SUBSCRIBE: u8 = 0x01;
/// Client to broker: drop a subscription.
pub const KIND_UNSUBSCRIBE: u8 = 0x02;
/// Client to broker: publish an event.
pub const KIND_PUBLISH: u8 = 0x03;
/// Broker to client: an event on a subscribed topic.
pub const KIND_EVENT: u8 = 0x81;
/// Broker to client: the outcome of a request.
pub const KIND_REPLY: u8 = 0x82;

/// The longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;
/// The wildcard segment.
pub const WILDCARD: &str = "*";
/// The default frame limit, both directions: an event's topic and data
/// together stay under it.
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024;
/// The default number of patterns one connection may hold.
pub const DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 64;
/// The default number of (connection, pattern) pairs a broker holds.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 16_384;

const F_KIND: &str = "kind";
const F_PATTERN: &str = "pattern";
const F_TOPIC: &str = "topic";
const F_OP: &str = "op";
const F_CODE: &str = "code";
const F_SUBJECT: &str = "subject";

// --- topics and patterns ---------------------------------------------------

/// Why a topic or pattern breaks the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The string is empty.
    Empty,
    /// More than [`MAX_TOPIC_LEN`] bytes.
    TooLong,
    /// A leading, trailing or doubled `.`.
    EmptySegment,
    /// A character outside printable ASCII, or a space.
    BadChar(char),
    /// A `*` in a topic, or in a pattern segment that is not exactly `*`.
    BadWildcard,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => f.write_str("empty topic"),
            TopicError::TooLong => write!(f, "topic longer than {MAX_TOPIC_LEN} bytes"),
            TopicError::EmptySegment => f.write_str("topic has an empty segment"),
            TopicError::BadChar(c) => write!(f, "topic holds forbidden character {c:?}"),
            TopicError::BadWildcard => f.write_str("`*` must be a whole pattern segment"),
        }
    }
}

/// Checks a topic: 1 to 255 bytes of printable ASCII (`!` to `~`),
/// `.`-separated segments that are not empty, no `*`. Topics are
/// case-sensitive.
pub fn check_topic(topic: &str) -> Result<(), TopicError> {
    check(topic, false)
}

/// Checks a pattern: a topic in which any segment may instead be `*`.
pub fn check_pattern(pattern: &str) -> Result<(), TopicError> {
    check(pattern, true)
}

fn check(s: &str, wildcards: bool) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(TopicError::BadChar(c));
    }
    for segment in s.split('.') {
        if segment.is_empty() {
            return Err(TopicError::EmptySegment);
        }
        if segment.contains('*') && !(wildcards && segment == WILDCARD) {
            return Err(TopicError::BadWildcard);
        }
    }
    Ok(())
}

/// Whether `pattern` matches `topic` (both assumed valid; for anything
/// else the answer is meaningless but never a panic).
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    let mut p = pattern.split('.').peekable();
    let mut t = topic.split('.');
    loop {
        match (p.next(), t.next()) {
            (None, None) => return true,
            // A trailing `*` takes this segment and all that follow.
            (Some(WILDCARD), Some(_)) if p.peek().is_none() => return true,
            (Some(WILDCARD), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn is_wild(pattern: &str) -> bool {
    pattern.split('.').any(|s| s == WILDCARD)
}

// --- frames ----------------------------------------------------------------

/// The request a [`Frame::Reply`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Op {
    /// A subscribe.
    Subscribe,
    /// An unsubscribe.
    Unsubscribe,
    /// A publish.
    Publish,
}

impl Op {
    /// The wire value: the request's kind.
    pub fn to_u8(self) -> u8 {
        match self {
            Op::Subscribe => KIND_SUBSCRIBE,
            Op::Unsubscribe => KIND_UNSUBSCRIBE,
            Op::Publish => KIND_PUBLISH,
        }
    }

    /// From the wire value.
    pub fn from_u8(op: u8) -> Option<Self> {
        match op {
            KIND_SUBSCRIBE => Some(Op::Subscribe),
            KIND_UNSUBSCRIBE => Some(Op::Unsubscribe),
            KIND_PUBLISH => Some(Op::Publish),
            _ => None,
        }
    }
}

/// The outcome of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Code {
    /// Done (subscribe and unsubscribe only: a publish is answered only
    /// when refused).
    Ok,
    /// The topic or pattern breaks the rules.
    BadTopic,
    /// This connection holds as many subscriptions as it may.
    TooManySubscriptions,
    /// The broker holds as many subscriptions as it may.
    BrokerFull,
    /// Unsubscribe from a pattern this connection is not subscribed to.
    NotSubscribed,
    /// A code this version does not know.
    Other(u8),
}

impl Code {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Code::Ok => 0,
            Code::BadTopic => 1,
            Code::TooManySubscriptions => 2,
            Code::BrokerFull => 3,
            Code::NotSubscribed => 4,
            Code::Other(c) => c,
        }
    }

    /// From the wire value.
    pub fn from_u8(c: u8) -> Self {
        match c {
            0 => Code::Ok,
            1 => Code::BadTopic,
            2 => Code::TooManySubscriptions,
            3 => Code::BrokerFull,
            4 => Code::NotSubscribed,
            c => Code::Other(c),
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Ok => f.write_str("ok"),
            Code::BadTopic => f.write_str("bad topic or pattern"),
            Code::TooManySubscriptions => f.write_str("too many subscriptions on this connection"),
            Code::BrokerFull => f.write_str("broker full"),
            Code::NotSubscribed => f.write_str("not subscribed"),
            Code::Other(c) => write!(f, "code {c}"),
        }
    }
}

/// One decoded frame payload. Decoding checks the layout and UTF-8, not
/// the topic rules: the broker answers a bad topic instead of dropping the
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Client to broker: start receiving events matching `pattern`.
    Subscribe {
        /// The pattern.
        pattern: &'a str,
    },
    /// Client to broker: stop.
    Unsubscribe {
        /// The pattern, exactly as subscribed.
        pattern: &'a str,
    },
    /// Client to broker: an event for every matching subscriber.
    Publish {
        /// The topic (no wildcards).
        topic: &'a str,
        /// The event's data, opaque to the broker.
        data: &'a [u8],
    },
    /// Broker to client: an event that matched a subscription.
    Event {
        /// The topic it was published on.
        topic: &'a str,
        /// Its data.
        data: &'a [u8],
    },
    /// Broker to client: the outcome of a request.
    Reply {
        /// The request answered.
        op: Op,
        /// Its outcome.
        code: Code,
        /// The request's pattern or topic, so replies can be matched.
        subject: &'a str,
    },
}

impl<'a> Frame<'a> {
    /// Decodes a frame payload (without its length prefix). Never panics.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let frame = match r.u8(F_KIND)? {
            KIND_SUBSCRIBE => Frame::Subscribe {
                pattern: r.short_str(F_PATTERN)?,
            },
            KIND_UNSUBSCRIBE => Frame::Unsubscribe {
                pattern: r.short_str(F_PATTERN)?,
            },
            KIND_PUBLISH => Frame::Publish {
                topic: r.short_str(F_TOPIC)?,
                data: r.rest(),
            },
            KIND_EVENT => Frame::Event {
                topic: r.short_str(F_TOPIC)?,
                data: r.rest(),
            },
            KIND_REPLY => Frame::Reply {
                op: Op::from_u8(r.u8(F_OP)?).ok_or(DecodeError::BadValue(F_OP))?,
                code: Code::from_u8(r.u8(F_CODE)?),
                subject: r.short_str(F_SUBJECT)?,
            },
            kind => return Err(DecodeError::UnknownKind(kind)),
        };
        r.finish()?;
        Ok(frame)
    }

    /// Appends this frame, length prefix included. Checks only what the
    /// layout needs (strings of at most 255 bytes, a length that fits
    /// `u32`); the `encode_*` functions add the topic rules.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (kind, head, text, data): (u8, &[u8], &str, &[u8]) = match self {
            Frame::Subscribe { pattern } => (KIND_SUBSCRIBE, &[], pattern, &[]),
            Frame::Unsubscribe { pattern } => (KIND_UNSUBSCRIBE, &[], pattern, &[]),
            Frame::Publish { topic, data } => (KIND_PUBLISH, &[], topic, data),
            Frame::Event { topic, data } => (KIND_EVENT, &[], topic, data),
            Frame::Reply { op, code, subject } => {
                let head = [op.to_u8(), code.to_u8()];
                return encode_parts(out, KIND_REPLY, &head, subject, &[]);
            }
        };
        encode_parts(out, kind, head, text, data)
    }
}

/// `kind || head || text (u8 length) || data`, with its length prefix.
fn encode_parts(
    out: &mut Vec<u8>,
    kind: u8,
    head: &[u8],
    text: &str,
    data: &[u8],
) -> Result<(), EncodeError> {
    if text.len() > MAX_TOPIC_LEN {
        return Err(EncodeError::BadTopic(TopicError::TooLong));
    }
    let len = (1 + head.len() + 1 + text.len()).saturating_add(data.len());
    put_len(out, len).map_err(|_| EncodeError::TooLarge)?;
    out.push(kind);
    out.extend_from_slice(head);
    out.push(text.len() as u8);
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(data);
    Ok(())
}

/// The payload length of an event or publish frame.
fn event_len(topic: &str, data: &[u8]) -> usize {
    (2 + topic.len()).saturating_add(data.len())
}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The topic or pattern breaks the rules.
    BadTopic(TopicError),
    /// The frame exceeds the frame limit (or a `u32` length).
    TooLarge,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BadTopic(e) => e.fmt(f),
            EncodeError::TooLarge => f.write_str("event too large for a frame"),
        }
    }
}

/// Appends a Subscribe frame, after checking the pattern.
pub fn encode_subscribe(out: &mut Vec<u8>, pattern: &str) -> Result<(), EncodeError> {
    check_pattern(pattern).map_err(EncodeError::BadTopic)?;
    Frame::Subscribe { pattern }.encode(out)
}

/// Appends an Unsubscribe frame, after checking the pattern.
pub fn encode_unsubscribe(out: &mut Vec<u8>, pattern: &str) -> Result<(), EncodeError> {
    check_pattern(pattern).map_err(EncodeError::BadTopic)?;
    Frame::Unsubscribe { pattern }.encode(out)
}

/// Appends a Publish frame, after checking the topic. Keep it under the
/// broker's frame limit ([`DEFAULT_MAX_FRAME`] unless agreed otherwise), or
/// the broker closes the connection.
pub fn encode_publish(out: &mut Vec<u8>, topic: &str, data: &[u8]) -> Result<(), EncodeError> {
    check_topic(topic).map_err(EncodeError::BadTopic)?;
    Frame::Publish { topic, data }.encode(out)
}

// --- errors ----------------------------------------------------------------

/// Why an event stream connection cannot go on (or a call made no sense).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A frame over the limit.
    Frame(FrameError),
    /// A frame that does not parse.
    Malformed(DecodeError),
    /// A frame of a kind that must not travel in this direction.
    Unexpected(u8),
    /// An event whose topic breaks the rules (from a broker).
    BadTopic(TopicError),
    /// The stream ended inside a frame.
    EndedMidFrame,
    /// Bytes or a disconnect for a connection the broker does not have.
    UnknownConnection,
    /// A connect for a connection the broker already has.
    AlreadyConnected,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Frame(e) => e.fmt(f),
            Error::Malformed(e) => write!(f, "malformed frame: {e}"),
            Error::Unexpected(k) => write!(f, "unexpected frame kind 0x{k:02x}"),
            Error::BadTopic(e) => write!(f, "event with a bad topic: {e}"),
            Error::EndedMidFrame => f.write_str("stream ended inside a frame"),
            Error::UnknownConnection => f.write_str("unknown connection"),
            Error::AlreadyConnected => f.write_str("connection already known"),
        }
    }
}

// --- the broker ------------------------------------------------------------

/// A broker's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// The largest frame payload, either direction. A bigger incoming frame
    /// closes its connection.
    pub max_frame: u32,
    /// Patterns one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// (connection, pattern) pairs the broker holds in all.
    pub max_subscriptions: usize,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            max_frame: DEFAULT_MAX_FRAME,
            max_subscriptions_per_connection: DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        }
    }
}

#[derive(Clone, Debug)]
struct Conn {
    frames: FrameReader,
    patterns: BTreeSet<String>,
}

/// The server side of the event stream, for all connections of one agent.
///
/// Connections are named by an opaque id `C` the caller picks (a stream
/// handle, say). Call [`connect`](Self::connect) when one opens,
/// [`on_bytes`](Self::on_bytes) with its bytes, and
/// [`disconnect`](Self::disconnect) when it closes; after every call drain
/// [`poll_transmit`](Self::poll_transmit) and write each buffer to its
/// connection. Output is bounded by the input that caused it times the
/// subscribers; the caller bounds each connection's send buffer (and may
/// disconnect a subscriber that does not keep up).
#[derive(Clone, Debug)]
pub struct Broker<C = u64> {
    config: BrokerConfig,
    conns: BTreeMap<C, Conn>,
    /// Patterns without wildcards, looked up by topic directly.
    exact: BTreeMap<String, BTreeSet<C>>,
    /// Patterns with wildcards, matched one by one.
    wild: BTreeMap<String, BTreeSet<C>>,
    subscriptions: usize,
    out: BTreeMap<C, Vec<u8>>,
}

impl<C: Ord + Clone> Broker<C> {
    /// A broker with these limits and no connections.
    pub fn new(config: BrokerConfig) -> Self {
        Broker {
            config,
            conns: BTreeMap::new(),
            exact: BTreeMap::new(),
            wild: BTreeMap::new(),
            subscriptions: 0,
            out: BTreeMap::new(),
        }
    }

    /// Starts serving a connection.
    pub fn connect(&mut self, conn: C) -> Result<(), Error> {
        if self.conns.contains_key(&conn) {
            return Err(Error::AlreadyConnected);
        }
        let state = Conn {
            frames: FrameReader::new(self.config.max_frame),
            patterns: BTreeSet::new(),
        };
        self.conns.insert(conn, state);
        Ok(())
    }

    /// Takes the next chunk of a connection's stream. On error the broker
    /// has already dropped the connection and its subscriptions; what the
    /// frames before the error produced still waits in
    /// [`poll_transmit`](Self::poll_transmit), for it too (so the outcome does
    /// not depend on how the stream was chunked). Drain, then close the
    /// stream.
    pub fn on_bytes(&mut self, conn: C, bytes: &[u8]) -> Result<(), Error> {
        let mut input = bytes;
        loop {
            let Some(state) = self.conns.get_mut(&conn) else {
                return Err(Error::UnknownConnection);
            };
            let result = match state.frames.read(&mut input) {
                Ok(None) => return Ok(()),
                Ok(Some(Item::Frame(frame))) => self.on_frame(&conn, &frame),
                Ok(Some(Item::Skipped { len, .. })) => Err(Error::Frame(FrameError::TooLarge {
                    len: len.into(),
                    max: self.config.max_frame.into(),
                })),
                Err(e) => Err(Error::Frame(e)),
            };
            if let Err(e) = result {
                self.drop_connection(&conn);
                return Err(e);
            }
        }
    }

    /// Drops a connection, its subscriptions and any output not yet taken
    /// for it. Returns whether it was known. If it ended inside a frame,
    /// that frame is simply lost.
    pub fn disconnect(&mut self, conn: C) -> bool {
        self.out.remove(&conn);
        self.drop_connection(&conn)
    }

    /// Publishes an event from the node itself, as if a client had. Returns
    /// how many connections it goes to.
    pub fn publish(&mut self, topic: &str, data: &[u8]) -> Result<usize, EncodeError> {
        check_topic(topic).map_err(EncodeError::BadTopic)?;
        if event_len(topic, data) > self.config.max_frame as usize {
            return Err(EncodeError::TooLarge);
        }
        Ok(self.fan_out(topic, data))
    }

    /// Bytes to write to a connection, if any are waiting.
    pub fn poll_transmit(&mut self) -> Option<(C, Vec<u8>)> {
        self.out.pop_first()
    }

    /// Connections being served.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// (connection, pattern) pairs held.
    pub fn subscriptions(&self) -> usize {
        self.subscriptions
    }

    /// The patterns a connection holds, in order.
    pub fn patterns(&self, conn: &C) -> impl Iterator<Item = &str> + '_ {
        self.conns
            .get(conn)
            .into_iter()
            .flat_map(|state| state.patterns.iter().map(String::as_str))
    }

    fn on_frame(&mut self, conn: &C, frame: &[u8]) -> Result<(), Error> {
        match Frame::decode(frame).map_err(Error::Malformed)? {
            Frame::Subscribe { pattern } => {
                let code = self.subscribe(conn, pattern);
                self.reply(conn, Op::Subscribe, code, pattern);
            }
            Frame::Unsubscribe { pattern } => {
                let code = self.unsubscribe(conn, pattern);
                self.reply(conn, Op::Unsubscribe, code, pattern);
            }
            Frame::Publish { topic, data } => {
                if check_topic(topic).is_err() {
                    self.reply(conn, Op::Publish, Code::BadTopic, topic);
                } else {
                    self.fan_out(topic, data);
                }
            }
            Frame::Event { .. } => return Err(Error::Unexpected(KIND_EVENT)),
            Frame::Reply { .. } => return Err(Error::Unexpected(KIND_REPLY)),
        }
        Ok(())
    }

    fn subscribe(&mut self, conn: &C, pattern: &str) -> Code {
        if check_pattern(pattern).is_err() {
            return Code::BadTopic;
        }
        let Some(state) = self.conns.get_mut(conn) else {
            return Code::BadTopic;
        };
        // Subscribing twice is harmless and changes nothing.
        if state.patterns.contains(pattern) {
            return Code::Ok;
        }
        if state.patterns.len() >= self.config.max_subscriptions_per_connection {
            return Code::TooManySubscriptions;
        }
        if self.subscriptions >= self.config.max_subscriptions {
            return Code::BrokerFull;
        }
        state.patterns.insert(pattern.to_string());
        let index = if is_wild(pattern) {
            &mut self.wild
        } else {
            &mut self.exact
        };
        index
            .entry(pattern.to_string())
            .or_default()
            .insert(conn.clone());
        self.subscriptions += 1;
        Code::Ok
    }

    fn unsubscribe(&mut self, conn: &C, pattern: &str) -> Code {
        if check_pattern(pattern).is_err() {
            return Code::BadTopic;
        }
        let Some(state) = self.conns.get_mut(conn) else {
            return Code::NotSubscribed;
        };
        if !state.patterns.remove(pattern) {
            return Code::NotSubscribed;
        }
        self.forget(conn, pattern);
        Code::Ok
    }

    /// Forgets a connection's state and subscriptions, not its output.
    fn drop_connection(&mut self, conn: &C) -> bool {
        let Some(state) = self.conns.remove(conn) else {
            return false;
        };
        for pattern in &state.patterns {
            self.forget(conn, pattern);
        }
        true
    }

    /// Removes `conn` from `pattern`'s index entry.
    fn forget(&mut self, conn: &C, pattern: &str) {
        let index = if is_wild(pattern) {
            &mut self.wild
        } else {
            &mut self.exact
        };
        let Some(conns) = index.get_mut(pattern) else {
            return;
        };
        if conns.remove(conn) {
            self.subscriptions -= 1;
        }
        if conns.is_empty() {
            index.remove(pattern);
        }
    }

    fn fan_out(&mut self, topic: &str, data: &[u8]) -> usize {
        let mut to: BTreeSet<&C> = BTreeSet::new();
        if let Some(conns) = self.exact.get(topic) {
            to.extend(conns);
        }
        for (pattern, conns) in &self.wild {
            if pattern_matches(pattern, topic) {
                to.extend(conns);
            }
        }
        if to.is_empty() {
            return 0;
        }
        let mut frame = Vec::new();
        // The topic was checked, so it fits; the data fitted its frame.
        let event = Frame::Event { topic, data };
        if event.encode(&mut frame).is_err() {
            return 0;
        }
        let count = to.len();
        for conn in to {
            self.out
                .entry(conn.clone())
                .or_default()
                .extend_from_slice(&frame);
        }
        count
    }

    fn reply(&mut self, conn: &C, op: Op, code: Code, subject: &str) {
        let out = self.out.entry(conn.clone()).or_default();
        // The subject came in a frame, so it fits in one.
        let _ = Frame::Reply { op, code, subject }.encode(out);
    }
}

// --- the client ------------------------------------------------------------

/// What a client receives from a broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// An event matching one of the client's subscriptions.
    Event {
        /// The topic it was published on.
        topic: String,
        /// Its data.
        data: Vec<u8>,
    },
    /// The outcome of a request, in the order the requests were sent.
    Reply {
        /// The request answered.
        op: Op,
        /// Its outcome.
        code: Code,
        /// The request's pattern or topic.
        subject: String,
    },
}

/// Decodes what a broker sends, incrementally: the client side of an event
/// stream connection (requests are written with the `encode_*` functions).
#[derive(Clone, Debug)]
pub struct ClientDecoder {
    frames: FrameReader,
    incoming: VecDeque<Incoming>,
    failed: Option<Error>,
}

impl Default for ClientDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl ClientDecoder {
    /// A decoder accepting frames up to `max_frame` bytes: at least the
    /// broker's limit.
    pub fn new(max_frame: u32) -> Self {
        ClientDecoder {
            frames: FrameReader::new(max_frame),
            incoming: VecDeque::new(),
            failed: None,
        }
    }

    /// Takes the next chunk of the stream. On error close it: every later
    /// call returns the same error.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut input = bytes;
        loop {
            let result = match self.frames.read(&mut input) {
                Ok(None) => return Ok(()),
                Ok(Some(Item::Frame(frame))) => self.on_frame(&frame),
                Ok(Some(Item::Skipped { len, .. })) => Err(Error::Frame(FrameError::TooLarge {
                    len: len.into(),
                    max: self.frames.max_len().into(),
                })),
                Err(e) => Err(Error::Frame(e)),
            };
            if let Err(e) = result {
                self.failed = Some(e);
                return Err(e);
            }
        }
    }

    /// The next event or reply.
    pub fn poll(&mut self) -> Option<Incoming> {
        self.incoming.pop_front()
    }

    /// Call when the stream ends: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), Error> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.frames.in_frame() {
            return Err(Error::EndedMidFrame);
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: &[u8]) -> Result<(), Error> {
        let incoming = match Frame::decode(frame).map_err(Error::Malformed)? {
            Frame::Event { topic, data } => {
                check_topic(topic).map_err(Error::BadTopic)?;
                Incoming::Event {
                    topic: topic.to_string(),
                    data: data.to_vec(),
                }
            }
            Frame::Reply { op, code, subject } => Incoming::Reply {
                op,
                code,
                subject: subject.to_string(),
            },
            Frame::Subscribe { .. } => return Err(Error::Unexpected(KIND_SUBSCRIBE)),
            Frame::Unsubscribe { .. } => return Err(Error::Unexpected(KIND_UNSUBSCRIBE)),
            Frame::Publish { .. } => return Err(Error::Unexpected(KIND_PUBLISH)),
        };
        self.incoming.push_back(incoming);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn wildcard_table() {
        let table: [(&str, &str, bool); 24] = [
            ("a", "a", true),
            ("a", "b", false),
            ("a", "a.b", false),
            ("a.b", "a", false),
            ("a.b", "a.b", true),
            ("A.b", "a.b", false),
            ("*", "a", true),
            ("*", "a.b.c", true),
            ("a.*", "a", false),
            ("a.*", "a.b", true),
            ("a.*", "a.b.c", true),
            ("a.*", "ab.c", false),
            ("a.*", "b.a", false),
            ("*.b", "a.b", true),
            ("*.b", "a.b.b", false),
            ("*.b", "b", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.c", false),
            ("a.*.c", "a.b.b.c", false),
            ("a.*.c", "a.b.c.d", false),
            ("a.*.*", "a.b", false),
            ("a.*.*", "a.b.c", true),
            ("a.*.*", "a.b.c.d", true),
            ("*.*", "a", false),
        ];
        for (pattern, topic, want) in table {
            assert_eq!(check_pattern(pattern), Ok(()), "{pattern}");
            assert_eq!(check_topic(topic), Ok(()), "{topic}");
            assert_eq!(pattern_matches(pattern, topic), want, "{pattern} ~ {topic}");
        }
    }

    #[test]
    fn topic_and_pattern_rules() {
        let max = "a".repeat(MAX_TOPIC_LEN);
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        for good in [
            "a",
            "agent.status",
            "x-1.y_2.z:3/4",
            "~!@#$%^&()",
            max.as_str(),
        ] {
            assert_eq!(check_topic(good), Ok(()), "{good}");
            assert_eq!(check_pattern(good), Ok(()), "{good}");
        }
        use TopicError::*;
        let bad: [(&str, TopicError); 11] = [
            ("", Empty),
            (&long, TooLong),
            (".a", EmptySegment),
            ("a.", EmptySegment),
            ("a..b", EmptySegment),
            ("a b", BadChar(' ')),
            ("a\tb", BadChar('\t')),
            ("é", BadChar('é')),
            ("a\0", BadChar('\0')),
            ("a*", BadWildcard),
            ("a.**", BadWildcard),
        ];
        for (s, want) in bad {
            assert_eq!(check_topic(s), Err(want), "{s:?}");
            assert_eq!(check_pattern(s), Err(want), "{s:?}");
        }
        for wild in ["*", "a.*", "*.a", "a.*.b", "*.*"] {
            assert_eq!(check_pattern(wild), Ok(()));
            assert_eq!(check_topic(wild), Err(BadWildcard));
        }
    }

    fn sample_frames() -> Vec<Frame<'static>> {
        vec![
            Frame::Subscribe { pattern: "a.*" },
            Frame::Unsubscribe { pattern: "a.b" },
            Frame::Publish {
                topic: "a.b",
                data: b"payload",
            },
            Frame::Publish {
                topic: "t",
                data: b"",
            },
            Frame::Event {
                topic: "a.b",
                data: &[0, 0xFF],
            },
            Frame::Reply {
                op: Op::Subscribe,
                code: Code::TooManySubscriptions,
                subject: "x.*",
            },
            Frame::Reply {
                op: Op::Publish,
                code: Code::Other(77),
                subject: "",
            },
        ]
    }

    #[test]
    fn every_frame_round_trips_and_every_cut_fails() {
        for f in sample_frames() {
            let mut out = Vec::new();
            f.encode(&mut out).unwrap();
            assert_eq!(out[..4], ((out.len() - 4) as u32).to_be_bytes());
            let payload = &out[4..];
            assert_eq!(Frame::decode(payload), Ok(f));
            // Cutting into the data of an event leaves a shorter event;
            // every cut before the data must fail.
            let data_len = match f {
                Frame::Publish { data, .. } | Frame::Event { data, .. } => data.len(),
                _ => 0,
            };
            for cut in 0..payload.len() - data_len {
                assert!(Frame::decode(&payload[..cut]).is_err(), "{f:?} cut {cut}");
            }
        }
    }

    #[test]
    fn known_bytes() {
        let mut out = Vec::new();
        encode_subscribe(&mut out, "a.*").unwrap();
        encode_publish(&mut out, "a.b", b"hi").unwrap();
        assert_eq!(
            out,
            [
                0,
                0,
                0,
                5,
                KIND_SUBSCRIBE,
                3,
                b'a',
                b'.',
                b'*', //
                0,
                0,
                0,
                7,
                KIND_PUBLISH,
                3,
                b'a',
                b'.',
                b'b',
                b'h',
                b'i',
            ]
        );
    }

    #[test]
    fn decode_errors() {
        let cases: [(&[u8], DecodeError); 7] = [
            (&[], DecodeError::Truncated(F_KIND)),
            (&[0x7E], DecodeError::UnknownKind(0x7E)),
            (
                &[KIND_SUBSCRIBE, 2, b'a'],
                DecodeError::Truncated(F_PATTERN),
            ),
            (&[KIND_SUBSCRIBE, 1, b'a', 0], DecodeError::TrailingBytes),
            (&[KIND_PUBLISH, 1, 0xFF], DecodeError::BadValue(F_TOPIC)),
            (&[KIND_REPLY, 9, 0, 0], DecodeError::BadValue(F_OP)),
            (&[KIND_REPLY, 1, 0], DecodeError::Truncated(F_SUBJECT)),
        ];
        for (payload, want) in cases {
            assert_eq!(Frame::decode(payload), Err(want), "{payload:?}");
        }
    }

    #[test]
    fn encoders_check_the_rules() {
        let mut out = Vec::new();
        assert_eq!(
            encode_subscribe(&mut out, "a*"),
            Err(EncodeError::BadTopic(TopicError::BadWildcard))
        );
        assert_eq!(
            encode_unsubscribe(&mut out, ""),
            Err(EncodeError::BadTopic(TopicError::Empty))
        );
        assert_eq!(
            encode_publish(&mut out, "a.*", b""),
            Err(EncodeError::BadTopic(TopicError::BadWildcard))
        );
        let long = "a".repeat(256);
        assert_eq!(
            Frame::Event {
                topic: &long,
                data: b""
            }
            .encode(&mut out),
            Err(EncodeError::BadTopic(TopicError::TooLong))
        );
        assert!(out.is_empty());
    }

    // --- broker ----------------------------------------------------------

    fn request(f: Frame<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        f.encode(&mut out).unwrap();
        out
    }

    fn subscribe(p: &str) -> Vec<u8> {
        request(Frame::Subscribe { pattern: p })
    }

    fn unsubscribe(p: &str) -> Vec<u8> {
        request(Frame::Unsubscribe { pattern: p })
    }

    fn publish(topic: &str, data: &[u8]) -> Vec<u8> {
        request(Frame::Publish { topic, data })
    }

    /// Everything waiting, decoded per connection.
    fn drain(b: &mut Broker<u64>) -> BTreeMap<u64, Vec<Incoming>> {
        let mut seen = BTreeMap::new();
        while let Some((conn, bytes)) = b.poll_transmit() {
            let mut client = ClientDecoder::default();
            client.on_bytes(&bytes).unwrap();
            assert_eq!(client.finish(), Ok(()));
            let list: &mut Vec<Incoming> = seen.entry(conn).or_default();
            while let Some(item) = client.poll() {
                list.push(item);
            }
        }
        seen
    }

    fn event(topic: &str, data: &[u8]) -> Incoming {
        Incoming::Event {
            topic: topic.into(),
            data: data.to_vec(),
        }
    }

    fn reply(op: Op, code: Code, subject: &str) -> Incoming {
        Incoming::Reply {
            op,
            code,
            subject: subject.into(),
        }
    }

    fn broker(conns: &[u64]) -> Broker<u64> {
        let mut b = Broker::new(BrokerConfig::default());
        for &c in conns {
            b.connect(c).unwrap();
        }
        b
    }

    #[test]
    fn fan_out_to_exact_and_wildcard_subscribers() {
        let mut b = broker(&[1, 2, 3, 4]);
        b.on_bytes(1, &subscribe("sensors.temp")).unwrap();
        b.on_bytes(2, &subscribe("sensors.temp")).unwrap();
        b.on_bytes(3, &subscribe("sensors.*")).unwrap();
        let subscribed = drain(&mut b);
        assert_eq!(
            subscribed[&3],
            [reply(Op::Subscribe, Code::Ok, "sensors.*")]
        );
        assert_eq!(b.subscriptions(), 3);

        b.on_bytes(4, &publish("sensors.temp", b"21.5")).unwrap();
        let got = drain(&mut b);
        let want = vec![event("sensors.temp", b"21.5")];
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        for conn in [1, 2, 3] {
            assert_eq!(got[&conn], want);
        }

        b.on_bytes(4, &publish("sensors.wind.gust", b"9")).unwrap();
        let got = drain(&mut b);
        assert_eq!(got.len(), 1);
        assert_eq!(got[&3], [event("sensors.wind.gust", b"9")]);

        b.on_bytes(4, &publish("other", b"")).unwrap();
        assert!(drain(&mut b).is_empty());
        assert_eq!(b.publish("sensors.x", b"local"), Ok(1));
        assert_eq!(drain(&mut b)[&3], [event("sensors.x", b"local")]);
    }

    #[test]
    fn publisher_gets_its_own_event_once() {
        let mut b = broker(&[1]);
        let mut input = subscribe("a.*");
        input.extend(subscribe("a.b"));
        input.extend(subscribe("*"));
        input.extend(publish("a.b", b"x"));
        b.on_bytes(1, &input).unwrap();
        assert_eq!(
            drain(&mut b)[&1],
            [
                reply(Op::Subscribe, Code::Ok, "a.*"),
                reply(Op::Subscribe, Code::Ok, "a.b"),
                reply(Op::Subscribe, Code::Ok, "*"),
                event("a.b", b"x"),
            ]
        );
    }

    #[test]
    fn unsubscribe_and_disconnect_stop_delivery() {
        let mut b = broker(&[1, 2, 3]);
        b.on_bytes(1, &subscribe("a")).unwrap();
        b.on_bytes(1, &subscribe("b")).unwrap();
        b.on_bytes(2, &subscribe("*")).unwrap();
        drain(&mut b);

        b.on_bytes(1, &unsubscribe("a")).unwrap();
        b.on_bytes(1, &unsubscribe("a")).unwrap();
        b.on_bytes(1, &unsubscribe("a.*")).unwrap();
        b.on_bytes(1, &unsubscribe("a*")).unwrap();
        assert_eq!(
            drain(&mut b)[&1],
            [
                reply(Op::Unsubscribe, Code::Ok, "a"),
                reply(Op::Unsubscribe, Code::NotSubscribed, "a"),
                reply(Op::Unsubscribe, Code::NotSubscribed, "a.*"),
                reply(Op::Unsubscribe, Code::BadTopic, "a*"),
            ]
        );
        assert_eq!(b.patterns(&1).collect::<Vec<_>>(), ["b"]);
        b.on_bytes(3, &publish("a", b"1")).unwrap();
        assert_eq!(drain(&mut b).keys().copied().collect::<Vec<_>>(), [2]);

        // Output not yet taken goes with the connection.
        b.on_bytes(3, &publish("b", b"2")).unwrap();
        assert!(b.disconnect(2));
        assert!(!b.disconnect(2));
        assert_eq!(drain(&mut b).keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(b.subscriptions(), 1);
        b.on_bytes(3, &publish("zzz", b"3")).unwrap();
        assert!(drain(&mut b).is_empty());
        assert!(b.disconnect(1));
        assert_eq!((b.subscriptions(), b.connections()), (0, 1));
        assert!(b.exact.is_empty() && b.wild.is_empty());
        assert_eq!(
            b.on_bytes(2, &publish("a", b"")),
            Err(Error::UnknownConnection)
        );
    }

    #[test]
    fn subscription_limits() {
        let mut b = Broker::new(BrokerConfig {
            max_subscriptions_per_connection: 2,
            max_subscriptions: 3,
            ..BrokerConfig::default()
        });
        b.connect(1u64).unwrap();
        b.connect(2).unwrap();
        for p in ["a", "b", "b", "c"] {
            b.on_bytes(1, &subscribe(p)).unwrap();
        }
        for p in ["d", "e"] {
            b.on_bytes(2, &subscribe(p)).unwrap();
        }
        let got = drain(&mut b);
        assert_eq!(
            got[&1],
            [
                reply(Op::Subscribe, Code::Ok, "a"),
                reply(Op::Subscribe, Code::Ok, "b"),
                reply(Op::Subscribe, Code::Ok, "b"),
                reply(Op::Subscribe, Code::TooManySubscriptions, "c"),
            ]
        );
        assert_eq!(
            got[&2],
            [
                reply(Op::Subscribe, Code::Ok, "d"),
                reply(Op::Subscribe, Code::BrokerFull, "e"),
            ]
        );
        assert_eq!(b.subscriptions(), 3);
        // Freeing one makes room again.
        b.on_bytes(1, &unsubscribe("a")).unwrap();
        b.on_bytes(2, &subscribe("e")).unwrap();
        assert_eq!(drain(&mut b)[&2], [reply(Op::Subscribe, Code::Ok, "e")]);
    }

    #[test]
    fn bad_topics_are_answered_not_fatal() {
        let mut b = broker(&[1]);
        let mut input = subscribe("a b");
        input.extend(publish("a.*", b"x"));
        input.extend(publish("", b"x"));
        input.extend(subscribe("ok"));
        b.on_bytes(1, &input).unwrap();
        assert_eq!(
            drain(&mut b)[&1],
            [
                reply(Op::Subscribe, Code::BadTopic, "a b"),
                reply(Op::Publish, Code::BadTopic, "a.*"),
                reply(Op::Publish, Code::BadTopic, ""),
                reply(Op::Subscribe, Code::Ok, "ok"),
            ]
        );
        assert_eq!(
            b.publish("a.*", b""),
            Err(EncodeError::BadTopic(TopicError::BadWildcard))
        );
    }

    #[test]
    fn protocol_errors_drop_the_connection() {
        let over = BrokerConfig::default().max_frame + 1;
        let cases: [(Vec<u8>, Error); 4] = [
            (
                vec![0, 0, 0, 1, 0x55],
                Error::Malformed(DecodeError::UnknownKind(0x55)),
            ),
            (
                request(Frame::Event {
                    topic: "a",
                    data: b"",
                }),
                Error::Unexpected(KIND_EVENT),
            ),
            (
                request(Frame::Reply {
                    op: Op::Publish,
                    code: Code::Ok,
                    subject: "a",
                }),
                Error::Unexpected(KIND_REPLY),
            ),
            (
                over.to_be_bytes().to_vec(),
                Error::Frame(FrameError::TooLarge {
                    len: over.into(),
                    max: over as u64 - 1,
                }),
            ),
        ];
        for (bad, want) in cases {
            let mut b = broker(&[1, 2]);
            b.on_bytes(2, &subscribe("*")).unwrap();
            drain(&mut b);
            let mut input = subscribe("mine");
            input.extend(publish("t", b"before"));
            input.extend(bad);
            input.extend(publish("t", b"after"));
            assert_eq!(b.on_bytes(1, &input), Err(want));
            assert_eq!(b.connections(), 1);
            assert_eq!(b.subscriptions(), 1);
            // What came before the error still goes out, to everyone.
            let got = drain(&mut b);
            assert_eq!(got[&1], [reply(Op::Subscribe, Code::Ok, "mine")]);
            assert_eq!(got[&2], [event("t", b"before")]);
            assert_eq!(got.len(), 2);
            assert_eq!(b.on_bytes(1, b""), Err(Error::UnknownConnection));
        }
    }

    #[test]
    fn connections_are_explicit() {
        let mut b = broker(&[1]);
        assert_eq!(b.connect(1), Err(Error::AlreadyConnected));
        assert_eq!(
            b.on_bytes(9, &subscribe("a")),
            Err(Error::UnknownConnection)
        );
        assert_eq!(b.connections(), 1);
    }

    #[test]
    fn local_publish_respects_the_frame_limit() {
        let mut b = Broker::new(BrokerConfig {
            max_frame: 10,
            ..BrokerConfig::default()
        });
        b.connect(1u64).unwrap();
        b.on_bytes(1, &subscribe("*")).unwrap();
        drain(&mut b);
        // kind + length + "ab" + 6 bytes = 10.
        assert_eq!(b.publish("ab", &[0; 6]), Ok(1));
        assert_eq!(b.publish("ab", &[0; 7]), Err(EncodeError::TooLarge));
    }

    /// Deterministic chunk sizes, as in the data exchange tests.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Two connections' scripted input, interleaved in chunks; returns what
    /// each connection received.
    fn run_chunked(
        inputs: &[(u64, Vec<u8>)],
        mut size: impl FnMut() -> usize,
    ) -> BTreeMap<u64, Vec<u8>> {
        let mut b = broker(&[1, 2, 3]);
        let mut out: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        for (conn, bytes) in inputs {
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (chunk, tail) = rest.split_at(size().clamp(1, rest.len()));
                rest = tail;
                b.on_bytes(*conn, chunk).unwrap();
                while let Some((c, bytes)) = b.poll_transmit() {
                    out.entry(c).or_default().extend(bytes);
                }
            }
        }
        out
    }

    #[test]
    fn chunking_does_not_change_the_outcome() {
        let mut one = subscribe("x.*");
        one.extend(subscribe("bad pattern"));
        let mut two = subscribe("x.y");
        two.extend(publish("x.y", &[5; 100]));
        let mut three = publish("x.z", b"z");
        three.extend(unsubscribe("nothing"));
        three.extend(publish("x.y", b""));
        let inputs = [(1, one), (2, two), (3, three)];
        let whole = run_chunked(&inputs, || usize::MAX);
        assert_eq!(whole.len(), 3);
        assert_eq!(run_chunked(&inputs, || 1), whole);
        let mut rng = Rng(0xE7E7_0000_0000_1002);
        for _ in 0..20 {
            let max = 1 + rng.below(40);
            assert_eq!(run_chunked(&inputs, || 1 + rng.below(max)), whole);
        }
        // And the client decodes them in any chunks too.
        for (_, bytes) in whole {
            let mut whole_client = ClientDecoder::default();
            whole_client.on_bytes(&bytes).unwrap();
            let mut bytewise = ClientDecoder::default();
            for b in &bytes {
                bytewise.on_bytes(core::slice::from_ref(b)).unwrap();
            }
            while let Some(item) = whole_client.poll() {
                assert_eq!(bytewise.poll(), Some(item));
            }
            assert_eq!(bytewise.poll(), None);
        }
    }

    #[test]
    fn client_decoder_errors() {
        let cases: [(Vec<u8>, Error); 4] = [
            (subscribe("a"), Error::Unexpected(KIND_SUBSCRIBE)),
            (publish("a", b""), Error::Unexpected(KIND_PUBLISH)),
            (
                request(Frame::Event {
                    topic: "a..b",
                    data: b"",
                }),
                Error::BadTopic(TopicError::EmptySegment),
            ),
            (
                vec![0, 0, 0, 2, KIND_EVENT, 5],
                Error::Malformed(DecodeError::Truncated(F_TOPIC)),
            ),
        ];
        for (bytes, want) in cases {
            let mut c = ClientDecoder::default();
            assert_eq!(c.on_bytes(&bytes), Err(want));
            assert_eq!(c.on_bytes(b""), Err(want));
            assert_eq!(c.finish(), Err(want));
        }
        let mut c = ClientDecoder::new(4);
        assert_eq!(
            c.on_bytes(&[0, 0, 0, 5]),
            Err(Error::Frame(FrameError::TooLarge { len: 5, max: 4 }))
        );
        let mut c = ClientDecoder::default();
        c.on_bytes(&[0, 0]).unwrap();
        assert_eq!(c.finish(), Err(Error::EndedMidFrame));
    }

    #[test]
    fn broker_works_with_any_ordered_connection_id() {
        let mut b: Broker<(u8, &str)> = Broker::new(BrokerConfig::default());
        b.connect((1, "alice")).unwrap();
        b.on_bytes((1, "alice"), &subscribe("*")).unwrap();
        assert_eq!(b.publish("hi", b""), Ok(1));
        assert_eq!(b.poll_transmit().map(|(c, _)| c), Some((1, "alice")));
    }

    #[test]
    fn codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(Code::from_u8(c).to_u8(), c);
            if let Some(op) = Op::from_u8(c) {
                assert_eq!(op.to_u8(), c);
            }
        }
    }
}
