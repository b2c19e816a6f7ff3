//! The relay: the rendezvous forwards end-to-end encrypted tunnel packets
//! between two agents that registered and trust each other, when they
//! cannot reach each other directly.
//!
//! A relay packet (wire type 5) names the other agent by its pilot
//! address; the rendezvous knows the sender by the UDP address its
//! registration came from, replaces the address with the sender's and
//! sends it to the target's registered endpoint. It never decrypts
//! anything: it sees addresses and sizes, not content. Forwarding has its
//! own token buckets, per agent and per pair, in packets and bytes per
//! second ([`RelayLimits`]), separate from the per-agent message limit.

use alloc::collections::BTreeMap;
use core::time::Duration;

use crate::identity::PublicKey;
use crate::time::Timestamp;

/// How much the relay forwards, per sending agent and per pair of
/// agents. A packet over any limit is dropped and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Packets per second one pair of agents may send through the relay
    /// (both directions together).
    pub pair_packets_per_sec: u32,
    /// Bytes per second one pair may send.
    pub pair_bytes_per_sec: u32,
    /// Packets per second one agent may send to all its peers together.
    pub agent_packets_per_sec: u32,
    /// Bytes per second one agent may send.
    pub agent_bytes_per_sec: u32,
    /// How long a burst at full rate the buckets hold.
    pub burst: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        RelayLimits {
            pair_packets_per_sec: 8_000,
            pair_bytes_per_sec: 8 << 20,
            agent_packets_per_sec: 16_000,
            agent_bytes_per_sec: 16 << 20,
            burst: Duration::from_millis(500),
        }
    }
}

/// What the relay did, for `pilotctl rendezvous status` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// Packets forwarded.
    pub forwarded_packets: u64,
    /// Their bytes (whole relay datagrams as sent).
    pub forwarded_bytes: u64,
    /// Relay packets that did not parse.
    pub malformed: u64,
    /// From a UDP address no online registration holds.
    pub unknown_sender: u64,
    /// For an agent that is unknown or offline.
    pub offline: u64,
    /// Between agents that do not trust each other.
    pub not_paired: u64,
    /// Over a per-agent or per-pair limit.
    pub limited: u64,
}

/// A token bucket holding up to `rate * burst` units.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Units, in millionths.
    micro: u64,
    last: Timestamp,
}

impl Bucket {
    fn full(now: Timestamp, rate: u32, burst: Duration) -> Self {
        Bucket {
            micro: capacity(rate, burst),
            last: now,
        }
    }

    fn refill(&mut self, now: Timestamp, rate: u32, burst: Duration) {
        let elapsed = now.saturating_since(self.last).as_micros() as u64;
        self.micro = self
            .micro
            .saturating_add(elapsed.saturating_mul(u64::from(rate)))
            .min(capacity(rate, burst));
        self.last = now;
    }

    fn has(&self, amount: u64) -> bool {
        self.micro >= amount.saturating_mul(1_000_000)
    }

    fn take(&mut self, amount: u64) {
        self.micro = self.micro.saturating_sub(amount.saturating_mul(1_000_000));
    }
}

fn capacity(rate: u32, burst: Duration) -> u64 {
    // At least one second's worth of one packet, so a tiny burst setting
    // cannot make every packet fail.
    (u64::from(rate) * burst.as_micros() as u64).max(1_500_000)
}

/// A packet and a byte bucket.
#[derive(Clone, Copy, Debug)]
struct Meter {
    packets: Bucket,
    bytes: Bucket,
}

impl Meter {
    fn new(now: Timestamp, packets: u32, bytes: u32, burst: Duration) -> Self {
        Meter {
            packets: Bucket::full(now, packets, burst),
            bytes: Bucket::full(now, bytes, burst),
        }
    }

    fn refill(&mut self, now: Timestamp, packets: u32, bytes: u32, burst: Duration) {
        self.packets.refill(now, packets, burst);
        self.bytes.refill(now, bytes, burst);
    }

    fn allows(&self, len: u64) -> bool {
        self.packets.has(1) && self.bytes.has(len)
    }

    fn take(&mut self, len: u64) {
        self.packets.take(1);
        self.bytes.take(len);
    }
}

/// The relay's meters and counters.
#[derive(Debug, Default)]
pub(super) struct Relay {
    pub(super) limits: RelayLimits,
    pub(super) stats: RelayStats,
    agents: BTreeMap<PublicKey, Meter>,
    pairs: BTreeMap<(PublicKey, PublicKey), Meter>,
}

impl Relay {
    pub(super) fn new(limits: RelayLimits) -> Self {
        Relay {
            limits,
            ..Relay::default()
        }
    }

    /// Charges a packet of `len` bytes from `sender` within `pair` to
    /// both buckets; false (and nothing charged) if either is empty.
    pub(super) fn admit(
        &mut self,
        now: Timestamp,
        sender: PublicKey,
        pair: (PublicKey, PublicKey),
        len: usize,
    ) -> bool {
        let l = self.limits;
        let agent = self.agents.entry(sender).or_insert_with(|| {
            Meter::new(now, l.agent_packets_per_sec, l.agent_bytes_per_sec, l.burst)
        });
        agent.refill(now, l.agent_packets_per_sec, l.agent_bytes_per_sec, l.burst);
        let pair = self.pairs.entry(pair).or_insert_with(|| {
            Meter::new(now, l.pair_packets_per_sec, l.pair_bytes_per_sec, l.burst)
        });
        pair.refill(now, l.pair_packets_per_sec, l.pair_bytes_per_sec, l.burst);
        let len = len as u64;
        if !(agent.allows(len) && pair.allows(len)) {
            self.stats.limited += 1;
            return false;
        }
        agent.take(len);
        pair.take(len);
        true
    }

    /// Forgets the meters of an agent that went offline (its pairs'
    /// meters too): they are rebuilt full when it relays again.
    pub(super) fn forget(&mut self, agent: &PublicKey) {
        self.agents.remove(agent);
        self.pairs.retain(|(a, b), _| a != agent && b != agent);
    }

    /// Meters held: bounded by online agents and their pairs.
    pub(super) fn size(&self) -> (usize, usize) {
        (self.agents.len(), self.pairs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_limit_packets_and_bytes_and_refill() {
        let limits = RelayLimits {
            pair_packets_per_sec: 10,
            pair_bytes_per_sec: 1_000_000,
            agent_packets_per_sec: 1_000,
            agent_bytes_per_sec: 1_000_000,
            burst: Duration::from_secs(1),
        };
        let mut r = Relay::new(limits);
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let t0 = Timestamp::from_secs(1);
        let sent = (0..100).filter(|_| r.admit(t0, a, (a, b), 100)).count();
        // 10 packets a second, a one-second burst (at least 1.5 packets).
        assert_eq!(sent, 10);
        assert_eq!(r.stats.limited, 90);
        // Half a second later, five more.
        let t1 = t0 + Duration::from_millis(500);
        let more = (0..100).filter(|_| r.admit(t1, a, (a, b), 100)).count();
        assert_eq!(more, 5);
        // Bytes limit: a pair with plenty of packets but few bytes.
        let mut r = Relay::new(RelayLimits {
            pair_bytes_per_sec: 3_000,
            ..limits
        });
        let sent = (0..10).filter(|_| r.admit(t0, a, (a, b), 1_000)).count();
        assert_eq!(sent, 3);
        r.forget(&a);
        assert_eq!(r.size(), (0, 0));
    }
}
