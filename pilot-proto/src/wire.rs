//! Outer packets: what travels in one UDP datagram between two Pilot
//! endpoints. The layout follows WireGuard's (see `docs/PROTOCOL.md`).
//!
//! ```text
//! 1 handshake init  type u8 | 0 0 0 | sender u32le | noise msg1 | mac1[16] | mac2[16]
//! 2 handshake resp  type u8 | 0 0 0 | sender u32le | receiver u32le | noise msg2 | mac1 | mac2
//! 3 cookie reply    type u8 | 0 0 0 | receiver u32le | nonce[24] | sealed cookie[32]
//! 4 transport       type u8 | 0 0 0 | receiver u32le | counter u64le | ciphertext+tag
//! 5 relay           type u8 | 0 0 0 | pilot address[6] | packet of type 1-4
//! 6 reflect         type u8 | 0 0 0 | token[8] | zeros[20]                  (32 bytes)
//! 7 reflected       type u8 | 0 0 0 | token[8] | family u8 | ip[16] | port u16be | 0 (32 bytes)
//! ```
//!
//! Reflect asks the rendezvous, on whichever of its sockets it arrives,
//! which address it came from; the answer is no longer than the request,
//! so it amplifies nothing.
//!
//! A relay packet from an agent to the rendezvous names the agent it is
//! for; the rendezvous forwards it with the address replaced by the
//! sender's. The packet inside is end-to-end encrypted and untouched.

use crate::codec::DecodeError;
use crate::noise::{MSG1_OVERHEAD, MSG2_OVERHEAD};

/// Handshake initiation.
pub const TYPE_INIT: u8 = 1;
/// Handshake response.
pub const TYPE_RESPONSE: u8 = 2;
/// Cookie reply (the responder is under load).
pub const TYPE_COOKIE: u8 = 3;
/// Transport data.
pub const TYPE_TRANSPORT: u8 = 4;
/// A packet for (or from) another agent, through the rendezvous's relay.
pub const TYPE_RELAY: u8 = 5;
/// "Which address do you see me at?", to any rendezvous socket.
pub const TYPE_REFLECT: u8 = 6;
/// Byte 1 of a Reflect that asks for the answer from the other port.
pub const REFLECT_OTHER_PORT: u8 = 1;
/// The answer to [`TYPE_REFLECT`].
pub const TYPE_REFLECTED: u8 = 7;
/// Length of reflect and reflected packets.
pub const REFLECT_LEN: usize = 32;
/// Bytes before a relayed packet.
pub const RELAY_HEADER_LEN: usize = 10;

/// Length of a MAC field.
pub const MAC_LEN: usize = 16;
/// Length of the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes before a transport packet's ciphertext.
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Smallest transport packet: header and an empty (keepalive) ciphertext.
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = 4 + 4 + 24 + 32;
/// Bytes of an init before its Noise message.
pub const INIT_HEADER_LEN: usize = 8;
/// Bytes of a response before its Noise message.
pub const RESPONSE_HEADER_LEN: usize = 12;
/// Largest handshake payload we send or accept (a timestamp and a
/// registration certificate fit with room to spare).
pub const MAX_HANDSHAKE_PAYLOAD: usize = 256;

/// A decoded outer packet, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Handshake initiation.
    Init(Handshake<'a>),
    /// Handshake response.
    Response(Handshake<'a>),
    /// Cookie reply.
    Cookie {
        /// The index of the handshake this answers.
        receiver: u32,
        /// XChaCha20 nonce.
        nonce: &'a [u8; 24],
        /// The cookie, sealed.
        sealed: &'a [u8; 32],
    },
    /// Transport data.
    Transport {
        /// Our index for the session.
        receiver: u32,
        /// The sender's packet counter (the AEAD nonce).
        counter: u64,
        /// Ciphertext with tag.
        ciphertext: &'a [u8],
    },
    /// A request to reflect the sender's address.
    Reflect {
        /// Echoed in the answer.
        token: [u8; 8],
        /// Answer from the rendezvous's other UDP port (the reflect port
        /// for a request to the main one and the other way round): the
        /// agent learns whether its NAT lets in a port it never sent to.
        other_port: bool,
    },
    /// The address a reflect request came from.
    Reflected {
        /// The request's token.
        token: [u8; 8],
        /// The address the rendezvous saw.
        observed: core::net::SocketAddr,
    },
    /// A packet relayed through the rendezvous.
    Relay {
        /// The other agent's pilot address: the destination on the way to
        /// the rendezvous, the source on the way from it.
        address: [u8; 6],
        /// The relayed packet (a handshake, cookie or transport packet).
        inner: &'a [u8],
    },
}

/// The parts of a handshake packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handshake<'a> {
    /// The sender's index for the new session.
    pub sender: u32,
    /// Our index (responses only; zero in inits).
    pub receiver: u32,
    /// The Noise message.
    pub noise: &'a [u8],
    /// The bytes mac1 covers (everything before mac1).
    pub mac1_covered: &'a [u8],
    /// mac1.
    pub mac1: &'a [u8; 16],
    /// The bytes mac2 covers (everything before mac2).
    pub mac2_covered: &'a [u8],
    /// mac2 (zeros when the sender has no cookie).
    pub mac2: &'a [u8; 16],
}

fn u32le(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn handshake(buf: &[u8], header: usize, min_noise: usize) -> Result<Handshake<'_>, DecodeError> {
    if buf.len() < header + min_noise + 2 * MAC_LEN {
        return Err(DecodeError::Truncated("handshake"));
    }
    if buf.len() > header + min_noise + MAX_HANDSHAKE_PAYLOAD + 2 * MAC_LEN {
        return Err(DecodeError::BadValue("handshake length"));
    }
    let mac1_at = buf.len() - 2 * MAC_LEN;
    let mac2_at = buf.len() - MAC_LEN;
    let mac1 = buf[mac1_at..mac2_at]
        .try_into()
        .map_err(|_| DecodeError::Truncated("mac1"))?;
    let mac2 = buf[mac2_at..]
        .try_into()
        .map_err(|_| DecodeError::Truncated("mac2"))?;
    Ok(Handshake {
        sender: u32le(&buf[4..8]),
        receiver: if header == RESPONSE_HEADER_LEN {
            u32le(&buf[8..12])
        } else {
            0
        },
        noise: &buf[header..mac1_at],
        mac1_covered: &buf[..mac1_at],
        mac1,
        mac2_covered: &buf[..mac2_at],
        mac2,
    })
}

/// Decodes an outer packet. Never panics; checks only framing, not
/// cryptography.
pub fn decode(buf: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if buf.len() < 4 {
        return Err(DecodeError::Truncated("type"));
    }
    // Byte 1 is a flag of Reflect's; reserved everywhere else.
    let flags_ok = buf[0] == TYPE_REFLECT && buf[1] == REFLECT_OTHER_PORT;
    if buf[2..4] != [0, 0] || (buf[1] != 0 && !flags_ok) {
        return Err(DecodeError::BadValue("reserved"));
    }
    match buf[0] {
        TYPE_INIT => Ok(Packet::Init(handshake(
            buf,
            INIT_HEADER_LEN,
            MSG1_OVERHEAD,
        )?)),
        TYPE_RESPONSE => Ok(Packet::Response(handshake(
            buf,
            RESPONSE_HEADER_LEN,
            MSG2_OVERHEAD,
        )?)),
        TYPE_COOKIE => {
            if buf.len() != COOKIE_REPLY_LEN {
                return Err(DecodeError::BadValue("cookie reply length"));
            }
            Ok(Packet::Cookie {
                receiver: u32le(&buf[4..8]),
                nonce: buf[8..32]
                    .try_into()
                    .map_err(|_| DecodeError::Truncated("nonce"))?,
                sealed: buf[32..64]
                    .try_into()
                    .map_err(|_| DecodeError::Truncated("cookie"))?,
            })
        }
        TYPE_TRANSPORT => {
            if buf.len() < TRANSPORT_MIN_LEN {
                return Err(DecodeError::Truncated("transport"));
            }
            let mut counter = [0u8; 8];
            counter.copy_from_slice(&buf[8..16]);
            Ok(Packet::Transport {
                receiver: u32le(&buf[4..8]),
                counter: u64::from_le_bytes(counter),
                ciphertext: &buf[TRANSPORT_HEADER_LEN..],
            })
        }
        TYPE_RELAY => {
            if buf.len() < RELAY_HEADER_LEN + 4 {
                return Err(DecodeError::Truncated("relay"));
            }
            let inner = &buf[RELAY_HEADER_LEN..];
            // One level only: a relay packet inside a relay packet is never
            // sent, so it is refused rather than unwrapped again.
            if !(TYPE_INIT..=TYPE_TRANSPORT).contains(&inner[0]) {
                return Err(DecodeError::BadValue("relayed packet type"));
            }
            let mut address = [0u8; 6];
            address.copy_from_slice(&buf[4..RELAY_HEADER_LEN]);
            Ok(Packet::Relay { address, inner })
        }
        TYPE_REFLECT | TYPE_REFLECTED => {
            if buf.len() != REFLECT_LEN {
                return Err(DecodeError::BadValue("reflect length"));
            }
            let mut token = [0u8; 8];
            token.copy_from_slice(&buf[4..12]);
            if buf[0] == TYPE_REFLECT {
                if buf[12..].iter().any(|&b| b != 0) {
                    return Err(DecodeError::BadValue("reflect padding"));
                }
                return Ok(Packet::Reflect {
                    token,
                    other_port: buf[1] == REFLECT_OTHER_PORT,
                });
            }
            if buf[31] != 0 || (buf[12] == 4 && buf[17..29].iter().any(|&b| b != 0)) {
                return Err(DecodeError::BadValue("reflected padding"));
            }
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&buf[13..29]);
            let port = u16::from_be_bytes([buf[29], buf[30]]);
            let ip = match buf[12] {
                4 => core::net::IpAddr::from([ip[0], ip[1], ip[2], ip[3]]),
                6 => core::net::IpAddr::from(ip),
                _ => return Err(DecodeError::BadValue("reflected family")),
            };
            Ok(Packet::Reflected {
                token,
                observed: core::net::SocketAddr::new(ip, port),
            })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// A reflect request carrying `token`, answered from the port it was sent
/// to, or from the rendezvous's other port if `other_port`.
pub fn reflect(token: [u8; 8], other_port: bool) -> alloc::vec::Vec<u8> {
    let mut out = alloc::vec![0u8; REFLECT_LEN];
    out[0] = TYPE_REFLECT;
    if other_port {
        out[1] = REFLECT_OTHER_PORT;
    }
    out[4..12].copy_from_slice(&token);
    out
}

/// The answer to a reflect request with `token` that came from `observed`.
pub fn reflected(token: [u8; 8], observed: core::net::SocketAddr) -> alloc::vec::Vec<u8> {
    let mut out = alloc::vec![0u8; REFLECT_LEN];
    out[0] = TYPE_REFLECTED;
    out[4..12].copy_from_slice(&token);
    match observed.ip() {
        core::net::IpAddr::V4(v4) => {
            out[12] = 4;
            out[13..17].copy_from_slice(&v4.octets());
        }
        core::net::IpAddr::V6(v6) => {
            out[12] = 6;
            out[13..29].copy_from_slice(&v6.octets());
        }
    }
    out[29..31].copy_from_slice(&observed.port().to_be_bytes());
    out
}

/// Wraps `inner` for the relay, naming `address`.
pub fn relay(address: [u8; 6], inner: &[u8]) -> alloc::vec::Vec<u8> {
    let mut out = alloc::vec::Vec::with_capacity(RELAY_HEADER_LEN + inner.len());
    out.extend_from_slice(&[TYPE_RELAY, 0, 0, 0]);
    out.extend_from_slice(&address);
    out.extend_from_slice(inner);
    out
}

/// Writes the 4-byte type word and a little-endian index.
pub fn put_header(out: &mut alloc::vec::Vec<u8>, kind: u8, index: u32) {
    out.extend_from_slice(&[kind, 0, 0, 0]);
    out.extend_from_slice(&index.to_le_bytes());
}

/// A one-word description of a datagram for traces and logs.
pub fn describe(buf: &[u8]) -> alloc::string::String {
    use alloc::format;
    match decode(buf) {
        Ok(Packet::Init(h)) => format!("handshake-init sender={}", h.sender),
        Ok(Packet::Response(h)) => {
            format!("handshake-resp sender={} receiver={}", h.sender, h.receiver)
        }
        Ok(Packet::Cookie { receiver, .. }) => format!("cookie-reply receiver={receiver}"),
        Ok(Packet::Transport {
            receiver,
            counter,
            ciphertext,
        }) if ciphertext.len() == TAG_LEN => {
            format!("keepalive receiver={receiver} n={counter}")
        }
        Ok(Packet::Transport {
            receiver, counter, ..
        }) => format!("data receiver={receiver} n={counter}"),
        Ok(Packet::Relay { address, inner }) => {
            let a = crate::addr::Address::from_bytes(address);
            format!("relay[{a}] {}", describe(inner))
        }
        Ok(Packet::Reflect {
            other_port: false, ..
        }) => "reflect".into(),
        Ok(Packet::Reflect {
            other_port: true, ..
        }) => "reflect other-port".into(),
        Ok(Packet::Reflected { observed, .. }) => format!("reflected {observed}"),
        Err(e) => format!("garbage ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[test]
    fn framing_checks() {
        assert_eq!(decode(&[]), Err(DecodeError::Truncated("type")));
        assert_eq!(
            decode(&[4, 1, 0, 0]),
            Err(DecodeError::BadValue("reserved"))
        );
        assert_eq!(decode(&[9, 0, 0, 0]), Err(DecodeError::UnknownKind(9)));
        for observed in ["203.0.113.7:40001", "[2001:db8::1]:9"] {
            let observed = observed.parse().unwrap();
            let r = reflected([3; 8], observed);
            assert_eq!(r.len(), REFLECT_LEN);
            assert_eq!(
                decode(&r),
                Ok(Packet::Reflected {
                    token: [3; 8],
                    observed
                })
            );
        }
        for other_port in [false, true] {
            assert_eq!(
                decode(&reflect([5; 8], other_port)),
                Ok(Packet::Reflect {
                    token: [5; 8],
                    other_port
                })
            );
        }
        let mut bad = reflect([5; 8], false);
        bad[20] = 1;
        assert!(decode(&bad).is_err());
        // Only Reflect has a flag in byte 1, and only the one.
        let mut bad = reflect([5; 8], false);
        bad[1] = 2;
        assert_eq!(decode(&bad), Err(DecodeError::BadValue("reserved")));
        let mut bad = reflected([3; 8], "203.0.113.7:1".parse().unwrap());
        bad[1] = REFLECT_OTHER_PORT;
        assert_eq!(decode(&bad), Err(DecodeError::BadValue("reserved")));
        let mut t = Vec::new();
        put_header(&mut t, TYPE_TRANSPORT, 7);
        t.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(decode(&t), Err(DecodeError::Truncated("transport")));
        t.extend_from_slice(&[0; TAG_LEN]);
        assert_eq!(
            decode(&t),
            Ok(Packet::Transport {
                receiver: 7,
                counter: 5,
                ciphertext: &[0; TAG_LEN]
            })
        );
        let mut init = Vec::new();
        put_header(&mut init, TYPE_INIT, 3);
        init.resize(INIT_HEADER_LEN + MSG1_OVERHEAD + 2 * MAC_LEN, 0);
        match decode(&init) {
            Ok(Packet::Init(h)) => {
                assert_eq!(h.sender, 3);
                assert_eq!(h.noise.len(), MSG1_OVERHEAD);
            }
            other => panic!("{other:?}"),
        }
        init.pop();
        assert!(decode(&init).is_err());
    }

    #[test]
    fn relay_framing() {
        let mut t = Vec::new();
        put_header(&mut t, TYPE_TRANSPORT, 7);
        t.extend_from_slice(&5u64.to_le_bytes());
        t.extend_from_slice(&[0; TAG_LEN]);
        let r = relay([0, 0, 0, 0, 0, 0x2a], &t);
        assert_eq!(
            decode(&r),
            Ok(Packet::Relay {
                address: [0, 0, 0, 0, 0, 0x2a],
                inner: &t
            })
        );
        // Nested relaying and empty relays are refused.
        let nested = relay([0; 6], &r);
        assert!(decode(&nested).is_err());
        assert!(decode(&r[..RELAY_HEADER_LEN + 3]).is_err());
    }
}
