//! Length-prefixed frames on a byte stream.
//!
//! A frame is `len u32 (big-endian) || payload [len]`. A stream delivers
//! frames in arbitrary chunks, so [`FrameReader`] reassembles them: it
//! consumes input only up to the end of the frame in progress, which keeps
//! its memory bounded by one frame, and it never allocates for a length it
//! has only been told about, only for payload bytes that actually arrived.

use alloc::vec::Vec;
use core::fmt;

/// Bytes in the length prefix.
pub const LEN_SIZE: usize = 4;

/// Why a frame could not be read or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// A length prefix above the limit. When reading, the stream is out of
    /// step with its sender from here on and must be closed.
    TooLarge {
        /// The announced (or requested) payload length.
        len: u64,
        /// The largest payload allowed.
        max: u64,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max}")
            }
        }
    }
}

/// One result of [`FrameReader::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A complete frame payload (without its length prefix).
    Frame(Vec<u8>),
    /// An oversized frame that a skipping reader is discarding: its
    /// announced length and its first bytes, so the service can still name
    /// the frame in a refusal. The rest is dropped as it arrives.
    Skipped {
        /// The announced payload length.
        len: u32,
        /// The first `min(head, len)` payload bytes.
        head: Vec<u8>,
    },
}

/// Reassembles frames from stream chunks.
#[derive(Clone, Debug)]
pub struct FrameReader {
    max_len: u32,
    /// `None`: an oversized frame is fatal. `Some(n)`: skip it, after
    /// reporting its first `n` bytes.
    skip_head: Option<usize>,
    state: State,
}

#[derive(Clone, Debug)]
enum State {
    Len {
        bytes: [u8; LEN_SIZE],
        have: usize,
    },
    Body {
        len: usize,
        buf: Vec<u8>,
    },
    Skip {
        len: u32,
        left: usize,
        want: usize,
        head: Vec<u8>,
        reported: bool,
    },
    Failed(FrameError),
}

const START: State = State::Len {
    bytes: [0; LEN_SIZE],
    have: 0,
};

impl FrameReader {
    /// A reader that refuses (fatally) any frame longer than `max_len`.
    pub fn new(max_len: u32) -> Self {
        FrameReader {
            max_len,
            skip_head: None,
            state: START,
        }
    }

    /// A reader that survives oversized frames: it reports each as
    /// [`Item::Skipped`] with its first `head` bytes and discards the rest,
    /// so the stream stays in step and the service can refuse just that
    /// frame.
    pub fn skipping_oversized(max_len: u32, head: usize) -> Self {
        FrameReader {
            max_len,
            skip_head: Some(head),
            state: START,
        }
    }

    /// The largest payload accepted.
    pub fn max_len(&self) -> u32 {
        self.max_len
    }

    /// Consumes bytes from the front of `input` until one item is complete
    /// (returned) or `input` is empty (`Ok(None)`); call again while `input`
    /// is not empty. After an error every call returns the same error.
    pub fn read(&mut self, input: &mut &[u8]) -> Result<Option<Item>, FrameError> {
        loop {
            match &mut self.state {
                State::Failed(e) => return Err(*e),
                State::Len { bytes, have } => {
                    let n = take(input, LEN_SIZE - *have);
                    bytes[*have..*have + n.len()].copy_from_slice(n);
                    *have += n.len();
                    if *have < LEN_SIZE {
                        return Ok(None);
                    }
                    let len = u32::from_be_bytes(*bytes);
                    if len <= self.max_len {
                        self.state = State::Body {
                            len: len as usize,
                            buf: Vec::new(),
                        };
                        continue;
                    }
                    let Some(head) = self.skip_head else {
                        let e = FrameError::TooLarge {
                            len: len.into(),
                            max: self.max_len.into(),
                        };
                        self.state = State::Failed(e);
                        return Err(e);
                    };
                    self.state = State::Skip {
                        len,
                        left: len as usize,
                        want: head.min(len as usize),
                        head: Vec::new(),
                        reported: false,
                    };
                }
                State::Body { len, buf } => {
                    let n = take(input, *len - buf.len());
                    grow_capped(buf, n.len(), *len);
                    buf.extend_from_slice(n);
                    if buf.len() < *len {
                        return Ok(None);
                    }
                    let frame = core::mem::take(buf);
                    self.state = START;
                    return Ok(Some(Item::Frame(frame)));
                }
                State::Skip {
                    len,
                    left,
                    want,
                    head,
                    reported,
                } => {
                    if !*reported {
                        let n = take(input, *want - head.len());
                        head.extend_from_slice(n);
                        *left -= n.len();
                        if head.len() < *want {
                            return Ok(None);
                        }
                        *reported = true;
                        let item = Item::Skipped {
                            len: *len,
                            head: core::mem::take(head),
                        };
                        return Ok(Some(item));
                    }
                    let n = take(input, *left);
                    *left -= n.len();
                    if *left > 0 {
                        return Ok(None);
                    }
                    self.state = START;
                }
            }
        }
    }

    /// Whether part of a frame has arrived but not all of it: a stream that
    /// ends now was cut off mid-frame.
    pub fn in_frame(&self) -> bool {
        match &self.state {
            State::Len { have, .. } => *have > 0,
            State::Body { .. } | State::Skip { .. } => true,
            State::Failed(_) => false,
        }
    }
}

/// Splits up to `n` bytes off the front of `input`.
fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let (head, tail) = input.split_at(n.min(input.len()));
    *input = tail;
    head
}

/// Grows `buf` by doubling, but never past the frame's length: the usual
/// amortised growth would otherwise hold up to twice the frame.
fn grow_capped(buf: &mut Vec<u8>, extra: usize, len: usize) {
    let need = buf.len() + extra;
    if need <= buf.capacity() {
        return;
    }
    let target = buf.capacity().saturating_mul(2).max(need).min(len);
    buf.reserve_exact(target - buf.len());
}

/// Appends the length prefix of a `payload_len`-byte payload.
pub fn put_len(out: &mut Vec<u8>, payload_len: usize) -> Result<(), FrameError> {
    let Ok(len) = u32::try_from(payload_len) else {
        return Err(FrameError::TooLarge {
            len: payload_len as u64,
            max: u32::MAX.into(),
        });
    };
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Appends one frame holding `payload`.
pub fn write_frame(out: &mut Vec<u8>, payload: &[u8]) -> Result<(), FrameError> {
    put_len(out, payload.len())?;
    out.extend_from_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            write_frame(&mut out, p).unwrap();
        }
        out
    }

    /// Feeds `bytes` in chunks of the given sizes (cycled) and collects
    /// every item, stopping at the first error.
    fn read_chunked(
        reader: &mut FrameReader,
        bytes: &[u8],
        sizes: &[usize],
    ) -> (Vec<Item>, Option<FrameError>) {
        let mut items = Vec::new();
        let mut rest = bytes;
        let mut i = 0;
        while !rest.is_empty() {
            let (mut chunk, tail) = rest.split_at(sizes[i % sizes.len()].min(rest.len()));
            rest = tail;
            i += 1;
            loop {
                match reader.read(&mut chunk) {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => break,
                    Err(e) => return (items, Some(e)),
                }
            }
            assert!(chunk.is_empty());
        }
        (items, None)
    }

    #[test]
    fn frames_survive_any_chunking() {
        let payloads: [&[u8]; 4] = [b"hello", b"", &[7; 300], b"x"];
        let bytes = frames(&payloads);
        let want: Vec<Item> = payloads.iter().map(|p| Item::Frame(p.to_vec())).collect();
        for sizes in [
            &[usize::MAX][..],
            &[1],
            &[2, 3],
            &[4],
            &[5, 1, 7],
            &[299, 1],
        ] {
            let mut r = FrameReader::new(300);
            let (items, err) = read_chunked(&mut r, &bytes, sizes);
            assert_eq!(items, want, "chunks {sizes:?}");
            assert_eq!(err, None);
            assert!(!r.in_frame());
        }
    }

    #[test]
    fn read_stops_at_the_end_of_each_frame() {
        let bytes = frames(&[b"ab", b"cd"]);
        let mut r = FrameReader::new(10);
        let mut input = &bytes[..];
        assert_eq!(r.read(&mut input), Ok(Some(Item::Frame(b"ab".to_vec()))));
        assert_eq!(input.len(), 6);
        assert_eq!(r.read(&mut input), Ok(Some(Item::Frame(b"cd".to_vec()))));
        assert_eq!(r.read(&mut input), Ok(None));
    }

    #[test]
    fn every_truncation_is_incomplete_not_an_error() {
        let bytes = frames(&[b"payload"]);
        for cut in 0..bytes.len() {
            let mut r = FrameReader::new(100);
            let mut input = &bytes[..cut];
            assert_eq!(r.read(&mut input), Ok(None));
            assert_eq!(r.in_frame(), cut > 0);
            let mut input = &bytes[cut..];
            assert_eq!(
                r.read(&mut input),
                Ok(Some(Item::Frame(b"payload".to_vec())))
            );
        }
    }

    #[test]
    fn oversized_length_is_fatal_and_sticky() {
        let mut r = FrameReader::new(16);
        let mut input = &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3][..];
        let e = FrameError::TooLarge {
            len: u32::MAX.into(),
            max: 16,
        };
        assert_eq!(r.read(&mut input), Err(e));
        // Nothing past the prefix was consumed, and nothing was buffered.
        assert_eq!(input, &[1, 2, 3]);
        assert_eq!(r.read(&mut &[0u8, 0, 0, 0][..]), Err(e));
        // At the limit is fine.
        let mut r = FrameReader::new(3);
        assert_eq!(
            r.read(&mut &frames(&[b"abc"])[..]),
            Ok(Some(Item::Frame(b"abc".to_vec())))
        );
    }

    #[test]
    fn skipping_reader_reports_the_head_and_stays_in_step() {
        let bytes = frames(&[b"ok", &[9; 40], b"", b"after"]);
        let want = vec![
            Item::Frame(b"ok".to_vec()),
            Item::Skipped {
                len: 40,
                head: vec![9; 5],
            },
            Item::Frame(Vec::new()),
            Item::Frame(b"after".to_vec()),
        ];
        for sizes in [&[usize::MAX][..], &[1], &[3, 8]] {
            let mut r = FrameReader::skipping_oversized(10, 5);
            assert_eq!(read_chunked(&mut r, &bytes, sizes), (want.clone(), None));
        }
        // A head longer than the frame is cut to the frame.
        let mut r = FrameReader::skipping_oversized(1, 5);
        let (items, _) = read_chunked(&mut r, &frames(&[b"abc"]), &[1]);
        assert_eq!(
            items,
            vec![Item::Skipped {
                len: 3,
                head: b"abc".to_vec()
            }]
        );
    }

    #[test]
    fn huge_skipped_frame_is_never_buffered() {
        let mut r = FrameReader::skipping_oversized(10, 2);
        let mut input = &[0x7F, 0xFF, 0xFF, 0xFF, 1, 2, 3][..];
        assert_eq!(
            r.read(&mut input),
            Ok(Some(Item::Skipped {
                len: 0x7FFF_FFFF,
                head: vec![1, 2]
            }))
        );
        assert_eq!(r.read(&mut input), Ok(None));
        assert!(r.in_frame());
    }

    #[test]
    fn put_len_refuses_what_u32_cannot_say() {
        let mut out = Vec::new();
        assert_eq!(put_len(&mut out, 5), Ok(()));
        assert_eq!(out, [0, 0, 0, 5]);
        if let Ok(big) = usize::try_from(u64::from(u32::MAX) + 1) {
            assert!(put_len(&mut out, big).is_err());
        }
        assert_eq!(out.len(), 4);
    }
}
