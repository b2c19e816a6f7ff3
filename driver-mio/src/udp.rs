//! One non-blocking UDP socket in a mio loop: batched reads, and sends that
//! queue instead of dropping when the kernel's buffer is full.
//!
//! Reads take up to a caller-given number of datagrams per call, so one
//! busy socket cannot starve the rest of the loop. On Linux they use
//! `recvmmsg` (up to [`RECV_BATCH`] datagrams per system call, each slot
//! large enough for any datagram, so nothing is truncated); queued sends
//! go out with `sendmmsg` (up to [`SEND_BATCH`] per call). A burst from a
//! busy rendezvous or a bulk transfer then costs one system call per batch
//! instead of one per datagram. A single datagram sent while nothing is
//! queued still goes out at once with `sendto`. Where the kernel refuses
//! the batch calls at first use (ENOSYS, EINVAL, EOPNOTSUPP: old kernels,
//! seccomp filters, emulators) the endpoint remembers it and uses plain
//! `recv_from`/`send_to` loops, as it does on every other platform.
//! GRO/GSO are not used: they need runs of equal-sized datagrams between
//! one pair of addresses, which a rendezvous answering many agents rarely
//! has.
//!
//! Errors that concern one datagram (an ICMP "port unreachable" reported
//! on the next call, an unreachable network, a datagram too large) are
//! logged, counted and skipped; they never stop the loop.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use pilot_proto::Transmit;
use socket2::{Domain, Protocol, Socket, Type};

/// The socket buffer sizes asked for: enough for a burst of a few thousand
/// full-sized datagrams while the loop is busy elsewhere. The kernel caps
/// them (`net.core.rmem_max`, `wmem_max`); the granted sizes are logged.
pub const SOCKET_BUFFER: usize = 4 << 20;

/// Datagrams kept while the kernel's send buffer is full. Beyond this the
/// owner should leave transmits in the core (see [`UdpEndpoint::is_full`]).
pub const DEFAULT_SEND_QUEUE: usize = 1024;

/// The largest UDP payload over IPv4 and IPv6 (without jumbograms).
const MAX_DATAGRAM: usize = 65_535;

/// Datagrams one `recvmmsg` call may return. Each slot is
/// `MAX_DATAGRAM` bytes (4 MiB of address space in all, allocated on
/// first use; the kernel only touches the pages datagrams land in).
pub const RECV_BATCH: usize = 64;

/// Queued datagrams one `sendmmsg` call hands to the kernel.
pub const SEND_BATCH: usize = 64;

/// Counters for one endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpStats {
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Bytes received (payloads).
    pub bytes_in: u64,
    /// Datagrams handed to the kernel.
    pub datagrams_out: u64,
    /// Bytes handed to the kernel (payloads).
    pub bytes_out: u64,
    /// Receive errors skipped (mostly ICMP errors for earlier sends).
    pub recv_errors: u64,
    /// Datagrams the kernel refused to send (unreachable, too large...).
    pub send_errors: u64,
    /// Datagrams dropped because the send queue was full.
    pub queue_drops: u64,
    /// The longest the send queue has been.
    pub queue_high_water: usize,
    /// `recvmmsg` calls that returned at least one datagram.
    pub recv_batches: u64,
    /// Datagrams received through `recvmmsg` (part of `datagrams_in`).
    pub batched_in: u64,
    /// `sendmmsg` calls that sent at least one datagram.
    pub send_batches: u64,
    /// Datagrams sent through `sendmmsg` (part of `datagrams_out`).
    pub batched_out: u64,
}

/// A UDP socket registered with a mio [`Registry`].
#[derive(Debug)]
pub struct UdpEndpoint {
    socket: UdpSocket,
    registry: Registry,
    token: Token,
    local: SocketAddr,
    /// Datagrams the kernel could not take yet, oldest first.
    queue: VecDeque<Transmit>,
    max_queue: usize,
    /// True while registered for WRITABLE as well as READABLE.
    want_writable: bool,
    /// True if the last `recv_batch` stopped before the socket was empty.
    more: bool,
    buf: Vec<u8>,
    /// `RECV_BATCH` slots of `MAX_DATAGRAM` bytes for `recvmmsg`; empty
    /// until first used.
    slots: Vec<u8>,
    /// Which path reads and queued sends take.
    batch: Batching,
    stats: UdpStats,
}

/// Whether the batch system calls are used, and whether they have worked
/// yet (an EINVAL only means "unsupported" before the first success).
#[derive(Clone, Copy, Debug)]
struct Batching {
    recv: bool,
    send: bool,
    recv_worked: bool,
    send_worked: bool,
}

impl Batching {
    fn platform() -> Self {
        let on = cfg!(target_os = "linux");
        Batching {
            recv: on,
            send: on,
            recv_worked: false,
            send_worked: false,
        }
    }

    fn describe(self) -> &'static str {
        match (self.recv, self.send) {
            (true, true) => "recvmmsg/sendmmsg",
            (true, false) => "recvmmsg/sendto",
            (false, true) => "recvfrom/sendmmsg",
            (false, false) => "recvfrom/sendto (one datagram per system call)",
        }
    }
}

impl UdpEndpoint {
    /// Binds a non-blocking UDP socket to `addr` and registers it for
    /// reading under `token`. An IPv6 address is dual-stack where the OS
    /// allows (IPv4 peers then appear as IPv4 addresses all the same).
    pub fn bind(addr: SocketAddr, registry: &Registry, token: Token) -> io::Result<Self> {
        let context = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("UDP socket on {addr}: {what}: {e}"))
        };
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|e| context("cannot create", e))?;
        if addr.is_ipv6() {
            if let Err(e) = socket.set_only_v6(false) {
                tracing::warn!(%addr, error = %e, "cannot make the socket dual-stack; IPv6 only");
            }
        }
        socket
            .set_nonblocking(true)
            .map_err(|e| context("cannot make non-blocking", e))?;
        raise_buffers(&socket, addr);
        socket
            .bind(&addr.into())
            .map_err(|e| context("cannot bind", e))?;
        let mut socket = UdpSocket::from_std(socket.into());
        let local = socket
            .local_addr()
            .map_err(|e| context("cannot read the bound address", e))?;
        registry
            .register(&mut socket, token, Interest::READABLE)
            .map_err(|e| context("cannot register with the event loop", e))?;
        let registry = registry
            .try_clone()
            .map_err(|e| context("cannot share the event loop's registry", e))?;
        let batch = Batching::platform();
        tracing::info!(%local, path = batch.describe(), "UDP I/O path");
        Ok(UdpEndpoint {
            socket,
            registry,
            token,
            local,
            queue: VecDeque::new(),
            max_queue: DEFAULT_SEND_QUEUE,
            want_writable: false,
            more: false,
            buf: vec![0; MAX_DATAGRAM],
            slots: Vec::new(),
            batch,
            stats: UdpStats::default(),
        })
    }

    /// Uses the one-datagram-per-call path from now on, as on a kernel
    /// without `recvmmsg`/`sendmmsg` (for tests and benchmarks).
    #[doc(hidden)]
    pub fn force_fallback(&mut self) {
        self.batch.recv = false;
        self.batch.send = false;
        tracing::info!(local = %self.local, path = self.batch.describe(), "UDP I/O path forced");
    }

    /// True while reads use `recvmmsg` and queued sends `sendmmsg`.
    pub fn is_batched(&self) -> (bool, bool) {
        (self.batch.recv, self.batch.send)
    }

    /// The address the socket is bound to (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The token its events carry.
    pub fn token(&self) -> Token {
        self.token
    }

    /// Counters.
    pub fn stats(&self) -> UdpStats {
        self.stats
    }

    /// Sets how many datagrams may wait for the kernel (at least 1).
    pub fn set_max_queue(&mut self, max: usize) {
        self.max_queue = max.max(1);
    }

    /// Reads up to `max` datagrams without blocking and hands each to `f`
    /// with its source (IPv4-mapped IPv6 sources turned into IPv4).
    /// Returns how many were read. Readiness is edge-triggered: if this
    /// returns `max`, more may be waiting without a new event, so call it
    /// again next turn ([`UdpEndpoint::may_have_more`] says so).
    pub fn recv_batch(
        &mut self,
        max: usize,
        mut f: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let mut n = 0;
        self.more = false;
        while n < max {
            let got = if self.batch.recv {
                self.recv_many(max - n, &mut f)
            } else {
                self.recv_one(&mut f)
            };
            match got {
                Ok(got) => n += got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.batch.recv && refuses_batch(&e, self.batch.recv_worked) => {
                    self.batch.recv = false;
                    tracing::info!(local = %self.local, error = %e, path = self.batch.describe(),
                        "recvmmsg refused by the kernel: reading one datagram per call");
                }
                Err(e) if is_per_datagram(&e) => {
                    // Linux reports ICMP errors for earlier sends on the
                    // next call; they say nothing about this socket.
                    self.stats.recv_errors += 1;
                    tracing::debug!(local = %self.local, error = %e, "UDP receive error skipped");
                }
                Err(e) => {
                    self.stats.recv_errors += 1;
                    // Try again next turn rather than lose the edge.
                    self.more = true;
                    return Err(io::Error::new(
                        e.kind(),
                        format!("UDP socket on {}: receive failed: {e}", self.local),
                    ));
                }
            }
        }
        self.more = true;
        Ok(n)
    }

    /// Reads one datagram with `recv_from`.
    fn recv_one(&mut self, f: &mut impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let (len, from) = self.socket.recv_from(&mut self.buf)?;
        self.stats.datagrams_in += 1;
        self.stats.bytes_in += len as u64;
        f(normalise(from), &self.buf[..len]);
        Ok(1)
    }

    /// Reads up to `want` (at most [`RECV_BATCH`]) datagrams with one
    /// `recvmmsg`; at least one, or an error (WouldBlock when empty).
    #[cfg(target_os = "linux")]
    fn recv_many(
        &mut self,
        want: usize,
        f: &mut impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;

        let k = want.clamp(1, RECV_BATCH);
        if self.slots.is_empty() {
            // Zeroed allocation: the pages stay untouched until used.
            self.slots = vec![0; RECV_BATCH * MAX_DATAGRAM];
        }
        let mut meta = [(None::<SocketAddr>, 0usize); RECV_BATCH];
        let got = {
            // Built per call: the headers hold raw pointers (not Send),
            // and keeping the endpoint Send matters more than ~12 KiB of
            // allocation per system call.
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(k, None);
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
                .slots
                .chunks_mut(MAX_DATAGRAM)
                .take(k)
                .map(|slot| [IoSliceMut::new(slot)])
                .collect();
            let results = recvmmsg(
                self.socket.as_raw_fd(),
                &mut headers,
                iovs.iter_mut(),
                MsgFlags::empty(),
                None,
            )
            .map_err(io::Error::from)?;
            let mut got = 0;
            for (slot, msg) in meta.iter_mut().zip(results) {
                *slot = (msg.address.and_then(std_addr), msg.bytes);
                got += 1;
            }
            got
        };
        if got == 0 {
            // Not expected from a non-blocking datagram socket.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.batch.recv_worked = true;
        self.stats.recv_batches += 1;
        self.stats.batched_in += got as u64;
        for (i, &(from, len)) in meta[..got].iter().enumerate() {
            self.stats.datagrams_in += 1;
            self.stats.bytes_in += len as u64;
            let data = &self.slots[i * MAX_DATAGRAM..][..len];
            match from {
                Some(from) => f(normalise(from), data),
                // A UDP socket always reports the source.
                None => self.stats.recv_errors += 1,
            }
        }
        Ok(got)
    }

    #[cfg(not(target_os = "linux"))]
    fn recv_many(
        &mut self,
        _want: usize,
        f: &mut impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        self.recv_one(f)
    }

    /// True if the last [`UdpEndpoint::recv_batch`] stopped at its limit
    /// (or on an error) before the socket was empty.
    pub fn may_have_more(&self) -> bool {
        self.more
    }

    /// Sends `transmit` now if the kernel takes it, or queues it until the
    /// socket is writable. Returns false if it was dropped because the
    /// queue is full (the owner should have checked
    /// [`UdpEndpoint::is_full`]) or the kernel refused it.
    pub fn send(&mut self, transmit: Transmit) -> bool {
        if !self.queue.is_empty() {
            return self.enqueue(transmit);
        }
        match self.try_send(&transmit) {
            Sent::Done => true,
            Sent::Refused => false,
            Sent::WouldBlock => self.enqueue(transmit),
        }
    }

    /// Queues `transmit` behind whatever waits, without trying to send
    /// it: the next [`UdpEndpoint::flush`] (on the writable event this
    /// asks for) sends the queue in batches. Returns false if the queue
    /// is full and the datagram was dropped.
    pub fn send_later(&mut self, transmit: Transmit) -> bool {
        self.enqueue(transmit)
    }

    /// Sends what is queued, as far as the kernel takes it; call on a
    /// writable event. Stops asking for writable events once empty.
    pub fn flush(&mut self) {
        loop {
            if self.queue.is_empty() {
                break;
            }
            let more = if self.batch.send {
                self.flush_batch()
            } else {
                self.flush_one()
            };
            if !more {
                break;
            }
        }
        if self.queue.is_empty() && self.want_writable {
            self.set_writable(false);
        }
    }

    /// Sends the oldest queued datagram; false if the kernel is full.
    fn flush_one(&mut self) -> bool {
        let Some(t) = self.queue.pop_front() else {
            return false;
        };
        if let Sent::WouldBlock = self.try_send(&t) {
            self.queue.push_front(t);
            return false;
        }
        true
    }

    /// Sends up to [`SEND_BATCH`] queued datagrams with one `sendmmsg`;
    /// false if the kernel is full.
    #[cfg(target_os = "linux")]
    fn flush_batch(&mut self) -> bool {
        use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
        use std::io::IoSlice;
        use std::os::fd::AsRawFd;

        let k = self.queue.len().min(SEND_BATCH);
        let result = {
            let addrs: Vec<Option<SockaddrStorage>> = self
                .queue
                .iter()
                .take(k)
                .map(|t| Some(SockaddrStorage::from(self.destination(t.destination))))
                .collect();
            let iovs: Vec<[IoSlice<'_>; 1]> = self
                .queue
                .iter()
                .take(k)
                .map(|t| [IoSlice::new(&t.payload)])
                .collect();
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(k, None);
            let no_cmsgs: [ControlMessage<'_>; 0] = [];
            sendmmsg(
                self.socket.as_raw_fd(),
                &mut headers,
                &iovs,
                &addrs[..],
                no_cmsgs,
                MsgFlags::empty(),
            )
            .map(|sent| sent.count())
            .map_err(io::Error::from)
        };
        match result {
            Ok(sent) if sent > 0 => {
                self.batch.send_worked = true;
                self.stats.send_batches += 1;
                self.stats.batched_out += sent as u64;
                for t in self.queue.drain(..sent.min(k)) {
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += t.payload.len() as u64;
                }
                // A short count means the next datagram would block or
                // failed; the next call says which.
                true
            }
            Ok(_) => false,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(e) => {
                // The first datagram failed (or the call is unsupported):
                // send it alone, which sorts out what the error concerns.
                let single = self.flush_one();
                if refuses_batch(&e, self.batch.send_worked)
                    && (e.raw_os_error() != Some(nix::libc::EINVAL) || single)
                {
                    self.batch.send = false;
                    tracing::info!(local = %self.local, error = %e, path = self.batch.describe(),
                        "sendmmsg refused by the kernel: sending one datagram per call");
                }
                single
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn flush_batch(&mut self) -> bool {
        self.flush_one()
    }

    /// Datagrams waiting for the kernel.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True if the send queue is full: leave further transmits in the core
    /// until a writable event has been handled.
    pub fn is_full(&self) -> bool {
        self.queue.len() >= self.max_queue
    }

    fn enqueue(&mut self, transmit: Transmit) -> bool {
        if self.is_full() {
            self.stats.queue_drops += 1;
            tracing::debug!(local = %self.local, to = %transmit.destination, "send queue full: datagram dropped");
            return false;
        }
        self.queue.push_back(transmit);
        self.stats.queue_high_water = self.stats.queue_high_water.max(self.queue.len());
        if !self.want_writable {
            self.set_writable(true);
        }
        true
    }

    fn try_send(&mut self, t: &Transmit) -> Sent {
        let to = self.destination(t.destination);
        loop {
            return match self.socket.send_to(&t.payload, to) {
                Ok(_) => {
                    self.stats.datagrams_out += 1;
                    self.stats.bytes_out += t.payload.len() as u64;
                    Sent::Done
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Sent::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Unreachable, too large, refused by a firewall rule,
                    // an ICMP error left over from an earlier send: this
                    // datagram is lost, the socket is fine.
                    self.stats.send_errors += 1;
                    tracing::debug!(local = %self.local, to = %to, error = %e, "UDP send failed");
                    Sent::Refused
                }
            };
        }
    }

    /// IPv4 destinations on a dual-stack IPv6 socket go to their
    /// IPv4-mapped form.
    fn destination(&self, to: SocketAddr) -> SocketAddr {
        match (self.local, to) {
            (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => to,
        }
    }

    fn set_writable(&mut self, on: bool) {
        let interest = if on {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match self
            .registry
            .reregister(&mut self.socket, self.token, interest)
        {
            Ok(()) => self.want_writable = on,
            // Cannot happen for a registered socket; if it does, flushing
            // on the next read event still empties the queue.
            Err(e) => {
                tracing::warn!(local = %self.local, error = %e, "cannot change socket interest")
            }
        }
    }
}

enum Sent {
    Done,
    WouldBlock,
    Refused,
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as the IPv4 address it
/// is, so the core sees one address per peer whatever the socket family.
pub fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match Ipv6Addr::to_ipv4_mapped(v6.ip()) {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// Errors that say the batch system calls are unavailable rather than
/// anything about a datagram. EINVAL only counts before the call has ever
/// worked on this socket.
fn refuses_batch(e: &io::Error, worked: bool) -> bool {
    match e.raw_os_error() {
        Some(code) if code == nix::libc::ENOSYS || code == nix::libc::EOPNOTSUPP => true,
        Some(code) if code == nix::libc::EINVAL => !worked,
        _ => false,
    }
}

/// A socket address from the kernel as a std one.
#[cfg(target_os = "linux")]
fn std_addr(addr: nix::sys::socket::SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddrV4::from(*v4).into());
    }
    addr.as_sockaddr_in6()
        .map(|v6| SocketAddrV6::from(*v6).into())
}

/// Errors a read reports on behalf of earlier datagrams (ICMP).
fn is_per_datagram(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    ) || matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::EHOSTUNREACH
            || code == nix::libc::ENETUNREACH
            || code == nix::libc::EPROTO
            || code == nix::libc::EMSGSIZE
    )
}

fn raise_buffers(socket: &Socket, addr: SocketAddr) {
    if let Err(e) = set_buffers(socket) {
        tracing::debug!(%addr, error = %e, "cannot raise the socket buffers");
    }
    tracing::debug!(
        %addr,
        asked = SOCKET_BUFFER,
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers (the kernel caps them at net.core.rmem_max / wmem_max)"
    );
}

/// Asks for [`SOCKET_BUFFER`] bytes of receive and send buffer, without
/// logging (the extra sockets are opened by the hundred).
pub(crate) fn set_buffers(socket: &Socket) -> io::Result<()> {
    let recv = socket.set_recv_buffer_size(SOCKET_BUFFER);
    socket.set_send_buffer_size(SOCKET_BUFFER)?;
    recv
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    fn transmit(to: SocketAddr, payload: &[u8]) -> Transmit {
        Transmit::new(pilot_proto::SocketId::PRIMARY, to, payload.to_vec())
    }

    #[test]
    fn mapped_addresses_become_ipv4() {
        let mapped: SocketAddr = "[::ffff:192.0.2.7]:4000".parse().unwrap();
        assert_eq!(normalise(mapped), "192.0.2.7:4000".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:4000".parse().unwrap();
        assert_eq!(normalise(v6), v6);
        let v4: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(normalise(v4), v4);
    }

    #[test]
    fn sends_and_receives_in_batches() {
        let mut poll = Poll::new().unwrap();
        let mut a =
            UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(1)).unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_ne!(a.local_addr().port(), 0);
        for i in 0..10u8 {
            b.send_to(&[i; 3], a.local_addr()).unwrap();
        }
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(2)))
            .unwrap();
        let mut got = Vec::new();
        let n = a
            .recv_batch(4, |from, d| got.push((from, d.to_vec())))
            .unwrap();
        assert_eq!(n, 4);
        assert!(a.may_have_more());
        while a
            .recv_batch(4, |from, d| got.push((from, d.to_vec())))
            .unwrap()
            > 0
        {}
        assert!(!a.may_have_more());
        assert_eq!(got.len(), 10);
        assert!(got.iter().all(|(from, _)| *from == b.local_addr().unwrap()));
        assert_eq!(got[9].1, vec![9; 3]);

        assert!(a.send(transmit(b.local_addr().unwrap(), b"pong")));
        let mut buf = [0u8; 16];
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (len, from) = b.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..len], from), (&b"pong"[..], a.local_addr()));
        assert_eq!(a.stats().datagrams_out, 1);
    }

    #[test]
    fn icmp_errors_do_not_stop_the_socket() {
        let mut poll = Poll::new().unwrap();
        let mut a =
            UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(1)).unwrap();
        // A port nobody listens on: the kernel answers with ICMP, which
        // Linux reports on a later call.
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead = closed.local_addr().unwrap();
        drop(closed);
        for _ in 0..3 {
            a.send(transmit(dead, b"x"));
        }
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        b.send_to(b"alive", a.local_addr()).unwrap();
        let mut events = Events::with_capacity(8);
        let mut got = Vec::new();
        for _ in 0..20 {
            poll.poll(&mut events, Some(Duration::from_millis(100)))
                .unwrap();
            a.recv_batch(16, |_, d| got.push(d.to_vec())).unwrap();
            if !got.is_empty() {
                break;
            }
        }
        assert_eq!(got, vec![b"alive".to_vec()]);
        assert!(a.send(transmit(b.local_addr().unwrap(), b"still")));
    }

    #[test]
    fn dual_stack_socket_talks_ipv4() {
        let mut poll = Poll::new().unwrap();
        let Ok(mut a) = UdpEndpoint::bind("[::]:0".parse().unwrap(), poll.registry(), Token(1))
        else {
            return; // No IPv6 on this host.
        };
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to: SocketAddr = SocketAddr::new("127.0.0.1".parse().unwrap(), a.local_addr().port());
        b.send_to(b"v4", to).unwrap();
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(2)))
            .unwrap();
        let mut from = None;
        a.recv_batch(8, |f, _| from = Some(f)).unwrap();
        assert_eq!(from, Some(b.local_addr().unwrap()), "no ::ffff: prefix");
        assert!(a.send(transmit(b.local_addr().unwrap(), b"back")));
        let mut buf = [0u8; 8];
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (len, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"back");
    }

    #[test]
    fn queued_datagrams_wait_for_writable_and_the_queue_is_bounded() {
        // Loopback never makes a send wait (a full receiver drops), so the
        // queue is filled directly, as a WouldBlock would.
        let mut poll = Poll::new().unwrap();
        let mut a =
            UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(1)).unwrap();
        a.set_max_queue(2);
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = b.local_addr().unwrap();
        assert!(a.enqueue(transmit(to, b"1")));
        assert!(a.want_writable);
        // While something waits, new datagrams queue behind it (order).
        assert!(a.send(transmit(to, b"2")));
        assert!(a.is_full());
        assert!(!a.send(transmit(to, b"3")));
        assert_eq!(a.stats().queue_drops, 1);
        let mut events = Events::with_capacity(8);
        poll.poll(&mut events, Some(Duration::from_secs(2)))
            .unwrap();
        assert!(events.iter().any(|e| e.is_writable()));
        a.flush();
        assert_eq!(a.queued(), 0);
        assert!(!a.want_writable);
        let mut buf = [0u8; 8];
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        for want in [b"1", b"2"] {
            let (len, _) = b.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..len], want);
        }
    }

    /// Reads from `a` until `want` datagrams have come (or 5 s passed).
    fn receive(
        poll: &mut Poll,
        a: &mut UdpEndpoint,
        want: usize,
        got: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) {
        let mut events = Events::with_capacity(8);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let start = got.len();
        while got.len() - start < want && std::time::Instant::now() < deadline {
            a.recv_batch(64, |from, d| got.push((from, d.to_vec())))
                .unwrap();
            if !a.may_have_more() && got.len() - start < want {
                poll.poll(&mut events, Some(Duration::from_millis(50)))
                    .unwrap();
            }
        }
    }

    /// Datagram `i` of a burst: 2 to 1501 bytes, every 50th 20 000 (a
    /// slot must hold any datagram), numbered in its first two bytes.
    fn numbered(i: usize) -> Vec<u8> {
        let len = if i % 50 == 49 {
            20_000
        } else {
            2 + (i * 97) % 1500
        };
        let mut d: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        d[..2].copy_from_slice(&(i as u16).to_be_bytes());
        d
    }

    /// 500 datagrams from one endpoint to another, queued and flushed in
    /// runs of 100 (a run fits any receive buffer the kernel grants).
    fn burst(fallback: bool) -> (UdpStats, UdpStats) {
        let mut poll = Poll::new().unwrap();
        let mut a =
            UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(1)).unwrap();
        let mut b =
            UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(2)).unwrap();
        if fallback {
            a.force_fallback();
            b.force_fallback();
            assert_eq!(a.is_batched(), (false, false));
        }
        let mut got = Vec::new();
        for run in 0..5 {
            for i in run * 100..(run + 1) * 100 {
                assert!(b.send_later(transmit(a.local_addr(), &numbered(i))));
            }
            b.flush();
            assert_eq!(b.queued(), 0);
            receive(&mut poll, &mut a, 100, &mut got);
        }
        assert_eq!(got.len(), 500, "datagrams lost");
        for (i, (from, d)) in got.iter().enumerate() {
            assert_eq!(*from, b.local_addr(), "source of datagram {i}");
            assert_eq!(*d, numbered(i), "datagram {i}");
        }
        let (ra, sb) = (a.stats(), b.stats());
        assert_eq!((ra.datagrams_in, sb.datagrams_out), (500, 500));
        let bytes: u64 = (0..500).map(|i| numbered(i).len() as u64).sum();
        assert_eq!((ra.bytes_in, sb.bytes_out), (bytes, bytes));
        assert_eq!((ra.recv_errors, sb.send_errors), (0, 0));
        (ra, sb)
    }

    #[test]
    fn a_burst_arrives_complete_through_the_batch_calls() {
        let (recv, sent) = burst(false);
        if cfg!(target_os = "linux") {
            assert_eq!(recv.batched_in, 500);
            assert!(recv.recv_batches >= 500 / RECV_BATCH as u64, "{recv:?}");
            assert!(recv.recv_batches < 500, "batches of one: {recv:?}");
            assert_eq!(sent.batched_out, 500);
            // 100 per flush, 64 per call: two calls each.
            assert_eq!(sent.send_batches, 10, "{sent:?}");
        }
    }

    #[test]
    fn a_burst_arrives_complete_on_the_fallback_path() {
        let (recv, sent) = burst(true);
        assert_eq!((recv.recv_batches, recv.batched_in), (0, 0));
        assert_eq!((sent.send_batches, sent.batched_out), (0, 0));
    }

    #[test]
    fn a_send_burst_beyond_the_send_buffer_is_queued_and_flushed() {
        for fallback in [false, true] {
            let mut poll = Poll::new().unwrap();
            let mut a =
                UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(1))
                    .unwrap();
            let mut b =
                UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(2))
                    .unwrap();
            if fallback {
                b.force_fallback();
            }
            // The smallest send buffer the kernel grants (a few KiB).
            let sock = socket2::SockRef::from(&b.socket);
            sock.set_send_buffer_size(0).unwrap();
            let sndbuf = sock.send_buffer_size().unwrap();
            const N: usize = 150;
            assert!(sndbuf < N * 1200, "send buffer {sndbuf}");
            b.set_max_queue(N);
            // One waits, so every later send() queues behind it.
            assert!(b.send_later(transmit(a.local_addr(), &[0; 1200])));
            for i in 1..N {
                let mut d = vec![i as u8; 1200];
                d[..2].copy_from_slice(&(i as u16).to_be_bytes());
                assert!(b.send(transmit(a.local_addr(), &d)));
            }
            assert_eq!(b.queued(), N);
            assert!(b.is_full());
            assert!(b.want_writable);
            let mut events = Events::with_capacity(8);
            poll.poll(&mut events, Some(Duration::from_secs(2)))
                .unwrap();
            assert!(events
                .iter()
                .any(|e| e.token() == Token(2) && e.is_writable()));
            b.flush();
            assert_eq!(b.queued(), 0, "fallback {fallback}");
            assert!(!b.want_writable);
            let mut got = Vec::new();
            receive(&mut poll, &mut a, N, &mut got);
            assert_eq!(got.len(), N, "fallback {fallback}: datagrams lost");
            for (i, (_, d)) in got.iter().enumerate().skip(1) {
                assert_eq!(u16::from_be_bytes([d[0], d[1]]) as usize, i);
                assert_eq!(d.len(), 1200);
            }
            let s = b.stats();
            assert_eq!((s.datagrams_out, s.queue_drops), (N as u64, 0));
            let batched = cfg!(target_os = "linux") && !fallback;
            assert_eq!(s.batched_out, if batched { N as u64 } else { 0 });
            assert_eq!(s.send_batches, if batched { 3 } else { 0 });
        }
    }

    #[test]
    fn refusals_that_mean_unsupported() {
        let err = |code| io::Error::from_raw_os_error(code);
        assert!(refuses_batch(&err(nix::libc::ENOSYS), true));
        assert!(refuses_batch(&err(nix::libc::EOPNOTSUPP), false));
        assert!(refuses_batch(&err(nix::libc::EINVAL), false));
        assert!(!refuses_batch(&err(nix::libc::EINVAL), true));
        assert!(!refuses_batch(&err(nix::libc::ECONNREFUSED), false));
    }
}
