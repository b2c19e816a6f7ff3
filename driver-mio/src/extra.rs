//! The extra UDP sockets the core asks for (`SocketOp`): a NAT
//! classification socket, birthday probing's sockets. Plain non-blocking
//! sockets, one mio token each; datagrams are sent one at a time and
//! dropped when the kernel buffer is full (probes are retried by their
//! rounds, and a path's packets by the protocol above).

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use pilot_proto::{SocketId, SocketOp, Transmit};

use crate::tokens::Tokens;

/// The open extra sockets, by the core's id and by mio token.
#[derive(Debug)]
pub struct ExtraSockets {
    ip: IpAddr,
    registry: Registry,
    by_id: BTreeMap<SocketId, (UdpSocket, Token)>,
    by_token: BTreeMap<Token, SocketId>,
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
                let mut socket = UdpSocket::bind(SocketAddr::new(self.ip, port.unwrap_or(0)))?;
                let token = tokens.take();
                if let Err(e) = self
                    .registry
                    .register(&mut socket, token, Interest::READABLE)
                {
                    tokens.give_back(token);
                    return Err(e);
                }
                self.by_token.insert(token, id);
                self.by_id.insert(id, (socket, token));
            }
            SocketOp::Close(id) => self.close(id, tokens),
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, id: SocketId, tokens: &mut Tokens) {
        if let Some((mut socket, token)) = self.by_id.remove(&id) {
            let _ = self.registry.deregister(&mut socket);
            self.by_token.remove(&token);
            tokens.give_back(token);
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

    /// The address socket `id` is bound to.
    pub fn local_addr(&self, id: SocketId) -> Option<SocketAddr> {
        self.by_id.get(&id).and_then(|(s, _)| s.local_addr().ok())
    }

    /// The socket a mio token belongs to.
    pub fn owner(&self, token: Token) -> Option<SocketId> {
        self.by_token.get(&token).copied()
    }

    /// Sends `t` from its socket; false if that socket is not open or the
    /// kernel refused or had no room.
    pub fn send(&self, t: &Transmit) -> bool {
        match self.by_id.get(&t.socket) {
            Some((s, _)) => s.send_to(&t.payload, t.destination).is_ok(),
            None => false,
        }
    }

    /// Reads everything socket `id` has (mio is edge-triggered), handing
    /// each datagram to `f`, at most `budget`; returns true if it stopped
    /// at the budget with more perhaps waiting.
    pub fn recv(&self, id: SocketId, budget: usize, mut f: impl FnMut(SocketAddr, &[u8])) -> bool {
        let Some((s, _)) = self.by_id.get(&id) else {
            return false;
        };
        let mut buf = [0u8; 65536];
        for _ in 0..budget {
            match s.recv_from(&mut buf) {
                Ok((n, from)) => f(from, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        true
    }
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
        assert!(extra.send(&Transmit::new(id, peer_addr, b"out".to_vec())));
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
        assert!(!extra.send(&Transmit::new(id, peer_addr, b"x".to_vec())));
    }
}
