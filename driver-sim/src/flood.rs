//! An attacker host: floods one or more targets with handshakes from fresh
//! identities, answering cookie replies and completing every handshake it
//! is allowed to, as the attack of issue 10 did. Each identity is used
//! once and never registers.

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::{BTreeMap, VecDeque};

use pilot_proto::tunnel::{TunnelConfig, Tunnels};
use pilot_proto::wire::{self, Packet};
use pilot_proto::{SocketId, Timestamp, Transmit};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use crate::pilot::WALL_ORIGIN_MICROS;

/// How long a throwaway identity is kept to answer its cookie reply and
/// complete its handshake.
const KEEP: Duration = Duration::from_secs(2);
/// New identities start in batches this far apart.
const TICK: Duration = Duration::from_millis(10);
/// The live identities' own timers (retransmissions) run this often.
const TIMERS_EVERY: u64 = 5;

/// A handshake flooder.
pub struct Flooder {
    /// (target address, target's static X25519 key).
    targets: Vec<(SocketAddr, [u8; 32])>,
    per_second: u64,
    start: Timestamp,
    until: Timestamp,
    next_at: Timestamp,
    ticks: u64,
    rng: ChaCha20Rng,
    /// Live throwaway identities by number, with when they started.
    live: BTreeMap<u64, (Timestamp, Tunnels)>,
    next_id: u64,
    /// Our handshakes' sender indices: which identity a reply is for.
    by_index: BTreeMap<u32, u64>,
    out: VecDeque<Transmit>,
    /// Handshakes started (one per fresh identity and target).
    pub started: u64,
    /// Datagrams received back from the targets.
    pub replies: u64,
}

impl Flooder {
    /// A flooder sending `per_second` fresh handshakes to each of
    /// `targets` from `start` until `until`.
    pub fn new(
        seed: [u8; 32],
        targets: Vec<(SocketAddr, [u8; 32])>,
        per_second: u32,
        start: Timestamp,
        until: Timestamp,
    ) -> Self {
        Flooder {
            targets,
            per_second: u64::from(per_second),
            start,
            until,
            next_at: start,
            ticks: 0,
            rng: ChaCha20Rng::from_seed(seed),
            live: BTreeMap::new(),
            next_id: 0,
            by_index: BTreeMap::new(),
            out: VecDeque::new(),
            started: 0,
            replies: 0,
        }
    }

    /// Collects what identity `id` wants to send, noting the sender index
    /// of each initiation so its reply finds the identity.
    fn drain(&mut self, id: u64) {
        let Some((_, t)) = self.live.get_mut(&id) else {
            return;
        };
        while let Some(x) = t.poll_transmit() {
            if let Ok(Packet::Init(h)) = wire::decode(&x.payload) {
                self.by_index.insert(h.sender, id);
            }
            self.out.push_back(x);
        }
        while t.poll_event().is_some() {}
    }

    fn launch(&mut self, now: Timestamp, count: u64) {
        for _ in 0..count {
            for i in 0..self.targets.len() {
                let (addr, key) = self.targets[i];
                let mut secret = [0u8; 32];
                let mut seed = [0u8; 32];
                self.rng.fill_bytes(&mut secret);
                self.rng.fill_bytes(&mut seed);
                let mut t =
                    Tunnels::new(TunnelConfig::default(), secret, &seed, WALL_ORIGIN_MICROS);
                t.set_endpoint(key, addr);
                t.connect(now, &key);
                let id = self.next_id;
                self.next_id += 1;
                self.live.insert(id, (now, t));
                self.drain(id);
                self.started += 1;
            }
        }
    }

    /// A datagram from a target.
    pub fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        data: &[u8],
    ) {
        self.replies += 1;
        let receiver = match wire::decode(data) {
            Ok(Packet::Cookie { receiver, .. }) => receiver,
            Ok(Packet::Response(h)) => h.receiver,
            _ => return,
        };
        let Some(&id) = self.by_index.get(&receiver) else {
            return;
        };
        if let Some((_, t)) = self.live.get_mut(&id) {
            let _ = t.handle_datagram(now, socket, from, data, &mut |_, _| true);
        }
        self.drain(id);
    }

    /// Starts the handshakes due, runs the live identities' timers, and
    /// drops identities past their use.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some((&id, (at, _))) = self.live.first_key_value() {
            if now.saturating_since(*at) < KEEP {
                break;
            }
            self.live.remove(&id);
        }
        let oldest = self
            .live
            .first_key_value()
            .map_or(self.next_id, |(id, _)| *id);
        self.by_index.retain(|_, id| *id >= oldest);
        while self.next_at <= now && self.next_at < self.until {
            let at = self.next_at;
            // Whole identities per tick, spread so the rate is exact.
            let elapsed = |t: Timestamp| t.saturating_since(self.start).as_micros() as u64;
            let due = |t: Timestamp| elapsed(t) * self.per_second / 1_000_000;
            let count = due(at + TICK) - due(at);
            self.launch(at, count);
            self.next_at = at + TICK;
            self.ticks += 1;
            if self.ticks.is_multiple_of(TIMERS_EVERY) {
                let ids: Vec<u64> = self.live.keys().copied().collect();
                for id in ids {
                    if let Some((_, t)) = self.live.get_mut(&id) {
                        t.handle_timeout(now);
                    }
                    self.drain(id);
                }
            }
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When the next batch starts or an identity is dropped.
    pub fn poll_timeout(&self) -> Option<(Timestamp, &'static str)> {
        let mut next = None::<Timestamp>;
        if self.next_at < self.until {
            next = Some(self.next_at);
        }
        if let Some((_, (at, _))) = self.live.first_key_value() {
            let drop_at = *at + KEEP;
            next = Some(next.map_or(drop_at, |n| n.min(drop_at)));
        }
        next.map(|t| (t, "flood"))
    }
}
