//! The world: hosts running machines on a simulated network, driven by one
//! seed and a virtual clock.

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use pilot_proto::{SocketId, Timestamp};

use crate::link::LinkConfig;
use crate::nat::{NatConfig, NatId, NatMapping, Network};
use crate::net::{Captured, Net};
use crate::queue::Action;
use crate::rng::host_seed;
use crate::trace::Stats;
use crate::Machine;

/// A host in a [`World`]; only meaningful in the world that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostId(pub(crate) u32);

impl HostId {
    /// The host's position in the order hosts were added, from zero; handy
    /// for indexing per-host arrays in tests.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// [`World::run_until`] ran out of virtual time before its condition held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stalled {
    /// The world's seed, to reproduce the run.
    pub seed: u64,
    /// The virtual time at which the world gave up.
    pub now: Timestamp,
    /// Nothing was left to happen: no datagram in flight, no timer set.
    pub idle: bool,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "driver-sim: condition still false at {} (seed {})",
            self.now, self.seed
        )?;
        if self.idle {
            f.write_str("; nothing left to happen")?;
        }
        Ok(())
    }
}

impl std::error::Error for Stalled {}

/// A deterministic simulated network of hosts, each running a [`Machine`].
///
/// Everything random (the hosts' seeds, every link's dice) derives from the
/// one seed given to [`World::new`], and everything happens in an order that
/// depends only on that seed and on what the test does; the same scenario
/// with the same seed gives a byte-identical [`trace`](World::trace).
///
/// After every input to a machine (a datagram, a timer, a command through
/// [`with_host`](World::with_host)) the world applies the drain rule:
/// `poll_transmit` until `None`, `poll_event` until `None`, then
/// `poll_timeout`; after that, output still pending is a bug in the machine
/// and panics, naming the host, the time and the seed.
///
/// If the thread panics while a world is alive (a failed assertion in a
/// test, say), dropping the world prints its seed, the virtual time and the
/// end of the trace to stderr.
pub struct World<M: Machine> {
    machines: Vec<M>,
    net: Net,
    events: Vec<(Timestamp, HostId, M::Event)>,
}

impl<M: Machine> World<M> {
    /// An empty world at time zero whose every random choice derives from
    /// `seed`.
    pub fn new(seed: u64) -> Self {
        World {
            machines: Vec::new(),
            net: Net::new(seed, M::describe),
            events: Vec::new(),
        }
    }

    /// The seed this world was made with.
    pub fn seed(&self) -> u64 {
        self.net.seed
    }

    /// The virtual time.
    pub fn now(&self) -> Timestamp {
        self.net.now
    }

    /// Adds a host called `name` at `addr` on the public internet, with the
    /// default link, running the machine `make` builds from the host's seed
    /// ([`host_seed`](crate::host_seed)`(seed, name)`).
    ///
    /// The new machine is drained at once, so anything it wants to send on
    /// start goes out now and its first timer is set.
    ///
    /// # Panics
    ///
    /// If another host already has this name, or this address is taken on
    /// the internet (by a host or a NAT's public side).
    pub fn add_host(
        &mut self,
        name: &str,
        addr: SocketAddr,
        make: impl FnOnce([u8; 32]) -> M,
    ) -> HostId {
        self.add_host_in(Network::Internet, name, addr, make)
    }

    /// Adds a host like [`add_host`](World::add_host), but in the private
    /// realm behind `nat`, at the private address `addr`. Hosts behind the
    /// same box reach each other directly at their private addresses;
    /// everything else they send goes out through the box.
    ///
    /// # Panics
    ///
    /// If another host already has this name, or this address is taken
    /// behind `nat`.
    pub fn add_host_behind(
        &mut self,
        nat: NatId,
        name: &str,
        addr: SocketAddr,
        make: impl FnOnce([u8; 32]) -> M,
    ) -> HostId {
        self.add_host_in(Network::Behind(nat), name, addr, make)
    }

    /// Adds a host in `network`: the internet, or behind a NAT.
    pub fn add_host_in(
        &mut self,
        network: Network,
        name: &str,
        addr: SocketAddr,
        make: impl FnOnce([u8; 32]) -> M,
    ) -> HostId {
        let id = self.net.add_host(name, network, addr);
        self.machines.push(make(host_seed(self.net.seed, name)));
        self.drain(id);
        id
    }

    /// Adds a NAT box called `name` whose public side is `public_ip` on the
    /// internet, behaving as `config` says. Its random choices (port
    /// allocation) derive from the world seed and `name`.
    ///
    /// # Panics
    ///
    /// If another box already has this name, or `public_ip` is in use on
    /// the internet.
    pub fn add_nat(&mut self, name: &str, public_ip: IpAddr, config: NatConfig) -> NatId {
        self.net.add_nat(name, Network::Internet, public_ip, config)
    }

    /// Adds a NAT box like [`add_nat`](World::add_nat), but with its public
    /// side in the private realm behind `outer`: a home router behind a
    /// carrier-grade NAT.
    ///
    /// # Panics
    ///
    /// As [`add_nat`](World::add_nat), for addresses behind `outer`.
    pub fn add_nat_behind(
        &mut self,
        outer: NatId,
        name: &str,
        public_ip: IpAddr,
        config: NatConfig,
    ) -> NatId {
        self.net
            .add_nat(name, Network::Behind(outer), public_ip, config)
    }

    /// Double NAT: a [`carrier_grade`](NatConfig::carrier_grade) box
    /// `carrier` at `carrier_ip` on the internet, and behind it a home box
    /// `home` at `home_ip` configured as `config`. Returns
    /// `(carrier, home)`; put hosts behind `home`.
    pub fn add_double_nat(
        &mut self,
        carrier: (&str, IpAddr),
        home: (&str, IpAddr),
        config: NatConfig,
    ) -> (NatId, NatId) {
        let outer = self.add_nat(carrier.0, carrier.1, NatConfig::carrier_grade());
        let inner = self.add_nat_behind(outer, home.0, home.1, config);
        (outer, inner)
    }

    /// The NAT box called `name`, if any.
    pub fn nat_id(&self, name: &str) -> Option<NatId> {
        self.net.nat_id(name)
    }

    /// The name of NAT box `nat`.
    pub fn nat_name(&self, nat: NatId) -> &str {
        &self.net.nat(nat).name
    }

    /// The public address of NAT box `nat`, in the realm its public side
    /// is attached to.
    pub fn nat_public_ip(&self, nat: NatId) -> IpAddr {
        self.net.nat(nat).public_ip
    }

    /// The mappings of NAT box `nat` still alive now, by public port.
    pub fn nat_mappings(&self, nat: NatId) -> Vec<NatMapping> {
        self.net.nat(nat).mappings(self.net.now)
    }

    /// Forgets every mapping of NAT box `nat`, as a reboot would: existing
    /// flows stop working until their hosts send again and get new
    /// mappings. Traced as `nat <name> reset`.
    pub fn reset_nat(&mut self, nat: NatId) {
        self.net.reset_nat(nat);
    }

    /// Moves host `id` to `addr` in `network`, as a laptop changes
    /// networks: the machine keeps running and is not told. Datagrams in
    /// flight to its old address are lost (`drop(no-route)`), and mappings
    /// it made in its old NAT stay there until they time out. Traced as
    /// `move <name> <addr>[ behind <nat>]`.
    ///
    /// # Panics
    ///
    /// If `addr` is taken in `network`.
    pub fn move_host(&mut self, id: HostId, network: impl Into<Network>, addr: SocketAddr) {
        self.net.move_host(id, network.into(), addr);
    }

    /// The sockets host `id` has open besides its primary one, with their
    /// addresses, by id.
    pub fn sockets(&self, id: HostId) -> Vec<(SocketId, SocketAddr)> {
        let h = self.net.host(id);
        h.sockets
            .iter()
            .map(|(s, p)| (*s, SocketAddr::new(h.addr.ip(), *p)))
            .collect()
    }

    /// The realm host `id` is attached to.
    pub fn network(&self, id: HostId) -> Network {
        self.net.host(id).network
    }

    /// The machine of host `id`, to inspect.
    pub fn host(&self, id: HostId) -> &M {
        &self.machines[id.index()]
    }

    /// Runs `command` against host `id`'s machine at the current time, then
    /// drains it, and returns what `command` returned. This is how tests
    /// call a machine's typed commands.
    pub fn with_host<R>(&mut self, id: HostId, command: impl FnOnce(&mut M, Timestamp) -> R) -> R {
        let result = command(&mut self.machines[id.index()], self.net.now);
        self.drain(id);
        result
    }

    /// The host called `name`, if any.
    pub fn host_id(&self, name: &str) -> Option<HostId> {
        self.net.host_id(name)
    }

    /// The name of host `id`.
    pub fn name(&self, id: HostId) -> &str {
        &self.net.host(id).name
    }

    /// The underlay address of host `id`, in its own realm (a private
    /// address for a host behind a NAT).
    pub fn addr(&self, id: HostId) -> SocketAddr {
        self.net.host(id).addr
    }

    /// Every host, in the order they were added.
    pub fn host_ids(&self) -> impl Iterator<Item = HostId> {
        let count = u32::try_from(self.machines.len()).expect("fewer than 2^32 hosts");
        (0..count).map(HostId)
    }

    /// Sets host `id`'s access link, which everything it sends crosses first
    /// and everything sent to it crosses last. Datagrams already in flight
    /// keep the timing they were given.
    pub fn set_link(&mut self, id: HostId, config: LinkConfig) {
        self.net.hosts[id.index()].link.config = config;
    }

    /// Host `id`'s access link.
    pub fn link(&self, id: HostId) -> &LinkConfig {
        &self.net.host(id).link.config
    }

    /// Makes datagrams from `from` to `to` (that direction only) cross one
    /// link with `config` instead of `from`'s link and then `to`'s. The
    /// override is its own pipe: its own dice and, with a bandwidth limit,
    /// its own queue.
    pub fn set_path(&mut self, from: HostId, to: HostId, config: LinkConfig) {
        self.net.set_path(from, to, config);
    }

    /// Removes the override [`set_path`](World::set_path) made, if any.
    pub fn clear_path(&mut self, from: HostId, to: HostId) {
        self.net.clear_path(from, to);
    }

    /// The override for datagrams from `from` to `to`, if any.
    pub fn path(&self, from: HostId, to: HostId) -> Option<&LinkConfig> {
        self.net.path(from, to)
    }

    /// Cuts `a` and `b` off from each other, both ways. Datagrams sent
    /// across the cut are dropped when sent; those already in flight still
    /// arrive.
    pub fn partition(&mut self, a: HostId, b: HostId) {
        self.net.partition(a, b);
    }

    /// Undoes [`partition`](World::partition).
    pub fn heal(&mut self, a: HostId, b: HostId) {
        self.net.heal(a, b);
    }

    /// Cuts `host` off from everyone: nothing it sends leaves and nothing
    /// sent to it (injected datagrams included) is accepted. Its timers keep
    /// running.
    pub fn isolate(&mut self, host: HostId) {
        self.net.isolate(host);
    }

    /// Undoes [`isolate`](World::isolate).
    pub fn rejoin(&mut self, host: HostId) {
        self.net.rejoin(host);
    }

    /// Starts (or stops, discarding what was recorded) recording every
    /// datagram a machine sends, as the sender's link sees it: before any
    /// loss or partition, and without injected ones.
    pub fn set_capture(&mut self, on: bool) {
        self.net.set_capture(on);
    }

    /// The datagrams recorded since capture was turned on, oldest first.
    pub fn captured(&self) -> &[Captured] {
        self.net.captured()
    }

    /// Takes the datagrams recorded so far, leaving capture on.
    pub fn take_captured(&mut self) -> Vec<Captured> {
        self.net.take_captured()
    }

    /// Puts a forged or replayed datagram on the internet, as an attacker
    /// would (NAT boxes treat it like any other datagram). If `from` is the
    /// address of a host on the internet the datagram crosses that host's
    /// link (or path override) like anything the host sends, partitions
    /// included; from any other address it reaches `to` with no delay and no
    /// impairment, as if sent from right beside it. Traced as `inject`.
    pub fn inject(&mut self, from: SocketAddr, to: SocketAddr, payload: Vec<u8>) {
        self.net.inject(from, to, payload);
    }

    /// Adds `+<time> note <text>` to the trace, to mark what a test did.
    pub fn note(&mut self, text: impl fmt::Display) {
        self.net.note(format_args!("note {text}"));
    }

    /// Turns the trace on (the default) or off. Off, nothing is formatted
    /// and no `describe` is called, which matters for long benchmarks.
    pub fn set_tracing(&mut self, on: bool) {
        self.net.trace.set_enabled(on);
    }

    /// The trace so far: one line per thing that happened, each starting
    /// with the virtual time, e.g. `+0.150000s alice -> rv hello (5B)`.
    pub fn trace(&self) -> &str {
        self.net.trace.as_str()
    }

    /// Counters for everything that happened so far.
    pub fn stats(&self) -> &Stats {
        &self.net.stats
    }

    /// The events machines emitted, with when and where, oldest first.
    pub fn events(&self) -> &[(Timestamp, HostId, M::Event)] {
        &self.events
    }

    /// Takes the events emitted so far.
    pub fn take_events(&mut self) -> Vec<(Timestamp, HostId, M::Event)> {
        core::mem::take(&mut self.events)
    }

    /// Does the next thing that is due, moving the clock to its time.
    /// Returns false, leaving the clock alone, when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let Some(action) = self.net.next(Timestamp::MAX) else {
            return false;
        };
        self.dispatch(action);
        true
    }

    /// Does everything due up to and including `until`, then sets the clock
    /// to `until` (or leaves it, if it is already later).
    pub fn run_until_time(&mut self, until: Timestamp) {
        while let Some(action) = self.net.next(until) {
            self.dispatch(action);
        }
        self.net.idle_until(until);
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        self.run_until_time(self.net.now + duration);
    }

    /// Runs until `done` holds, checking it before the first step and after
    /// each one, for at most `max` of virtual time.
    ///
    /// # Errors
    ///
    /// [`Stalled`], carrying the seed, when `max` runs out first; the clock
    /// is then at the limit.
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&World<M>) -> bool,
        max: Duration,
    ) -> Result<(), Stalled> {
        let limit = self.net.now + max;
        loop {
            if done(self) {
                return Ok(());
            }
            let Some(action) = self.net.next(limit) else {
                break;
            };
            self.dispatch(action);
        }
        let idle = self.net.idle();
        self.net.idle_until(limit);
        Err(Stalled {
            seed: self.net.seed,
            now: self.net.now,
            idle,
        })
    }

    fn dispatch(&mut self, action: Action) {
        let now = self.net.now;
        match action {
            Action::Deliver(delivery) => {
                if !self.net.arrive(&delivery) {
                    return;
                }
                let machine = &mut self.machines[delivery.to.index()];
                machine.handle_datagram(now, delivery.socket, delivery.from, &delivery.payload);
                self.drain(delivery.to);
            }
            Action::Wake { host, .. } => {
                self.net.fire(host);
                self.machines[host.index()].handle_timeout(now);
                self.drain(host);
            }
        }
    }

    /// The drain rule, enforced.
    fn drain(&mut self, id: HostId) {
        let now = self.net.now;
        let machine = &mut self.machines[id.index()];
        // Sockets first: this turn's datagrams may already use them.
        while let Some(op) = machine.poll_socket_op() {
            self.net.socket_op(id, op);
        }
        while let Some(transmit) = machine.poll_transmit() {
            self.net.send(id, transmit);
        }
        while let Some(event) = machine.poll_event() {
            self.net.trace_event(id, &event);
            self.events.push((now, id, event));
        }
        let deadline = machine.poll_timeout();
        if machine.poll_transmit().is_some() {
            self.broken_drain(id, "poll_transmit returned a datagram");
        }
        if machine.poll_event().is_some() {
            self.broken_drain(id, "poll_event returned an event");
        }
        if machine.poll_socket_op().is_some() {
            self.broken_drain(id, "poll_socket_op returned an operation");
        }
        self.net.schedule_wake(id, deadline);
    }

    fn broken_drain(&self, id: HostId, what: &str) -> ! {
        panic!(
            "driver-sim: drain rule broken by host `{}` at {} (seed {}): {what} after it had \
             returned None and poll_timeout had been read",
            self.name(id),
            self.net.now,
            self.net.seed
        );
    }
}

impl<M: Machine> Drop for World<M> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!(
            "driver-sim: panicked with world seed {} at virtual time {}; last trace lines:\n{}",
            self.net.seed,
            self.net.now,
            self.net.trace.tail(20)
        );
    }
}
