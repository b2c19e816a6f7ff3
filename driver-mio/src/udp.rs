//! One non-blocking UDP socket in a mio loop: batched reads, and sends that
//! queue instead of dropping when the kernel's buffer is full.
//!
//! Reads use plain `recv_from` in a loop, up to a caller-given number of
//! datagrams per call, so one busy socket cannot starve the rest of the
//! loop. `recvmmsg`/GRO (through quinn-udp) would save system calls, but
//! the datagrams Pilot reads come from many sources in small numbers each,
//! which GRO cannot coalesce, and the batch API needs fixed buffers per
//! slot and GRO-aware splitting; the plain loop is the simple, safe choice
//! until a benchmark shows the syscalls matter. Sends go out one by one
//! (`sendto`) for the same reason: GSO needs runs of equal-sized datagrams
//! to one destination, which a rendezvous answering many agents rarely has.
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
    stats: UdpStats,
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
            stats: UdpStats::default(),
        })
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
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    n += 1;
                    self.stats.datagrams_in += 1;
                    self.stats.bytes_in += len as u64;
                    f(normalise(from), &self.buf[..len]);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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

    /// Sends what is queued, as far as the kernel takes it; call on a
    /// writable event. Stops asking for writable events once empty.
    pub fn flush(&mut self) {
        while let Some(t) = self.queue.pop_front() {
            if let Sent::WouldBlock = self.try_send(&t) {
                self.queue.push_front(t);
                break;
            }
        }
        if self.queue.is_empty() && self.want_writable {
            self.set_writable(false);
        }
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
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%addr, error = %e, "cannot raise the receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(%addr, error = %e, "cannot raise the send buffer");
    }
    tracing::debug!(
        %addr,
        asked = SOCKET_BUFFER,
        recv = socket.recv_buffer_size().unwrap_or(0),
        send = socket.send_buffer_size().unwrap_or(0),
        "UDP socket buffers (the kernel caps them at net.core.rmem_max / wmem_max)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::time::Duration;

    fn transmit(to: SocketAddr, payload: &[u8]) -> Transmit {
        Transmit {
            destination: to,
            payload: payload.to_vec(),
        }
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
}
