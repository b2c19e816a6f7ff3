//! Small helpers for reading and writing wire formats without panics.

use alloc::vec::Vec;
use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why bytes did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the field `field`.
    Truncated(&'static str),
    /// Bytes remain after the last field.
    TrailingBytes,
    /// A kind or type byte we do not know.
    UnknownKind(u8),
    /// A field holds a value outside its range.
    BadValue(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated(field) => write!(f, "input ends before field `{field}`"),
            DecodeError::TrailingBytes => f.write_str("unexpected bytes after the last field"),
            DecodeError::UnknownKind(k) => write!(f, "unknown message kind 0x{k:02x}"),
            DecodeError::BadValue(field) => write!(f, "field `{field}` has an invalid value"),
        }
    }
}

/// A cursor over untrusted bytes; every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    /// A length-prefixed (one byte) UTF-8 string.
    pub fn short_str(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let len = self.u8(field)? as usize;
        let raw = self.bytes(len, field)?;
        core::str::from_utf8(raw).map_err(|_| DecodeError::BadValue(field))
    }

    /// A UDP endpoint: family (4 or 6), address, port.
    pub fn endpoint(&mut self, field: &'static str) -> Result<SocketAddr, DecodeError> {
        let ip = match self.u8(field)? {
            4 => IpAddr::V4(Ipv4Addr::from(self.array::<4>(field)?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.array::<16>(field)?)),
            _ => return Err(DecodeError::BadValue(field)),
        };
        Ok(SocketAddr::new(ip, self.u16(field)?))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// Fails unless every byte was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
pub fn truncate_str(s: &str, max: usize) -> &str {
    let mut cut = s.len().min(max);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

/// Appends `s` with a one-byte length. Callers guarantee `s.len() <= 255`
/// (hostnames are at most 63 bytes, messages are truncated before this).
pub fn put_short_str(out: &mut Vec<u8>, s: &str) {
    let s = truncate_str(s, 255);
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// Appends a UDP endpoint: family (4 or 6), address, port (big-endian).
pub fn put_endpoint(out: &mut Vec<u8>, ep: SocketAddr) {
    match ep.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&ep.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_round_trip_and_truncation() {
        for ep in ["192.0.2.7:4000", "[2001:db8::1]:443"] {
            let ep: SocketAddr = ep.parse().unwrap();
            let mut out = Vec::new();
            put_endpoint(&mut out, ep);
            let mut r = Reader::new(&out);
            assert_eq!(r.endpoint("ep"), Ok(ep));
            assert_eq!(r.finish(), Ok(()));
            for cut in 0..out.len() {
                assert!(Reader::new(&out[..cut]).endpoint("ep").is_err());
            }
        }
        assert_eq!(
            Reader::new(&[5, 0, 0]).endpoint("ep"),
            Err(DecodeError::BadValue("ep"))
        );
    }
}
