//! The network between the machines: addresses, links, partitions, the
//! clock and the queue of things to come.
//!
//! None of this depends on the machine type, so it is compiled once and the
//! borrow of a machine never overlaps a borrow of the network.
//!
//! All routing goes through [`Net::route`]. A NAT or firewall layer is meant
//! to wrap that one function: rewrite or refuse a packet on its way in, and
//! look up and rewrite the destination on its way out.

use core::fmt;
use core::mem;
use core::net::SocketAddr;
use std::collections::{BTreeMap, BTreeSet};

use pilot_proto::{Timestamp, Transmit};

use crate::link::{wire_len, Flight, Link, LinkConfig, Mishap};
use crate::queue::{Action, Delivery, Queue};
use crate::rng::SimRng;
use crate::trace::{DropReason, Millis, Stats, Trace};
use crate::world::HostId;

/// More wakeups of one host at one virtual instant than this is a machine
/// that keeps asking to be woken "now" without making progress.
const MAX_WAKES_PER_INSTANT: u32 = 10_000;

/// More queue entries at one virtual instant than this is a loop that never
/// lets time advance (machines answering each other over zero-latency links).
const MAX_STEPS_PER_INSTANT: u64 = 1_000_000;

/// A datagram seen on the wire by [`World::set_capture`](crate::World::set_capture).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// When it was sent.
    pub at: Timestamp,
    /// The sender's address.
    pub from: SocketAddr,
    /// The address it was sent to.
    pub to: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// A datagram entering the network.
pub(crate) struct Packet {
    /// The host whose link it enters through; `None` for a datagram
    /// injected from an address no host owns.
    pub(crate) via: Option<HostId>,
    pub(crate) from: SocketAddr,
    pub(crate) to: SocketAddr,
    pub(crate) payload: Vec<u8>,
    pub(crate) injected: bool,
}

/// A host as the network sees it.
pub(crate) struct HostNet {
    pub(crate) name: String,
    pub(crate) addr: SocketAddr,
    pub(crate) link: Link,
    /// The pending timer, if the machine asked for one.
    wake: Option<Wake>,
    /// Bumped whenever the timer is rescheduled, so that queue entries for
    /// an older deadline are recognised as stale and skipped.
    generation: u64,
    /// The instant of the last wakeup and how many wakeups it has seen.
    wakes_at: Timestamp,
    wakes_here: u32,
}

#[derive(Clone, Copy)]
struct Wake {
    at: Timestamp,
    generation: u64,
    reason: &'static str,
}

/// The simulated network.
pub(crate) struct Net {
    pub(crate) seed: u64,
    pub(crate) now: Timestamp,
    pub(crate) hosts: Vec<HostNet>,
    pub(crate) trace: Trace,
    pub(crate) stats: Stats,
    queue: Queue,
    by_addr: BTreeMap<SocketAddr, HostId>,
    by_name: BTreeMap<String, HostId>,
    /// Path overrides by (sender, receiver).
    paths: BTreeMap<(HostId, HostId), Link>,
    /// Partitioned pairs, smaller id first.
    cuts: BTreeSet<(HostId, HostId)>,
    isolated: BTreeSet<HostId>,
    capture: Option<Vec<Captured>>,
    /// The machine type's `describe`, kept as a plain function so that the
    /// network need not be generic.
    describe: fn(&[u8]) -> String,
    /// The instant of the last step and how many steps it has seen.
    instant: Timestamp,
    steps_here: u64,
    /// Scratch space reused by every `route`, to spare an allocation per
    /// datagram.
    flights: Vec<Flight>,
    midway: Vec<Flight>,
    mishaps: Vec<Mishap>,
}

impl Net {
    pub(crate) fn new(seed: u64, describe: fn(&[u8]) -> String) -> Self {
        Net {
            seed,
            now: Timestamp::ZERO,
            hosts: Vec::new(),
            trace: Trace::new(),
            stats: Stats::default(),
            queue: Queue::default(),
            by_addr: BTreeMap::new(),
            by_name: BTreeMap::new(),
            paths: BTreeMap::new(),
            cuts: BTreeSet::new(),
            isolated: BTreeSet::new(),
            capture: None,
            describe,
            instant: Timestamp::ZERO,
            steps_here: 0,
            flights: Vec::new(),
            midway: Vec::new(),
            mishaps: Vec::new(),
        }
    }

    /// Registers a host with the default link.
    ///
    /// Panics on a name or address already taken: two hosts sharing either
    /// would make the trace or the routing ambiguous, and that is a bug in
    /// the scenario, not something to carry on from.
    pub(crate) fn add_host(&mut self, name: &str, addr: SocketAddr) -> HostId {
        assert!(
            !self.by_name.contains_key(name),
            "driver-sim: a host called `{name}` already exists"
        );
        if let Some(&other) = self.by_addr.get(&addr) {
            panic!(
                "driver-sim: {addr} already belongs to `{}`",
                self.host(other).name
            );
        }
        let id = HostId(u32::try_from(self.hosts.len()).expect("fewer than 2^32 hosts"));
        let rng = SimRng::derive(self.seed, "link", &[name.as_bytes()]);
        self.hosts.push(HostNet {
            name: name.to_owned(),
            addr,
            link: Link::new(LinkConfig::default(), rng),
            wake: None,
            generation: 0,
            wakes_at: Timestamp::ZERO,
            wakes_here: 0,
        });
        self.by_addr.insert(addr, id);
        self.by_name.insert(name.to_owned(), id);
        id
    }

    pub(crate) fn host(&self, id: HostId) -> &HostNet {
        &self.hosts[id.index()]
    }

    pub(crate) fn host_id(&self, name: &str) -> Option<HostId> {
        self.by_name.get(name).copied()
    }

    pub(crate) fn set_path(&mut self, from: HostId, to: HostId, config: LinkConfig) {
        if let Some(path) = self.paths.get_mut(&(from, to)) {
            path.config = config;
            return;
        }
        let rng = SimRng::derive(
            self.seed,
            "path",
            &[
                self.hosts[from.index()].name.as_bytes(),
                self.hosts[to.index()].name.as_bytes(),
            ],
        );
        self.paths.insert((from, to), Link::new(config, rng));
    }

    pub(crate) fn clear_path(&mut self, from: HostId, to: HostId) {
        self.paths.remove(&(from, to));
    }

    pub(crate) fn path(&self, from: HostId, to: HostId) -> Option<&LinkConfig> {
        self.paths.get(&(from, to)).map(|p| &p.config)
    }

    pub(crate) fn partition(&mut self, a: HostId, b: HostId) {
        self.cuts.insert(pair(a, b));
        let line = format!("partition {} {}", self.host(a).name, self.host(b).name);
        self.note(line);
    }

    pub(crate) fn heal(&mut self, a: HostId, b: HostId) {
        self.cuts.remove(&pair(a, b));
        let line = format!("heal {} {}", self.host(a).name, self.host(b).name);
        self.note(line);
    }

    pub(crate) fn isolate(&mut self, host: HostId) {
        self.isolated.insert(host);
        let line = format!("isolate {}", self.host(host).name);
        self.note(line);
    }

    pub(crate) fn rejoin(&mut self, host: HostId) {
        self.isolated.remove(&host);
        let line = format!("rejoin {}", self.host(host).name);
        self.note(line);
    }

    pub(crate) fn set_capture(&mut self, on: bool) {
        match (on, self.capture.is_some()) {
            (true, false) => self.capture = Some(Vec::new()),
            (false, true) => self.capture = None,
            _ => {}
        }
    }

    pub(crate) fn captured(&self) -> &[Captured] {
        self.capture.as_deref().unwrap_or(&[])
    }

    pub(crate) fn take_captured(&mut self) -> Vec<Captured> {
        self.capture.as_mut().map(mem::take).unwrap_or_default()
    }

    /// A trace line with no host attached to it.
    pub(crate) fn note(&mut self, line: impl fmt::Display) {
        self.trace.line(self.now, line);
    }

    /// A datagram a machine wants sent.
    pub(crate) fn send(&mut self, host: HostId, transmit: Transmit) {
        self.stats.sent += 1;
        let from = self.host(host).addr;
        if let Some(capture) = &mut self.capture {
            capture.push(Captured {
                at: self.now,
                from,
                to: transmit.destination,
                payload: transmit.payload.clone(),
            });
        }
        let desc = self.describe_for_trace(&transmit.payload);
        if self.trace.enabled() {
            let line = format!(
                "{} -> {} {desc} ({}B)",
                self.host(host).name,
                self.peer(transmit.destination),
                transmit.payload.len()
            );
            self.trace.line(self.now, line);
        }
        let packet = Packet {
            via: Some(host),
            from,
            to: transmit.destination,
            payload: transmit.payload,
            injected: false,
        };
        self.route(packet, &desc);
    }

    /// A forged or replayed datagram. From an address a host owns, it
    /// crosses that host's link like anything the host sends; from any other
    /// address it appears at the destination at once, untouched by any link,
    /// as if the attacker sat right next to it.
    pub(crate) fn inject(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        self.stats.injected += 1;
        let desc = self.describe_for_trace(&payload);
        if self.trace.enabled() {
            let line = format!(
                "inject {} -> {} {desc} ({}B)",
                self.peer(from),
                self.peer(to),
                payload.len()
            );
            self.trace.line(self.now, line);
        }
        let packet = Packet {
            via: self.by_addr.get(&from).copied(),
            from,
            to,
            payload,
            injected: true,
        };
        self.route(packet, &desc);
    }

    /// Takes one datagram from where it enters the network to the queue
    /// entries that will deliver its surviving copies. Every datagram,
    /// honest or injected, goes through here.
    pub(crate) fn route(&mut self, packet: Packet, desc: &str) {
        let Some(&to) = self.by_addr.get(&packet.to) else {
            self.dropped(DropReason::NoRoute, &packet, desc);
            return;
        };
        if self.blocked(packet.via, to) {
            self.dropped(DropReason::Partition, &packet, desc);
            return;
        }

        let wire = wire_len(packet.payload.len(), packet.to);
        let start = [Flight {
            at: self.now,
            duplicate: false,
        }];
        let mut flights = mem::take(&mut self.flights);
        let mut mishaps = mem::take(&mut self.mishaps);
        match packet.via {
            None => flights.extend_from_slice(&start),
            Some(from) => match self.paths.get_mut(&(from, to)) {
                Some(path) => path.cross(wire, true, &start, &mut flights, &mut mishaps),
                None => {
                    let mut midway = mem::take(&mut self.midway);
                    let uplink = &mut self.hosts[from.index()].link;
                    uplink.cross(wire, true, &start, &mut midway, &mut mishaps);
                    let downlink = &mut self.hosts[to.index()].link;
                    downlink.cross(wire, false, &midway, &mut flights, &mut mishaps);
                    midway.clear();
                    self.midway = midway;
                }
            },
        }

        for mishap in mishaps.drain(..) {
            self.mishap(mishap, &packet, desc);
        }
        // Copies share the bytes; only extra ones pay for a clone.
        let Packet {
            from,
            mut payload,
            injected,
            ..
        } = packet;
        let copies = flights.len();
        for (i, flight) in flights.drain(..).enumerate() {
            let payload = if i + 1 == copies {
                mem::take(&mut payload)
            } else {
                payload.clone()
            };
            let delivery = Delivery {
                to,
                from,
                payload,
                duplicate: flight.duplicate,
                injected,
            };
            self.queue.push(flight.at, Action::Deliver(delivery));
        }
        self.flights = flights;
        self.mishaps = mishaps;
    }

    /// Traces a datagram arriving, just before the machine sees it.
    pub(crate) fn trace_delivery(&mut self, delivery: &Delivery) {
        self.stats.delivered += 1;
        if !self.trace.enabled() {
            return;
        }
        let desc = (self.describe)(&delivery.payload);
        let tags = match (delivery.duplicate, delivery.injected) {
            (false, false) => "",
            (true, false) => " [dup]",
            (false, true) => " [injected]",
            (true, true) => " [injected dup]",
        };
        let line = format!(
            "{} <- {} {desc} ({}B){tags}",
            self.host(delivery.to).name,
            self.peer(delivery.from),
            delivery.payload.len()
        );
        self.trace.line(self.now, line);
    }

    /// Traces and counts an event a machine emitted.
    pub(crate) fn trace_event(&mut self, host: HostId, event: &dyn fmt::Display) {
        self.stats.events += 1;
        if !self.trace.enabled() {
            return;
        }
        let line = format!("{} event {event}", self.host(host).name);
        self.trace.line(self.now, line);
    }

    /// Replaces a host's timer with the deadline its machine just asked for.
    /// A deadline already past means "as soon as possible": now.
    pub(crate) fn schedule_wake(
        &mut self,
        id: HostId,
        deadline: Option<(Timestamp, &'static str)>,
    ) {
        let now = self.now;
        let host = &mut self.hosts[id.index()];
        let Some((deadline, reason)) = deadline else {
            host.wake = None;
            return;
        };
        let at = deadline.max(now);
        if let Some(wake) = &mut host.wake {
            // Same instant: the entry already queued will do.
            if wake.at == at {
                wake.reason = reason;
                return;
            }
        }
        host.generation += 1;
        host.wake = Some(Wake {
            at,
            generation: host.generation,
            reason,
        });
        let generation = host.generation;
        self.queue.push(
            at,
            Action::Wake {
                host: id,
                generation,
            },
        );
    }

    /// Consumes a host's timer that has just come due, tracing why it fired.
    pub(crate) fn fire(&mut self, id: HostId) {
        let now = self.now;
        let host = &mut self.hosts[id.index()];
        let reason = host.wake.take().map_or("?", |w| w.reason);
        if host.wakes_at == now {
            host.wakes_here += 1;
        } else {
            host.wakes_at = now;
            host.wakes_here = 1;
        }
        if host.wakes_here > MAX_WAKES_PER_INSTANT {
            panic!(
                "driver-sim: host `{}` woke more than {MAX_WAKES_PER_INSTANT} times at {now} \
                 (timer `{reason}`) without time moving on; its poll_timeout keeps returning \
                 a deadline <= now (seed {})",
                host.name, self.seed
            );
        }
        self.stats.timer_wakeups += 1;
        if self.trace.enabled() {
            let line = format!("{} timer {reason}", self.host(id).name);
            self.trace.line(now, line);
        }
    }

    /// The next action due no later than `limit`, with the clock moved to
    /// its time. Stale timer entries are discarded on the way.
    pub(crate) fn next(&mut self, limit: Timestamp) -> Option<Action> {
        let at = self.peek_live()?;
        if at > limit {
            return None;
        }
        let (at, action) = self.queue.pop()?;
        self.advance(at);
        self.stats.steps += 1;
        Some(action)
    }

    /// Whether anything is left to happen, ever.
    pub(crate) fn idle(&mut self) -> bool {
        self.peek_live().is_none()
    }

    /// Moves the clock forward to `to` (never back) when nothing is left to
    /// do before it.
    pub(crate) fn idle_until(&mut self, to: Timestamp) {
        self.now = self.now.max(to);
    }

    fn peek_live(&mut self) -> Option<Timestamp> {
        loop {
            let (at, action) = self.queue.peek()?;
            if !self.stale(action) {
                return Some(at);
            }
            self.queue.pop();
        }
    }

    fn stale(&self, action: &Action) -> bool {
        match *action {
            Action::Wake { host, generation } => {
                self.host(host).wake.map(|w| w.generation) != Some(generation)
            }
            Action::Deliver(_) => false,
        }
    }

    fn advance(&mut self, at: Timestamp) {
        debug_assert!(at >= self.now, "the queue never schedules into the past");
        self.now = at;
        if at != self.instant {
            self.instant = at;
            self.steps_here = 0;
        }
        self.steps_here += 1;
        if self.steps_here > MAX_STEPS_PER_INSTANT {
            panic!(
                "driver-sim: more than {MAX_STEPS_PER_INSTANT} things happened at {at} without \
                 time moving on; machines answering each other over zero-latency links? \
                 (seed {})",
                self.seed
            );
        }
    }

    fn blocked(&self, via: Option<HostId>, to: HostId) -> bool {
        if self.isolated.contains(&to) {
            return true;
        }
        let Some(from) = via else {
            return false;
        };
        self.isolated.contains(&from) || self.cuts.contains(&pair(from, to))
    }

    fn dropped(&mut self, reason: DropReason, packet: &Packet, desc: &str) {
        self.stats.dropped.count(reason);
        if !self.trace.enabled() {
            return;
        }
        let line = format!(
            "drop({}) {} -> {} {desc} ({}B)",
            reason.as_str(),
            self.peer(packet.from),
            self.peer(packet.to),
            packet.payload.len()
        );
        self.trace.line(self.now, line);
    }

    fn mishap(&mut self, mishap: Mishap, packet: &Packet, desc: &str) {
        let what = match mishap {
            Mishap::Dropped(reason) => return self.dropped(reason, packet, desc),
            Mishap::Duplicated => {
                self.stats.duplicated += 1;
                None
            }
            Mishap::Reordered(extra) => {
                self.stats.reordered += 1;
                Some(extra)
            }
        };
        if !self.trace.enabled() {
            return;
        }
        let (from, to, len) = (
            self.peer(packet.from),
            self.peer(packet.to),
            packet.payload.len(),
        );
        let line = match what {
            None => format!("dup {from} -> {to} {desc} ({len}B)"),
            Some(extra) => format!("reorder(+{}) {from} -> {to} {desc} ({len}B)", Millis(extra)),
        };
        self.trace.line(self.now, line);
    }

    fn describe_for_trace(&self, payload: &[u8]) -> String {
        if !self.trace.enabled() {
            return String::new();
        }
        (self.describe)(payload)
    }

    /// How the trace names an endpoint: a host's name if it owns the
    /// address, the address itself otherwise.
    fn peer(&self, addr: SocketAddr) -> Peer<'_> {
        match self.by_addr.get(&addr) {
            Some(&id) => Peer::Host(&self.host(id).name),
            None => Peer::Addr(addr),
        }
    }
}

enum Peer<'a> {
    Host(&'a str),
    Addr(SocketAddr),
}

impl fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Host(name) => f.write_str(name),
            Peer::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// An unordered pair as an ordered key.
fn pair(a: HostId, b: HostId) -> (HostId, HostId) {
    (a.min(b), a.max(b))
}
