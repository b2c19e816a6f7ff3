//! Pilot's real `Node` and `Rendezvous` as simulator hosts, and a small
//! builder for scenarios: one rendezvous, any number of agents.

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use pilot_proto::addr::{Hostname, SocketAddress};
use pilot_proto::node::{CommandError, Event, Node, NodeConfig};
use pilot_proto::rendezvous::{Rendezvous, RendezvousConfig, RendezvousEvent};
use pilot_proto::{wire, Identity, PublicKey, SocketId, Timestamp, Transmit};
use sha2::{Digest, Sha256};

use crate::flood::Flooder;
use crate::{HostId, Machine, Network, Stalled, World};

/// Wall-clock time at the simulation's origin (2027-01-15), so certificate
/// expiry and handshake timestamps look like real ones.
pub const WALL_ORIGIN_MICROS: u64 = 1_800_000_000_000_000;

/// Where the scenario's rendezvous listens.
pub const RENDEZVOUS_ADDR: &str = "192.0.2.1:9000";

/// The rendezvous's second (reflect) port in scenarios that turn it on
/// ([`Scenario::with_reflect`]).
pub const REFLECT_PORT: u16 = 9001;

/// A simulated host: an agent or the rendezvous.
pub enum Host {
    /// The registry and beacon.
    Rendezvous(Box<Rendezvous>),
    /// An agent.
    Node(Box<Node>),
    /// An attacker flooding handshakes (see [`Flooder`]).
    Flooder(Box<Flooder>),
}

/// What a host reports, for the trace and for scenarios.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// From an agent.
    Node(Event),
    /// From the rendezvous.
    Rendezvous(RendezvousEvent),
}

impl fmt::Display for HostEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostEvent::Node(e) => e.fmt(f),
            HostEvent::Rendezvous(e) => e.fmt(f),
        }
    }
}

impl Host {
    /// The agent on this host. Panics on the rendezvous: a scenario bug.
    pub fn node(&self) -> &Node {
        match self {
            Host::Node(n) => n,
            Host::Rendezvous(_) => panic!("this host is the rendezvous, not a node"),
            Host::Flooder(_) => panic!("this host is a flooder, not a node"),
        }
    }

    /// The agent on this host, mutably.
    pub fn node_mut(&mut self) -> &mut Node {
        match self {
            Host::Node(n) => n,
            Host::Rendezvous(_) => panic!("this host is the rendezvous, not a node"),
            Host::Flooder(_) => panic!("this host is a flooder, not a node"),
        }
    }

    /// The rendezvous on this host. Panics on an agent.
    pub fn rendezvous(&self) -> &Rendezvous {
        match self {
            Host::Rendezvous(r) => r,
            Host::Node(_) => panic!("this host is a node, not the rendezvous"),
            Host::Flooder(_) => panic!("this host is a flooder, not the rendezvous"),
        }
    }

    /// The flooder on this host. Panics on any other host.
    pub fn flooder(&self) -> &Flooder {
        match self {
            Host::Flooder(f) => f,
            _ => panic!("this host is not a flooder"),
        }
    }
}

impl Machine for Host {
    type Event = HostEvent;

    fn handle_datagram(
        &mut self,
        now: Timestamp,
        socket: SocketId,
        from: SocketAddr,
        payload: &[u8],
    ) {
        match self {
            Host::Rendezvous(r) => r.handle_datagram(now, socket, from, payload),
            Host::Node(n) => n.handle_datagram(now, socket, from, payload),
            Host::Flooder(f) => f.handle_datagram(now, socket, from, payload),
        }
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        match self {
            Host::Rendezvous(r) => r.handle_timeout(now),
            Host::Node(n) => n.handle_timeout(now),
            Host::Flooder(f) => f.handle_timeout(now),
        }
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Host::Rendezvous(r) => r.poll_transmit(),
            Host::Node(n) => n.poll_transmit(),
            Host::Flooder(f) => f.poll_transmit(),
        }
    }

    fn poll_socket_op(&mut self) -> Option<pilot_proto::SocketOp> {
        match self {
            Host::Rendezvous(r) => r.poll_socket_op(),
            Host::Node(n) => n.poll_socket_op(),
            // A flooder sends from its one socket.
            Host::Flooder(_) => None,
        }
    }

    fn poll_event(&mut self) -> Option<HostEvent> {
        match self {
            Host::Rendezvous(r) => r.poll_event().map(HostEvent::Rendezvous),
            Host::Node(n) => n.poll_event().map(HostEvent::Node),
            Host::Flooder(_) => None,
        }
    }

    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
        let t = match self {
            Host::Rendezvous(r) => r.poll_timeout(),
            Host::Node(n) => n.poll_timeout(),
            Host::Flooder(f) => return f.poll_timeout(),
        };
        t.map(|(at, timer)| (at, timer.as_str()))
    }

    fn describe(payload: &[u8]) -> String {
        wire::describe(payload)
    }
}

/// The identity a host named by its seed gets: derived, so every run of a
/// scenario has the same keys.
pub fn identity_for(host_seed: &[u8; 32]) -> Identity {
    let mut h = Sha256::new();
    h.update(b"pilot sim identity");
    h.update(host_seed);
    Identity::from_seed(&h.finalize().into())
}

/// A world with a rendezvous, ready for agents.
pub struct Scenario {
    /// The simulated world.
    pub world: World<Host>,
    /// The rendezvous host.
    pub rendezvous: HostId,
    /// The rendezvous's public key, which agents pin.
    pub rendezvous_key: PublicKey,
    /// The rendezvous's reflect address, given to every agent added, when
    /// the scenario has one.
    pub reflect_addr: Option<SocketAddr>,
}

impl Scenario {
    /// A world seeded with `seed` holding a rendezvous at
    /// [`RENDEZVOUS_ADDR`].
    pub fn new(seed: u64) -> Self {
        Self::with_rendezvous(seed, |_| {})
    }

    /// Like [`Scenario::new`], letting the test adjust the rendezvous's
    /// configuration.
    pub fn with_rendezvous(seed: u64, configure: impl FnOnce(&mut RendezvousConfig)) -> Self {
        let mut world = World::new(seed);
        let mut key = None;
        let addr = RENDEZVOUS_ADDR.parse().expect("constant address parses");
        let rendezvous = world.add_host("rv", addr, |seed| {
            let identity = identity_for(&seed);
            key = Some(identity.public());
            let mut config = RendezvousConfig::new(identity);
            config.wall_origin_micros = WALL_ORIGIN_MICROS;
            configure(&mut config);
            Host::Rendezvous(Box::new(Rendezvous::new(config, &seed, Timestamp::ZERO)))
        });
        Scenario {
            world,
            rendezvous,
            rendezvous_key: key.expect("add_host runs its constructor"),
            reflect_addr: None,
        }
    }

    /// Like [`Scenario::new`], with the rendezvous answering Reflect
    /// requests on a second port ([`REFLECT_PORT`]) and every agent told
    /// about it, so agents classify their NATs and punch through
    /// symmetric ones.
    pub fn with_reflect(seed: u64) -> Self {
        let mut s = Self::with_rendezvous(seed, |c| c.reflect_port = Some(REFLECT_PORT));
        let rv = s.world.addr(s.rendezvous);
        s.reflect_addr = Some(SocketAddr::new(rv.ip(), REFLECT_PORT));
        s
    }

    /// Adds an agent called `name` (also its hostname, public) at `addr`;
    /// `configure` may change its configuration.
    pub fn add_node(
        &mut self,
        name: &str,
        addr: &str,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        self.add_node_in(Network::Internet, name, addr, configure)
    }

    /// Adds an agent like [`Scenario::add_node`], in `network` (behind a
    /// NAT, say); it registers `addr` as its LAN endpoint.
    pub fn add_node_in(
        &mut self,
        network: impl Into<Network>,
        name: &str,
        addr: &str,
        configure: impl FnOnce(&mut NodeConfig),
    ) -> HostId {
        let rv_key = self.rendezvous_key;
        let rv_addr = self.world.addr(self.rendezvous);
        let reflect_addr = self.reflect_addr;
        let addr: SocketAddr = addr.parse().expect("scenario addresses parse");
        let start = self.world.now();
        self.world.add_host_in(network.into(), name, addr, |seed| {
            let mut config = NodeConfig::new(identity_for(&seed), rv_key, rv_addr);
            config.hostname = Hostname::new(name).ok();
            config.public = true;
            config.wall_origin_micros = WALL_ORIGIN_MICROS;
            config.lan_endpoints = vec![addr];
            config.reflect_addr = reflect_addr;
            configure(&mut config);
            Host::Node(Box::new(Node::new(config, &seed, start)))
        })
    }

    /// Adds a host called `name` at `addr` that floods each of `targets`
    /// (hosts: the rendezvous or agents) with `per_second` handshakes
    /// from fresh identities, from now for `duration`.
    pub fn add_flooder(
        &mut self,
        name: &str,
        addr: &str,
        targets: &[HostId],
        per_second: u32,
        duration: Duration,
    ) -> HostId {
        let targets: Vec<(SocketAddr, [u8; 32])> = targets
            .iter()
            .map(|id| {
                let key = match self.world.host(*id) {
                    Host::Rendezvous(r) => r.public_key(),
                    Host::Node(n) => n.public_key(),
                    Host::Flooder(_) => panic!("flooding a flooder"),
                };
                let x = key.x25519().expect("hosts have valid keys");
                (self.world.addr(*id), x)
            })
            .collect();
        let addr: SocketAddr = addr.parse().expect("scenario addresses parse");
        let start = self.world.now();
        self.world.add_host(name, addr, |seed| {
            Host::Flooder(Box::new(Flooder::new(
                seed,
                targets,
                per_second,
                start,
                start + duration,
            )))
        })
    }

    /// The agent on `id`.
    pub fn node(&self, id: HostId) -> &Node {
        self.world.host(id).node()
    }

    /// Runs until every host in `ids` is registered.
    pub fn run_until_registered(&mut self, ids: &[HostId], max: Duration) -> Result<(), Stalled> {
        self.world.run_until(
            |w| ids.iter().all(|id| w.host(*id).node().is_registered()),
            max,
        )
    }

    /// Has agent `from` send `data` from its port `src_port` to `dst`.
    pub fn send(
        &mut self,
        from: HostId,
        src_port: u16,
        dst: SocketAddress,
        data: &[u8],
    ) -> Result<(), CommandError> {
        self.world.with_host(from, |h, now| {
            h.node_mut().send_datagram(now, src_port, dst, data)
        })
    }

    /// Runs a full trust handshake: `a` asks `b` (by address), `b`
    /// approves as soon as the request arrives, until both trust each
    /// other.
    pub fn trust(&mut self, a: HostId, b: HostId, max: Duration) -> Result<(), Stalled> {
        let a_addr = self.node(a).address().expect("registered before trust");
        let b_addr = self.node(b).address().expect("registered before trust");
        let _ = self.world.with_host(a, |h, now| {
            h.node_mut()
                .handshake(now, pilot_proto::msg::Query::Address(b_addr), "scenario")
        });
        self.world.run_until(
            |w| w.host(b).node().pending().any(|p| p.request.from == a_addr),
            max,
        )?;
        let _ = self
            .world
            .with_host(b, |h, now| h.node_mut().approve(now, a_addr));
        self.world.run_until(
            |w| {
                w.host(a).node().trusted().any(|t| t.address == b_addr)
                    && w.host(b).node().trusted().any(|t| t.address == a_addr)
            },
            max,
        )
    }

    /// Sends `data` over a new stream from `from` to port `port` of `to`
    /// (both trusted), half-closes, and reads on `to` until end of stream.
    /// Returns what `to`'s application read and how long it took in
    /// virtual time. The stream layer's own events drive the loop.
    pub fn transfer(
        &mut self,
        from: HostId,
        to: HostId,
        port: u16,
        data: &[u8],
        max: Duration,
    ) -> Result<(Vec<u8>, Duration), String> {
        use pilot_proto::stream::{StreamError, StreamEvent};
        let to_addr = self.node(to).address().ok_or("receiver not registered")?;
        self.world
            .with_host(to, |h, _| h.node_mut().listen(port))
            .map_err(|e| format!("listen: {e}"))?;
        let start = self.world.now();
        let deadline = start + max;
        let tx = self
            .world
            .with_host(from, |h, now| {
                h.node_mut().connect(now, SocketAddress::new(to_addr, port))
            })
            .map_err(|e| format!("connect: {e}"))?;
        let mut rx = None;
        let mut sent = 0usize;
        let mut shut = false;
        let mut got = Vec::with_capacity(data.len());
        let mut seen = self.world.events().len();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            for (_, h, e) in &self.world.events()[seen..] {
                match e {
                    HostEvent::Node(Event::Stream(StreamEvent::Incoming { id, .. }))
                        if *h == to =>
                    {
                        rx = Some(*id)
                    }
                    HostEvent::Node(Event::Stream(StreamEvent::Closed { id, reason }))
                        if *id == tx && *h == from && sent < data.len() =>
                    {
                        return Err(format!("sending stream closed early: {reason:?}"));
                    }
                    _ => {}
                }
            }
            seen = self.world.events().len();
            if sent < data.len() {
                let n = self
                    .world
                    .with_host(from, |h, now| {
                        h.node_mut().stream_write(now, tx, &data[sent..])
                    })
                    .map_err(|e| format!("write: {e}"))?;
                sent += n;
            }
            if sent == data.len() && !shut {
                self.world
                    .with_host(from, |h, now| h.node_mut().stream_shutdown(now, tx));
                shut = true;
            }
            if let Some(rx) = rx {
                loop {
                    let r = self
                        .world
                        .with_host(to, |h, now| h.node_mut().stream_read(now, rx, &mut buf));
                    match r {
                        Ok(0) => {
                            self.world
                                .with_host(to, |h, now| h.node_mut().stream_close(now, rx));
                            self.world
                                .with_host(from, |h, now| h.node_mut().stream_close(now, tx));
                            return Ok((got, self.world.now().saturating_since(start)));
                        }
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                        Err(CommandError::Stream(StreamError::WouldBlock)) => break,
                        Err(e) => return Err(format!("read: {e}")),
                    }
                }
            }
            if self.world.now() > deadline {
                return Err(format!(
                    "transfer stalled at {} of {} bytes sent, {} received (seed {})",
                    sent,
                    data.len(),
                    got.len(),
                    self.world.seed()
                ));
            }
            if !self.world.step() {
                return Err("the world went idle".into());
            }
        }
    }

    /// Node events so far, with their host.
    pub fn node_events(&self) -> impl Iterator<Item = (Timestamp, HostId, &Event)> {
        self.world.events().iter().filter_map(|(t, h, e)| match e {
            HostEvent::Node(n) => Some((*t, *h, n)),
            HostEvent::Rendezvous(_) => None,
        })
    }

    /// Datagrams delivered to `id` so far: (source port, destination port,
    /// payload).
    pub fn datagrams(&self, id: HostId) -> Vec<(u16, u16, Vec<u8>)> {
        self.node_events()
            .filter(|(_, h, _)| *h == id)
            .filter_map(|(_, _, e)| match e {
                Event::Datagram { from, port, data } => Some((from.port, *port, data.clone())),
                _ => None,
            })
            .collect()
    }
}
