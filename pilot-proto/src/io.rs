//! The vocabulary shared by every state machine and every driver.

use alloc::vec::Vec;
use core::net::SocketAddr;

/// One of the driver's local UDP sockets, named by a small number the
/// driver maps to a real socket. Every datagram the core sends says which
/// socket sends it, and every datagram it receives says which socket got
/// it: [`SocketId::PRIMARY`], and any the core asked for with
/// [`SocketOp::Open`] (a reflect port, birthday probing).
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

/// A change to the driver's set of local UDP sockets that the core asks
/// for. The core never opens sockets itself: it names the socket, the
/// driver binds it (or fails to, after which datagrams sent from it are
/// dropped) and from then on passes its datagrams in with that id.
///
/// Drivers take these before the transmits of the same turn, since those
/// may already use a socket opened here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SocketOp {
    /// Bind a new socket named `id` on the primary socket's IP address, at
    /// `port`, or at any free port the system picks when `None`.
    Open {
        /// The name the core will use for it.
        id: SocketId,
        /// The local port wanted, if any.
        port: Option<u16>,
    },
    /// Close the socket named `id`; datagrams for it are no longer
    /// delivered.
    Close(SocketId),
}

impl core::fmt::Display for SocketOp {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SocketOp::Open { id, port: Some(p) } => write!(f, "open {id} port {p}"),
            SocketOp::Open { id, port: None } => write!(f, "open {id}"),
            SocketOp::Close(id) => write!(f, "close {id}"),
        }
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
    /// A peer that only handshook with us, and that nothing keeps,
    /// reaches the end of its probation.
    Probation,
    /// Resend a Reflect request, or give up on NAT classification.
    Reflect,
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
            Timer::Probation => "probation",
            Timer::Reflect => "reflect",
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
