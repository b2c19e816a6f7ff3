//! The extra UDP sockets the core asks for (`SocketOp`): a NAT
//! classification socket, birthday probing's sockets, and the one socket
//! of those that found a direct path and then carries a session's bulk
//! traffic. Each is a plain non-blocking socket with one mio token and
//! the same kernel buffers as the primary socket. A datagram the kernel
//! cannot take at once waits in the socket's own bounded queue until the
//! socket is writable (dropping it instead cost a bulk stream over a
//! birthday-found path most of its throughput: 0.6 MiB/s against tens
//! over the primary socket). While any queue is full the daemon leaves
//! further transmits in the core, as it does for the primary socket.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use pilot_proto::{SocketId, SocketOp, Transmit};
use socket2::{Domain, Protocol, Socket, Type};

use crate::tokens::Tokens;

/// Datagrams one extra socket keeps while the kernel's buffer is full.
pub const EXTRA_SEND_QUEUE: usize = 1024;

/// One open extra socket.
#[derive(Debug)]
struct Extra {
    socket: UdpSocket,
    token: Token,
    /// Datagrams the kernel could not take yet, oldest first.
    queue: VecDeque<Transmit>,
    /// True while registered for WRITABLE as well as READABLE.
    writable: bool,
}

/// The open extra sockets, by the core's id and by mio token.
#[derive(Debug)]
pub struct ExtraSockets {
    ip: IpAddr,
    registry: Registry,
    by_id: BTreeMap<SocketId, Extra>,
    by_token: BTreeMap<Token, SocketId>,
    /// How many queues are at [`EXTRA_SEND_QUEUE`].
    full: usize,
    buf: Vec<u8>,
}

impl ExtraSockets {
    /// Sockets bound on `ip` (the primary socket's address), registered
    /// with `registry`.
    pub fn new(ip: IpAddr, registry: Registry) -> Self {
        ExtraSockets {
            ip,
            registry,
            by_id: BTreeMap::new(),
            by_token: BTreeMap::new(),
            full: 0,
            buf: Vec::new(),
        }
    }

    /// Carries out `op`. A socket that cannot be bound is left closed
    /// (its datagrams are then dropped) and the error returned for the log.
    pub fn apply(&mut self, op: SocketOp, tokens: &mut Tokens) -> io::Result<()> {
        match op {
            SocketOp::Open { id, port } => {
                if id == SocketId::PRIMARY {
                    return Ok(());
                }
                self.close(id, tokens);
                let mut socket = open(SocketAddr::new(self.ip, port.unwrap_or(0)))?;
                let token = tokens.take();
                if let Err(e) = self
                    .registry
                    .register(&mut socket, token, Interest::READABLE)
                {
                    tokens.give_back(token);
                    return Err(e);
                }
                self.by_token.insert(token, id);
                self.by_id.insert(
                    id,
                    Extra {
                        socket,
                        token,
                        queue: VecDeque::new(),
                        writable: false,
                    },
                );
            }
            SocketOp::Close(id) => self.close(id, tokens),
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, id: SocketId, tokens: &mut Tokens) {
        if let Some(mut e) = self.by_id.remove(&id) {
            let _ = self.registry.deregister(&mut e.socket);
            self.by_token.remove(&e.token);
            tokens.give_back(e.token);
            if e.queue.len() >= EXTRA_SEND_QUEUE {
                self.full -= 1;
            }
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True when none is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// True while some socket's queue is full: leave transmits in the core.
    pub fn is_full(&self) -> bool {
        self.full > 0
    }

    /// The address socket `id` is bound to.
    pub fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.by_id.get(&id).and_then(|e| e.socket.local_addr().ok())
    }

    /// The socket a mio token belongs to.
    pub fn owner(&self, token: Token) -> Option<SocketId> {
        self.by_token.get(&token).copied()
    }

    /// Sends `t` from its socket now, or queues it until the socket is
    /// writable; false if it was dropped (socket not open, queue full,
    /// or refused by the kernel).
    pub fn send(&mut self, t: Transmit) -> bool {
        let Some(e) = self.by_id.get_mut(&t.socket) else {
            return false;
        };
        if e.queue.is_empty() {
            match e.socket.send_to(&t.payload, t.destination) {
                Ok(_) => return true,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        if e.queue.len() >= EXTRA_SEND_QUEUE {
            return false;
        }
        e.queue.push_back(t);
        if e.queue.len() == EXTRA_SEND_QUEUE {
            self.full += 1;
        }
        if !e.writable {
            e.writable = self
                .registry
                .reregister(
                    &mut e.socket,
                    e.token,
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_ok();
        }
        true
    }

    /// Sends what socket `id` has queued, as far as the kernel takes it;
    /// call on its writable event.
    pub fn flush(&mut self, id: SocketId) {
        let Some(e) = self.by_id.get_mut(&id) else {
            return;
        };
        let was_full = e.queue.len() >= EXTRA_SEND_QUEUE;
        while let Some(t) = e.queue.front() {
            match e.socket.send_to(&t.payload, t.destination) {
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // Refused by the kernel (unreachable, too large): dropped.
                Err(_) => {}
            }
            e.queue.pop_front();
        }
        if was_full && e.queue.len() < EXTRA_SEND_QUEUE {
            self.full -= 1;
        }
        if e.queue.is_empty() && e.writable {
            e.writable = self
                .registry
                .reregister(&mut e.socket, e.token, Interest::READABLE)
                .is_err();
        }
    }

    /// Reads everything socket `id` has (mio is edge-triggered), handing
    /// each datagram to `f`, at most `budget`; returns true if it stopped
    /// at the budget with more perhaps waiting.
    pub fn recv(
        &mut self,
        id: SocketId,
        budget: usize,
        mut f: impl FnMut(SocketAddr, &[u8]),
    ) -> bool {
        let Some(e) = self.by_id.get(&id) else {
            return false;
        };
        if self.buf.is_empty() {
            self.buf = vec![0u8; 65536];
        }
        for _ in 0..budget {
            match e.socket.recv_from(&mut self.buf) {
                Ok((n, from)) => f(from, &self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }
}

/// A non-blocking UDP socket on `addr` with the primary socket's buffer
/// sizes.
fn open(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    // Best effort: a kernel that caps them still gives a working socket.
    let _ = crate::udp::set_buffers(&socket);
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::Poll;

    #[test]
    fn open_send_receive_close() {
        let poll = Poll::new().unwrap();
        let mut tokens = Tokens::new();
        let mut extra = ExtraSockets::new(
            "127.0.0.1".parse().unwrap(),
            poll.registry().try_clone().unwrap(),
        );
        let id = SocketId(7);
        extra
            .apply(SocketOp::Open { id, port: None }, &mut tokens)
            .unwrap();
        let addr = extra.local_addr(id).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer_addr = peer.local_addr().unwrap();
        assert!(extra.send(Transmit::new(id, peer_addr, b"out".to_vec())));
        let mut buf = [0u8; 16];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"out"[..], addr));
        peer.send_to(b"in", addr).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            extra.recv(id, 8, |from, data| got.push((from, data.to_vec())));
            if !got.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, vec![(peer_addr, b"in".to_vec())]);
        extra.apply(SocketOp::Close(id), &mut tokens).unwrap();
        assert!(extra.is_empty());
        assert!(!extra.send(Transmit::new(id, peer_addr, b"x".to_vec())));
    }
}
