//! Toy machines for the simulator's own tests.
//!
//! Each test binary uses a different subset of these.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use driver_sim::{Machine, SocketId, Timestamp, Transmit};

/// How long the ping client waits for a pong before sending again.
pub const RTO: Duration = Duration::from_millis(200);
/// Retransmissions before the client gives up.
pub const MAX_RETRIES: u32 = 10;

/// Parses a documentation-range address.
pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// What a [`PingPong`] is.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// Sends `ping N` to `server` for N in 1..=rounds, one at a time,
    /// retransmitting after [`RTO`].
    Client { server: SocketAddr, rounds: u32 },
    /// Answers every `ping N` with `pong N`.
    Server,
}

/// What the ping client reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PingEvent {
    /// Round `seq` answered `rtt` after its last (re)transmission.
    Pong { seq: u32, rtt: Duration },
    /// Every round answered.
    Done,
    /// Out of retries.
    GaveUp { seq: u32 },
}

impl fmt::Display for PingEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingEvent::Pong { seq, rtt } => write!(f, "pong {seq} rtt={}us", rtt.as_micros()),
            PingEvent::Done => f.write_str("done"),
            PingEvent::GaveUp { seq } => write!(f, "gave up on ping {seq}"),
        }
    }
}

/// A ping client or server with text payloads.
pub struct PingPong {
    pub role: Role,
    /// The seed the world gave this host.
    pub seed: [u8; 32],
    /// Pings a server has answered.
    pub pings: u32,
    seq: u32,
    tries: u32,
    sent_at: Timestamp,
    deadline: Option<Timestamp>,
    out: VecDeque<Transmit>,
    events: VecDeque<PingEvent>,
}

impl PingPong {
    pub fn new(role: Role, seed: [u8; 32]) -> Self {
        PingPong {
            role,
            seed,
            pings: 0,
            seq: 0,
            tries: 0,
            sent_at: Timestamp::ZERO,
            deadline: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn client(server: SocketAddr, rounds: u32) -> impl FnOnce([u8; 32]) -> Self {
        move |seed| PingPong::new(Role::Client { server, rounds }, seed)
    }

    pub fn server() -> impl FnOnce([u8; 32]) -> Self {
        |seed| PingPong::new(Role::Server, seed)
    }

    /// A client's command: start round 1.
    pub fn start(&mut self, now: Timestamp) {
        self.seq = 1;
        self.tries = 0;
        self.send_ping(now);
    }

    fn send_ping(&mut self, now: Timestamp) {
        let Role::Client { server, .. } = self.role else {
            return;
        };
        self.out.push_back(Transmit::new(
            SocketId::PRIMARY,
            server,
            format!("ping {}", self.seq).into_bytes(),
        ));
        self.sent_at = now;
        self.deadline = Some(now + RTO);
    }
}

fn parse(payload: &[u8]) -> Option<(&str, u32)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (word, n) = text.split_once(' ')?;
    Some((word, n.parse().ok()?))
}

impl Machine for PingPong {
    type Event = PingEvent;

    fn handle_datagram(
        &mut self,
        now: Timestamp,
        _socket: SocketId,
        from: SocketAddr,
        payload: &[u8],
    ) {
        let Some((word, n)) = parse(payload) else {
            return;
        };
        match (self.role, word) {
            (Role::Server, "ping") => {
                self.pings += 1;
                self.out.push_back(Transmit::new(
                    SocketId::PRIMARY,
                    from,
                    format!("pong {n}").into_bytes(),
                ));
            }
            (Role::Client { rounds, .. }, "pong") if n == self.seq && self.deadline.is_some() => {
                self.events.push_back(PingEvent::Pong {
                    seq: n,
                    rtt: now.saturating_since(self.sent_at),
                });
                if n == rounds {
                    self.events.push_back(PingEvent::Done);
                    self.deadline = None;
                    return;
                }
                self.seq += 1;
                self.tries = 0;
                self.send_ping(now);
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        // Early calls must be harmless.
        let Some(deadline) = self.deadline else {
            return;
        };
        if now < deadline {
            return;
        }
        if self.tries == MAX_RETRIES {
            self.events.push_back(PingEvent::GaveUp { seq: self.seq });
            self.deadline = None;
            return;
        }
        self.tries += 1;
        self.send_ping(now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<PingEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
        self.deadline.map(|d| (d, "retransmit"))
    }

    fn describe(payload: &[u8]) -> String {
        String::from_utf8_lossy(payload).into_owned()
    }
}

/// Sends numbered datagrams at a steady rate, or in bursts, and records
/// what it receives. Payload: a 4-byte big-endian sequence number, padded.
pub struct Blast {
    target: Option<SocketAddr>,
    size: usize,
    interval: Duration,
    remaining: u32,
    next_seq: u32,
    next_at: Option<Timestamp>,
    out: VecDeque<Transmit>,
    /// (arrival time, sequence number) of every datagram received.
    pub received: Vec<(Timestamp, u32)>,
}

impl Blast {
    /// A host that only listens.
    pub fn sink() -> impl FnOnce([u8; 32]) -> Self {
        |_| Blast::new(None, 4, Duration::ZERO, 0)
    }

    /// A host that sends `count` datagrams of `size` bytes to `target`, one
    /// every `interval`, starting as soon as it is added.
    pub fn sender(
        target: SocketAddr,
        count: u32,
        size: usize,
        interval: Duration,
    ) -> impl FnOnce([u8; 32]) -> Self {
        move |_| {
            let mut b = Blast::new(Some(target), size, interval, count);
            // A deadline in the past means "now", whenever the host is added.
            b.next_at = (count > 0).then_some(Timestamp::ZERO);
            b
        }
    }

    fn new(target: Option<SocketAddr>, size: usize, interval: Duration, count: u32) -> Self {
        Blast {
            target,
            size: size.max(4),
            interval,
            remaining: count,
            next_seq: 0,
            next_at: None,
            out: VecDeque::new(),
            received: Vec::new(),
        }
    }

    /// A command: queue `n` datagrams of `size` bytes to `to` at once.
    pub fn burst(&mut self, to: SocketAddr, n: u32, size: usize) {
        for _ in 0..n {
            self.push(to, size);
        }
    }

    fn push(&mut self, to: SocketAddr, size: usize) {
        let mut payload = vec![0u8; size.max(4)];
        payload[..4].copy_from_slice(&self.next_seq.to_be_bytes());
        self.next_seq += 1;
        self.out
            .push_back(Transmit::new(SocketId::PRIMARY, to, payload));
    }

    /// The sequence numbers received, in arrival order.
    pub fn seqs(&self) -> Vec<u32> {
        self.received.iter().map(|&(_, s)| s).collect()
    }
}

impl Machine for Blast {
    type Event = Infallible;

    fn handle_datagram(
        &mut self,
        now: Timestamp,
        _socket: SocketId,
        _from: SocketAddr,
        payload: &[u8],
    ) {
        let Some(seq) = payload.get(..4) else {
            return;
        };
        let seq = u32::from_be_bytes(seq.try_into().expect("four bytes"));
        self.received.push((now, seq));
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        let (Some(at), Some(target)) = (self.next_at, self.target) else {
            return;
        };
        if now < at {
            return;
        }
        self.push(target, self.size);
        self.remaining -= 1;
        self.next_at = (self.remaining > 0).then(|| now + self.interval);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<Infallible> {
        None
    }

    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
        self.next_at.map(|t| (t, "send"))
    }

    fn describe(payload: &[u8]) -> String {
        match payload.get(..4) {
            Some(seq) => format!(
                "blast #{}",
                u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]])
            ),
            None => "runt".to_owned(),
        }
    }
}

/// Breaks the drain rule: draining its events queues a datagram, which is
/// then still waiting after `poll_timeout`.
#[derive(Default)]
pub struct Sloppy {
    events: VecDeque<&'static str>,
    out: VecDeque<Transmit>,
}

impl Sloppy {
    /// A command that makes it emit an event.
    pub fn poke(&mut self) {
        self.events.push_back("poked");
    }
}

impl Machine for Sloppy {
    type Event = &'static str;

    fn handle_datagram(&mut self, _: Timestamp, _socket: SocketId, _: SocketAddr, _: &[u8]) {}

    fn handle_timeout(&mut self, _: Timestamp) {}

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<&'static str> {
        let event = self.events.pop_front()?;
        self.out.push_back(Transmit::new(
            SocketId::PRIMARY,
            addr("192.0.2.99:9"),
            b"late".to_vec(),
        ));
        Some(event)
    }

    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
        None
    }

    fn describe(_: &[u8]) -> String {
        "late".to_owned()
    }
}

/// Always wants waking at the last time it saw: a busy loop.
#[derive(Default)]
pub struct Spinner {
    now: Timestamp,
}

impl Machine for Spinner {
    type Event = Infallible;

    fn handle_datagram(&mut self, now: Timestamp, _socket: SocketId, _: SocketAddr, _: &[u8]) {
        self.now = now;
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.now = now;
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        None
    }

    fn poll_event(&mut self) -> Option<Infallible> {
        None
    }

    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
        Some((self.now, "spin"))
    }

    fn describe(_: &[u8]) -> String {
        String::new()
    }
}
