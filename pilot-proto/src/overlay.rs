//! Overlay packets: IPv6 with Pilot addresses embedded under a fixed ULA
//! prefix. Datagrams are UDP inside it.
//!
//! An overlay IPv6 address is [`OVERLAY_PREFIX`] (`fd70:696c:6f74::/48`,
//! "pilot" after the `fd`, subnet 0), two zero bytes, then the six bytes of
//! the Pilot address (network, node, big-endian):
//!
//! ```text
//! fd70:696c:6f74:0000:0000:NNNN:HHHH:HHHH
//! ```
//!
//! The decoder accepts exactly what [`encode_udp`] produces, except that it
//! ignores the traffic class, flow label and hop limit: those carry no
//! meaning inside a point-to-point tunnel, and refusing them would only make
//! the codec brittle against other IPv6 stacks (smoltcp) in the core.

use alloc::vec::Vec;
use core::fmt;

use crate::addr::{Address, SocketAddress};

/// The largest overlay IPv6 packet, header included (IPv6 minimum MTU, so
/// every path can carry it whatever the underlay).
pub const OVERLAY_MTU: usize = 1280;
/// IPv6 (40) plus UDP (8) header bytes.
pub const UDP_HEADER_LEN: usize = 48;
/// The largest datagram payload.
pub const MAX_DATAGRAM: usize = OVERLAY_MTU - UDP_HEADER_LEN;

/// The first 8 bytes of every overlay IPv6 address: the ULA prefix
/// `fd70:696c:6f74::/48` with subnet ID 0, i.e. the /64 overlay network.
/// The next two bytes are always zero; the last six are the Pilot address.
pub const OVERLAY_PREFIX: [u8; 8] = [0xfd, 0x70, 0x69, 0x6c, 0x6f, 0x74, 0x00, 0x00];
/// Length in bits of [`OVERLAY_PREFIX`], for routes and interface setup.
pub const OVERLAY_PREFIX_LEN: u8 = 64;

/// The IPv6 fixed header length.
const IPV6_HEADER_LEN: usize = 40;
/// The UDP header length.
const UDP_LEN: usize = 8;
/// IPv6 next-header value for UDP.
const PROTO_UDP: u8 = 17;
/// IPv6 next-header value for TCP: the overlay's streams.
pub const PROTO_TCP: u8 = 6;
/// Hop limit put on every packet; the usual default, never checked.
const HOP_LIMIT: u8 = 64;

/// The IPv6 address a Pilot address maps to.
pub fn to_ipv6(addr: Address) -> [u8; 16] {
    let mut ip = [0u8; 16];
    ip[..8].copy_from_slice(&OVERLAY_PREFIX);
    ip[10..].copy_from_slice(&addr.to_bytes());
    ip
}

/// The Pilot address under the ULA prefix, if `ip` is one.
pub fn from_ipv6(ip: &[u8; 16]) -> Option<Address> {
    // Bytes 8 and 9 must be zero too: otherwise two IPv6 addresses would
    // map to one Pilot address.
    if ip[..8] != OVERLAY_PREFIX || ip[8] != 0 || ip[9] != 0 {
        return None;
    }
    let mut b = [0u8; 6];
    b.copy_from_slice(&ip[10..]);
    Some(Address::from_bytes(b))
}

/// Why an overlay packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlayError {
    /// Shorter than an IPv6 header.
    TooShort {
        /// The packet's length in bytes.
        len: usize,
    },
    /// The IP version field is not 6.
    NotIpv6 {
        /// The version found.
        version: u8,
    },
    /// The IPv6 payload length disagrees with the bytes that follow the
    /// header (too few, or trailing bytes).
    LengthMismatch {
        /// The payload length in the header.
        declared: usize,
        /// The bytes actually after the header.
        actual: usize,
    },
    /// A next-header value the overlay does not carry (extension headers
    /// included).
    UnsupportedProtocol(u8),
    /// The source address is not under [`OVERLAY_PREFIX`].
    ForeignSource,
    /// The destination address is not under [`OVERLAY_PREFIX`].
    ForeignDestination,
    /// Too few bytes for a UDP header.
    UdpTooShort {
        /// The bytes after the IPv6 header.
        len: usize,
    },
    /// The UDP length field disagrees with the IPv6 payload length.
    UdpLengthMismatch {
        /// The length in the UDP header.
        declared: usize,
        /// The IPv6 payload length.
        actual: usize,
    },
    /// The datagram payload is larger than [`MAX_DATAGRAM`].
    PayloadTooLarge {
        /// The payload's length in bytes.
        len: usize,
    },
    /// The UDP checksum is zero, which IPv6 forbids (RFC 8200 §8.1).
    MissingChecksum,
    /// The UDP checksum is wrong.
    BadChecksum {
        /// The checksum in the packet.
        found: u16,
        /// The checksum the packet should carry.
        expected: u16,
    },
}

impl fmt::Display for OverlayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            OverlayError::TooShort { len } => write!(
                f,
                "overlay packet of {len} bytes is shorter than an IPv6 header"
            ),
            OverlayError::NotIpv6 { version } => {
                write!(f, "overlay packet has IP version {version}, not 6")
            }
            OverlayError::LengthMismatch { declared, actual } => write!(
                f,
                "IPv6 payload length says {declared} bytes but {actual} follow the header"
            ),
            OverlayError::UnsupportedProtocol(p) => {
                write!(f, "overlay packet carries unsupported protocol {p}")
            }
            OverlayError::ForeignSource => {
                f.write_str("source address is not under the overlay prefix")
            }
            OverlayError::ForeignDestination => {
                f.write_str("destination address is not under the overlay prefix")
            }
            OverlayError::UdpTooShort { len } => {
                write!(f, "{len} bytes is too short for a UDP header")
            }
            OverlayError::UdpLengthMismatch { declared, actual } => write!(
                f,
                "UDP length says {declared} bytes but the IPv6 payload is {actual}"
            ),
            OverlayError::PayloadTooLarge { len } => write!(
                f,
                "datagram payload of {len} bytes exceeds the limit of {MAX_DATAGRAM}"
            ),
            OverlayError::MissingChecksum => f.write_str("UDP checksum is zero (required in IPv6)"),
            OverlayError::BadChecksum { found, expected } => {
                write!(f, "UDP checksum is {found:#06x}, expected {expected:#06x}")
            }
        }
    }
}

/// A decoded overlay packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Packet<'a> {
    /// A UDP datagram.
    Udp {
        /// Sender and its port.
        src: SocketAddress,
        /// Receiver and its port.
        dst: SocketAddress,
        /// The datagram's payload.
        payload: &'a [u8],
    },
}

/// Appends an IPv6+UDP packet carrying `payload` to `out`.
/// `payload` must be at most [`MAX_DATAGRAM`] bytes.
///
/// A larger payload is a caller bug: it asserts in debug builds, and in
/// release builds nothing is appended, since the peer would refuse the
/// packet anyway.
pub fn encode_udp(src: SocketAddress, dst: SocketAddress, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(
        payload.len() <= MAX_DATAGRAM,
        "overlay datagram payload of {} bytes exceeds {MAX_DATAGRAM}",
        payload.len()
    );
    if payload.len() > MAX_DATAGRAM {
        return;
    }
    // At most MAX_DATAGRAM + 8, far below u16::MAX.
    let udp_len = (UDP_LEN + payload.len()) as u16;
    let src_ip = to_ipv6(src.addr);
    let dst_ip = to_ipv6(dst.addr);
    let checksum = udp_checksum(&src_ip, &dst_ip, src.port, dst.port, udp_len, payload);

    out.reserve(UDP_HEADER_LEN + payload.len());
    // Version 6, traffic class 0, flow label 0.
    out.extend_from_slice(&[0x60, 0, 0, 0]);
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.push(PROTO_UDP);
    out.push(HOP_LIMIT);
    out.extend_from_slice(&src_ip);
    out.extend_from_slice(&dst_ip);
    out.extend_from_slice(&src.port.to_be_bytes());
    out.extend_from_slice(&dst.port.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&checksum.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Decodes and validates an overlay packet.
///
/// Checks run cheapest first, and the checksum last, so that junk costs
/// little. Extension headers are not supported: any next header other than
/// UDP is [`OverlayError::UnsupportedProtocol`].
pub fn decode(packet: &[u8]) -> Result<Packet<'_>, OverlayError> {
    let Some((header, body)) = split(packet, IPV6_HEADER_LEN) else {
        return Err(OverlayError::TooShort { len: packet.len() });
    };
    let version = header[0] >> 4;
    if version != 6 {
        return Err(OverlayError::NotIpv6 { version });
    }
    let declared = usize::from(be16(header[4], header[5]));
    if declared != body.len() {
        return Err(OverlayError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }
    let next_header = header[6];
    if next_header != PROTO_UDP {
        return Err(OverlayError::UnsupportedProtocol(next_header));
    }
    let src_ip = ip_at(header, 8);
    let dst_ip = ip_at(header, 24);
    let Some(src_addr) = from_ipv6(&src_ip) else {
        return Err(OverlayError::ForeignSource);
    };
    let Some(dst_addr) = from_ipv6(&dst_ip) else {
        return Err(OverlayError::ForeignDestination);
    };

    let Some((udp, payload)) = split(body, UDP_LEN) else {
        return Err(OverlayError::UdpTooShort { len: body.len() });
    };
    let src_port = be16(udp[0], udp[1]);
    let dst_port = be16(udp[2], udp[3]);
    let udp_len = be16(udp[4], udp[5]);
    if usize::from(udp_len) != body.len() {
        return Err(OverlayError::UdpLengthMismatch {
            declared: usize::from(udp_len),
            actual: body.len(),
        });
    }
    if payload.len() > MAX_DATAGRAM {
        return Err(OverlayError::PayloadTooLarge { len: payload.len() });
    }
    let found = be16(udp[6], udp[7]);
    if found == 0 {
        return Err(OverlayError::MissingChecksum);
    }
    let expected = udp_checksum(&src_ip, &dst_ip, src_port, dst_port, udp_len, payload);
    if found != expected {
        return Err(OverlayError::BadChecksum { found, expected });
    }
    Ok(Packet::Udp {
        src: SocketAddress::new(src_addr, src_port),
        dst: SocketAddress::new(dst_addr, dst_port),
        payload,
    })
}

/// Validates an overlay packet's IPv6 header and returns its source,
/// destination and next header, whatever the protocol.
///
/// Checks the length, the version, that the payload length matches the
/// bytes after the header, and that both addresses are under
/// [`OVERLAY_PREFIX`]. A node uses it to route a packet by protocol:
/// [`PROTO_TCP`] to the streams, UDP to [`decode`].
pub fn header(packet: &[u8]) -> Result<(Address, Address, u8), OverlayError> {
    let Some((header, body)) = split(packet, IPV6_HEADER_LEN) else {
        return Err(OverlayError::TooShort { len: packet.len() });
    };
    let version = header[0] >> 4;
    if version != 6 {
        return Err(OverlayError::NotIpv6 { version });
    }
    let declared = usize::from(be16(header[4], header[5]));
    if declared != body.len() {
        return Err(OverlayError::LengthMismatch {
            declared,
            actual: body.len(),
        });
    }
    let Some(src) = from_ipv6(&ip_at(header, 8)) else {
        return Err(OverlayError::ForeignSource);
    };
    let Some(dst) = from_ipv6(&ip_at(header, 24)) else {
        return Err(OverlayError::ForeignDestination);
    };
    Ok((src, dst, header[6]))
}

/// Splits off the first `n` bytes, or `None` if there are fewer.
fn split(b: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    if b.len() < n {
        return None;
    }
    Some(b.split_at(n))
}

fn be16(hi: u8, lo: u8) -> u16 {
    u16::from_be_bytes([hi, lo])
}

/// The 16-byte address at `at` in a header already known to be 40 bytes.
fn ip_at(header: &[u8], at: usize) -> [u8; 16] {
    let mut ip = [0u8; 16];
    // Callers pass 8 or 24 on a 40-byte header, so the range exists; `get`
    // keeps the decoder panic-free even if that ever changes.
    if let Some(src) = header.get(at..at + 16) {
        ip.copy_from_slice(src);
    }
    ip
}

/// The UDP checksum to send (RFC 768, RFC 8200 §8.1): the one's complement
/// of the one's-complement sum of the pseudo-header (addresses, upper-layer
/// length, next header), the UDP header with a zero checksum, and the
/// payload. A result of 0 is sent as 0xFFFF, since 0 means "no checksum".
fn udp_checksum(
    src: &[u8; 16],
    dst: &[u8; 16],
    src_port: u16,
    dst_port: u16,
    udp_len: u16,
    payload: &[u8],
) -> u16 {
    let mut sum = Sum::default();
    sum.add(src);
    sum.add(dst);
    // The pseudo-header length is 32 bits and the next header is preceded
    // by three zero bytes; the zero halves add nothing.
    sum.add(&udp_len.to_be_bytes());
    sum.add(&[0, PROTO_UDP]);
    sum.add(&src_port.to_be_bytes());
    sum.add(&dst_port.to_be_bytes());
    sum.add(&udp_len.to_be_bytes());
    sum.add(payload);
    match !sum.fold() {
        0 => 0xFFFF,
        c => c,
    }
}

/// A one's-complement sum of big-endian 16-bit words. Only the final slice
/// added may have odd length (it is padded with a zero byte).
#[derive(Default)]
struct Sum(u64);

impl Sum {
    fn add(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(2);
        for w in &mut words {
            self.0 += u64::from(be16(w[0], w[1]));
        }
        if let [last] = words.remainder() {
            self.0 += u64::from(be16(*last, 0));
        }
    }

    /// Folds the carries back in (end-around carry) down to 16 bits.
    fn fold(&self) -> u16 {
        let mut s = self.0;
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        s as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn sa(network: u16, node: u32, port: u16) -> SocketAddress {
        SocketAddress::new(Address::new(network, node), port)
    }

    fn encode(src: SocketAddress, dst: SocketAddress, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_udp(src, dst, payload, &mut out);
        out
    }

    /// The checksum written out the long way, straight from RFC 8200 §8.1:
    /// build the pseudo-header and the segment as one buffer, pad it, add
    /// up the words, fold, complement. Shares no code with `udp_checksum`.
    fn reference_checksum(packet: &[u8]) -> u16 {
        let udp_len = packet.len() - 40;
        let mut buf = Vec::new();
        buf.extend_from_slice(&packet[8..40]);
        buf.extend_from_slice(&(udp_len as u32).to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 17]);
        buf.extend_from_slice(&packet[40..46]);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&packet[48..]);
        if buf.len() % 2 == 1 {
            buf.push(0);
        }
        let mut sum: u32 = 0;
        for pair in buf.chunks(2) {
            sum += (u32::from(pair[0]) << 8) | u32::from(pair[1]);
        }
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        let c = !(sum as u16);
        if c == 0 {
            0xFFFF
        } else {
            c
        }
    }

    /// Rewrites the checksum of a (possibly edited) packet so that only the
    /// edit under test is wrong with it.
    fn fix_checksum(packet: &mut [u8]) {
        let c = reference_checksum(packet);
        packet[46..48].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn ipv6_mapping() {
        let a = Address::new(0x0102, 0x0304_0506);
        let ip = to_ipv6(a);
        assert_eq!(
            ip,
            [0xfd, 0x70, 0x69, 0x6c, 0x6f, 0x74, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]
        );
        assert_eq!(&ip[1..6], b"pilot");
        assert_eq!(from_ipv6(&ip), Some(a));
        let max = Address::new(u16::MAX, u32::MAX);
        assert_eq!(from_ipv6(&to_ipv6(max)), Some(max));

        for i in 0..10 {
            let mut other = ip;
            other[i] ^= 0x01;
            assert_eq!(from_ipv6(&other), None, "byte {i}");
        }
        assert_eq!(from_ipv6(&[0; 16]), None);
    }

    #[test]
    fn known_packet() {
        // Computed independently (by a short script following RFC 8200).
        let want = [
            0x60, 0x00, 0x00, 0x00, 0x00, 0x0b, 0x11, 0x40, // ver, len 11, UDP, hop 64
            0xfd, 0x70, 0x69, 0x6c, 0x6f, 0x74, 0x00, 0x00, // src prefix
            0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x10, // src 1:0001.0001.0010
            0xfd, 0x70, 0x69, 0x6c, 0x6f, 0x74, 0x00, 0x00, // dst prefix
            0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x11, // dst 1:0001.0001.0011
            0x00, 0x07, 0x03, 0xe8, 0x00, 0x0b, 0xc5, 0xb7, // ports 7 -> 1000, len, sum
            b'h', b'i', b'!',
        ];
        let src = sa(1, 0x0001_0010, 7);
        let dst = sa(1, 0x0001_0011, 1000);
        let packet = encode(src, dst, b"hi!");
        assert_eq!(packet, want);
        assert_eq!(reference_checksum(&packet), 0xc5b7);
        assert_eq!(
            decode(&packet),
            Ok(Packet::Udp {
                src,
                dst,
                payload: b"hi!"
            })
        );
    }

    #[test]
    fn encode_appends() {
        let mut out = vec![0xAA, 0xBB];
        encode_udp(sa(1, 2, 3), sa(4, 5, 6), b"x", &mut out);
        assert_eq!(&out[..2], &[0xAA, 0xBB]);
        assert_eq!(out.len(), 2 + UDP_HEADER_LEN + 1);
        assert!(decode(&out[2..]).is_ok());
    }

    #[test]
    fn random_round_trips() {
        let mut rng = XorShift(0xDEAD_BEEF_CAFE_F00D);
        let mut lengths: Vec<usize> = vec![0, 1, 2, 3, MAX_DATAGRAM - 1, MAX_DATAGRAM];
        for _ in 0..500 {
            lengths.push(rng.next() as usize % (MAX_DATAGRAM + 1));
        }
        for len in lengths {
            let r = rng.next();
            let src = sa(r as u16, (r >> 16) as u32, (r >> 48) as u16);
            let r = rng.next();
            let dst = sa(r as u16, (r >> 16) as u32, (r >> 48) as u16);
            let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let packet = encode(src, dst, &payload);
            assert_eq!(packet.len(), UDP_HEADER_LEN + len);
            assert!(packet.len() <= OVERLAY_MTU);
            let sum = u16::from_be_bytes([packet[46], packet[47]]);
            assert_eq!(sum, reference_checksum(&packet));
            assert_eq!(
                decode(&packet),
                Ok(Packet::Udp {
                    src,
                    dst,
                    payload: &payload
                })
            );
        }
    }

    #[test]
    fn computed_zero_checksum_is_sent_as_all_ones() {
        let src = sa(1, 0x10, 7);
        let dst = sa(1, 0x11, 7);
        // Choose a two-byte payload that makes the one's-complement sum
        // 0xFFFF, whose complement is the forbidden 0.
        let probe = encode(src, dst, &[0, 0]);
        let partial = !reference_checksum(&probe);
        let word = 0xFFFF - partial;
        let packet = encode(src, dst, &word.to_be_bytes());
        assert_eq!(&packet[46..48], &[0xFF, 0xFF]);
        assert!(decode(&packet).is_ok());
    }

    #[test]
    fn header_fields_without_meaning_are_ignored() {
        let mut packet = encode(sa(1, 0x10, 7), sa(1, 0x11, 9), b"payload");
        // Traffic class, flow label and hop limit are outside the checksum.
        packet[0] = 0x6F;
        packet[1..4].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        packet[7] = 0;
        assert!(decode(&packet).is_ok());
    }

    #[test]
    fn errors() {
        let good = encode(sa(1, 0x10, 7), sa(1, 0x11, 9), b"payload");
        let edited = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            f(&mut p);
            p
        };

        assert_eq!(decode(&[]), Err(OverlayError::TooShort { len: 0 }));
        assert_eq!(decode(&good[..39]), Err(OverlayError::TooShort { len: 39 }));
        let v4 = edited(&|p| p[0] = 0x45);
        assert_eq!(decode(&v4), Err(OverlayError::NotIpv6 { version: 4 }));

        // Truncated and padded packets both disagree with the header.
        assert_eq!(
            decode(&good[..good.len() - 1]),
            Err(OverlayError::LengthMismatch {
                declared: 15,
                actual: 14
            })
        );
        let padded = edited(&|p| p.push(0));
        assert_eq!(
            decode(&padded),
            Err(OverlayError::LengthMismatch {
                declared: 15,
                actual: 16
            })
        );
        assert_eq!(
            decode(&good[..40]),
            Err(OverlayError::LengthMismatch {
                declared: 15,
                actual: 0
            })
        );

        let tcp = edited(&|p| p[6] = 6);
        assert_eq!(decode(&tcp), Err(OverlayError::UnsupportedProtocol(6)));
        let hop_by_hop = edited(&|p| p[6] = 0);
        assert_eq!(
            decode(&hop_by_hop),
            Err(OverlayError::UnsupportedProtocol(0))
        );

        let foreign_src = edited(&|p| p[8] = 0xfe);
        assert_eq!(decode(&foreign_src), Err(OverlayError::ForeignSource));
        let foreign_src = edited(&|p| p[17] = 1);
        assert_eq!(decode(&foreign_src), Err(OverlayError::ForeignSource));
        let foreign_dst = edited(&|p| p[24 + 5] = 0);
        assert_eq!(decode(&foreign_dst), Err(OverlayError::ForeignDestination));

        let mut short_udp = good[..44].to_vec();
        short_udp[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(
            decode(&short_udp),
            Err(OverlayError::UdpTooShort { len: 4 })
        );

        let udp_len = edited(&|p| {
            p[44..46].copy_from_slice(&14u16.to_be_bytes());
            fix_checksum(p);
        });
        assert_eq!(
            decode(&udp_len),
            Err(OverlayError::UdpLengthMismatch {
                declared: 14,
                actual: 15
            })
        );

        // Too large to come from encode_udp: build it by hand.
        let big = MAX_DATAGRAM + 1;
        let mut huge = good[..48].to_vec();
        huge.resize(48 + big, 0x55);
        huge[4..6].copy_from_slice(&((big + 8) as u16).to_be_bytes());
        huge[44..46].copy_from_slice(&((big + 8) as u16).to_be_bytes());
        fix_checksum(&mut huge);
        assert_eq!(
            decode(&huge),
            Err(OverlayError::PayloadTooLarge { len: big })
        );

        let no_sum = edited(&|p| p[46..48].copy_from_slice(&[0, 0]));
        assert_eq!(decode(&no_sum), Err(OverlayError::MissingChecksum));

        let expected = u16::from_be_bytes([good[46], good[47]]);
        let bad_sum = edited(&|p| p[47] ^= 1);
        assert_eq!(
            decode(&bad_sum),
            Err(OverlayError::BadChecksum {
                found: expected ^ 1,
                expected
            })
        );
        // A flipped payload bit, a changed port or address all break it.
        for at in [40, 43, 20, 39, 48, 54] {
            let p = edited(&|p| p[at] ^= 0x10);
            assert!(
                matches!(decode(&p), Err(OverlayError::BadChecksum { .. })),
                "byte {at}"
            );
        }
    }

    #[test]
    fn header_of_any_protocol() {
        let (src, dst) = (sa(1, 0x20, 5), sa(1, 0x21, 6));
        let mut p = encode(src, dst, b"x");
        assert_eq!(header(&p), Ok((src.addr, dst.addr, 17)));
        p[6] = PROTO_TCP;
        assert_eq!(header(&p), Ok((src.addr, dst.addr, PROTO_TCP)));
        assert_eq!(header(&p[..39]), Err(OverlayError::TooShort { len: 39 }));
        assert_eq!(
            header(&p[..48]),
            Err(OverlayError::LengthMismatch {
                declared: 9,
                actual: 8
            })
        );
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert_eq!(header(&v4), Err(OverlayError::NotIpv6 { version: 4 }));
        let mut foreign = p.clone();
        foreign[8] = 0xfe;
        assert_eq!(header(&foreign), Err(OverlayError::ForeignSource));
        foreign = p.clone();
        foreign[33] = 1;
        assert_eq!(header(&foreign), Err(OverlayError::ForeignDestination));
    }

    #[test]
    fn error_messages() {
        let all = [
            OverlayError::TooShort { len: 3 },
            OverlayError::NotIpv6 { version: 4 },
            OverlayError::LengthMismatch {
                declared: 1,
                actual: 2,
            },
            OverlayError::UnsupportedProtocol(6),
            OverlayError::ForeignSource,
            OverlayError::ForeignDestination,
            OverlayError::UdpTooShort { len: 4 },
            OverlayError::UdpLengthMismatch {
                declared: 1,
                actual: 2,
            },
            OverlayError::PayloadTooLarge { len: 2000 },
            OverlayError::MissingChecksum,
            OverlayError::BadChecksum {
                found: 1,
                expected: 2,
            },
        ];
        for e in all {
            assert!(!e.to_string().is_empty());
        }
        assert_eq!(
            OverlayError::BadChecksum {
                found: 0x12,
                expected: 0xabcd
            }
            .to_string(),
            "UDP checksum is 0x0012, expected 0xabcd"
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "exceeds")]
    fn oversize_payload_is_a_caller_bug() {
        let mut out = Vec::new();
        encode_udp(sa(1, 2, 3), sa(1, 2, 4), &[0; MAX_DATAGRAM + 1], &mut out);
    }

    #[test]
    #[cfg(not(debug_assertions))]
    fn oversize_payload_appends_nothing() {
        let mut out = Vec::new();
        encode_udp(sa(1, 2, 3), sa(1, 2, 4), &[0; MAX_DATAGRAM + 1], &mut out);
        assert!(out.is_empty());
    }
}
