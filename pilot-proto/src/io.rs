//! The vocabulary shared by every state machine and every driver.

use alloc::vec::Vec;
use core::net::SocketAddr;

/// A UDP datagram the core wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: SocketAddr,
    /// The bytes of the UDP payload.
    pub payload: Vec<u8>,
}
