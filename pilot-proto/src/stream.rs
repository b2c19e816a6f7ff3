//! Reliable streams: TCP over the overlay, with smoltcp inside the core.
//!
//! [`Streams`] runs one smoltcp [`Interface`] (IP medium, our overlay IPv6
//! address, the whole overlay /64 on-link) over a device made of two
//! in-memory packet queues. The node feeds it the TCP packets its tunnels
//! authenticated ([`Streams::handle_packet`]) and carries away the packets
//! it produces ([`Streams::poll_packet`]). Virtual ports are TCP ports.
//!
//! # The drain rule
//!
//! Inputs only queue work: `handle_packet`, `handle_timeout` and the
//! commands (`connect`, `write`, `read`, ...) mark the stack dirty, and the
//! first [`Streams::poll_packet`] or [`Streams::poll_event`] afterwards runs
//! smoltcp once for everything queued (several commands in a row cost one
//! pass over the sockets). After any input, drain `poll_packet` until
//! `None`, then `poll_event` until `None`, then read
//! [`Streams::poll_timeout`], which returns `now` while work is pending.
//! [`Streams::info`] and [`Streams::streams`] show the state as of the last
//! drain.
//!
//! Drain after *every* packet, too: smoltcp decides on ACKs once per pass,
//! so a hundred data packets fed in one go get one ACK where a hundred
//! fed one by one get fifty, and its congestion controllers grow the
//! window by at most one segment per ACK. Batching packets halves the
//! per-packet cost but slows slow start to a crawl.
//!
//! # Lifecycle of a stream
//!
//! A stream is announced once, by [`Streams::connect`]'s return value or by
//! [`StreamEvent::Incoming`], and ends with exactly one
//! [`StreamEvent::Closed`]; after that its id is unknown and never reused.
//! An outgoing stream reports [`StreamEvent::Connected`] when its handshake
//! completes; an incoming one is announced only once its handshake is
//! complete (half-open connections are invisible and count against the
//! port's `backlog`).
//!
//! # Reading and writing
//!
//! - [`Streams::read`] returns `Ok(n)` with `n > 0` bytes, `Ok(0)` only at
//!   the end of the stream (the peer half-closed, see
//!   [`StreamEvent::Finished`], and every byte before it was read), and
//!   `Err(StreamError::WouldBlock)` when nothing is buffered yet.
//!   [`StreamEvent::Readable`] is edge-triggered: it fires when data arrives
//!   after a read found the buffer empty (or, first, when data arrives at
//!   all), so read until `WouldBlock` on each one.
//! - [`Streams::write`] accepts as much as the send buffer holds and returns
//!   that count; fewer bytes than offered (`Ok(0)` included, also before
//!   the handshake completes) is backpressure, and
//!   [`StreamEvent::Writable`] fires once room frees up.
//! - A graceful close ends in `Closed { reason: Normal }` once both FINs
//!   are exchanged *and* the application has read the end of the stream
//!   (`read` returned `Ok(0)`) or called [`Streams::close`]. Data that
//!   arrived before the peer's FIN is therefore never lost to a race with
//!   the close; an application that does not want it calls `close`.
//!
//! # Timers
//!
//! - Handshakes (either side) give up after `connect_timeout`.
//! - A connection whose peer has sent nothing for `user_timeout` is aborted
//!   with [`CloseReason::TimedOut`]. smoltcp sends a keep-alive after a
//!   quarter of that without traffic, so silence means a dead peer or path,
//!   not an idle one; unacknowledged data is retransmitted meanwhile with
//!   smoltcp's RTO backoff. smoltcp's own `set_timeout` is not used: its
//!   expiry looks exactly like a graceful close in LAST-ACK, and the reason
//!   matters to the application.
//! - A stream over which no payload byte moved (received, or acknowledged
//!   by the peer) for `idle_timeout` is aborted with [`CloseReason::Idle`].
//! - After [`Streams::close`], once the peer acknowledged our FIN, its own
//!   FIN must come within `user_timeout` (Linux's FIN-WAIT-2 timeout), or
//!   the connection is aborted ([`CloseReason::TimedOut`]). Until then
//!   the data still queued drains at whatever pace the peer allows.
//!
//! # smoltcp settings and why
//!
//! - Nagle off: agents exchange small request/response messages, and Nagle
//!   would hold each small write until the previous one is acknowledged (a
//!   round trip, plus the peer's delayed ACK).
//! - Delayed ACK on, smoltcp's 10 ms: a reply written within 10 ms carries
//!   the ACK for free, and smoltcp still ACKs at once when more than a full
//!   segment is unacknowledged (so every second segment of a bulk
//!   transfer), on out-of-order data and on window updates.
//! - No TCP timestamps (smoltcp's default): the tunnel's AEAD counter
//!   already rules out old duplicates, and 12 bytes per segment is 1 % of
//!   an overlay packet.
//! - SACK is negotiated (smoltcp always offers it) but smoltcp's sender
//!   does not act on SACK blocks; it fast-retransmits one segment on three
//!   duplicate ACKs and goes back N on an RTO (at least 1 s). The receiver
//!   keeps up to 32 out-of-order ranges (the
//!   `assembler-max-segment-count-32` feature; with the default 4 it drops
//!   every segment that would open a fifth hole, and a 1 MiB window holds
//!   some 860 segments).
//! - Checksums are computed and verified although the tunnel authenticates
//!   every packet: the packets are then valid IPv6 for any other stack
//!   (a gateway writing them to a TUN device, a capture tool).
//! - Congestion control per [`StreamConfig::congestion`], CUBIC by default.
//!
//! Everything is a function of the seed and the inputs: smoltcp's PRNG
//! (initial sequence numbers) is seeded from the `stream tcp` random
//! stream, ephemeral ports come from `stream ports`, and every map is a
//! `BTreeMap`.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{
    HardwareAddress, IpAddress, IpCidr, IpEndpoint, IpListenEndpoint, Ipv6Address,
};

use crate::addr::{Address, SocketAddress};
use crate::overlay::{self, OVERLAY_MTU, OVERLAY_PREFIX_LEN, PROTO_TCP};
use crate::rng;
use crate::time::Timestamp;

/// Limits and tuning of a node's streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamConfig {
    /// Receive buffer per stream, in bytes: the largest window advertised
    /// to the peer, so it bounds throughput at `rx_buffer / RTT`. Clamped
    /// to 4 KiB ..= 1 GiB (smoltcp's limit).
    pub rx_buffer: usize,
    /// Send buffer per stream, in bytes: written but unacknowledged data
    /// lives here, so it should be at least the peer's receive window.
    /// Clamped like `rx_buffer`.
    pub tx_buffer: usize,
    /// The most streams (connecting, open, closing, half-open and TIME-WAIT
    /// together) held at once; [`Streams::connect`] fails and incoming SYNs
    /// are refused beyond it.
    pub max_streams: usize,
    /// The most streams (open or half-open) on one listening port; further
    /// SYNs to it are refused with an RST.
    pub max_per_port: usize,
    /// The most sockets kept in TIME-WAIT after their streams ended; the
    /// oldest goes first beyond it. smoltcp walks every socket on each
    /// poll, so thousands of TIME-WAITs (10 s each at a few hundred short
    /// connections per second) slow every packet. Over an authenticated,
    /// replay-protected tunnel the old duplicates TIME-WAIT guards against
    /// cannot be forged, and a new connection reusing a tuple is let in
    /// anyway, so cutting TIME-WAIT short costs at most a lost final ACK.
    pub max_time_wait: usize,
    /// The most half-open (SYN received, handshake not yet complete)
    /// connections per listening port; further SYNs are dropped silently,
    /// so the client retries rather than seeing the port as closed.
    pub backlog: usize,
    /// A stream over which no payload byte moved in either direction for
    /// this long is aborted ([`CloseReason::Idle`]). Zero disables it.
    pub idle_timeout: Duration,
    /// How long a handshake may take, on either side, before it is given
    /// up ([`CloseReason::TimedOut`]). Zero disables it.
    pub connect_timeout: Duration,
    /// How long the peer may stay silent (keep-alives are sent after a
    /// quarter of it) before the connection is aborted
    /// ([`CloseReason::TimedOut`]); also how long a stream closed with
    /// [`Streams::close`] waits for the peer's FIN once ours is
    /// acknowledged. Zero disables both and the keep-alives.
    pub user_timeout: Duration,
    /// The congestion controller of every new stream.
    pub congestion: Congestion,
    /// Accept SYNs to every port, listened or not (each is announced as
    /// [`StreamEvent::Incoming`]): for a driver that decides per stream,
    /// after the handshake, whether something serves it (the daemon's
    /// bridge to local TCP services), and resets those it cannot serve.
    pub accept_any: bool,
}

impl Default for StreamConfig {
    /// Buffers of 1 MiB each: a window that fills 100 Mbit/s at 80 ms RTT
    /// (or 400 Mbit/s at 20 ms), enough for agents across continents. The
    /// memory is allocated zeroed, so an idle stream's untouched pages
    /// cost nothing resident; a busy one holds at most 2 MiB.
    fn default() -> Self {
        StreamConfig {
            rx_buffer: 1 << 20,
            tx_buffer: 1 << 20,
            max_streams: 1024,
            max_per_port: 256,
            max_time_wait: 256,
            backlog: 128,
            idle_timeout: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(20),
            user_timeout: Duration::from_secs(180),
            congestion: Congestion::default(),
            accept_any: false,
        }
    }
}

/// A congestion controller (smoltcp's implementations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Congestion {
    /// No congestion control: the peer's window is the only limit. Only
    /// for tests and links known to be uncongested.
    None,
    /// Reno (RFC 5681). The default without the `cubic` feature.
    #[cfg_attr(not(feature = "cubic"), default)]
    Reno,
    /// CUBIC (RFC 9438), the default of Linux, Windows and macOS, and ours
    /// with the `cubic` feature. Without it (smoltcp builds CUBIC only with
    /// std), this runs Reno.
    #[cfg_attr(feature = "cubic", default)]
    Cubic,
}

/// A stream's identifier, unique for the lifetime of a [`Streams`]: ids are
/// never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u32);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// Why a stream command failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamError {
    /// [`StreamConfig::max_streams`] streams exist already.
    TooManyStreams,
    /// No ephemeral port (49152..=65535) is free for a new connection.
    PortLimit,
    /// The port is already listened on, or is the local port of a
    /// connection.
    PortInUse,
    /// The port is not listened on. [`Streams::unlisten`] is idempotent and
    /// never returns it; a node uses it for its own commands.
    NotListening,
    /// No stream has this id (never had, or it was closed).
    UnknownStream,
    /// The stream no longer takes this operation: writing after
    /// [`Streams::shutdown`] or [`Streams::close`], reading after `close`,
    /// or the connection is gone and its [`StreamEvent::Closed`] is pending.
    Closed,
    /// The destination is not a peer's port: port 0, the unspecified or
    /// broadcast address, or our own address.
    InvalidDestination,
    /// Port 0 cannot be listened on.
    InvalidPort,
    /// Nothing to read yet; [`StreamEvent::Readable`] follows when data
    /// arrives.
    WouldBlock,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StreamError::TooManyStreams => "too many streams",
            StreamError::PortLimit => "no free ephemeral port",
            StreamError::PortInUse => "port already in use",
            StreamError::NotListening => "port is not listened on",
            StreamError::UnknownStream => "no such stream",
            StreamError::Closed => "stream is closed",
            StreamError::InvalidDestination => "invalid destination",
            StreamError::InvalidPort => "invalid port",
            StreamError::WouldBlock => "no data available yet",
        })
    }
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// Both sides closed gracefully and the application read to the end
    /// (or closed without reading).
    Normal,
    /// The peer reset the connection.
    Reset,
    /// The peer answered our SYN with an RST: nothing listens on that
    /// port, or the peer is at its limits.
    Refused,
    /// The handshake, the peer (silent for `user_timeout`) or a graceful
    /// close took too long.
    TimedOut,
    /// No payload moved for `idle_timeout`.
    Idle,
    /// We aborted it: [`Streams::abort`] or [`Streams::abort_peer`].
    Aborted,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Normal => "closed",
            CloseReason::Reset => "reset by peer",
            CloseReason::Refused => "connection refused",
            CloseReason::TimedOut => "timed out",
            CloseReason::Idle => "idle timeout",
            CloseReason::Aborted => "aborted",
        })
    }
}

/// Something that happened to a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A peer connected to a listening port and the handshake completed.
    Incoming {
        /// The new stream.
        id: StreamId,
        /// Our port it connected to.
        port: u16,
        /// The peer and its port.
        from: SocketAddress,
    },
    /// Our connection attempt succeeded.
    Connected {
        /// The stream [`Streams::connect`] returned.
        id: StreamId,
    },
    /// Data arrived; read until [`StreamError::WouldBlock`].
    Readable {
        /// The stream.
        id: StreamId,
    },
    /// Room freed in the send buffer after a write was cut short.
    Writable {
        /// The stream.
        id: StreamId,
    },
    /// The peer half-closed: after the buffered data, read returns `Ok(0)`.
    Finished {
        /// The stream.
        id: StreamId,
    },
    /// The stream is gone; its id is unknown from now on.
    Closed {
        /// The stream.
        id: StreamId,
        /// Why.
        reason: CloseReason,
    },
}

/// A stream's TCP state, as shown to users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamState {
    /// Handshake in progress (SYN-SENT or SYN-RECEIVED).
    Connecting,
    /// Open both ways.
    Established,
    /// We closed; our FIN is unacknowledged.
    FinWait1,
    /// We closed and the peer acknowledged; it may still send.
    FinWait2,
    /// The peer closed; we may still send.
    CloseWait,
    /// Both closed at once; waiting for the ACK of our FIN.
    Closing,
    /// The peer closed, then we did; waiting for the ACK of our FIN.
    LastAck,
    /// Both closed; lingering to answer a retransmitted FIN.
    TimeWait,
    /// The connection is over; unread data remains.
    Closed,
}

impl StreamState {
    /// The RFC 793 name (`ESTABLISHED`, ...), `CONNECTING` for either
    /// handshake state.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamState::Connecting => "CONNECTING",
            StreamState::Established => "ESTABLISHED",
            StreamState::FinWait1 => "FIN-WAIT-1",
            StreamState::FinWait2 => "FIN-WAIT-2",
            StreamState::CloseWait => "CLOSE-WAIT",
            StreamState::Closing => "CLOSING",
            StreamState::LastAck => "LAST-ACK",
            StreamState::TimeWait => "TIME-WAIT",
            StreamState::Closed => "CLOSED",
        }
    }

    fn from_tcp(state: tcp::State) -> Self {
        match state {
            tcp::State::Listen | tcp::State::SynSent | tcp::State::SynReceived => {
                StreamState::Connecting
            }
            tcp::State::Established => StreamState::Established,
            tcp::State::FinWait1 => StreamState::FinWait1,
            tcp::State::FinWait2 => StreamState::FinWait2,
            tcp::State::CloseWait => StreamState::CloseWait,
            tcp::State::Closing => StreamState::Closing,
            tcp::State::LastAck => StreamState::LastAck,
            tcp::State::TimeWait => StreamState::TimeWait,
            tcp::State::Closed => StreamState::Closed,
        }
    }
}

impl fmt::Display for StreamState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream.
    pub id: StreamId,
    /// Our address and port.
    pub local: SocketAddress,
    /// The peer's address and port.
    pub remote: SocketAddress,
    /// The TCP state.
    pub state: StreamState,
    /// Payload bytes received in order from the peer (read or not).
    pub bytes_in: u64,
    /// Payload bytes the application wrote (sent or still buffered).
    pub bytes_out: u64,
    /// Received bytes not yet read.
    pub recv_queue: usize,
    /// Written bytes not yet acknowledged by the peer.
    pub send_queue: usize,
    /// When the connection attempt started (SYN sent or received).
    pub created: Timestamp,
}

/// Counters of packets the streams handled or refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// TCP packets taken in.
    pub packets_in: u64,
    /// TCP packets produced.
    pub packets_out: u64,
    /// Packets dropped before TCP: too long, bad IPv6 header, not TCP, not
    /// addressed to us, or a TCP header too short to demultiplex.
    pub dropped: u64,
    /// SYNs refused with an RST because of `max_streams` or
    /// `max_per_port`.
    pub syn_refused: u64,
    /// SYNs dropped silently because the port's `backlog` was full.
    pub syn_dropped: u64,
}

/// The ephemeral port range (RFC 6335).
const EPHEMERAL: core::ops::RangeInclusive<u16> = 49152..=65535;
/// Random draws before falling back to a scan for a free ephemeral port.
const PORT_TRIES: usize = 64;
/// Bounds for the per-stream buffers; smoltcp refuses receive buffers
/// over 1 GiB (its window scale tops out at 14).
const MIN_BUFFER: usize = 4096;
const MAX_BUFFER: usize = 1 << 30;
/// `Writable` waits for this much room (or half the buffer, if less), so
/// that a writer blocked on a full buffer is woken once per useful chunk,
/// not once per ACK.
const WRITABLE_ROOM: usize = 64 * 1024;
/// smoltcp's default delayed-ACK time, set explicitly so that a change of
/// default upstream cannot change our traces.
const ACK_DELAY: SmolDuration = SmolDuration::from_millis(10);
/// Keep-alives are sent after `user_timeout / KEEPALIVE_DIVISOR` of
/// silence, so a live peer answers several times before the timeout.
const KEEPALIVE_DIVISOR: u32 = 4;
/// How far ahead to look when smoltcp asks to be polled "now" right after
/// a poll that did all it could (a quirk of its zero-window and
/// keep-alive timers); without it a driver would spin.
const STALL_BACKOFF: Duration = Duration::from_millis(1);
/// Passes of smoltcp per drain: one more runs if handling the events made
/// new work (window updates after discarding data, RSTs of aborts).
const MAX_PASSES: usize = 4;
/// TCP header flags.
const FLAG_FIN: u8 = 0x01;
const FLAG_SYN: u8 = 0x02;
const FLAG_RST: u8 = 0x04;
const FLAG_ACK: u8 = 0x10;
/// IPv6 plus minimal TCP header.
const IPV6_HEADER: usize = 40;
const TCP_HEADER: usize = 20;

/// Our end of a connection: local port and the peer.
type Tuple = (u16, SocketAddress);

/// Where a connection's tuple is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// A stream (announced or half-open).
    Conn(StreamId),
    /// A socket detached from its stream: TIME-WAIT, or an abort's RST not
    /// yet sent.
    Orphan(SocketHandle),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Incoming, SYN received, not yet announced.
    HalfOpen,
    /// Outgoing, handshake in progress.
    Connecting,
    /// Announced and handshake complete.
    Open,
}

struct Conn {
    /// `None` once the connection is over and only unread data is left.
    handle: Option<SocketHandle>,
    local_port: u16,
    remote: SocketAddress,
    phase: Phase,
    /// We connected (the local port is one of our ephemeral ports).
    outgoing: bool,
    /// The socket state seen at the last reconcile (or set by a command).
    state: tcp::State,
    /// Unread data of a finished connection, from `leftover_pos` on.
    leftover: Vec<u8>,
    leftover_pos: usize,
    /// Bytes read (or discarded after `close`).
    read_total: u64,
    /// Bytes received in order: `read_total` plus what is buffered.
    received: u64,
    /// Bytes accepted by `write`.
    written: u64,
    /// Bytes the peer acknowledged.
    acked: u64,
    /// When the connection attempt started (SYN sent or received).
    created: Timestamp,
    /// When a packet of this connection last arrived.
    last_heard: Timestamp,
    /// When payload last moved either way.
    last_activity: Timestamp,
    /// When, after `close`, the peer acknowledged our FIN (FIN-WAIT-2):
    /// from then on only its FIN is awaited.
    closing_since: Option<Timestamp>,
    /// The next time data is buffered, announce it.
    readable_armed: bool,
    /// A write was cut short; announce room.
    write_blocked: bool,
    /// `Finished` was emitted.
    finished: bool,
    /// The application read the end of the stream.
    eof_read: bool,
    /// The application shut down its sending half (or closed).
    shutdown: bool,
    /// The application closed the stream.
    closed: bool,
    /// An RST for this tuple arrived since the last reconcile.
    rst_seen: bool,
    /// The peer's initial sequence number, from its SYN: with
    /// `read_total` and what is buffered it gives our RCV.NXT.
    peer_isn: Option<u32>,
    /// The highest acknowledgment number the peer sent (after its SYN),
    /// with the window field of the newest segment that carried it.
    peer_ack: Option<(u32, u16)>,
}

impl Conn {
    fn new(handle: SocketHandle, local_port: u16, remote: SocketAddress, phase: Phase) -> Self {
        Conn {
            handle: Some(handle),
            local_port,
            remote,
            phase,
            outgoing: phase == Phase::Connecting,
            state: tcp::State::Closed,
            leftover: Vec::new(),
            leftover_pos: 0,
            read_total: 0,
            received: 0,
            written: 0,
            acked: 0,
            created: Timestamp::ZERO,
            last_heard: Timestamp::ZERO,
            last_activity: Timestamp::ZERO,
            closing_since: None,
            readable_armed: true,
            write_blocked: false,
            finished: false,
            eof_read: false,
            shutdown: false,
            closed: false,
            rst_seen: false,
            peer_isn: None,
            peer_ack: None,
        }
    }

    fn tuple(&self) -> Tuple {
        (self.local_port, self.remote)
    }
}

/// `a` comes before `b` in sequence space (RFC 9293's `<`, modulo 2^32).
fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// Overwrites the 32-bit field at `at` of the TCP header of an overlay
/// packet, keeping its checksum right.
fn set_u32(packet: &mut [u8], at: usize, value: u32) {
    let [a, b, c, d] = value.to_be_bytes();
    set_u16(packet, at, u16::from_be_bytes([a, b]));
    set_u16(packet, at + 2, u16::from_be_bytes([c, d]));
}

/// Overwrites the 16-bit field at `at` (even) of the TCP header of an
/// overlay packet, updating the checksum incrementally (RFC 1624, eqn. 3).
fn set_u16(packet: &mut [u8], at: usize, value: u16) {
    let field = IPV6_HEADER + at;
    let sum = IPV6_HEADER + 16;
    let (Some(old), Some(check)) = (packet.get(field..field + 2), packet.get(sum..sum + 2)) else {
        return;
    };
    let old = u16::from_be_bytes([old[0], old[1]]);
    let check = u16::from_be_bytes([check[0], check[1]]);
    let mut acc = u32::from(!check) + u32::from(!old) + u32::from(value);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    let check = !(acc as u16);
    packet[field..field + 2].copy_from_slice(&value.to_be_bytes());
    packet[sum..sum + 2].copy_from_slice(&check.to_be_bytes());
}

/// A socket kept after its stream ended.
struct Orphan {
    tuple: Tuple,
    since: Timestamp,
    /// Its local port is one of our ephemeral ports.
    outgoing: bool,
}

/// The smoltcp device: packets in, packets out, both in memory.
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct RxToken(Vec<u8>);

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

struct TxToken<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((RxToken(packet), TxToken(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = OVERLAY_MTU;
        // The default checksum capabilities compute and verify everything.
        caps
    }
}

/// Every TCP stream of one node.
pub struct Streams {
    config: StreamConfig,
    local: Address,
    local_ip: Ipv6Address,
    iface: Interface,
    device: Queues,
    sockets: SocketSet<'static>,
    ports: rng::Stream,
    listening: BTreeSet<u16>,
    conns: BTreeMap<StreamId, Conn>,
    by_tuple: BTreeMap<Tuple, Slot>,
    orphans: BTreeMap<SocketHandle, Orphan>,
    events: VecDeque<StreamEvent>,
    next_id: u32,
    now: Timestamp,
    /// Work is queued that the next drain must run through smoltcp.
    dirty: bool,
    /// Listening sockets created for SYNs since the last pass.
    fresh_listeners: usize,
    /// The earliest timer, as of the last pass.
    deadline: Option<Timestamp>,
    stats: StreamStats,
}

impl Streams {
    /// Streams for the node at `local`, with randomness from `seed`.
    pub fn new(config: StreamConfig, local: Address, seed: &[u8; 32], now: Timestamp) -> Self {
        let mut device = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
        };
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ip);
        iface_config.random_seed = rng::Stream::derive(seed, "stream tcp").next_u64();
        let mut iface = Interface::new(iface_config, &mut device, instant(now));
        let local_ip = Ipv6Address::from(overlay::to_ipv6(local));
        // Our address with the overlay prefix: every overlay address is
        // on-link, so smoltcp sends to any peer without a route.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv6(local_ip), OVERLAY_PREFIX_LEN));
        });
        Streams {
            config,
            local,
            local_ip,
            iface,
            device,
            sockets: SocketSet::new(Vec::new()),
            ports: rng::Stream::derive(seed, "stream ports"),
            listening: BTreeSet::new(),
            conns: BTreeMap::new(),
            by_tuple: BTreeMap::new(),
            orphans: BTreeMap::new(),
            events: VecDeque::new(),
            next_id: 0,
            now,
            dirty: false,
            fresh_listeners: 0,
            deadline: None,
            stats: StreamStats::default(),
        }
    }

    /// Our Pilot address.
    pub fn local(&self) -> Address {
        self.local
    }

    /// Accepts connections to `port` from now on.
    pub fn listen(&mut self, port: u16) -> Result<(), StreamError> {
        if port == 0 {
            return Err(StreamError::InvalidPort);
        }
        // Accepted streams and TIME-WAIT on the port do not stand in the
        // way (re-listening after an unlisten); an outgoing connection
        // from it does, as its tuple could collide with an incoming one.
        let outgoing = self
            .conns
            .values()
            .any(|c| c.outgoing && c.local_port == port)
            || self
                .orphans
                .values()
                .any(|o| o.outgoing && o.tuple.0 == port);
        if self.listening.contains(&port) || outgoing {
            return Err(StreamError::PortInUse);
        }
        self.listening.insert(port);
        Ok(())
    }

    /// Accepts connections to every port from now on (`accept_any`), or
    /// only to listened ones again; streams already accepted stay.
    pub fn set_accept_any(&mut self, on: bool) {
        self.config.accept_any = on;
    }

    /// Stops accepting connections to `port`. Streams already accepted
    /// stay; handshakes in progress are dropped. Idempotent.
    pub fn unlisten(&mut self, port: u16) {
        if !self.listening.remove(&port) {
            return;
        }
        let half_open: Vec<StreamId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.phase == Phase::HalfOpen && c.local_port == port)
            .map(|(id, _)| *id)
            .collect();
        for id in half_open {
            self.kill(id, None);
        }
    }

    /// True if `port` is listened on.
    pub fn is_listening(&self, port: u16) -> bool {
        self.listening.contains(&port)
    }

    /// The listened ports, in order.
    pub fn listening(&self) -> impl Iterator<Item = u16> + '_ {
        self.listening.iter().copied()
    }

    /// Opens a stream to `remote` from a random free ephemeral port.
    /// [`StreamEvent::Connected`] or [`StreamEvent::Closed`] follows.
    pub fn connect(
        &mut self,
        now: Timestamp,
        remote: SocketAddress,
    ) -> Result<StreamId, StreamError> {
        self.advance(now);
        if remote.port == 0
            || remote.addr.is_unspecified()
            || remote.addr.is_broadcast()
            || remote.addr == self.local
        {
            return Err(StreamError::InvalidDestination);
        }
        if !self.room_for_one() {
            return Err(StreamError::TooManyStreams);
        }
        let local_port = self.ephemeral_port().ok_or(StreamError::PortLimit)?;
        let mut socket = self.new_socket();
        let endpoint = IpEndpoint::new(
            IpAddress::Ipv6(Ipv6Address::from(overlay::to_ipv6(remote.addr))),
            remote.port,
        );
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv6(self.local_ip)),
            port: local_port,
        };
        if socket
            .connect(self.iface.context(), endpoint, local)
            .is_err()
        {
            return Err(StreamError::InvalidDestination);
        }
        let state = socket.state();
        let handle = self.sockets.add(socket);
        let id = self.allocate_id();
        let mut conn = Conn::new(handle, local_port, remote, Phase::Connecting);
        conn.state = state;
        conn.created = self.now;
        conn.last_heard = self.now;
        conn.last_activity = self.now;
        self.by_tuple.insert(conn.tuple(), Slot::Conn(id));
        self.conns.insert(id, conn);
        self.dirty = true;
        Ok(id)
    }

    /// Queues `data` for sending and returns how many bytes were taken:
    /// fewer than offered (even 0) means the send buffer is full or the
    /// handshake is not done yet, and [`StreamEvent::Writable`] follows.
    pub fn write(
        &mut self,
        now: Timestamp,
        id: StreamId,
        data: &[u8],
    ) -> Result<usize, StreamError> {
        self.advance(now);
        let conn = announced_in(&mut self.conns, id)?;
        if conn.shutdown {
            return Err(StreamError::Closed);
        }
        let Some(handle) = conn.handle else {
            return Err(StreamError::Closed);
        };
        if data.is_empty() {
            return Ok(0);
        }
        if conn.phase != Phase::Open {
            conn.write_blocked = true;
            return Ok(0);
        }
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let Ok(n) = socket.send_slice(data) else {
            return Err(StreamError::Closed);
        };
        conn.written += n as u64;
        if n < data.len() {
            conn.write_blocked = true;
        }
        if n > 0 {
            self.dirty = true;
        }
        Ok(n)
    }

    /// Reads buffered data into `buf`: `Ok(n > 0)` bytes, `Ok(0)` at the
    /// end of the stream (or for an empty `buf`), or
    /// `Err(StreamError::WouldBlock)` if nothing has arrived yet.
    pub fn read(
        &mut self,
        now: Timestamp,
        id: StreamId,
        buf: &mut [u8],
    ) -> Result<usize, StreamError> {
        self.advance(now);
        let conn = announced_in(&mut self.conns, id)?;
        if conn.closed {
            return Err(StreamError::Closed);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let Some(handle) = conn.handle else {
            // The connection is over; serve what was left, then the end.
            let rest = &conn.leftover[conn.leftover_pos..];
            let n = rest.len().min(buf.len());
            if n > 0 {
                buf[..n].copy_from_slice(&rest[..n]);
                conn.leftover_pos += n;
                conn.read_total += n as u64;
                return Ok(n);
            }
            conn.eof_read = true;
            self.finish(id, CloseReason::Normal);
            return Ok(0);
        };
        if conn.phase != Phase::Open {
            return Err(StreamError::WouldBlock);
        }
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        match socket.recv_slice(buf) {
            Ok(0) => {
                conn.readable_armed = true;
                Err(StreamError::WouldBlock)
            }
            Ok(n) => {
                conn.read_total += n as u64;
                if socket.recv_queue() == 0 {
                    conn.readable_armed = true;
                }
                // The window opened: smoltcp may want to tell the peer.
                self.dirty = true;
                Ok(n)
            }
            Err(tcp::RecvError::Finished) => {
                conn.readable_armed = true;
                conn.eof_read = true;
                // The connection may be complete now; the next pass says.
                self.dirty = true;
                Ok(0)
            }
            Err(tcp::RecvError::InvalidState) => {
                if socket.state() == tcp::State::Closed {
                    Err(StreamError::Closed)
                } else {
                    Err(StreamError::WouldBlock)
                }
            }
        }
    }

    /// Half-closes: a FIN follows the data already written. Reading goes
    /// on until the peer closes too.
    pub fn shutdown(&mut self, now: Timestamp, id: StreamId) {
        self.advance(now);
        let Ok(conn) = announced_in(&mut self.conns, id) else {
            return;
        };
        if conn.shutdown {
            return;
        }
        conn.shutdown = true;
        if conn.phase == Phase::Open {
            if let Some(handle) = conn.handle {
                let socket = self.sockets.get_mut::<tcp::Socket>(handle);
                socket.close();
                conn.state = socket.state();
            }
        }
        // While connecting, the FIN waits for the handshake (reconcile).
        self.dirty = true;
    }

    /// Closes gracefully: a FIN follows the data already written, and
    /// anything the peer still sends is discarded. No more events but
    /// [`StreamEvent::Closed`] come for this stream.
    pub fn close(&mut self, now: Timestamp, id: StreamId) {
        self.advance(now);
        let now = self.now;
        let Ok(conn) = self.announced_mut(id) else {
            return;
        };
        if conn.closed {
            return;
        }
        conn.closed = true;
        if conn.handle.is_none() {
            // Already over; only unread data was left.
            self.finish(id, CloseReason::Normal);
            return;
        }
        self.shutdown(now, id);
        self.dirty = true;
    }

    /// Aborts the stream with an RST; [`StreamEvent::Closed`] with
    /// [`CloseReason::Aborted`] follows.
    pub fn abort(&mut self, now: Timestamp, id: StreamId) {
        self.advance(now);
        if self.announced(id).is_ok() {
            self.kill(id, Some(CloseReason::Aborted));
        }
    }

    /// Aborts every stream with `peer` (say, its trust was revoked) and
    /// returns how many; each gets [`StreamEvent::Closed`] with
    /// [`CloseReason::Aborted`]. Half-open and TIME-WAIT connections with
    /// it go too, silently.
    pub fn abort_peer(&mut self, now: Timestamp, peer: Address) -> usize {
        self.advance(now);
        let ids: Vec<(StreamId, bool)> = self
            .conns
            .iter()
            .filter(|(_, c)| c.remote.addr == peer)
            .map(|(id, c)| (*id, c.phase != Phase::HalfOpen))
            .collect();
        let mut count = 0;
        for (id, announced) in ids {
            if announced {
                count += 1;
                self.kill(id, Some(CloseReason::Aborted));
            } else {
                self.kill(id, None);
            }
        }
        // TIME-WAIT sockets with it go; the ones about to send the RSTs
        // of the aborts above stay until they have.
        let orphans: Vec<SocketHandle> = self
            .orphans
            .iter()
            .filter(|(h, o)| {
                o.tuple.1.addr == peer
                    && self.sockets.get::<tcp::Socket>(**h).state() == tcp::State::TimeWait
            })
            .map(|(h, _)| *h)
            .collect();
        for handle in orphans {
            self.remove_orphan(handle);
        }
        count
    }

    /// A snapshot of the stream, if it is known.
    pub fn info(&self, id: StreamId) -> Option<StreamInfo> {
        let conn = self.announced(id).ok()?;
        Some(self.info_of(id, conn))
    }

    /// Snapshots of every stream, by id.
    pub fn streams(&self) -> impl Iterator<Item = StreamInfo> + '_ {
        self.conns
            .iter()
            .filter(|(_, c)| c.phase != Phase::HalfOpen)
            .map(|(id, c)| self.info_of(*id, c))
    }

    /// Packet counters.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Takes an overlay IPv6 TCP packet (next header 6) that a tunnel
    /// authenticated. Packets that are malformed, not TCP or not addressed
    /// to us are dropped and counted, never a panic.
    pub fn handle_packet(&mut self, now: Timestamp, packet: &[u8]) {
        self.advance(now);
        if !self.admit(packet) {
            self.stats.dropped += 1;
        }
    }

    /// Runs the timers due by `now`. Safe to call early or twice.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
        let now = self.now;
        let ids: Vec<StreamId> = self.conns.keys().copied().collect();
        for id in ids {
            let Some(conn) = self.conns.get(&id) else {
                continue;
            };
            if let Some(reason) = self.expired(conn, now) {
                let announced = conn.phase != Phase::HalfOpen;
                self.kill(id, announced.then_some(reason));
            }
        }
        // smoltcp's own timers (retransmission, delayed ACK, keep-alive,
        // TIME-WAIT) run in the next pass.
        self.dirty = true;
    }

    /// The next IPv6 packet to send, with the Pilot address it goes to.
    pub fn poll_packet(&mut self) -> Option<(Address, Vec<u8>)> {
        self.run();
        while let Some(packet) = self.device.tx.pop_front() {
            // smoltcp only answers overlay addresses (all we give it), so
            // this always succeeds; the check keeps junk off the tunnel.
            let Ok((_, dst, PROTO_TCP)) = overlay::header(&packet) else {
                continue;
            };
            self.stats.packets_out += 1;
            return Some((dst, packet));
        }
        None
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<StreamEvent> {
        self.run();
        self.events.pop_front()
    }

    /// When to call [`Streams::handle_timeout`] next: `now` while work or
    /// output is pending, otherwise the earliest of smoltcp's timers and
    /// ours (handshake, silence, idle, close), or `None` if nothing waits.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.dirty || !self.device.tx.is_empty() || !self.events.is_empty() {
            return Some(self.now);
        }
        self.deadline
    }

    // ---- internals -------------------------------------------------------

    fn advance(&mut self, now: Timestamp) {
        // smoltcp assumes time never goes back.
        self.now = self.now.max(now);
    }

    fn allocate_id(&mut self) -> StreamId {
        let id = StreamId(self.next_id);
        // 2^32 streams at one per microsecond is over an hour of nothing
        // else; saturating keeps ids unique until then.
        self.next_id = self.next_id.saturating_add(1);
        id
    }

    fn announced(&self, id: StreamId) -> Result<&Conn, StreamError> {
        match self.conns.get(&id) {
            Some(c) if c.phase != Phase::HalfOpen => Ok(c),
            _ => Err(StreamError::UnknownStream),
        }
    }

    fn announced_mut(&mut self, id: StreamId) -> Result<&mut Conn, StreamError> {
        announced_in(&mut self.conns, id)
    }

    fn info_of(&self, id: StreamId, conn: &Conn) -> StreamInfo {
        let (state, recv_queue, send_queue) = match conn.handle {
            Some(h) => {
                let s = self.sockets.get::<tcp::Socket>(h);
                (
                    StreamState::from_tcp(s.state()),
                    s.recv_queue(),
                    s.send_queue(),
                )
            }
            None => (
                StreamState::Closed,
                conn.leftover.len() - conn.leftover_pos,
                0,
            ),
        };
        StreamInfo {
            id,
            local: SocketAddress::new(self.local, conn.local_port),
            remote: conn.remote,
            state,
            bytes_in: conn.received.max(conn.read_total + recv_queue as u64),
            bytes_out: conn.written,
            recv_queue,
            send_queue,
            created: conn.created,
        }
    }

    fn new_socket(&self) -> tcp::Socket<'static> {
        let rx = self.config.rx_buffer.clamp(MIN_BUFFER, MAX_BUFFER);
        let tx = self.config.tx_buffer.clamp(MIN_BUFFER, MAX_BUFFER);
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; rx]),
            tcp::SocketBuffer::new(vec![0u8; tx]),
        );
        socket.set_congestion_control(match self.config.congestion {
            Congestion::None => tcp::CongestionControl::None,
            Congestion::Reno => tcp::CongestionControl::Reno,
            #[cfg(feature = "cubic")]
            Congestion::Cubic => tcp::CongestionControl::Cubic,
            #[cfg(not(feature = "cubic"))]
            Congestion::Cubic => tcp::CongestionControl::Reno,
        });
        socket.set_nagle_enabled(false);
        socket.set_ack_delay(Some(ACK_DELAY));
        // Our timers decide timeouts (see the module docs).
        socket.set_timeout(None);
        if !self.config.user_timeout.is_zero() {
            let keepalive =
                (self.config.user_timeout / KEEPALIVE_DIVISOR).max(Duration::from_secs(1));
            socket.set_keep_alive(Some(smol_duration(keepalive)));
        }
        socket
    }

    /// Streams held (with a socket or only their unread data) plus
    /// orphaned sockets: what `max_streams` bounds.
    fn socket_count(&self) -> usize {
        self.conns.len() + self.orphans.len()
    }

    /// True if one more stream fits, evicting the oldest orphans (TIME-WAIT
    /// mostly) if that is what it takes, as Linux does past
    /// `tcp_max_tw_buckets`. The count may stand above the limit: a stream
    /// that ended with unread data is held while its socket lingers as an
    /// orphan, so evict until there is room, not just one.
    fn room_for_one(&mut self) -> bool {
        while self.socket_count() >= self.config.max_streams {
            let oldest = self
                .orphans
                .iter()
                .min_by_key(|(h, o)| (o.since, **h))
                .map(|(h, _)| *h);
            match oldest {
                Some(handle) => self.remove_orphan(handle),
                None => return false,
            }
        }
        true
    }

    fn local_port_in_use(&self, port: u16) -> bool {
        self.by_tuple
            .range((port, SocketAddress::default())..)
            .next()
            .is_some_and(|((p, _), _)| *p == port)
    }

    fn ephemeral_port(&mut self) -> Option<u16> {
        let (lo, hi) = (*EPHEMERAL.start(), *EPHEMERAL.end());
        let span = u64::from(hi - lo) + 1;
        let free = |s: &Self, p: u16| !s.listening.contains(&p) && !s.local_port_in_use(p);
        for _ in 0..PORT_TRIES {
            let port = lo + self.ports.below(span) as u16;
            if free(self, port) {
                return Some(port);
            }
        }
        // Nearly full: scan from a random start.
        let start = self.ports.below(span) as u16;
        (0..span as u16)
            .map(|i| lo + (start.wrapping_add(i) % span as u16))
            .find(|p| free(self, *p))
    }

    /// Demultiplexes one packet: notes which stream it belongs to, makes a
    /// listening socket for an acceptable SYN, and queues it for smoltcp.
    /// False if it was dropped as malformed.
    fn admit(&mut self, packet: &[u8]) -> bool {
        if packet.len() > OVERLAY_MTU {
            return false;
        }
        let Ok((src, dst, PROTO_TCP)) = overlay::header(packet) else {
            return false;
        };
        if dst != self.local || src.is_unspecified() || src.is_broadcast() {
            return false;
        }
        let Some(tcp) = packet.get(IPV6_HEADER..IPV6_HEADER + TCP_HEADER) else {
            return false;
        };
        let src_port = u16::from_be_bytes([tcp[0], tcp[1]]);
        let dst_port = u16::from_be_bytes([tcp[2], tcp[3]]);
        if src_port == 0 || dst_port == 0 {
            return false;
        }
        let flags = tcp[13];
        let tuple = (dst_port, SocketAddress::new(src, src_port));
        let pure_syn = flags & (FLAG_SYN | FLAG_ACK | FLAG_RST | FLAG_FIN) == FLAG_SYN;
        self.stats.packets_in += 1;
        self.dirty = true;

        match self.by_tuple.get(&tuple).copied() {
            Some(Slot::Conn(id)) => {
                if let Some(conn) = self.conns.get_mut(&id) {
                    conn.last_heard = self.now;
                    if flags & FLAG_RST != 0 {
                        conn.rst_seen = true;
                    }
                }
                let mut packet = packet.to_vec();
                self.repair(id, &mut packet);
                self.queue(&packet, pure_syn);
                return true;
            }
            Some(Slot::Orphan(handle)) if pure_syn => {
                // A new connection reusing the tuple of one in TIME-WAIT:
                // let it in (RFC 6191 in spirit) instead of ignoring it.
                self.remove_orphan(handle);
            }
            Some(Slot::Orphan(_)) => {
                self.queue(packet, false);
                return true;
            }
            None => {}
        }
        if !pure_syn || !(self.config.accept_any || self.listening.contains(&dst_port)) {
            // Nothing will accept it: smoltcp answers with an RST (and
            // ignores an RST).
            self.queue(packet, pure_syn);
            return true;
        }
        let half_open = self
            .conns
            .values()
            .filter(|c| c.local_port == dst_port && c.phase == Phase::HalfOpen)
            .count();
        if half_open >= self.config.backlog {
            self.stats.syn_dropped += 1;
            return true;
        }
        let on_port = self
            .conns
            .values()
            .filter(|c| c.local_port == dst_port)
            .count();
        if on_port >= self.config.max_per_port || !self.room_for_one() {
            self.stats.syn_refused += 1;
            self.queue(packet, true);
            return true;
        }
        let mut socket = self.new_socket();
        let endpoint = IpListenEndpoint {
            addr: Some(IpAddress::Ipv6(self.local_ip)),
            port: dst_port,
        };
        if socket.listen(endpoint).is_err() {
            return false;
        }
        let handle = self.sockets.add(socket);
        let id = self.allocate_id();
        let mut conn = Conn::new(handle, dst_port, tuple.1, Phase::HalfOpen);
        conn.state = tcp::State::Listen;
        conn.peer_isn = Some(u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]));
        conn.created = self.now;
        conn.last_heard = self.now;
        conn.last_activity = self.now;
        self.conns.insert(id, conn);
        self.by_tuple.insert(tuple, Slot::Conn(id));
        self.fresh_listeners += 1;
        self.device.rx.push_back(packet.to_vec());
        true
    }

    /// Works around three ways smoltcp 0.14 loses what a segment of an
    /// established connection says, each of which can wedge a
    /// bidirectional stream for good (all three seen on relayed `bench`
    /// runs to an echo in the simulator), by rewriting the segment before
    /// smoltcp sees it:
    ///
    /// - smoltcp drops a segment whose ACK is below SND.UNA *with its
    ///   payload* (smoltcp issue #12), where RFC 9293 (3.10.7.4) ignores
    ///   only the stale ACK. Any reordering between the peer's data and
    ///   its later ACKs then throws data away, and its retransmission too
    ///   if it is overtaken again, each time after an RTO that doubles. A
    ///   segment with payload or FIN and a stale ACK gets the newest ACK
    ///   (and the window that came with it) instead: nothing new for
    ///   smoltcp's sender, and its payload is kept. Stale pure ACKs are
    ///   left alone (smoltcp rightly ignores them).
    /// - smoltcp ignores the ACK of any segment outside its receive
    ///   window, and a pure ACK carries SEG.SEQ = the sender's SND.NXT,
    ///   which is often outside it. (1) On an RTO smoltcp goes back N: its
    ///   SND.NXT drops to SND.UNA, behind the peer's RCV.NXT when only the
    ///   ACKs were lost. When both ends time out like that (a burst of
    ///   tail drops both ways) each one's ACKs and retransmissions look
    ///   old to the other, and neither ever learns what the other got.
    ///   (2) smoltcp's advertised window is the free space shifted right by
    ///   the window scale, so as the buffer fills the right edge moves back
    ///   by up to 2^scale - 1 bytes; the peer, having sent up to the old
    ///   edge, is then ahead of our window, and at a zero window (where
    ///   only SEG.SEQ = RCV.NXT passes) its ACKs and window updates are all
    ///   ignored; an echo (receive buffer full because its send buffer is)
    ///   never recovers. RFC 9293 asks to accept valid ACKs even then. A
    ///   pure ACK's sequence number says nothing else, so it is set to
    ///   RCV.NXT when it is ahead, or behind with an ACK that advances
    ///   (a reordered old one is left to be ignored, not counted as a
    ///   duplicate ACK); a zero-length keep-alive (RCV.NXT - 1), which must
    ///   still be answered, is left alone.
    fn repair(&mut self, id: StreamId, packet: &mut [u8]) {
        let Some(tcp) = packet.get(IPV6_HEADER..) else {
            return;
        };
        let header = usize::from(tcp.get(12).copied().unwrap_or(0) >> 4) * 4;
        if header < TCP_HEADER || header > tcp.len() {
            return;
        }
        let payload = tcp.len() - header;
        let word = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
        let (seq, ack) = (word(4), word(8));
        let window = u16::from_be_bytes([tcp[14], tcp[15]]);
        let flags = tcp[13];
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if flags & FLAG_SYN != 0 {
            conn.peer_isn = Some(seq);
            return;
        }
        if flags & FLAG_RST != 0 || flags & FLAG_ACK == 0 {
            return;
        }
        // The ACK tells the sender something new (not a duplicate ACK).
        let advances = conn
            .peer_ack
            .is_none_or(|(newest, _)| seq_before(newest, ack));
        match conn.peer_ack {
            Some((newest, newest_window)) if seq_before(ack, newest) => {
                if payload > 0 || flags & FLAG_FIN != 0 {
                    set_u32(packet, 8, newest);
                    set_u16(packet, 14, newest_window);
                }
            }
            _ => conn.peer_ack = Some((ack, window)),
        }
        if payload > 0 || flags & FLAG_FIN != 0 {
            return;
        }
        // RCV.NXT as smoltcp will see it: let it take what is queued first.
        if !self.device.rx.is_empty() {
            self.run();
        }
        let Some(conn) = self.conns.get(&id) else {
            return;
        };
        let (Some(handle), Some(isn)) = (conn.handle, conn.peer_isn) else {
            return;
        };
        let socket = self.sockets.get::<tcp::Socket>(handle);
        // The peer's FIN takes a sequence number too.
        let fin = match socket.state() {
            tcp::State::Established | tcp::State::FinWait1 | tcp::State::FinWait2 => 0,
            tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing => 1,
            _ => return,
        };
        let received = conn.read_total + socket.recv_queue() as u64;
        // Sequence numbers wrap: the truncation is the arithmetic.
        let rcv_nxt = isn
            .wrapping_add(1)
            .wrapping_add(received as u32)
            .wrapping_add(fin);
        // Behind RCV.NXT only when the ACK is new (after a go-back-N): an
        // old pure ACK that was merely reordered would count as a duplicate
        // ACK and could set off a needless fast retransmit.
        let ahead = seq_before(rcv_nxt, seq);
        let behind = seq_before(seq, rcv_nxt.wrapping_sub(1));
        if ahead || (behind && advances) {
            set_u32(packet, 4, rcv_nxt);
        }
    }

    /// Queues a packet for smoltcp. A SYN that no fresh listening socket is
    /// meant for must not reach one: smoltcp gives a SYN to the first
    /// listening socket on the port, so first run the SYNs already queued.
    fn queue(&mut self, packet: &[u8], syn: bool) {
        if syn && self.fresh_listeners > 0 {
            self.run();
        }
        self.device.rx.push_back(packet.to_vec());
        self.dirty = true;
    }

    /// Runs smoltcp over everything queued, then turns what changed into
    /// events, until nothing more changes.
    fn run(&mut self) {
        let mut passes = 0;
        while self.dirty && passes < MAX_PASSES {
            self.dirty = false;
            passes += 1;
            let now = instant(self.now);
            self.iface.poll(now, &mut self.device, &mut self.sockets);
            self.fresh_listeners = 0;
            self.reconcile();
            self.sweep_orphans();
        }
        if passes > 0 {
            self.deadline = self.next_deadline();
        }
    }

    fn reconcile(&mut self) {
        let ids: Vec<StreamId> = self.conns.keys().copied().collect();
        for id in ids {
            self.reconcile_one(id);
        }
    }

    fn reconcile_one(&mut self, id: StreamId) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(handle) = conn.handle else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let state = socket.state();
        let rst = core::mem::take(&mut conn.rst_seen);
        match conn.phase {
            Phase::HalfOpen => match state {
                tcp::State::Listen | tcp::State::Closed => {
                    // The SYN was bad, or the handshake was reset.
                    self.kill(id, None);
                    return;
                }
                tcp::State::SynReceived => {
                    self.retuple(id);
                    return;
                }
                _ => {
                    self.retuple(id);
                    let Some(conn) = self.conns.get_mut(&id) else {
                        return;
                    };
                    conn.phase = Phase::Open;
                    conn.last_activity = now;
                    self.events.push_back(StreamEvent::Incoming {
                        id,
                        port: conn.local_port,
                        from: conn.remote,
                    });
                }
            },
            Phase::Connecting => match state {
                tcp::State::SynSent | tcp::State::SynReceived => return,
                tcp::State::Closed => {
                    let reason = if rst {
                        CloseReason::Refused
                    } else {
                        CloseReason::TimedOut
                    };
                    self.kill(id, Some(reason));
                    return;
                }
                _ => {
                    conn.phase = Phase::Open;
                    conn.last_activity = now;
                    if conn.shutdown {
                        socket.close();
                    }
                    if !conn.closed {
                        self.events.push_back(StreamEvent::Connected { id });
                    }
                }
            },
            Phase::Open => {}
        }
        self.reconcile_open(id, rst);
    }

    /// Events of an open stream: data, room, FIN, the end.
    fn reconcile_open(&mut self, id: StreamId, rst: bool) {
        let now = self.now;
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(handle) = conn.handle else {
            return;
        };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        let state = socket.state();
        let prev = core::mem::replace(&mut conn.state, state);
        if conn.closed && state == tcp::State::FinWait2 && conn.closing_since.is_none() {
            conn.closing_since = Some(now);
        }

        if conn.closed {
            // Discard what arrives after close, so the window stays open
            // and the peer can finish.
            let mut dropped = 0;
            while let Ok(n) = socket.recv(|b| (b.len(), b.len())) {
                if n == 0 {
                    break;
                }
                dropped += n;
            }
            if dropped > 0 {
                conn.read_total += dropped as u64;
                self.dirty = true;
            }
        }
        let queued = socket.recv_queue();
        let received = conn.read_total + queued as u64;
        if received > conn.received {
            conn.received = received;
            conn.last_activity = now;
        }
        let acked = conn.written.saturating_sub(socket.send_queue() as u64);
        if acked > conn.acked {
            conn.acked = acked;
            conn.last_activity = now;
        }

        let graceful = state == tcp::State::TimeWait
            || (state == tcp::State::Closed && prev == tcp::State::LastAck && !rst);
        if state == tcp::State::Closed && !graceful {
            // An RST (nothing else closes an open socket: smoltcp's own
            // timeout is off and our aborts remove the stream at once).
            let reason = if rst {
                CloseReason::Reset
            } else {
                CloseReason::TimedOut
            };
            self.kill(id, Some(reason));
            return;
        }
        let fin = graceful
            || matches!(
                state,
                tcp::State::CloseWait | tcp::State::LastAck | tcp::State::Closing
            );

        if !conn.closed {
            if conn.readable_armed && queued > 0 {
                conn.readable_armed = false;
                self.events.push_back(StreamEvent::Readable { id });
            }
            if conn.write_blocked && socket.may_send() {
                let room = socket.send_capacity() - socket.send_queue();
                if room >= WRITABLE_ROOM.min(socket.send_capacity() / 2) {
                    conn.write_blocked = false;
                    self.events.push_back(StreamEvent::Writable { id });
                }
            }
            if fin && !conn.finished {
                conn.finished = true;
                self.events.push_back(StreamEvent::Finished { id });
            }
        }
        if !graceful {
            return;
        }
        if conn.closed || (conn.eof_read && queued == 0) {
            self.finish(id, CloseReason::Normal);
            return;
        }
        // Over, but unread data remains: keep it, let the socket go.
        let mut leftover = Vec::with_capacity(queued);
        while let Ok(n) = socket.recv(|b| {
            leftover.extend_from_slice(b);
            (b.len(), b.len())
        }) {
            if n == 0 {
                break;
            }
        }
        conn.leftover = leftover;
        conn.leftover_pos = 0;
        conn.handle = None;
        let tuple = conn.tuple();
        // The socket (in TIME-WAIT) now serves the tuple, not the stream.
        if self.by_tuple.get(&tuple) == Some(&Slot::Conn(id)) {
            self.by_tuple.remove(&tuple);
        }
        let outgoing = conn.outgoing;
        self.detach(handle, tuple, outgoing);
    }

    /// Points the tuple map at what a half-open socket really holds: a
    /// batch of SYNs to one port may land in its listening sockets in any
    /// order.
    fn retuple(&mut self, id: StreamId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Some(handle) = conn.handle else {
            return;
        };
        let socket = self.sockets.get::<tcp::Socket>(handle);
        let Some(remote) = socket.remote_endpoint().and_then(socket_address) else {
            return;
        };
        let old = conn.tuple();
        conn.remote = remote;
        let new = conn.tuple();
        if old == new {
            return;
        }
        if self.by_tuple.get(&old) == Some(&Slot::Conn(id)) {
            self.by_tuple.remove(&old);
        }
        self.by_tuple.insert(new, Slot::Conn(id));
    }

    /// Ends a stream gracefully: emits `Closed` and lets the socket go.
    fn finish(&mut self, id: StreamId, reason: CloseReason) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let tuple = conn.tuple();
        if self.by_tuple.get(&tuple) == Some(&Slot::Conn(id)) {
            self.by_tuple.remove(&tuple);
        }
        if let Some(handle) = conn.handle {
            self.detach(handle, tuple, conn.outgoing);
        }
        self.events.push_back(StreamEvent::Closed { id, reason });
    }

    /// Ends a stream abruptly: RST if the connection is live, `Closed` with
    /// `reason` if given (announced streams).
    fn kill(&mut self, id: StreamId, reason: Option<CloseReason>) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        let tuple = conn.tuple();
        if self.by_tuple.get(&tuple) == Some(&Slot::Conn(id)) {
            self.by_tuple.remove(&tuple);
        }
        if let Some(handle) = conn.handle {
            self.sockets.get_mut::<tcp::Socket>(handle).abort();
            self.detach(handle, tuple, conn.outgoing);
            self.dirty = true;
        }
        if let Some(reason) = reason {
            self.events.push_back(StreamEvent::Closed { id, reason });
        }
    }

    /// Lets go of a socket whose stream ended: kept as an orphan while it
    /// still has something to do (TIME-WAIT, an RST to send), else freed.
    fn detach(&mut self, handle: SocketHandle, tuple: Tuple, outgoing: bool) {
        let socket = self.sockets.get::<tcp::Socket>(handle);
        if socket.state() == tcp::State::Closed && socket.remote_endpoint().is_none() {
            self.sockets.remove(handle);
            return;
        }
        self.by_tuple.entry(tuple).or_insert(Slot::Orphan(handle));
        self.orphans.insert(
            handle,
            Orphan {
                tuple,
                since: self.now,
                outgoing,
            },
        );
        self.trim_time_wait();
    }

    /// Frees the oldest TIME-WAIT orphans beyond `max_time_wait`.
    fn trim_time_wait(&mut self) {
        let sockets = &self.sockets;
        let mut waiting: Vec<(Timestamp, SocketHandle)> = self
            .orphans
            .iter()
            .filter(|(h, _)| sockets.get::<tcp::Socket>(**h).state() == tcp::State::TimeWait)
            .map(|(h, o)| (o.since, *h))
            .collect();
        if waiting.len() <= self.config.max_time_wait {
            return;
        }
        waiting.sort_unstable();
        let excess = waiting.len() - self.config.max_time_wait;
        for (_, handle) in waiting.into_iter().take(excess) {
            self.remove_orphan(handle);
        }
    }

    fn remove_orphan(&mut self, handle: SocketHandle) {
        let Some(orphan) = self.orphans.remove(&handle) else {
            return;
        };
        if self.by_tuple.get(&orphan.tuple) == Some(&Slot::Orphan(handle)) {
            self.by_tuple.remove(&orphan.tuple);
        }
        self.sockets.remove(handle);
    }

    /// Frees orphans that are done: TIME-WAIT expired, RST sent.
    fn sweep_orphans(&mut self) {
        let done: Vec<SocketHandle> = self
            .orphans
            .keys()
            .copied()
            .filter(|h| {
                let s = self.sockets.get::<tcp::Socket>(*h);
                s.state() == tcp::State::Closed && s.remote_endpoint().is_none()
            })
            .collect();
        for handle in done {
            self.remove_orphan(handle);
        }
        self.trim_time_wait();
    }

    /// The reason to end `conn` if one of our timers expired by `now`.
    fn expired(&self, conn: &Conn, now: Timestamp) -> Option<CloseReason> {
        let past = |since: Timestamp, limit: Duration| !limit.is_zero() && now >= since + limit;
        let c = &self.config;
        match conn.phase {
            Phase::HalfOpen | Phase::Connecting => {
                past(conn.created, c.connect_timeout).then_some(CloseReason::TimedOut)
            }
            Phase::Open => {
                if conn.handle.is_some() && past(conn.last_heard, c.user_timeout) {
                    return Some(CloseReason::TimedOut);
                }
                if let Some(since) = conn.closing_since {
                    if conn.handle.is_some() && past(since, c.user_timeout) {
                        return Some(CloseReason::TimedOut);
                    }
                }
                past(conn.last_activity, c.idle_timeout).then_some(CloseReason::Idle)
            }
        }
    }

    /// The earliest of smoltcp's timers and ours.
    fn next_deadline(&mut self) -> Option<Timestamp> {
        let now = self.now;
        let mut next = self
            .iface
            .poll_at(instant(now), &self.sockets)
            .map(|at| timestamp(at).max(now + STALL_BACKOFF));
        let mut consider = |at: Timestamp| {
            next = Some(next.map_or(at, |n| n.min(at)));
        };
        let c = &self.config;
        let limit = |since: Timestamp, d: Duration| (!d.is_zero()).then(|| since + d);
        for conn in self.conns.values() {
            let timers = match conn.phase {
                Phase::HalfOpen | Phase::Connecting => {
                    [limit(conn.created, c.connect_timeout), None, None]
                }
                Phase::Open => [
                    conn.handle
                        .and_then(|_| limit(conn.last_heard, c.user_timeout)),
                    conn.closing_since
                        .filter(|_| conn.handle.is_some())
                        .and_then(|s| limit(s, c.user_timeout)),
                    limit(conn.last_activity, c.idle_timeout),
                ],
            };
            for at in timers.into_iter().flatten() {
                consider(at);
            }
        }
        next
    }
}

/// The announced stream `id` in `conns`, borrowing nothing else.
fn announced_in(
    conns: &mut BTreeMap<StreamId, Conn>,
    id: StreamId,
) -> Result<&mut Conn, StreamError> {
    match conns.get_mut(&id) {
        Some(c) if c.phase != Phase::HalfOpen => Ok(c),
        _ => Err(StreamError::UnknownStream),
    }
}

fn instant(t: Timestamp) -> Instant {
    // Kept far from i64::MAX so that smoltcp's `instant + duration` cannot
    // overflow.
    Instant::from_micros(t.as_micros().min(i64::MAX as u64 / 4) as i64)
}

fn timestamp(i: Instant) -> Timestamp {
    Timestamp::from_micros(u64::try_from(i.total_micros()).unwrap_or(0))
}

fn smol_duration(d: Duration) -> SmolDuration {
    SmolDuration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 4))
}

fn socket_address(endpoint: IpEndpoint) -> Option<SocketAddress> {
    let IpAddress::Ipv6(ip) = endpoint.addr;
    let addr = overlay::from_ipv6(&ip.octets())?;
    Some(SocketAddress::new(addr, endpoint.port))
}

#[cfg(test)]
mod tests;
