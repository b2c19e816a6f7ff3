//! Data exchange (port 1001): typed messages and files, each acknowledged.
//!
//! The sender writes message frames, each with an id it chose; the receiver
//! answers every message frame with an ack frame carrying that id and a
//! [`Status`]. Acks may be read while later messages are still being sent;
//! the sender matches them by id ([`Sender`]), never by order.
//!
//! A refused message (too large, over quota, bad file name, bad payload,
//! malformed body, unknown kind) costs only its ack: framing keeps the
//! stream in step, so the connection carries on. Only a stream that cannot
//! be followed any more (a frame without kind and id, an ack sent to the
//! receiver) is a [`ProtocolError`], after which the caller closes it.
//!
//! Wire format: `docs/PROTOCOL.md` §10.2.

use alloc::collections::{BTreeSet, VecDeque};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use super::framing::{put_len, FrameError, FrameReader, Item};
use super::json::{self, JsonError};
use crate::codec::{DecodeError, Reader};

/// Message kind: UTF-8 text.
pub const KIND_TEXT: u8 = 0x01;
/// Message kind: a JSON text.
pub const KIND_JSON: u8 = 0x02;
/// Message kind: opaque bytes.
pub const KIND_BINARY: u8 = 0x03;
/// Message kind: a named file.
pub const KIND_FILE: u8 = 0x04;
/// Receiver to sender: acknowledgement.
pub const KIND_ACK: u8 = 0x80;

/// Bytes before the body of every frame: kind `u8` and id `u32`.
pub const HEADER_LEN: usize = 5;
/// The longest file name, in bytes of UTF-8.
pub const MAX_FILE_NAME: usize = 255;
/// The default limit on a message's data, in bytes.
pub const DEFAULT_MAX_MESSAGE: u32 = 16 * 1024 * 1024;
/// The default budget of one connection: what a node accepts from a peer
/// that it has no better figure for.
pub const DEFAULT_QUOTA: Budget = Budget {
    bytes: 256 * 1024 * 1024,
    messages: 65_536,
};

/// Frame bytes beyond the data: header, name length, longest name.
const MAX_OVERHEAD: u32 = (HEADER_LEN + 1 + MAX_FILE_NAME) as u32;
/// Ack payloads are 6 bytes; the slack lets a malformed ack reach the
/// decoder (and be named as such) instead of failing the framing.
const MAX_ACK_FRAME: u32 = 64;

const F_KIND: &str = "kind";
const F_ID: &str = "id";
const F_NAME: &str = "file name";
const F_TEXT: &str = "text";
const F_JSON: &str = "json";
const F_STATUS: &str = "status";

/// What a message holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// UTF-8 text.
    Text,
    /// A JSON text (UTF-8, syntactically valid).
    Json,
    /// Opaque bytes.
    Binary,
    /// A file with a name.
    File,
}

impl Kind {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Kind::Text => KIND_TEXT,
            Kind::Json => KIND_JSON,
            Kind::Binary => KIND_BINARY,
            Kind::File => KIND_FILE,
        }
    }

    /// From the wire value; `None` for acks and kinds this version lacks.
    pub fn from_u8(k: u8) -> Option<Self> {
        match k {
            KIND_TEXT => Some(Kind::Text),
            KIND_JSON => Some(Kind::Json),
            KIND_BINARY => Some(Kind::Binary),
            KIND_FILE => Some(Kind::File),
            _ => None,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Text => "text",
            Kind::Json => "json",
            Kind::Binary => "binary",
            Kind::File => "file",
        })
    }
}

/// One message, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// UTF-8 text.
    Text(&'a str),
    /// A JSON text.
    Json(&'a str),
    /// Opaque bytes.
    Binary(&'a [u8]),
    /// A named file.
    File {
        /// The file's name: one safe path component ([`safe_file_name`]).
        name: &'a str,
        /// Its contents.
        data: &'a [u8],
    },
}

impl<'a> Message<'a> {
    /// Its kind.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Text(_) => Kind::Text,
            Message::Json(_) => Kind::Json,
            Message::Binary(_) => Kind::Binary,
            Message::File { .. } => Kind::File,
        }
    }

    /// The file name, for files.
    pub fn name(&self) -> Option<&'a str> {
        match self {
            Message::File { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The data (text and JSON as their UTF-8 bytes).
    pub fn data(&self) -> &'a [u8] {
        match self {
            Message::Text(s) | Message::Json(s) => s.as_bytes(),
            Message::Binary(data) | Message::File { data, .. } => data,
        }
    }
}

/// How a receiver answered a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Accepted and handed to the application.
    Ok,
    /// The data exceeds the receiver's message limit.
    TooLarge,
    /// The connection's byte or message budget is spent.
    QuotaExceeded,
    /// The file name is not one safe path component.
    BadName,
    /// Text that is not UTF-8, or JSON that does not parse.
    BadPayload,
    /// The body does not follow the layout of its kind.
    Malformed,
    /// A kind the receiver does not know.
    Unsupported,
    /// A status this version does not know.
    Other(u8),
}

impl Status {
    /// The wire value.
    pub fn to_u8(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::TooLarge => 1,
            Status::QuotaExceeded => 2,
            Status::BadName => 3,
            Status::BadPayload => 4,
            Status::Malformed => 5,
            Status::Unsupported => 6,
            Status::Other(c) => c,
        }
    }

    /// From the wire value.
    pub fn from_u8(c: u8) -> Self {
        match c {
            0 => Status::Ok,
            1 => Status::TooLarge,
            2 => Status::QuotaExceeded,
            3 => Status::BadName,
            4 => Status::BadPayload,
            5 => Status::Malformed,
            6 => Status::Unsupported,
            c => Status::Other(c),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Ok => f.write_str("ok"),
            Status::TooLarge => f.write_str("too large"),
            Status::QuotaExceeded => f.write_str("quota exceeded"),
            Status::BadName => f.write_str("bad file name"),
            Status::BadPayload => f.write_str("bad payload"),
            Status::Malformed => f.write_str("malformed"),
            Status::Unsupported => f.write_str("unsupported kind"),
            Status::Other(c) => write!(f, "status {c}"),
        }
    }
}

/// An acknowledgement: the receiver's answer to message `id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// The message's id.
    pub id: u32,
    /// The answer.
    pub status: Status,
}

/// One decoded frame payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Sender to receiver.
    Message {
        /// Chosen by the sender, echoed in the ack.
        id: u32,
        /// The content.
        message: Message<'a>,
    },
    /// Receiver to sender.
    Ack(Ack),
}

impl<'a> Frame<'a> {
    /// Decodes a frame payload (without its length prefix). Checks the
    /// layout and the encodings (text and names UTF-8, JSON parses), not the
    /// receiver's policy (limits, quota, name safety). Never panics.
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let kind = r.u8(F_KIND)?;
        let id = r.u32(F_ID)?;
        if kind == KIND_ACK {
            let status = Status::from_u8(r.u8(F_STATUS)?);
            r.finish()?;
            return Ok(Frame::Ack(Ack { id, status }));
        }
        let Some(kind) = Kind::from_u8(kind) else {
            return Err(DecodeError::UnknownKind(kind));
        };
        let (name, data) = body(kind, &mut r)?;
        let message = match kind {
            Kind::Text => Message::Text(utf8(data, F_TEXT)?),
            Kind::Json => {
                let text = utf8(data, F_JSON)?;
                if json::validate(text).is_err() {
                    return Err(DecodeError::BadValue(F_JSON));
                }
                Message::Json(text)
            }
            Kind::Binary => Message::Binary(data),
            Kind::File => Message::File {
                name: utf8(name.unwrap_or_default(), F_NAME)?,
                data,
            },
        };
        Ok(Frame::Message { id, message })
    }

    /// Appends this frame, length prefix included. Checks only what the
    /// layout needs (a name of at most 255 bytes, a length that fits `u32`);
    /// [`encode_message`] adds the checks a receiver would make.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let (kind, id, name, data) = match self {
            Frame::Ack(ack) => {
                put_len(out, HEADER_LEN + 1)?;
                out.push(KIND_ACK);
                out.extend_from_slice(&ack.id.to_be_bytes());
                out.push(ack.status.to_u8());
                return Ok(());
            }
            Frame::Message { id, message } => (message.kind(), *id, message.name(), message.data()),
        };
        let name_len = match name {
            Some(name) if name.len() > MAX_FILE_NAME => {
                return Err(EncodeError::BadName(NameError::TooLong))
            }
            Some(name) => 1 + name.len(),
            None => 0,
        };
        put_len(
            out,
            HEADER_LEN
                .saturating_add(name_len)
                .saturating_add(data.len()),
        )?;
        out.push(kind.to_u8());
        out.extend_from_slice(&id.to_be_bytes());
        if let Some(name) = name {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(data);
        Ok(())
    }
}

/// The name bytes (files only) and the data of a message body.
fn body<'a>(kind: Kind, r: &mut Reader<'a>) -> Result<(Option<&'a [u8]>, &'a [u8]), DecodeError> {
    let name = match kind {
        Kind::File => {
            let len = r.u8(F_NAME)?;
            Some(r.bytes(len.into(), F_NAME)?)
        }
        _ => None,
    };
    Ok((name, r.rest()))
}

fn utf8<'a>(bytes: &'a [u8], field: &'static str) -> Result<&'a str, DecodeError> {
    core::str::from_utf8(bytes).map_err(|_| DecodeError::BadValue(field))
}

/// Why a message could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame would not fit a `u32` length.
    TooLarge,
    /// The file name is unsafe or too long.
    BadName(NameError),
    /// The JSON text does not parse.
    BadJson(JsonError),
    /// The id is still waiting for its ack.
    IdInUse(u32),
}

impl From<FrameError> for EncodeError {
    fn from(_: FrameError) -> Self {
        EncodeError::TooLarge
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge => f.write_str("message too large for a frame"),
            EncodeError::BadName(e) => write!(f, "bad file name: {e}"),
            EncodeError::BadJson(e) => e.fmt(f),
            EncodeError::IdInUse(id) => write!(f, "message id {id} is still awaiting its ack"),
        }
    }
}

/// Appends a message frame after the checks the receiver will make of its
/// content: a safe file name and, for JSON, valid syntax. Nothing is
/// appended on error.
pub fn encode_message(
    out: &mut Vec<u8>,
    id: u32,
    message: &Message<'_>,
) -> Result<(), EncodeError> {
    match message {
        Message::File { name, .. } => {
            safe_file_name(name).map_err(EncodeError::BadName)?;
        }
        Message::Json(text) => json::validate(text).map_err(EncodeError::BadJson)?,
        Message::Text(_) | Message::Binary(_) => {}
    }
    Frame::Message {
        id,
        message: *message,
    }
    .encode(out)
}

/// Appends a text message frame.
pub fn encode_text(out: &mut Vec<u8>, id: u32, text: &str) -> Result<(), EncodeError> {
    encode_message(out, id, &Message::Text(text))
}

/// Appends a JSON message frame, after checking that `json` parses.
pub fn encode_json(out: &mut Vec<u8>, id: u32, json: &str) -> Result<(), EncodeError> {
    encode_message(out, id, &Message::Json(json))
}

/// Appends a binary message frame.
pub fn encode_binary(out: &mut Vec<u8>, id: u32, data: &[u8]) -> Result<(), EncodeError> {
    encode_message(out, id, &Message::Binary(data))
}

/// Appends a file frame, after checking that `name` is safe.
pub fn encode_file(out: &mut Vec<u8>, id: u32, name: &str, data: &[u8]) -> Result<(), EncodeError> {
    encode_message(out, id, &Message::File { name, data })
}

/// Appends an ack frame.
pub fn encode_ack(out: &mut Vec<u8>, ack: Ack) {
    // An ack always fits: the error arm of `encode` cannot happen.
    let _ = Frame::Ack(ack).encode(out);
}

// --- file names ------------------------------------------------------------

/// Why a file name is not safe to create in a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    Empty,
    /// More than [`MAX_FILE_NAME`] bytes.
    TooLong,
    /// `.` or `..`.
    DotName,
    /// Starts with `.`: a hidden file, or a dotfile such as `.bashrc`.
    LeadingDot,
    /// A character that is a path separator, a control character, reserved
    /// on Windows (`<>:"|?*`), or that reorders or breaks displayed text.
    BadChar(char),
    /// Starts with a space, or ends with a space or a dot (Windows drops
    /// those, so the name on disk would differ from the name checked).
    BadEdge,
    /// A Windows device name (`CON`, `nul.txt`, `COM1`...).
    Reserved,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => f.write_str("empty file name"),
            NameError::TooLong => write!(f, "file name longer than {MAX_FILE_NAME} bytes"),
            NameError::DotName => f.write_str("file name is `.` or `..`"),
            NameError::LeadingDot => f.write_str("file name starts with `.`"),
            NameError::BadChar(c) => write!(f, "file name holds forbidden character {c:?}"),
            NameError::BadEdge => {
                f.write_str("file name starts with a space or ends with a space or dot")
            }
            NameError::Reserved => f.write_str("file name is a reserved device name"),
        }
    }
}

/// Returns `name` if it is one safe path component to create inside a
/// directory of received files, on any OS; the daemon calls this before
/// it writes anything.
///
/// Refused: empty or over 255 bytes; `.`, `..` and any leading `.`; `/`,
/// `\`, control characters (C0, DEL, C1), the Windows-reserved `<>:"|?*`
/// (`:` also opens NTFS alternate streams), bidirectional controls (which
/// can disguise an extension) and U+2028/U+2029; a leading space or a
/// trailing space or dot; Windows device names (`CON`, `PRN`, `AUX`, `NUL`,
/// `COM0`–`COM9`, `LPT0`–`LPT9`, `COM¹²³`, `LPT¹²³`, `CONIN$`, `CONOUT$`) in
/// any case, with or without an extension. The name is not normalised or
/// rewritten: what is accepted is what gets created.
pub fn safe_file_name(name: &str) -> Result<&str, NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_FILE_NAME {
        return Err(NameError::TooLong);
    }
    if name == "." || name == ".." {
        return Err(NameError::DotName);
    }
    if name.starts_with('.') {
        return Err(NameError::LeadingDot);
    }
    if let Some(c) = name.chars().find(|&c| forbidden_char(c)) {
        return Err(NameError::BadChar(c));
    }
    if name.starts_with(' ') || name.ends_with(' ') || name.ends_with('.') {
        return Err(NameError::BadEdge);
    }
    if windows_device(name) {
        return Err(NameError::Reserved);
    }
    Ok(name)
}

fn forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*'
                | '\u{061C}'
                | '\u{200E}'
                | '\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// Whether Windows would open a device instead of a file: it compares the
/// part before the first dot, trailing spaces ignored, case-insensitively.
fn windows_device(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end_matches(' ');
    const DEVICES: [&str; 6] = ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"];
    if DEVICES.iter().any(|d| stem.eq_ignore_ascii_case(d)) {
        return true;
    }
    let (Some(prefix), Some(rest)) = (stem.get(..3), stem.get(3..)) else {
        return false;
    };
    if !prefix.eq_ignore_ascii_case("COM") && !prefix.eq_ignore_ascii_case("LPT") {
        return false;
    }
    let mut rest = rest.chars();
    match (rest.next(), rest.next()) {
        (Some(c), None) => c.is_ascii_digit() || matches!(c, '¹' | '²' | '³'),
        _ => false,
    }
}

// --- the receiving side ----------------------------------------------------

/// Amounts a connection may deliver (or has delivered): data bytes and
/// messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Budget {
    /// Bytes of message data (file names are not counted; they are bounded
    /// per message, and messages are counted).
    pub bytes: u64,
    /// Messages.
    pub messages: u64,
}

impl Budget {
    /// No limit.
    pub const UNLIMITED: Budget = Budget {
        bytes: u64::MAX,
        messages: u64::MAX,
    };

    /// Nothing.
    pub const ZERO: Budget = Budget {
        bytes: 0,
        messages: 0,
    };
}

/// A receiver's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReceiverConfig {
    /// The largest message data accepted, in bytes. Larger messages are
    /// refused with [`Status::TooLarge`] and skipped without being buffered.
    pub max_message: u32,
    /// What this connection may deliver in total; beyond it messages are
    /// refused with [`Status::QuotaExceeded`]. The node decides it when the
    /// connection opens, from its own per-peer budget or free space, and may
    /// top it up with [`Receiver::add_quota`].
    pub quota: Budget,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_message: DEFAULT_MAX_MESSAGE,
            quota: DEFAULT_QUOTA,
        }
    }
}

/// A message accepted by a [`Receiver`], for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The sender's id for it (already acknowledged).
    pub id: u32,
    /// Its kind.
    pub kind: Kind,
    /// For files, the name, already checked by [`safe_file_name`].
    pub name: Option<String>,
    /// The data; valid UTF-8 for text, valid JSON for JSON.
    pub payload: Vec<u8>,
}

/// Why a data exchange stream cannot go on; the caller closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame over the reader's limit (only acks have a fatal limit).
    Frame(FrameError),
    /// A frame that does not parse far enough to answer.
    Malformed(DecodeError),
    /// A frame of a kind that must not travel in this direction.
    Unexpected(u8),
    /// An ack for an id that was not waiting for one.
    UnknownAck(u32),
    /// The stream ended inside a frame.
    EndedMidFrame,
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Frame(e) => e.fmt(f),
            ProtocolError::Malformed(e) => write!(f, "malformed frame: {e}"),
            ProtocolError::Unexpected(k) => write!(f, "unexpected frame kind 0x{k:02x}"),
            ProtocolError::UnknownAck(id) => write!(f, "ack for unknown message id {id}"),
            ProtocolError::EndedMidFrame => f.write_str("stream ended inside a frame"),
        }
    }
}

/// The receiving side of one data exchange connection.
///
/// Feed it the stream's bytes with [`on_bytes`](Self::on_bytes); then drain
/// [`poll_transmit`](Self::poll_transmit) (acks, to write back) and
/// [`poll_received`](Self::poll_received) (accepted messages). Each message
/// is acknowledged as soon as its last byte arrives: `ok` means the daemon
/// took it, not that an application has read it.
#[derive(Clone, Debug)]
pub struct Receiver {
    max_message: u32,
    frames: FrameReader,
    left: Budget,
    used: Budget,
    refused: u64,
    received: VecDeque<Received>,
    transmit: Vec<u8>,
    failed: Option<ProtocolError>,
}

impl Receiver {
    /// A receiver with these limits.
    pub fn new(config: ReceiverConfig) -> Self {
        let max_frame = config.max_message.saturating_add(MAX_OVERHEAD);
        Receiver {
            max_message: config.max_message,
            // Keeping the kind and id of an oversized frame lets us refuse
            // just that message and stay in step.
            frames: FrameReader::skipping_oversized(max_frame, HEADER_LEN),
            left: config.quota,
            used: Budget::ZERO,
            refused: 0,
            received: VecDeque::new(),
            transmit: Vec::new(),
            failed: None,
        }
    }

    /// Takes the next chunk of the stream. On error the stream is beyond
    /// repair: still drain what the frames before the error produced (those
    /// messages were accepted and acknowledged), then close the stream;
    /// every later call returns the same error.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut input = bytes;
        loop {
            let result = match self.frames.read(&mut input) {
                Ok(None) => return Ok(()),
                Ok(Some(Item::Frame(frame))) => self.on_frame(frame),
                Ok(Some(Item::Skipped { head, .. })) => self.on_oversized(&head),
                Err(e) => Err(ProtocolError::Frame(e)),
            };
            if let Err(e) = result {
                self.failed = Some(e);
                return Err(e);
            }
        }
    }

    /// Call when the stream ends: an error if it ended inside a frame (that
    /// message was neither delivered nor acknowledged).
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.frames.in_frame() {
            return Err(ProtocolError::EndedMidFrame);
        }
        Ok(())
    }

    /// The next accepted message.
    pub fn poll_received(&mut self) -> Option<Received> {
        self.received.pop_front()
    }

    /// Ack bytes to write back to the sender, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.transmit.is_empty() {
            return None;
        }
        Some(core::mem::take(&mut self.transmit))
    }

    /// What this connection may still deliver.
    pub fn quota_left(&self) -> Budget {
        self.left
    }

    /// Raises what this connection may still deliver.
    pub fn add_quota(&mut self, more: Budget) {
        self.left.bytes = self.left.bytes.saturating_add(more.bytes);
        self.left.messages = self.left.messages.saturating_add(more.messages);
    }

    /// What this connection has delivered, for charging the peer.
    pub fn accepted(&self) -> Budget {
        self.used
    }

    /// Messages refused so far (any status but ok).
    pub fn refused(&self) -> u64 {
        self.refused
    }

    fn on_oversized(&mut self, head: &[u8]) -> Result<(), ProtocolError> {
        let (kind, id) = header(head)?;
        if kind == KIND_ACK {
            return Err(ProtocolError::Unexpected(kind));
        }
        self.answer(id, Status::TooLarge);
        Ok(())
    }

    fn on_frame(&mut self, mut frame: Vec<u8>) -> Result<(), ProtocolError> {
        let (kind, id) = header(&frame)?;
        if kind == KIND_ACK {
            return Err(ProtocolError::Unexpected(kind));
        }
        let (kind, name, data_at) = match self.judge(&frame) {
            Ok(accepted) => accepted,
            Err(status) => {
                self.answer(id, status);
                return Ok(());
            }
        };
        let len = (frame.len() - data_at) as u64;
        self.left.bytes -= len;
        self.left.messages -= 1;
        self.used.bytes = self.used.bytes.saturating_add(len);
        self.used.messages = self.used.messages.saturating_add(1);
        // Data is the tail of the frame: drop the header in place rather
        // than copy up to 16 MiB.
        frame.drain(..data_at);
        self.received.push_back(Received {
            id,
            kind,
            name,
            payload: frame,
        });
        self.answer(id, Status::Ok);
        Ok(())
    }

    /// Decides a message frame's fate: its kind, name and where its data
    /// starts, or the status that refuses it. Cheap checks come first, so
    /// an oversized or over-quota message is not scanned.
    fn judge(&self, frame: &[u8]) -> Result<(Kind, Option<String>, usize), Status> {
        let Some(kind) = frame.first().copied().and_then(Kind::from_u8) else {
            return Err(Status::Unsupported);
        };
        let mut r = Reader::new(frame.get(HEADER_LEN..).unwrap_or_default());
        let (name, data) = body(kind, &mut r).map_err(|_| Status::Malformed)?;
        if data.len() > self.max_message as usize {
            return Err(Status::TooLarge);
        }
        if data.len() as u64 > self.left.bytes || self.left.messages == 0 {
            return Err(Status::QuotaExceeded);
        }
        let name = match name {
            None => None,
            Some(raw) => {
                let name = core::str::from_utf8(raw).map_err(|_| Status::BadName)?;
                Some(
                    safe_file_name(name)
                        .map_err(|_| Status::BadName)?
                        .to_string(),
                )
            }
        };
        match kind {
            Kind::Text => {
                core::str::from_utf8(data).map_err(|_| Status::BadPayload)?;
            }
            Kind::Json => {
                let text = core::str::from_utf8(data).map_err(|_| Status::BadPayload)?;
                json::validate(text).map_err(|_| Status::BadPayload)?;
            }
            Kind::Binary | Kind::File => {}
        }
        Ok((kind, name, frame.len() - data.len()))
    }

    fn answer(&mut self, id: u32, status: Status) {
        if status != Status::Ok {
            self.refused += 1;
        }
        encode_ack(&mut self.transmit, Ack { id, status });
    }
}

/// Kind and id: without them there is no one to answer.
fn header(frame: &[u8]) -> Result<(u8, u32), ProtocolError> {
    let mut r = Reader::new(frame);
    let kind = r.u8(F_KIND).map_err(ProtocolError::Malformed)?;
    let id = r.u32(F_ID).map_err(ProtocolError::Malformed)?;
    Ok((kind, id))
}

// --- the sending side ------------------------------------------------------

/// The sending side of one data exchange connection: gives messages ids,
/// encodes them, and matches the acks that come back, so a caller such as
/// `pilotctl send-message` can wait for the answer to its message.
#[derive(Clone, Debug)]
pub struct Sender {
    next_id: u32,
    outstanding: BTreeSet<u32>,
    frames: FrameReader,
    acks: VecDeque<Ack>,
    failed: Option<ProtocolError>,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

impl Sender {
    /// A sender with nothing outstanding; ids start at 1.
    pub fn new() -> Self {
        Sender {
            next_id: 1,
            outstanding: BTreeSet::new(),
            frames: FrameReader::new(MAX_ACK_FRAME),
            acks: VecDeque::new(),
            failed: None,
        }
    }

    /// Appends `message` to `out` under a fresh id, which it returns and
    /// waits for. Nothing is appended on error.
    pub fn send(&mut self, message: &Message<'_>, out: &mut Vec<u8>) -> Result<u32, EncodeError> {
        // Sequential ids, skipping any still outstanding; by pigeonhole one
        // of the next `outstanding + 1` candidates is free.
        let mut id = self.next_id;
        for _ in 0..=self.outstanding.len() {
            if !self.outstanding.contains(&id) {
                break;
            }
            id = id.wrapping_add(1);
        }
        self.send_with_id(id, message, out)?;
        self.next_id = id.wrapping_add(1);
        Ok(id)
    }

    /// Appends `message` to `out` under the caller's `id`, and waits for its
    /// ack. An id still outstanding is refused, since its two acks could not
    /// be told apart.
    pub fn send_with_id(
        &mut self,
        id: u32,
        message: &Message<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), EncodeError> {
        if self.outstanding.contains(&id) {
            return Err(EncodeError::IdInUse(id));
        }
        encode_message(out, id, message)?;
        self.outstanding.insert(id);
        Ok(())
    }

    /// Takes the next chunk of the receiver's answers. On error, close the
    /// stream: the receiver does not follow the protocol.
    pub fn on_bytes(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let mut input = bytes;
        loop {
            let result = match self.frames.read(&mut input) {
                Ok(None) => return Ok(()),
                Ok(Some(Item::Frame(frame))) => self.on_frame(&frame),
                // A reader built with `new` reports oversize as an error.
                Ok(Some(Item::Skipped { .. })) => Err(ProtocolError::Frame(FrameError::TooLarge {
                    len: u64::from(MAX_ACK_FRAME) + 1,
                    max: MAX_ACK_FRAME.into(),
                })),
                Err(e) => Err(ProtocolError::Frame(e)),
            };
            if let Err(e) = result {
                self.failed = Some(e);
                return Err(e);
            }
        }
    }

    /// The next ack, in arrival order.
    pub fn poll_ack(&mut self) -> Option<Ack> {
        self.acks.pop_front()
    }

    /// Whether `id` was sent and has no ack yet.
    pub fn is_outstanding(&self, id: u32) -> bool {
        self.outstanding.contains(&id)
    }

    /// How many messages wait for their ack.
    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Call when the stream ends: an error if it ended inside a frame. Any
    /// message still outstanding then has an unknown fate.
    pub fn finish(&self) -> Result<(), ProtocolError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.frames.in_frame() {
            return Err(ProtocolError::EndedMidFrame);
        }
        Ok(())
    }

    fn on_frame(&mut self, frame: &[u8]) -> Result<(), ProtocolError> {
        match frame.first() {
            Some(&KIND_ACK) | None => {}
            Some(&kind) => return Err(ProtocolError::Unexpected(kind)),
        }
        let ack = match Frame::decode(frame) {
            Ok(Frame::Ack(ack)) => ack,
            Ok(Frame::Message { message, .. }) => {
                return Err(ProtocolError::Unexpected(message.kind().to_u8()))
            }
            Err(e) => return Err(ProtocolError::Malformed(e)),
        };
        if !self.outstanding.remove(&ack.id) {
            return Err(ProtocolError::UnknownAck(ack.id));
        }
        self.acks.push_back(ack);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    /// Xorshift64, for chunk sizes: deterministic and dependency-free.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn frame(message: Message<'_>, id: u32) -> Vec<u8> {
        let mut out = Vec::new();
        Frame::Message { id, message }.encode(&mut out).unwrap();
        out
    }

    fn ack_bytes(acks: &[(u32, Status)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(id, status) in acks {
            encode_ack(&mut out, Ack { id, status });
        }
        out
    }

    fn received(id: u32, kind: Kind, name: Option<&str>, payload: &[u8]) -> Received {
        Received {
            id,
            kind,
            name: name.map(String::from),
            payload: payload.to_vec(),
        }
    }

    /// What a receiver made of a stream: accepted messages, ack bytes, and
    /// the error that stopped it.
    type Outcome = (Vec<Received>, Vec<u8>, Option<ProtocolError>);

    /// Feeds `bytes` in chunks whose sizes `next_size` picks, draining after
    /// every chunk as a driver would.
    fn run(config: ReceiverConfig, bytes: &[u8], mut next_size: impl FnMut() -> usize) -> Outcome {
        let mut rx = Receiver::new(config);
        let mut items = Vec::new();
        let mut acks = Vec::new();
        let mut error = None;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(next_size().clamp(1, rest.len()));
            rest = tail;
            let result = rx.on_bytes(chunk);
            // What came before an error still counts: drain it either way.
            while let Some(item) = rx.poll_received() {
                items.push(item);
            }
            while let Some(out) = rx.poll_transmit() {
                acks.extend_from_slice(&out);
            }
            if let Err(e) = result {
                error = Some(e);
                break;
            }
        }
        (items, acks, error)
    }

    fn run_whole(config: ReceiverConfig, bytes: &[u8]) -> Outcome {
        run(config, bytes, || usize::MAX)
    }

    /// Runs whole, byte by byte and in random chunks; all must agree.
    fn run_every_way(config: ReceiverConfig, bytes: &[u8]) -> Outcome {
        let whole = run_whole(config, bytes);
        assert_eq!(run(config, bytes, || 1), whole, "byte by byte");
        let mut rng = Rng(0x5EED_0000_0000_1001);
        for _ in 0..20 {
            let max = 1 + rng.below(64);
            assert_eq!(run(config, bytes, || 1 + rng.below(max)), whole);
        }
        whole
    }

    fn small(max_message: u32, bytes: u64, messages: u64) -> ReceiverConfig {
        ReceiverConfig {
            max_message,
            quota: Budget { bytes, messages },
        }
    }

    const SAMPLES: [Message<'static>; 6] = [
        Message::Text("hello, agent ✓"),
        Message::Text(""),
        Message::Json(r#"{"task":"sum","args":[1,2.5e3,null]}"#),
        Message::Binary(&[0, 1, 2, 0xFF]),
        Message::File {
            name: "report.pdf",
            data: b"%PDF-1.7",
        },
        Message::File {
            name: "é",
            data: b"",
        },
    ];

    #[test]
    fn every_frame_round_trips() {
        let mut frames: Vec<Frame<'_>> = SAMPLES
            .iter()
            .enumerate()
            .map(|(i, &message)| Frame::Message {
                id: i as u32 * 0x0101_0101,
                message,
            })
            .collect();
        for status in [Status::Ok, Status::QuotaExceeded, Status::Other(200)] {
            frames.push(Frame::Ack(Ack {
                id: u32::MAX,
                status,
            }));
        }
        for f in frames {
            let mut out = Vec::new();
            f.encode(&mut out).unwrap();
            let len = u32::from_be_bytes(out[..4].try_into().unwrap()) as usize;
            assert_eq!(len, out.len() - 4);
            assert_eq!(Frame::decode(&out[4..]), Ok(f));
        }
    }

    #[test]
    fn known_bytes() {
        let mut out = Vec::new();
        encode_file(&mut out, 0x0102_0304, "a.txt", b"hi").unwrap();
        assert_eq!(
            out,
            [0, 0, 0, 13, KIND_FILE, 1, 2, 3, 4, 5, b'a', b'.', b't', b'x', b't', b'h', b'i']
        );
        assert_eq!(
            ack_bytes(&[(7, Status::TooLarge)]),
            [0, 0, 0, 6, 0x80, 0, 0, 0, 7, 1]
        );
    }

    #[test]
    fn truncated_headers_and_names_do_not_decode() {
        let f = frame(
            Message::File {
                name: "name",
                data: b"",
            },
            9,
        );
        // Every cut inside kind, id, name length or name.
        for cut in 0..f.len() - 4 {
            assert!(Frame::decode(&f[4..4 + cut]).is_err(), "cut {cut}");
        }
        let ack = ack_bytes(&[(1, Status::Ok)]);
        for cut in 0..ack.len() - 4 {
            assert!(Frame::decode(&ack[4..4 + cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn decode_errors() {
        let cases: [(&[u8], DecodeError); 8] = [
            (&[], DecodeError::Truncated(F_KIND)),
            (&[KIND_TEXT, 0, 0], DecodeError::Truncated(F_ID)),
            (&[0x09, 0, 0, 0, 1], DecodeError::UnknownKind(0x09)),
            (
                &[KIND_TEXT, 0, 0, 0, 1, 0xFF],
                DecodeError::BadValue(F_TEXT),
            ),
            (
                &[KIND_JSON, 0, 0, 0, 1, b'{'],
                DecodeError::BadValue(F_JSON),
            ),
            (
                &[KIND_FILE, 0, 0, 0, 1, 1, 0xC3],
                DecodeError::BadValue(F_NAME),
            ),
            (&[KIND_ACK, 0, 0, 0, 1], DecodeError::Truncated(F_STATUS)),
            (&[KIND_ACK, 0, 0, 0, 1, 0, 0], DecodeError::TrailingBytes),
        ];
        for (payload, want) in cases {
            assert_eq!(Frame::decode(payload), Err(want), "{payload:?}");
        }
    }

    #[test]
    fn encoders_refuse_what_a_receiver_would() {
        let mut out = vec![0xAA];
        assert_eq!(
            encode_file(&mut out, 1, "../x", b"data"),
            Err(EncodeError::BadName(NameError::LeadingDot))
        );
        assert_eq!(
            encode_json(&mut out, 1, "{").map_err(|e| matches!(e, EncodeError::BadJson(_))),
            Err(true)
        );
        let long = "a".repeat(256);
        assert_eq!(
            Frame::Message {
                id: 1,
                message: Message::File {
                    name: &long,
                    data: b""
                }
            }
            .encode(&mut out),
            Err(EncodeError::BadName(NameError::TooLong))
        );
        // Nothing half-written.
        assert_eq!(out, [0xAA]);
    }

    #[test]
    fn receiver_accepts_every_kind_and_acks_it() {
        let mut stream = Vec::new();
        for (i, &m) in SAMPLES.iter().enumerate() {
            encode_message(&mut stream, i as u32 + 100, &m).unwrap();
        }
        let (items, acks, error) = run_every_way(ReceiverConfig::default(), &stream);
        assert_eq!(error, None);
        let want: Vec<Received> = SAMPLES
            .iter()
            .enumerate()
            .map(|(i, m)| received(i as u32 + 100, m.kind(), m.name(), m.data()))
            .collect();
        assert_eq!(items, want);
        let want: Vec<(u32, Status)> = (100..106).map(|id| (id, Status::Ok)).collect();
        assert_eq!(acks, ack_bytes(&want));
    }

    #[test]
    fn refusals_keep_the_connection_going() {
        let mut stream = Vec::new();
        let mut push = |payload: &[u8]| {
            stream.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            stream.extend_from_slice(payload);
        };
        push(&[KIND_TEXT, 0, 0, 0, 1, 0xFF, 0xFE]); // not UTF-8
        push(&[KIND_JSON, 0, 0, 0, 2, b'[', b'1', b',', b']']); // not JSON
        push(&[KIND_FILE, 0, 0, 0, 3, 4, b'.', b'.', b'/', b'x', b'!']); // traversal
        push(&[KIND_FILE, 0, 0, 0, 4, 2, 0xC3, 0x28]); // name not UTF-8
        push(&[KIND_FILE, 0, 0, 0, 5, 9, b'a']); // name runs past the frame
        push(&[KIND_FILE, 0, 0, 0, 6]); // no name length at all
        push(&[0x42, 0, 0, 0, 7, 1, 2, 3]); // a kind from the future
        push(&[KIND_BINARY, 0, 0, 0, 8, 0xFF]); // fine
        let (items, acks, error) = run_every_way(ReceiverConfig::default(), &stream);
        assert_eq!(error, None);
        assert_eq!(items, [received(8, Kind::Binary, None, &[0xFF])]);
        assert_eq!(
            acks,
            ack_bytes(&[
                (1, Status::BadPayload),
                (2, Status::BadPayload),
                (3, Status::BadName),
                (4, Status::BadName),
                (5, Status::Malformed),
                (6, Status::Malformed),
                (7, Status::Unsupported),
                (8, Status::Ok),
            ])
        );
        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.on_bytes(&stream).unwrap();
        assert_eq!(rx.refused(), 7);
        assert_eq!(
            rx.accepted(),
            Budget {
                bytes: 1,
                messages: 1
            }
        );
    }

    #[test]
    fn size_limit() {
        let max = 10u32;
        let mut stream = Vec::new();
        encode_binary(&mut stream, 1, &[1; 10]).unwrap(); // at the limit
        encode_binary(&mut stream, 2, &[2; 11]).unwrap(); // just over: judged
        encode_file(&mut stream, 3, "f", &[3; 10]).unwrap(); // names do not count
        encode_binary(&mut stream, 4, &[4; 5000]).unwrap(); // far over: skipped
        encode_text(&mut stream, 5, "after").unwrap();
        let (items, acks, error) = run_every_way(small(max, 1 << 20, 100), &stream);
        assert_eq!(error, None);
        assert_eq!(
            items,
            [
                received(1, Kind::Binary, None, &[1; 10]),
                received(3, Kind::File, Some("f"), &[3; 10]),
                received(5, Kind::Text, None, b"after"),
            ]
        );
        assert_eq!(
            acks,
            ack_bytes(&[
                (1, Status::Ok),
                (2, Status::TooLarge),
                (3, Status::Ok),
                (4, Status::TooLarge),
                (5, Status::Ok),
            ])
        );
    }

    #[test]
    fn oversized_frame_is_refused_before_its_body_arrives() {
        let mut rx = Receiver::new(small(10, 1 << 20, 100));
        // A header claiming 2 GiB, and a few bytes of it.
        rx.on_bytes(&[0x7F, 0xFF, 0xFF, 0xFF, KIND_FILE, 0, 0, 0, 42, 1, 2, 3])
            .unwrap();
        assert_eq!(
            rx.poll_transmit(),
            Some(ack_bytes(&[(42, Status::TooLarge)]))
        );
        assert_eq!(rx.finish(), Err(ProtocolError::EndedMidFrame));
    }

    #[test]
    fn quota_in_bytes_and_messages() {
        let mut stream = Vec::new();
        encode_binary(&mut stream, 1, &[0; 6]).unwrap();
        encode_binary(&mut stream, 2, &[0; 6]).unwrap(); // 6 > 4 left
        encode_binary(&mut stream, 3, &[0; 4]).unwrap(); // exactly what is left
        encode_text(&mut stream, 4, "").unwrap(); // bytes spent, messages not
        encode_text(&mut stream, 5, "").unwrap(); // messages spent
        let (items, acks, error) = run_every_way(small(100, 10, 3), &stream);
        assert_eq!(error, None);
        assert_eq!(items.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 3, 4]);
        assert_eq!(
            acks,
            ack_bytes(&[
                (1, Status::Ok),
                (2, Status::QuotaExceeded),
                (3, Status::Ok),
                (4, Status::Ok),
                (5, Status::QuotaExceeded),
            ])
        );
    }

    #[test]
    fn quota_can_be_topped_up() {
        let mut rx = Receiver::new(small(100, 3, 10));
        let mut m = Vec::new();
        encode_text(&mut m, 1, "four").unwrap();
        rx.on_bytes(&m).unwrap();
        assert_eq!(
            rx.poll_transmit(),
            Some(ack_bytes(&[(1, Status::QuotaExceeded)]))
        );
        assert_eq!(rx.poll_received(), None);
        rx.add_quota(Budget {
            bytes: 1,
            messages: 0,
        });
        rx.on_bytes(&m).unwrap();
        assert_eq!(rx.poll_transmit(), Some(ack_bytes(&[(1, Status::Ok)])));
        assert_eq!(
            rx.quota_left(),
            Budget {
                bytes: 0,
                messages: 9
            }
        );
        assert_eq!(
            rx.accepted(),
            Budget {
                bytes: 4,
                messages: 1
            }
        );
        rx.add_quota(Budget::UNLIMITED);
        assert_eq!(rx.quota_left(), Budget::UNLIMITED);
    }

    #[test]
    fn unsafe_names_are_refused_on_the_wire() {
        for name in ["../x", "a/b", "..", ".", "a\0b", "con", "x\\y", "C:x"] {
            let mut stream = Vec::new();
            Frame::Message {
                id: 1,
                message: Message::File { name, data: b"x" },
            }
            .encode(&mut stream)
            .unwrap();
            let (items, acks, error) = run_whole(ReceiverConfig::default(), &stream);
            assert_eq!((items, error), (vec![], None), "{name:?}");
            assert_eq!(acks, ack_bytes(&[(1, Status::BadName)]), "{name:?}");
        }
    }

    #[test]
    fn every_truncation_delivers_nothing_yet() {
        let mut stream = Vec::new();
        encode_file(&mut stream, 1, "f.bin", &[7; 40]).unwrap();
        for cut in 0..stream.len() {
            let mut rx = Receiver::new(ReceiverConfig::default());
            rx.on_bytes(&stream[..cut]).unwrap();
            assert_eq!(rx.poll_received(), None);
            assert_eq!(rx.poll_transmit(), None);
            let want = if cut == 0 {
                Ok(())
            } else {
                Err(ProtocolError::EndedMidFrame)
            };
            assert_eq!(rx.finish(), want, "cut {cut}");
            rx.on_bytes(&stream[cut..]).unwrap();
            assert_eq!(rx.poll_received().map(|r| r.id), Some(1));
            assert_eq!(rx.finish(), Ok(()));
        }
    }

    #[test]
    fn streams_that_cannot_be_answered_are_fatal() {
        let short = [0, 0, 0, 3, KIND_TEXT, 0, 0];
        let cases: [(&[u8], ProtocolError); 4] = [
            (
                &short,
                ProtocolError::Malformed(DecodeError::Truncated(F_ID)),
            ),
            (
                &[0, 0, 0, 0],
                ProtocolError::Malformed(DecodeError::Truncated(F_KIND)),
            ),
            (
                &ack_bytes(&[(1, Status::Ok)]),
                ProtocolError::Unexpected(KIND_ACK),
            ),
            // An oversized ack is no better than a small one.
            (
                &[0xFF, 0, 0, 0, KIND_ACK, 0, 0, 0, 1],
                ProtocolError::Unexpected(KIND_ACK),
            ),
        ];
        for (bytes, want) in cases {
            let mut stream = Vec::new();
            encode_text(&mut stream, 1, "before").unwrap();
            stream.extend_from_slice(bytes);
            encode_text(&mut stream, 2, "never read").unwrap();
            let (items, acks, error) = run_every_way(small(10, 100, 100), &stream);
            assert_eq!(error, Some(want));
            assert_eq!(items.len(), 1);
            assert_eq!(acks, ack_bytes(&[(1, Status::Ok)]));
            // And it stays failed.
            let mut rx = Receiver::new(small(10, 100, 100));
            assert_eq!(rx.on_bytes(&stream), Err(want));
            assert_eq!(rx.on_bytes(b""), Err(want));
            assert_eq!(rx.finish(), Err(want));
        }
    }

    #[test]
    fn sender_numbers_messages_and_matches_acks() {
        let mut tx = Sender::new();
        let mut wire = Vec::new();
        let a = tx.send(&Message::Text("one"), &mut wire).unwrap();
        let b = tx.send(&Message::Binary(b"two"), &mut wire).unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(tx.outstanding(), 2);
        assert_eq!(
            tx.send_with_id(1, &Message::Text("dup"), &mut wire),
            Err(EncodeError::IdInUse(1))
        );
        // A bad message takes no id.
        assert!(tx
            .send(
                &Message::File {
                    name: "/etc/passwd",
                    data: b""
                },
                &mut wire
            )
            .is_err());

        let mut rx = Receiver::new(ReceiverConfig::default());
        rx.on_bytes(&wire).unwrap();
        let acks = rx.poll_transmit().unwrap();
        // Out of order and in pieces is fine.
        let (first, second) = acks.split_at(10);
        tx.on_bytes(&second[..3]).unwrap();
        tx.on_bytes(&second[3..]).unwrap();
        assert_eq!(
            tx.poll_ack(),
            Some(Ack {
                id: 2,
                status: Status::Ok
            })
        );
        assert!(tx.is_outstanding(1) && !tx.is_outstanding(2));
        tx.on_bytes(first).unwrap();
        assert_eq!(
            tx.poll_ack(),
            Some(Ack {
                id: 1,
                status: Status::Ok
            })
        );
        assert_eq!(tx.poll_ack(), None);
        assert_eq!(tx.outstanding(), 0);
        assert_eq!(tx.finish(), Ok(()));
        assert_eq!(tx.send(&Message::Text("3"), &mut wire), Ok(3));
    }

    #[test]
    fn sender_ids_skip_outstanding_ones_and_wrap() {
        let mut tx = Sender::new();
        let mut wire = Vec::new();
        tx.send_with_id(u32::MAX, &Message::Text(""), &mut wire)
            .unwrap();
        tx.send_with_id(0, &Message::Text(""), &mut wire).unwrap();
        tx.send_with_id(2, &Message::Text(""), &mut wire).unwrap();
        tx.next_id = u32::MAX;
        assert_eq!(tx.send(&Message::Text(""), &mut wire), Ok(1));
        assert_eq!(tx.send(&Message::Text(""), &mut wire), Ok(3));
    }

    #[test]
    fn sender_refuses_a_receiver_that_breaks_the_protocol() {
        let mut wire = Vec::new();
        let mut tx = Sender::new();
        tx.send(&Message::Text("x"), &mut wire).unwrap();
        let cases: [(Vec<u8>, ProtocolError); 4] = [
            (ack_bytes(&[(9, Status::Ok)]), ProtocolError::UnknownAck(9)),
            (wire.clone(), ProtocolError::Unexpected(KIND_TEXT)),
            (
                vec![0, 0, 0, 7, KIND_ACK, 0, 0, 0, 1, 0, 0],
                ProtocolError::Malformed(DecodeError::TrailingBytes),
            ),
            (
                vec![0, 0, 1, 0],
                ProtocolError::Frame(FrameError::TooLarge { len: 256, max: 64 }),
            ),
        ];
        for (bytes, want) in cases {
            let mut tx = tx.clone();
            assert_eq!(tx.on_bytes(&bytes), Err(want));
            assert_eq!(tx.on_bytes(&ack_bytes(&[(1, Status::Ok)])), Err(want));
        }
        let mut tx2 = tx.clone();
        tx2.on_bytes(&ack_bytes(&[(1, Status::Ok)])[..3]).unwrap();
        assert_eq!(tx2.finish(), Err(ProtocolError::EndedMidFrame));
        // An ack answers once.
        tx.on_bytes(&ack_bytes(&[(1, Status::Ok)])).unwrap();
        assert_eq!(
            tx.on_bytes(&ack_bytes(&[(1, Status::Ok)])),
            Err(ProtocolError::UnknownAck(1))
        );
    }

    #[test]
    fn file_names() {
        let good = [
            "report.pdf",
            "a",
            "a.b.c",
            "notes v2.txt",
            "données.csv",
            "日本語.txt",
            "a..b",
            "con-notes.txt",
            "console",
            "com10",
            "lpt",
            "COM1x.txt",
            "a'b(c)[d]{e}&f#g",
        ];
        for name in good {
            assert_eq!(safe_file_name(name), Ok(name), "{name:?}");
        }
        let max = "x".repeat(MAX_FILE_NAME);
        assert_eq!(safe_file_name(&max), Ok(max.as_str()));
        let two_byte_max = "é".repeat(MAX_FILE_NAME / 2);
        assert!(safe_file_name(&two_byte_max).is_ok());
        let long = "x".repeat(MAX_FILE_NAME + 1);
        let long_multibyte = "é".repeat(MAX_FILE_NAME / 2 + 1);
        use NameError::*;
        let bad: [(&str, NameError); 33] = [
            ("", Empty),
            (&long, TooLong),
            (&long_multibyte, TooLong),
            (".", DotName),
            ("..", DotName),
            ("../x", LeadingDot),
            (".bashrc", LeadingDot),
            ("...", LeadingDot),
            ("a/b", BadChar('/')),
            ("a\\b", BadChar('\\')),
            ("..\\x", LeadingDot),
            ("x/..", BadChar('/')),
            ("a\0b", BadChar('\0')),
            ("a\nb", BadChar('\n')),
            ("a\tb", BadChar('\t')),
            ("a\u{7F}", BadChar('\u{7F}')),
            ("a\u{85}", BadChar('\u{85}')),
            ("C:x", BadChar(':')),
            ("file.txt:stream", BadChar(':')),
            ("a*b", BadChar('*')),
            ("what?", BadChar('?')),
            ("a<b>", BadChar('<')),
            ("\"q\"", BadChar('"')),
            ("a|b", BadChar('|')),
            ("invoice\u{202E}fdp.exe", BadChar('\u{202E}')),
            ("a\u{2028}b", BadChar('\u{2028}')),
            (" lead", BadEdge),
            ("trail ", BadEdge),
            ("trail.", BadEdge),
            ("con", Reserved),
            ("NUL.txt", Reserved),
            ("Com1.tar.gz", Reserved),
            ("lpt²", Reserved),
        ];
        for (name, want) in bad {
            assert_eq!(safe_file_name(name), Err(want), "{name:?}");
        }
        for name in [
            "CON", "prn", "aux", "conin$", "CONOUT$", "COM0", "lpt9", "nul .txt",
        ] {
            assert_eq!(safe_file_name(name), Err(Reserved), "{name:?}");
        }
    }

    #[test]
    fn codes_round_trip() {
        for c in 0..=255u8 {
            assert_eq!(Status::from_u8(c).to_u8(), c);
            if let Some(k) = Kind::from_u8(c) {
                assert_eq!(k.to_u8(), c);
            }
        }
        assert_eq!(Status::from_u8(6), Status::Unsupported);
        assert_eq!(Status::from_u8(7), Status::Other(7));
        assert_eq!(Kind::from_u8(KIND_ACK), None);
    }

    #[test]
    fn display_is_readable() {
        use alloc::format;
        assert_eq!(format!("{}", Status::QuotaExceeded), "quota exceeded");
        assert_eq!(
            format!("{}", ProtocolError::UnknownAck(3)),
            "ack for unknown message id 3"
        );
        assert_eq!(
            format!("{}", EncodeError::BadName(NameError::DotName)),
            "bad file name: file name is `.` or `..`"
        );
    }
}
