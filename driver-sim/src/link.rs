//! Links: how long a datagram takes to cross one, and whether it arrives.
//!
//! A datagram from host A to host B crosses two links, A's access link and
//! then B's, unless a path override for (A, B) replaces both (see
//! [`World::set_path`](crate::World::set_path)). Each link rolls its own dice
//! for loss, duplication and reordering, so impairments compound: two links
//! with 1% loss each lose about 2% end to end. Only the link a datagram enters
//! the network through serializes it (see [`LinkConfig::bandwidth_bps`]).

use core::net::SocketAddr;
use core::time::Duration;

use pilot_proto::Timestamp;

use crate::rng::{micros, SimRng};
use crate::trace::DropReason;

/// What one link does to the datagrams that cross it.
///
/// Build one with struct update syntax so that new fields keep old code
/// compiling: `LinkConfig { loss_ppm: 10_000, ..LinkConfig::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// One-way propagation delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` for every datagram.
    /// Draws are independent, so jitter larger than the gap between two
    /// datagrams can reorder them, as on a real multipath network.
    pub jitter: Duration,
    /// Chance, in parts per million, that a datagram is lost.
    pub loss_ppm: u32,
    /// Chance, in parts per million, that a datagram arrives twice. The copy
    /// draws its own jitter and reordering.
    pub duplicate_ppm: u32,
    /// Chance, in parts per million, that a datagram is held back by an
    /// extra delay drawn from `1us..=reorder_extra`.
    pub reorder_ppm: u32,
    /// The longest a reordered datagram is held back.
    pub reorder_extra: Duration,
    /// The largest IP packet the link carries, counting the IP and UDP
    /// headers (28 bytes over IPv4, 48 over IPv6) as well as the payload.
    pub mtu: usize,
    /// Uplink rate in bits per second, or `None` for unlimited. The sender's
    /// link serializes each datagram (headers included) one after another;
    /// `Some(0)` is treated as unlimited rather than as a dead link.
    pub bandwidth_bps: Option<u64>,
    /// How long a datagram may wait behind others in the uplink queue before
    /// it is dropped; `None` buffers without bound. Only matters with a
    /// bandwidth limit.
    pub queue_limit: Option<Duration>,
}

impl Default for LinkConfig {
    /// 5 ms, lossless, MTU 1500, unlimited bandwidth; `reorder_extra` is
    /// 10 ms so that setting `reorder_ppm` alone has a visible effect.
    fn default() -> Self {
        LinkConfig {
            latency: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss_ppm: 0,
            duplicate_ppm: 0,
            reorder_ppm: 0,
            reorder_extra: Duration::from_millis(10),
            mtu: 1500,
            bandwidth_bps: None,
            queue_limit: None,
        }
    }
}

/// Size on the wire of a UDP datagram carrying `payload_len` bytes to `to`.
pub(crate) fn wire_len(payload_len: usize, to: SocketAddr) -> usize {
    let ip_header = if to.is_ipv4() { 20 } else { 40 };
    payload_len.saturating_add(ip_header + 8)
}

/// One copy of a datagram in flight: when it gets to the end of the links
/// crossed so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flight {
    pub(crate) at: Timestamp,
    pub(crate) duplicate: bool,
}

/// Something a link did to a datagram that the trace should tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mishap {
    Dropped(DropReason),
    Duplicated,
    Reordered(Duration),
}

/// A link's configuration together with its state: its dice and its queue.
pub(crate) struct Link {
    pub(crate) config: LinkConfig,
    rng: SimRng,
    /// When the uplink finishes serializing what is already queued.
    busy_until: Timestamp,
}

impl Link {
    pub(crate) fn new(config: LinkConfig, rng: SimRng) -> Self {
        Link {
            config,
            rng,
            busy_until: Timestamp::ZERO,
        }
    }

    /// Carries every flight in `input` across this link, appending the
    /// survivors (and any duplicates) to `output` and what went wrong to
    /// `mishaps`.
    ///
    /// `entry` says the datagram enters the network here, so it waits its
    /// turn in this link's queue and is serialized at its rate.
    pub(crate) fn cross(
        &mut self,
        wire_len: usize,
        entry: bool,
        input: &[Flight],
        output: &mut Vec<Flight>,
        mishaps: &mut Vec<Mishap>,
    ) {
        for flight in input {
            if wire_len > self.config.mtu {
                mishaps.push(Mishap::Dropped(DropReason::Mtu));
                continue;
            }
            let mut at = flight.at;
            if entry {
                match self.serialize(at, wire_len) {
                    Some(done) => at = done,
                    None => {
                        mishaps.push(Mishap::Dropped(DropReason::Queue));
                        continue;
                    }
                }
            }
            if self.rng.chance_ppm(self.config.loss_ppm) {
                mishaps.push(Mishap::Dropped(DropReason::Loss));
                continue;
            }
            let delay = self.delay(mishaps);
            output.push(Flight {
                at: at + delay,
                duplicate: flight.duplicate,
            });
            if self.rng.chance_ppm(self.config.duplicate_ppm) {
                mishaps.push(Mishap::Duplicated);
                let delay = self.delay(mishaps);
                output.push(Flight {
                    at: at + delay,
                    duplicate: true,
                });
            }
        }
    }

    /// When a datagram handed to the uplink at `at` has been fully put on
    /// the wire, or `None` if the queue is too long to take it.
    fn serialize(&mut self, at: Timestamp, wire_len: usize) -> Option<Timestamp> {
        let Some(bps) = self.config.bandwidth_bps.filter(|&bps| bps > 0) else {
            return Some(at);
        };
        let start = at.max(self.busy_until);
        if let Some(limit) = self.config.queue_limit {
            if start.saturating_since(at) > limit {
                return None;
            }
        }
        let bits = (wire_len as u128) * 8;
        // Round up: a datagram never takes less than its true time on the wire.
        let us = (bits * 1_000_000).div_ceil(u128::from(bps));
        let done = start + Duration::from_micros(u64::try_from(us).unwrap_or(u64::MAX));
        self.busy_until = done;
        Some(done)
    }

    /// Propagation delay for one copy: latency, jitter, and sometimes a
    /// reordering hold-back.
    fn delay(&mut self, mishaps: &mut Vec<Mishap>) -> Duration {
        let mut delay = self.config.latency + self.rng.up_to(self.config.jitter);
        if self.rng.chance_ppm(self.config.reorder_ppm) {
            let max = micros(self.config.reorder_extra).max(1);
            let extra = Duration::from_micros(1 + self.rng.below(max));
            mishaps.push(Mishap::Reordered(extra));
            delay += extra;
        }
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(config: LinkConfig) -> Link {
        Link::new(config, SimRng::derive(1, "test", &[]))
    }

    fn cross(link: &mut Link, at: Timestamp, len: usize) -> (Vec<Flight>, Vec<Mishap>) {
        let mut out = Vec::new();
        let mut mishaps = Vec::new();
        let input = [Flight {
            at,
            duplicate: false,
        }];
        link.cross(len, true, &input, &mut out, &mut mishaps);
        (out, mishaps)
    }

    #[test]
    fn wire_len_counts_headers() {
        let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        assert_eq!(wire_len(100, v4), 128);
        assert_eq!(wire_len(100, v6), 148);
    }

    #[test]
    fn serialization_queues_back_to_back() {
        let mut l = link(LinkConfig {
            latency: Duration::ZERO,
            bandwidth_bps: Some(1_000_000),
            ..LinkConfig::default()
        });
        // 1250 bytes at 1 Mbit/s is 10 ms on the wire.
        let (a, _) = cross(&mut l, Timestamp::ZERO, 1250);
        let (b, _) = cross(&mut l, Timestamp::ZERO, 1250);
        assert_eq!(a[0].at, Timestamp::from_millis(10));
        assert_eq!(b[0].at, Timestamp::from_millis(20));
        // An idle link starts fresh.
        let (c, _) = cross(&mut l, Timestamp::from_secs(1), 1250);
        assert_eq!(c[0].at, Timestamp::from_millis(1010));
    }

    #[test]
    fn queue_limit_drops_tail() {
        let mut l = link(LinkConfig {
            bandwidth_bps: Some(1_000_000),
            queue_limit: Some(Duration::from_millis(15)),
            ..LinkConfig::default()
        });
        for _ in 0..2 {
            assert!(cross(&mut l, Timestamp::ZERO, 1250).1.is_empty());
        }
        // Third waits 20 ms behind the first two: over the limit.
        let (out, mishaps) = cross(&mut l, Timestamp::ZERO, 1250);
        assert!(out.is_empty());
        assert_eq!(mishaps, [Mishap::Dropped(DropReason::Queue)]);
    }

    #[test]
    fn oversize_is_dropped() {
        let mut l = link(LinkConfig {
            mtu: 1280,
            ..LinkConfig::default()
        });
        assert_eq!(cross(&mut l, Timestamp::ZERO, 1280).0.len(), 1);
        let (out, mishaps) = cross(&mut l, Timestamp::ZERO, 1281);
        assert!(out.is_empty());
        assert_eq!(mishaps, [Mishap::Dropped(DropReason::Mtu)]);
    }
}
