//! Overlay packets: IPv6 with Pilot addresses embedded under a fixed ULA
//! prefix. Datagrams are UDP inside it.
//!
//! STUB: the API below is fixed; bodies are being written.

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

/// The IPv6 address a Pilot address maps to.
pub fn to_ipv6(addr: Address) -> [u8; 16] {
    let _ = addr;
    todo!()
}

/// The Pilot address under the ULA prefix, if `ip` is one.
pub fn from_ipv6(ip: &[u8; 16]) -> Option<Address> {
    let _ = ip;
    todo!()
}

/// Why an overlay packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlayError {
    /// Placeholder until the codec lands.
    Malformed,
}

impl fmt::Display for OverlayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed overlay packet")
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
pub fn encode_udp(src: SocketAddress, dst: SocketAddress, payload: &[u8], out: &mut Vec<u8>) {
    let _ = (src, dst, payload, out);
    todo!()
}

/// Decodes and validates an overlay packet.
pub fn decode(packet: &[u8]) -> Result<Packet<'_>, OverlayError> {
    let _ = packet;
    todo!()
}
