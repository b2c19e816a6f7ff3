//! A deterministic, discrete-event simulated network for sans-IO state
//! machines: Pilot's `Node` and `Rendezvous`, or any toy that implements
//! [`Machine`].
//!
//! A [`World`] holds hosts, each with one underlay address and one machine,
//! joined by links with latency, jitter, loss, duplication, reordering, MTU
//! and bandwidth ([`LinkConfig`]), which tests can partition, capture from
//! and inject into. Hosts sit on the internet or behind NAT boxes
//! ([`World::add_nat`], [`World::add_host_behind`], [`NatConfig`]) that map,
//! filter and time out as RFC 4787 describes, and can be chained (CGNAT). Time is virtual and one `u64` seed drives every random
//! choice, so a run is a pure function of the seed and the test: a failing
//! test prints its seed and replays exactly.
//!
//! # Example
//!
//! ```
//! use std::collections::VecDeque;
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! use driver_sim::{Machine, SocketId, Timestamp, Transmit, World};
//!
//! /// Sends back whatever it receives.
//! #[derive(Default)]
//! struct Echo {
//!     out: VecDeque<Transmit>,
//! }
//!
//! impl Machine for Echo {
//!     type Event = &'static str;
//!     fn handle_datagram(&mut self, _: Timestamp, socket: SocketId, from: SocketAddr, data: &[u8]) {
//!         // The answer leaves from the socket the datagram came in on.
//!         self.out.push_back(Transmit::new(socket, from, data.to_vec()));
//!     }
//!     fn handle_timeout(&mut self, _: Timestamp) {}
//!     fn poll_transmit(&mut self) -> Option<Transmit> {
//!         self.out.pop_front()
//!     }
//!     fn poll_event(&mut self) -> Option<&'static str> {
//!         None
//!     }
//!     fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
//!         None
//!     }
//!     fn describe(payload: &[u8]) -> String {
//!         String::from_utf8_lossy(payload).into_owned()
//!     }
//! }
//!
//! let mut world = World::new(1);
//! let alice = world.add_host("alice", "192.0.2.1:4000".parse()?, |_seed| Echo::default());
//! let bob: SocketAddr = "198.51.100.2:4000".parse()?;
//! world.add_host("bob", bob, |_seed| Echo::default());
//!
//! // A command: the world drains alice afterwards, so "hi" leaves now.
//! world.with_host(alice, |echo, _now| {
//!     echo.out.push_back(Transmit::new(SocketId::PRIMARY, bob, b"hi".to_vec()))
//! });
//! world.run_for(Duration::from_millis(25));
//! assert_eq!(
//!     world.trace(),
//!     "+0.000000s alice -> bob hi (2B)\n\
//!      +0.010000s bob <- alice hi (2B)\n\
//!      +0.010000s bob -> alice hi (2B)\n\
//!      +0.020000s alice <- bob hi (2B)\n\
//!      +0.020000s alice -> bob hi (2B)\n"
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # The trace
//!
//! Everything that happens is written to a text trace, one line each, in
//! virtual time:
//!
//! ```text
//! +0.000000s alice -> bob ping 1 (6B)
//! +0.010000s bob <- alice ping 1 (6B)
//! +0.010000s drop(loss) bob -> alice pong 1 (6B)
//! +0.200000s alice timer retransmit
//! +0.200000s alice event gave up
//! +0.200000s note the test says hello
//! ```
//!
//! Hosts appear by name; addresses only where no host owns them. Other
//! lines: `drop(<reason>)` for `loss`, `mtu`, `no-route`, `partition` and
//! `queue`; `dup` and `reorder(+<extra>)` when a link duplicates or holds
//! back a datagram; `inject` for forged datagrams, and `[dup]` or
//! `[injected]` after a delivery of either; `partition`, `heal`, `isolate`
//! and `rejoin` when the test changes the network.
//!
//! NAT boxes add `nat <box> map <private> -> <public>` when a mapping is
//! made (with `for <remote>` when the mapping depends on the remote),
//! `nat <box> reset`, `move <host> <addr>[ behind <box>]`, and the drops
//! `nat-no-mapping`, `nat-filtered`, `nat-icmp`, `nat-hairpin`, `nat-ports`
//! and `udp-blocked`. A host is named wherever its address is seen from the
//! sender's realm or one outside it; a receiver behind a NAT sees, and the
//! trace shows, the translated public source.
//!
//! # Snapshotting a trace
//!
//! Scenario traces are stored as insta snapshots in the workspace's
//! `testdata/snapshots`:
//!
//! ```ignore
//! let trace = world.trace();
//! insta::with_settings!({
//!     snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/snapshots"),
//!     prepend_module_to_snapshot => false,
//! }, {
//!     insta::assert_snapshot!("sim_my_scenario", trace);
//! });
//! ```
//!
//! Create or update it with `INSTA_UPDATE=always cargo test -p <crate>` (or
//! `cargo insta review`), read the `.snap` file it wrote, commit it; CI runs
//! with `INSTA_UPDATE=no` so a changed trace fails the test.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod flood;
mod link;
mod nat;
mod net;
pub mod pilot;
mod queue;
mod rng;
pub mod speed;
mod trace;
mod world;

use core::net::SocketAddr;

pub use link::LinkConfig;
pub use nat::{Behaviour, NatConfig, NatId, NatMapping, Network, PortAllocation, Unsolicited};
pub use net::Captured;
pub use pilot_proto::{SocketId, SocketOp, Timestamp, Transmit};
pub use rng::host_seed;
pub use trace::{Drops, Stats};
pub use world::{HostId, Stalled, World};

/// A sans-IO state machine the simulator can drive.
///
/// The contract is the core's drain rule: after any input, the driver drains
/// [`poll_transmit`](Machine::poll_transmit) until `None`, then
/// [`poll_event`](Machine::poll_event) until `None`, then reads
/// [`poll_timeout`](Machine::poll_timeout); at that point nothing may be left
/// to poll. `poll_timeout` may return a deadline at or before `now` (the
/// world wakes the machine again at once), and `handle_timeout` must be safe
/// to call at any time, though the world only calls it once a deadline is
/// due.
pub trait Machine {
    /// What the machine reports to its application; shown in the trace.
    type Event: core::fmt::Display;

    /// A datagram from `from` arrived on our socket `socket`.
    fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        payload: &[u8],
    );

    /// The deadline from [`poll_timeout`](Machine::poll_timeout) has come.
    fn handle_timeout(&mut self, now: Timestamp);

    /// The next datagram to send, if any.
    fn poll_transmit(&mut self) -> Option<Transmit>;

    /// The next event for the application, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;

    /// The next socket the machine wants opened or closed, if any. The
    /// world drains these before the transmits of the same turn. A
    /// machine with one socket keeps the default.
    fn poll_socket_op(&mut self) -> Option<SocketOp> {
        None
    }

    /// Next deadline and a short reason (timer kind) for the trace.
    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)>;

    /// A short one-line description of a datagram for trace lines (e.g.
    /// "handshake-init idx=12").
    fn describe(payload: &[u8]) -> String;
}
