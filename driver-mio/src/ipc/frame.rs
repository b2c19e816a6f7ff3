//! IPC frames: how requests, responses, events and stream bytes are cut
//! out of the byte stream of the local socket.
//!
//! ```text
//! len u32 BE || kind u8 || id u32 BE || body
//! ```
//!
//! `len` counts the bytes after itself (kind, id and body), so it is at
//! least [`MIN_LEN`] and at most the decoder's maximum ([`MAX_FRAME`] by
//! default). The kinds:
//!
//! | kind | name     | direction        | id                          | body             |
//! |------|----------|------------------|-----------------------------|------------------|
//! | 1    | Request  | client → daemon  | request ID, never 0         | JSON [`Request`] |
//! | 2    | Response | daemon → client  | the request's ID (0: about the connection itself) | JSON [`Response`] |
//! | 3    | Event    | daemon → client  | always 0                    | JSON [`Event`]   |
//! | 4    | Data     | both             | stream ID                   | raw stream bytes |
//!
//! Because a request ID is never 0 and an event's is always 0, an event can
//! never be taken for the reply to a request.

use crate::ipc::api::{Event, Request, Response};

/// The largest `len` any Pilot IPC peer must accept: 1 MiB. Encoders never
/// write a bigger frame; decoders refuse one (a decoder may be configured
/// with a smaller maximum, never needs a bigger one).
pub const MAX_FRAME: u32 = 1 << 20;

/// The smallest valid `len`: a kind byte and an ID.
pub const MIN_LEN: u32 = 5;

/// Bytes before the body: the length prefix, the kind and the ID.
pub const HEADER_LEN: usize = 9;

/// The largest body a frame can carry.
pub const MAX_BODY: usize = MAX_FRAME as usize - MIN_LEN as usize;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Client → daemon: a JSON [`Request`]; the ID is the client's, not 0.
    Request = 1,
    /// Daemon → client: a JSON [`Response`] to the request with that ID.
    Response = 2,
    /// Daemon → client: a JSON [`Event`]; the ID is 0.
    Event = 3,
    /// Either way: raw bytes of the stream whose ID is the frame's.
    Data = 4,
}

impl Kind {
    /// The kind with this wire value, if there is one.
    pub fn from_u8(value: u8) -> Option<Kind> {
        match value {
            1 => Some(Kind::Request),
            2 => Some(Kind::Response),
            3 => Some(Kind::Event),
            4 => Some(Kind::Data),
            _ => None,
        }
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The lowercase name, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Response => "response",
            Kind::Event => "event",
            Kind::Data => "data",
        }
    }
}

impl core::fmt::Display for Kind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What it is.
    pub kind: Kind,
    /// Request ID (request, response), 0 (event) or stream ID (data).
    pub id: u32,
    /// JSON (request, response, event) or raw stream bytes (data).
    pub body: Vec<u8>,
}

/// Why bytes are not an acceptable frame, or a frame's body is not what
/// its kind says. Each names what was wrong, in words a client's author
/// can act on (the daemon sends `to_string()` back as the error message).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix is over the maximum (refused before reading or
    /// allocating the body).
    #[error("frame length {len} is over the maximum {max}")]
    TooLong { len: u64, max: u32 },
    /// The length prefix is under [`MIN_LEN`]: no room for kind and ID.
    #[error("frame length {len} is under the minimum {MIN_LEN} (kind and id)")]
    TooShort { len: u32 },
    /// The kind byte is not one of 1..=4.
    #[error("unknown frame kind {kind} (expected 1 request, 2 response, 3 event or 4 data)")]
    UnknownKind { kind: u8 },
    /// A known kind, sent the wrong way (a client sending a response or an
    /// event, a daemon sending a request).
    #[error("unexpected {kind} frame (id {id}) in this direction")]
    UnexpectedKind { kind: Kind, id: u32 },
    /// A request with ID 0, which is reserved for events and for errors
    /// about the connection.
    #[error("request id 0 is reserved; request ids start at 1")]
    ZeroRequestId,
    /// An event frame whose ID is not 0.
    #[error("event frame with id {id}; events always carry id 0")]
    EventId { id: u32 },
    /// The body of a request, response or event is not JSON at all.
    #[error("{kind} {id}: body is not JSON: {detail}")]
    NotJson { kind: Kind, id: u32, detail: String },
    /// The body is JSON, but not a valid request, response or event (an
    /// unknown `op`, a missing field, a wrong type...).
    #[error("{kind} {id}: {detail}")]
    BadBody { kind: Kind, id: u32, detail: String },
}

impl FrameError {
    /// The request ID an error response about this should carry: the
    /// request's own when the frame was a request with a usable ID,
    /// otherwise 0 (an error about the connection).
    pub fn reply_id(&self) -> u32 {
        match self {
            FrameError::NotJson {
                kind: Kind::Request,
                id,
                ..
            }
            | FrameError::BadBody {
                kind: Kind::Request,
                id,
                ..
            } => *id,
            _ => 0,
        }
    }

    /// Whether the byte stream can still be trusted after this error. Only
    /// a well-formed JSON body that is not a valid message keeps it: the
    /// framing held, and a newer client may just be asking for something
    /// this daemon does not know. Everything else means the peer is not
    /// speaking this protocol, and the connection must close.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, FrameError::BadBody { .. })
    }
}

/// Appends one frame to `out`. Refuses (and appends nothing) when the body
/// would make the frame longer than [`MAX_FRAME`].
pub fn encode(kind: Kind, id: u32, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if body.len() > MAX_BODY {
        return Err(FrameError::TooLong {
            len: body.len() as u64 + u64::from(MIN_LEN),
            max: MAX_FRAME,
        });
    }
    // Cannot truncate: body.len() <= MAX_BODY < u32::MAX - MIN_LEN.
    let len = body.len() as u32 + MIN_LEN;
    out.reserve(HEADER_LEN + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(kind.as_u8());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Appends a request frame. The ID must not be 0.
pub fn encode_request(id: u32, req: &Request, out: &mut Vec<u8>) -> Result<(), FrameError> {
    if id == 0 {
        return Err(FrameError::ZeroRequestId);
    }
    encode_json(Kind::Request, id, req, out)
}

/// Appends a response frame to request `id` (0: an error about the
/// connection rather than about one request).
pub fn encode_response(id: u32, resp: &Response, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_json(Kind::Response, id, resp, out)
}

/// Appends an event frame (ID 0).
pub fn encode_event(event: &Event, out: &mut Vec<u8>) -> Result<(), FrameError> {
    encode_json(Kind::Event, 0, event, out)
}

/// Decodes a request frame's body, checking its kind and ID.
pub fn decode_request(frame: &Frame) -> Result<Request, FrameError> {
    expect_kind(frame, Kind::Request)?;
    if frame.id == 0 {
        return Err(FrameError::ZeroRequestId);
    }
    decode_json(frame)
}

/// Decodes a response frame's body, checking its kind.
pub fn decode_response(frame: &Frame) -> Result<Response, FrameError> {
    expect_kind(frame, Kind::Response)?;
    decode_json(frame)
}

/// Decodes an event frame's body, checking its kind and that its ID is 0.
pub fn decode_event(frame: &Frame) -> Result<Event, FrameError> {
    expect_kind(frame, Kind::Event)?;
    if frame.id != 0 {
        return Err(FrameError::EventId { id: frame.id });
    }
    decode_json(frame)
}

/// Cuts frames out of a byte stream pushed in pieces of any size.
///
/// It holds at most one frame plus whatever was pushed after it, and it
/// checks a frame's length and kind as soon as those bytes are in, so a
/// huge length prefix is refused before anything is allocated for it.
/// After an error the stream is out of step: every later call returns the
/// same error, and the connection should be closed.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the undecoded bytes in `buf`.
    pos: usize,
    max_len: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// A decoder accepting frames up to [`MAX_FRAME`].
    pub fn new() -> FrameDecoder {
        FrameDecoder::with_max(MAX_FRAME)
    }

    /// A decoder accepting `len` up to `max_len` (clamped to
    /// [`MIN_LEN`]..=[`MAX_FRAME`]).
    pub fn with_max(max_len: u32) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max_len: max_len.clamp(MIN_LEN, MAX_FRAME),
        }
    }

    /// The largest `len` this decoder accepts.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && (self.pos == self.buf.len() || self.pos >= self.buf.len() / 2) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether a call to [`next_frame`](Self::next_frame) would return
    /// something other than `Ok(None)` (a frame or an error).
    pub fn has_frame(&self) -> bool {
        !matches!(self.check(), Ok(None))
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some((kind, total)) = self.check()? else {
            return Ok(None);
        };
        let frame_bytes = &self.buf[self.pos..self.pos + total];
        let id = u32::from_be_bytes([
            frame_bytes[5],
            frame_bytes[6],
            frame_bytes[7],
            frame_bytes[8],
        ]);
        let body = frame_bytes[HEADER_LEN..].to_vec();
        self.pos += total;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        Ok(Some(Frame { kind, id, body }))
    }

    /// Validates the header of the next frame as far as it has arrived;
    /// `Some((kind, total bytes))` once the whole frame is buffered.
    fn check(&self) -> Result<Option<(Kind, usize)>, FrameError> {
        let avail = &self.buf[self.pos..];
        let Some(prefix) = avail.first_chunk::<4>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*prefix);
        if len > self.max_len {
            return Err(FrameError::TooLong {
                len: u64::from(len),
                max: self.max_len,
            });
        }
        if len < MIN_LEN {
            return Err(FrameError::TooShort { len });
        }
        let Some(&kind) = avail.get(4) else {
            return Ok(None);
        };
        let Some(kind) = Kind::from_u8(kind) else {
            return Err(FrameError::UnknownKind { kind });
        };
        let total = 4 + len as usize;
        if avail.len() < total {
            return Ok(None);
        }
        Ok(Some((kind, total)))
    }
}

fn encode_json<T: serde::Serialize>(
    kind: Kind,
    id: u32,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let body = serde_json::to_vec(value).map_err(|e| FrameError::BadBody {
        kind,
        id,
        detail: e.to_string(),
    })?;
    encode(kind, id, &body, out)
}

fn expect_kind(frame: &Frame, kind: Kind) -> Result<(), FrameError> {
    if frame.kind == kind {
        return Ok(());
    }
    Err(FrameError::UnexpectedKind {
        kind: frame.kind,
        id: frame.id,
    })
}

/// JSON that is not even JSON is told apart from JSON of the wrong shape:
/// the first ends the connection, the second only the request.
fn decode_json<T: serde::de::DeserializeOwned>(frame: &Frame) -> Result<T, FrameError> {
    serde_json::from_slice(&frame.body).map_err(|e| {
        let (kind, id, detail) = (frame.kind, frame.id, e.to_string());
        match e.classify() {
            serde_json::error::Category::Data => FrameError::BadBody { kind, id, detail },
            _ => FrameError::NotJson { kind, id, detail },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 5) as u32).to_be_bytes().to_vec();
        out.push(kind);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn encode_lays_out_the_header() {
        let mut out = Vec::new();
        encode(Kind::Data, 0x0102_0304, b"xyz", &mut out).unwrap();
        assert_eq!(out, [0, 0, 0, 8, 4, 1, 2, 3, 4, b'x', b'y', b'z']);
    }

    #[test]
    fn frames_come_out_whatever_the_chunking() {
        let mut bytes = Vec::new();
        encode_request(7, &Request::Info, &mut bytes).unwrap();
        encode(Kind::Data, 3, &[9; 1000], &mut bytes).unwrap();
        encode_event(&Event::Finished { stream: 3 }, &mut bytes).unwrap();
        for chunk in [1, 2, 5, 9, 64, bytes.len()] {
            let mut d = FrameDecoder::new();
            let mut frames = Vec::new();
            for piece in bytes.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    frames.push(f);
                }
            }
            assert_eq!(frames.len(), 3, "chunk {chunk}");
            assert_eq!(decode_request(&frames[0]).unwrap(), Request::Info);
            assert_eq!(frames[0].id, 7);
            assert_eq!((frames[1].kind, frames[1].id), (Kind::Data, 3));
            assert_eq!(frames[1].body, vec![9; 1000]);
            assert_eq!(
                decode_event(&frames[2]).unwrap(),
                Event::Finished { stream: 3 }
            );
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn huge_length_is_refused_before_allocating() {
        let mut d = FrameDecoder::new();
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLong {
                len: 0xffff_ffff,
                max: MAX_FRAME
            })
        );
        assert!(d.buf.capacity() < 64);
        // Sticky: the stream is out of step for good.
        d.push(&frame(1, 1, b"{}"));
        assert!(matches!(d.next_frame(), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn configured_maximum_is_enforced() {
        let mut d = FrameDecoder::with_max(16);
        d.push(&frame(4, 1, &[0; 11]));
        assert!(d.next_frame().unwrap().is_some());
        d.push(&frame(4, 1, &[0; 12]));
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLong { len: 17, max: 16 })
        );
    }

    #[test]
    fn short_length_and_unknown_kind_are_named() {
        let mut d = FrameDecoder::new();
        d.push(&[0, 0, 0, 2, 1, 1]);
        assert_eq!(d.next_frame(), Err(FrameError::TooShort { len: 2 }));
        let e = FrameError::TooShort { len: 2 };
        assert!(e.to_string().contains("length 2"), "{e}");

        let mut d = FrameDecoder::new();
        // The kind is judged as soon as it arrives, not after the body.
        d.push(&[0, 0, 0, 100, 9]);
        assert_eq!(d.next_frame(), Err(FrameError::UnknownKind { kind: 9 }));
        assert_eq!(FrameError::UnknownKind { kind: 9 }.reply_id(), 0);
    }

    #[test]
    fn body_errors_are_typed() {
        let not_json = Frame {
            kind: Kind::Request,
            id: 4,
            body: b"{nope".to_vec(),
        };
        let e = decode_request(&not_json).unwrap_err();
        assert!(matches!(e, FrameError::NotJson { id: 4, .. }), "{e}");
        assert!(e.is_fatal());
        assert_eq!(e.reply_id(), 4);

        let unknown_op = Frame {
            kind: Kind::Request,
            id: 5,
            body: br#"{"op":"fly"}"#.to_vec(),
        };
        let e = decode_request(&unknown_op).unwrap_err();
        assert!(matches!(e, FrameError::BadBody { id: 5, .. }), "{e}");
        assert!(!e.is_fatal());
        assert!(e.to_string().contains("fly"), "{e}");

        let zero = Frame {
            kind: Kind::Request,
            id: 0,
            body: br#"{"op":"info"}"#.to_vec(),
        };
        assert_eq!(decode_request(&zero), Err(FrameError::ZeroRequestId));

        let event = Frame {
            kind: Kind::Event,
            id: 3,
            body: br#"{"event":"finished","stream":1}"#.to_vec(),
        };
        assert_eq!(decode_event(&event), Err(FrameError::EventId { id: 3 }));
        assert!(matches!(
            decode_response(&event),
            Err(FrameError::UnexpectedKind {
                kind: Kind::Event,
                id: 3
            })
        ));
    }

    #[test]
    fn oversized_body_is_not_encoded() {
        let mut out = vec![1];
        let body = vec![0; MAX_BODY + 1];
        assert!(matches!(
            encode(Kind::Data, 1, &body, &mut out),
            Err(FrameError::TooLong { .. })
        ));
        assert_eq!(out, [1]);
        encode(Kind::Data, 1, &body[..MAX_BODY], &mut out).unwrap();
        let mut d = FrameDecoder::new();
        d.push(&out[1..]);
        assert_eq!(d.next_frame().unwrap().unwrap().body.len(), MAX_BODY);
    }
}
