//! The checks of the `ipc_frame` fuzz target, shared with its corpus
//! replay (`driver-mio/tests/ipc_corpus.rs` includes this file), so the
//! two cannot drift apart. Each must hold for any input, valid or not.

use driver_mio::ipc::frame::{
    self, Frame, FrameDecoder, FrameError, Kind, HEADER_LEN, MAX_FRAME, MIN_LEN,
};

/// What a decoder made of a byte stream: its frames and the error it
/// stopped at (if any).
type Outcome = (Vec<Frame>, Option<FrameError>);

fn decode(data: &[u8], chunk: usize, max: u32) -> Outcome {
    let mut d = FrameDecoder::with_max(max);
    let mut frames = Vec::new();
    for piece in data.chunks(chunk) {
        d.push(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => {
                    // Sticky: the stream stays out of step.
                    assert_eq!(d.next_frame(), Err(e.clone()));
                    return (frames, Some(e));
                }
            }
        }
        // Never more than one incomplete frame waits in the buffer.
        assert!(d.buffered() < 4 + d.max_len() as usize);
    }
    let consumed: usize = frames.iter().map(|f| HEADER_LEN + f.body.len()).sum();
    assert_eq!(d.buffered(), data.len() - consumed);
    (frames, None)
}

/// Decoding a body never panics; what decodes encodes to a frame that
/// decodes to the same value.
fn bodies(f: &Frame) {
    let mut out = Vec::new();
    match f.kind {
        Kind::Request => match frame::decode_request(f) {
            Ok(req) => {
                frame::encode_request(f.id, &req, &mut out).expect("a decoded request encodes");
                let again = decoded(&out);
                assert_eq!(frame::decode_request(&again).as_ref(), Ok(&req));
            }
            Err(e) => error(&e, f),
        },
        Kind::Response => match frame::decode_response(f) {
            Ok(resp) => {
                frame::encode_response(f.id, &resp, &mut out).expect("a decoded response encodes");
                let again = decoded(&out);
                assert_eq!(frame::decode_response(&again).as_ref(), Ok(&resp));
            }
            Err(e) => error(&e, f),
        },
        Kind::Event => match frame::decode_event(f) {
            Ok(ev) => {
                assert_eq!(f.id, 0);
                frame::encode_event(&ev, &mut out).expect("a decoded event encodes");
                let again = decoded(&out);
                assert_eq!(frame::decode_event(&again).as_ref(), Ok(&ev));
            }
            Err(e) => error(&e, f),
        },
        Kind::Data => {
            assert!(frame::decode_request(f).is_err());
            assert!(frame::decode_response(f).is_err());
            assert!(frame::decode_event(f).is_err());
        }
    }
}

fn decoded(bytes: &[u8]) -> Frame {
    let mut d = FrameDecoder::new();
    d.push(bytes);
    let f = d
        .next_frame()
        .expect("an encoded frame decodes")
        .expect("whole");
    assert_eq!(d.buffered(), 0);
    f
}

fn error(e: &FrameError, f: &Frame) {
    assert!(!e.to_string().is_empty());
    // Only a request's own ID is ever echoed in an error response.
    if e.reply_id() != 0 {
        assert_eq!((f.kind, e.reply_id()), (Kind::Request, f.id));
    }
    assert!(!matches!(
        e,
        FrameError::TooLong { .. } | FrameError::TooShort { .. } | FrameError::UnknownKind { .. }
    ));
}

pub fn check(data: &[u8]) {
    let first = data.first().copied().unwrap_or(0);
    let step = 1 + usize::from(first % 7);
    for max in [MAX_FRAME, MIN_LEN + u32::from(first % 64)] {
        let whole = decode(data, data.len().max(1), max);
        assert_eq!(
            decode(data, step, max),
            whole,
            "chunking changed the outcome"
        );
        let (frames, error) = whole;

        // The frames, encoded again, are the input's prefix; what is left
        // is the error's frame or an incomplete one.
        let mut out = Vec::new();
        for f in &frames {
            frame::encode(f.kind, f.id, &f.body, &mut out).expect("a decoded frame encodes");
            assert!(f.body.len() + MIN_LEN as usize <= max as usize);
        }
        assert_eq!(out.as_slice(), &data[..out.len()]);
        let rest = &data[out.len()..];
        let len = rest.first_chunk::<4>().map(|p| u32::from_be_bytes(*p));
        match error {
            None => {
                if let Some(len) = len {
                    assert!((MIN_LEN..=max).contains(&len));
                    assert!(rest.len() < 4 + len as usize);
                }
            }
            Some(FrameError::TooLong { len: l, max: m }) => {
                assert_eq!((Some(l), m), (len.map(u64::from), max));
                assert!(l > u64::from(max));
            }
            Some(FrameError::TooShort { len: l }) => {
                assert_eq!(Some(l), len);
                assert!(l < MIN_LEN);
            }
            Some(FrameError::UnknownKind { kind }) => {
                assert_eq!(rest.get(4), Some(&kind));
                assert!(Kind::from_u8(kind).is_none());
            }
            Some(other) => panic!("the decoder made a body error: {other}"),
        }
        for f in &frames {
            bodies(f);
        }
    }

    // The input as the body of each kind of frame: the JSON decoders must
    // not panic, and what they accept round-trips.
    for kind in [Kind::Request, Kind::Response, Kind::Event] {
        let f = Frame {
            kind,
            id: if kind == Kind::Event { 0 } else { 1 },
            body: data.to_vec(),
        };
        bodies(&f);
    }
}
