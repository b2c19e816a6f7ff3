//! The event queue: what happens next, in (time, insertion order).
//!
//! Ties at the same virtual time go to whatever was scheduled first. That
//! order is itself a deterministic function of the seed, so the whole run
//! is.

use core::cmp::{Ordering, Reverse};
use core::net::SocketAddr;
use std::collections::BinaryHeap;

use pilot_proto::Timestamp;

use crate::world::HostId;

/// Something scheduled to happen.
pub(crate) enum Action {
    /// A datagram reaches a host.
    Deliver(Delivery),
    /// A host's timer, valid only while `generation` is the host's current
    /// one; rescheduling bumps the generation, leaving old entries stale.
    Wake { host: HostId, generation: u64 },
}

/// A datagram arriving at a host.
pub(crate) struct Delivery {
    pub(crate) to: HostId,
    /// Which of its sockets.
    pub(crate) socket: pilot_proto::SocketId,
    /// The realm and address it was routed to; if `to` is no longer there
    /// when it arrives, it is lost.
    pub(crate) addressed: (crate::nat::Network, SocketAddr),
    /// The source address the receiver sees.
    pub(crate) from: SocketAddr,
    pub(crate) payload: Vec<u8>,
    /// A copy a link made, flagged so the trace can tell.
    pub(crate) duplicate: bool,
    /// Forged or replayed with [`World::inject`](crate::World::inject).
    pub(crate) injected: bool,
}

struct Entry {
    at: Timestamp,
    seq: u64,
    action: Action,
}

// Ordering looks only at (at, seq): seq is unique, so no two entries are
// ever equal and the action never needs comparing.
impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A min-queue of actions by (time, insertion sequence).
#[derive(Default)]
pub(crate) struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    next_seq: u64,
}

impl Queue {
    pub(crate) fn push(&mut self, at: Timestamp, action: Action) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { at, seq, action }));
    }

    /// The earliest entry, without taking it.
    pub(crate) fn peek(&self) -> Option<(Timestamp, &Action)> {
        self.heap.peek().map(|Reverse(e)| (e.at, &e.action))
    }

    /// Takes the earliest entry.
    pub(crate) fn pop(&mut self) -> Option<(Timestamp, Action)> {
        self.heap.pop().map(|Reverse(e)| (e.at, e.action))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wake(g: u64) -> Action {
        Action::Wake {
            host: HostId(0),
            generation: g,
        }
    }

    fn generation(a: &Action) -> u64 {
        match a {
            Action::Wake { generation, .. } => *generation,
            Action::Deliver(_) => u64::MAX,
        }
    }

    #[test]
    fn time_then_insertion_order() {
        let mut q = Queue::default();
        q.push(Timestamp::from_micros(5), wake(0));
        q.push(Timestamp::from_micros(1), wake(1));
        q.push(Timestamp::from_micros(5), wake(2));
        q.push(Timestamp::from_micros(1), wake(3));
        let order: Vec<u64> =
            core::iter::from_fn(|| q.pop().map(|(_, a)| generation(&a))).collect();
        assert_eq!(order, [1, 3, 0, 2]);
    }
}
