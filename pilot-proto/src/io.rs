//! The vocabulary shared by every state machine and every driver.

use alloc::vec::Vec;
use core::net::SocketAddr;

/// One of the driver's local UDP sockets, named by a small number the
/// driver maps to a real socket. Every datagram the core sends says which
/// socket sends it, and every datagram it receives says which socket got
/// it: today one socket ([`SocketId::PRIMARY`]); birthday probing will ask
/// the driver for more.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SocketId(pub u16);

impl SocketId {
    /// The socket every node and rendezvous has: the one bound to its
    /// configured listen address.
    pub const PRIMARY: SocketId = SocketId(0);
    /// The compat carrier: one TLS + WebSocket connection over TCP that
    /// carries, one message each, the datagrams a UDP socket would. On an
    /// agent it leads to the rendezvous only; on the rendezvous the
    /// address names which agent's connection (its TCP peer address).
    /// Endpoints seen on it are never UDP candidates.
    pub const CARRIER: SocketId = SocketId(u16::MAX);

    /// True for the compat carrier.
    pub fn is_carrier(self) -> bool {
        self == SocketId::CARRIER
    }
}

impl core::fmt::Display for SocketId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "s{}", self.0)
    }
}

/// A UDP datagram the core wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transmit {
    /// The local socket to send it from.
    pub socket: SocketId,
    /// Where to send it.
    pub destination: SocketAddr,
    /// The bytes of the UDP payload.
    pub payload: Vec<u8>,
}

impl Transmit {
    /// A datagram for `destination`, sent from `socket`.
    pub fn new(socket: SocketId, destination: SocketAddr, payload: Vec<u8>) -> Self {
        Transmit {
            socket,
            destination,
            payload,
        }
    }
}

/// Why a state machine wants to be woken: each deadline names its timer,
/// so traces explain themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Timer {
    /// Output is queued: drain it now.
    Output,
    /// Retransmit or give up on a handshake.
    Handshake,
    /// Send a keepalive.
    Keepalive,
    /// A session reaches its reject time.
    SessionExpiry,
    /// (Re)try registration with the rendezvous.
    Register,
    /// Refresh a registration before it expires.
    Refresh,
    /// Retry or time out a resolve.
    Resolve,
    /// A registration held by the rendezvous expires.
    Expiry,
    /// Queued datagrams waiting for a peer time out.
    QueueExpiry,
    /// Resend a message pushed to an agent, or a request to the
    /// rendezvous, that is not acknowledged yet.
    Push,
    /// The stream stack's next deadline (retransmission, delayed ACK,
    /// keep-alive, timeouts).
    Stream,
    /// Probe a path candidate, or check that the active path still
    /// answers.
    Path,
    /// Start coordinated hole punching, or ask for it again.
    Punch,
}

impl Timer {
    /// A short lower-case name for traces and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Timer::Output => "output",
            Timer::Handshake => "handshake",
            Timer::Keepalive => "keepalive",
            Timer::SessionExpiry => "session-expiry",
            Timer::Register => "register",
            Timer::Refresh => "refresh",
            Timer::Resolve => "resolve",
            Timer::Expiry => "expiry",
            Timer::QueueExpiry => "queue-expiry",
            Timer::Push => "push",
            Timer::Stream => "stream",
            Timer::Path => "path",
            Timer::Punch => "punch",
        }
    }
}

/// Folds a candidate deadline into the earliest one so far.
pub fn earliest(
    a: Option<(crate::Timestamp, Timer)>,
    b: Option<(crate::Timestamp, Timer)>,
) -> Option<(crate::Timestamp, Timer)> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if y.0 < x.0 { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}
