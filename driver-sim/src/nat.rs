//! NAT boxes as RFC 4787 describes them: a mapping table and the decisions
//! a NAT makes about each datagram, without any knowledge of hosts, links or
//! routing (the network in `net.rs` asks, this module answers).
//!
//! A mapping binds an internal endpoint (private ip:port) to a port on the
//! NAT's public address. Which outbound datagrams share a mapping is the
//! mapping behaviour; which inbound datagrams a mapping lets in is the
//! filtering behaviour. Each mapping keeps one flow per remote endpoint it
//! has exchanged datagrams with, timed like Linux conntrack: a flow never
//! answered lives `unanswered_timeout` after its last datagram, an answered
//! one `answered_timeout`. A mapping lives while any of its flows does, and
//! filtering only trusts live flows. Expiry is checked against the virtual
//! clock whenever the box handles a datagram, so nothing needs a timer.

use core::net::{IpAddr, SocketAddr};
use core::ops::RangeInclusive;
use core::time::Duration;
use std::collections::BTreeMap;

use pilot_proto::Timestamp;

use crate::rng::SimRng;
use crate::trace::DropReason;

/// A NAT box in a [`World`](crate::World); only meaningful in the world that
/// made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NatId(pub(crate) u32);

impl NatId {
    /// The box's position in the order boxes were added, from zero.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// An address realm: where a host, or a NAT's public side, is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Network {
    /// The public internet, where [`World::add_host`](crate::World::add_host)
    /// puts hosts.
    #[default]
    Internet,
    /// The private realm behind a NAT box (its LAN).
    Behind(NatId),
}

impl From<NatId> for Network {
    fn from(nat: NatId) -> Self {
        Network::Behind(nat)
    }
}

/// How much of the remote endpoint a NAT looks at, for mapping (RFC 4787
/// section 4.1) or for filtering (section 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Behaviour {
    /// Any remote endpoint: one mapping per internal endpoint, or every
    /// remote may send in while the mapping lives.
    EndpointIndependent,
    /// The remote IP only.
    AddressDependent,
    /// The remote IP and port.
    AddressAndPortDependent,
}

impl Behaviour {
    /// The part of `remote` this behaviour tells apart.
    fn scope(self, remote: SocketAddr) -> Scope {
        match self {
            Behaviour::EndpointIndependent => Scope::Any,
            Behaviour::AddressDependent => Scope::Address(remote.ip()),
            Behaviour::AddressAndPortDependent => Scope::Endpoint(remote),
        }
    }
}

/// How a NAT picks the public port of a new mapping when it does not (or
/// cannot) keep the internal port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PortAllocation {
    /// Each new mapping takes the port `stride` after the previous one,
    /// starting from a port drawn once per box. Stride 1 is the classic
    /// predictable symmetric NAT that port prediction exploits.
    Sequential {
        /// The step between consecutive allocations; 0 is taken as 1.
        stride: u16,
    },
    /// Uniformly random from the port range, from a stream derived from the
    /// world seed and the box's name.
    Random,
    /// A function of the internal endpoint, so that the same internal
    /// endpoint tends to get the same public port back after its mapping
    /// expires or the box reboots.
    Hashed,
}

/// What a NAT does with an inbound datagram that no mapping lets in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsolicited {
    /// Drops it silently: `drop(nat-no-mapping)` or `drop(nat-filtered)`.
    Drop,
    /// Answers with ICMP port unreachable. Machines have no ICMP input, so
    /// this is a drop of its own, `drop(nat-icmp)`, that a test can tell
    /// apart.
    Icmp,
}

/// How a NAT box behaves, per RFC 4787.
///
/// Start from a preset and change fields with struct update syntax:
/// `NatConfig { hairpinning: false, ..NatConfig::port_restricted() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// Whether the box translates at all. `false` makes it a plain router:
    /// hosts behind it keep their addresses, which must then be unique in
    /// the outer realm too; no mapping, no filtering, only `block_udp`
    /// applies.
    pub translate: bool,
    /// Which outbound datagrams share a mapping.
    pub mapping: Behaviour,
    /// Which inbound datagrams a mapping lets in.
    pub filtering: Behaviour,
    /// Try to give a new mapping the internal port as its public port.
    pub port_preservation: bool,
    /// How a public port is picked otherwise.
    pub allocation: PortAllocation,
    /// The public ports the box may allocate.
    pub ports: RangeInclusive<u16>,
    /// How long a flow that has never been answered outlives its last
    /// datagram (Linux conntrack: 30 s).
    pub unanswered_timeout: Duration,
    /// How long a flow that has been answered outlives its last datagram
    /// (Linux conntrack: 120 s).
    pub answered_timeout: Duration,
    /// Whether a host may reach another host behind the same box through
    /// the box's public address (RFC 4787 REQ-9). Off, such datagrams are
    /// dropped as `drop(nat-hairpin)`.
    pub hairpinning: bool,
    /// What an inbound datagram no mapping lets in does.
    pub unsolicited: Unsolicited,
    /// An egress firewall that drops every UDP datagram leaving the private
    /// realm: `drop(udp-blocked)`. Traffic inside the realm is untouched.
    pub block_udp: bool,
}

impl Default for NatConfig {
    /// The most common home NAT: [`port_restricted`](NatConfig::port_restricted).
    fn default() -> Self {
        NatConfig::port_restricted()
    }
}

impl NatConfig {
    /// A plain router: no translation, no filtering.
    pub fn open() -> Self {
        NatConfig {
            translate: false,
            filtering: Behaviour::EndpointIndependent,
            ..NatConfig::port_restricted()
        }
    }

    /// Full cone: endpoint-independent mapping and filtering.
    pub fn full_cone() -> Self {
        NatConfig {
            filtering: Behaviour::EndpointIndependent,
            ..NatConfig::port_restricted()
        }
    }

    /// Address-restricted cone: endpoint-independent mapping,
    /// address-dependent filtering.
    pub fn address_restricted() -> Self {
        NatConfig {
            filtering: Behaviour::AddressDependent,
            ..NatConfig::port_restricted()
        }
    }

    /// Port-restricted cone: endpoint-independent mapping, address- and
    /// port-dependent filtering, port preservation, sequential ports, Linux
    /// conntrack timeouts, no hairpinning, silent drops: what a Linux
    /// router that masquerades does (checked against the kernel by
    /// `pilotctl netcheck` in pilotctl/tests/netns.rs; hairpinning there
    /// needs a DNAT rule of its own). Every other preset is this one with
    /// a few fields changed.
    pub fn port_restricted() -> Self {
        NatConfig {
            translate: true,
            mapping: Behaviour::EndpointIndependent,
            filtering: Behaviour::AddressAndPortDependent,
            port_preservation: true,
            allocation: PortAllocation::Sequential { stride: 1 },
            ports: 1024..=65535,
            unanswered_timeout: Duration::from_secs(30),
            answered_timeout: Duration::from_secs(120),
            hairpinning: false,
            unsolicited: Unsolicited::Drop,
            block_udp: false,
        }
    }

    /// Symmetric with predictable ports: a new mapping per remote endpoint,
    /// ports allocated one after another, no port preservation.
    pub fn symmetric_sequential() -> Self {
        NatConfig {
            mapping: Behaviour::AddressAndPortDependent,
            port_preservation: false,
            ..NatConfig::port_restricted()
        }
    }

    /// Symmetric with random ports: a new mapping per remote endpoint on a
    /// random port; only birthday probing gets through.
    pub fn symmetric_random() -> Self {
        NatConfig {
            allocation: PortAllocation::Random,
            ..NatConfig::symmetric_sequential()
        }
    }

    /// A carrier-grade NAT (RFC 6888): endpoint-independent mapping as it
    /// requires, port-dependent filtering, random ports from a shared pool.
    pub fn carrier_grade() -> Self {
        NatConfig {
            port_preservation: false,
            allocation: PortAllocation::Random,
            ..NatConfig::port_restricted()
        }
    }

    /// A network whose firewall lets no UDP out (only TCP/443, which the
    /// simulator does not model yet), behind a port-restricted NAT.
    pub fn udp_blocked() -> Self {
        NatConfig {
            block_udp: true,
            ..NatConfig::port_restricted()
        }
    }
}

/// A live mapping, as [`World::nat_mappings`](crate::World::nat_mappings)
/// shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NatMapping {
    /// The private endpoint behind the box.
    pub internal: SocketAddr,
    /// The public endpoint the outer realm sees.
    pub external: SocketAddr,
}

/// What translating an outbound datagram did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outbound {
    /// The source address the datagram leaves with.
    pub(crate) external: SocketAddr,
    /// The datagram made a new mapping (traced once, as `map`).
    pub(crate) created: bool,
}

/// The part of a remote endpoint that tells mappings (or permissions) apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Any,
    Address(IpAddr),
    Endpoint(SocketAddr),
}

impl Scope {
    fn admits(self, remote: SocketAddr) -> bool {
        match self {
            Scope::Any => true,
            Scope::Address(ip) => remote.ip() == ip,
            Scope::Endpoint(endpoint) => remote == endpoint,
        }
    }
}

/// Traffic between a mapping and one remote endpoint.
#[derive(Clone, Copy, Debug)]
struct Flow {
    last: Timestamp,
    answered: bool,
}

impl Flow {
    /// Whether the flow outlives `now`: conntrack gives a flow that has
    /// been answered longer than one that has not.
    fn alive(&self, config: &NatConfig, now: Timestamp) -> bool {
        let timeout = if self.answered {
            config.answered_timeout
        } else {
            config.unanswered_timeout
        };
        now < self.last + timeout
    }
}

struct Mapping {
    internal: SocketAddr,
    /// The remotes this mapping serves, from the mapping behaviour; kept to
    /// find the mapping's key again when it is removed.
    scope: Scope,
    flows: BTreeMap<SocketAddr, Flow>,
}

/// A NAT box: where it sits, how it behaves, and its mapping table.
pub(crate) struct NatBox {
    pub(crate) name: String,
    /// The realm its public side is attached to.
    pub(crate) outer: Network,
    pub(crate) public_ip: IpAddr,
    pub(crate) config: NatConfig,
    world_seed: u64,
    by_port: BTreeMap<u16, Mapping>,
    by_key: BTreeMap<(SocketAddr, Scope), u16>,
    rng: SimRng,
    /// Where sequential allocation goes next.
    cursor: u16,
}

impl NatBox {
    pub(crate) fn new(
        world_seed: u64,
        name: &str,
        outer: Network,
        public_ip: IpAddr,
        config: NatConfig,
    ) -> Self {
        let mut rng = SimRng::derive(world_seed, "nat", &[name.as_bytes()]);
        // Drawn even when unused, so changing a box's allocation mode does
        // not shift its random stream.
        let (lo, len) = range(&config.ports);
        let cursor = port_at(lo, len, rng.below(len));
        NatBox {
            name: name.to_owned(),
            outer,
            public_ip,
            config,
            world_seed,
            by_port: BTreeMap::new(),
            by_key: BTreeMap::new(),
            rng,
            cursor,
        }
    }

    /// Translates a datagram from `internal` to `remote`: finds or makes
    /// the mapping the mapping behaviour asks for and refreshes its flow.
    ///
    /// # Errors
    ///
    /// [`DropReason::NatPorts`] when every public port is taken.
    pub(crate) fn outbound(
        &mut self,
        now: Timestamp,
        internal: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Outbound, DropReason> {
        self.expire(now);
        let scope = self.config.mapping.scope(remote);
        let (port, created) = match self.by_key.get(&(internal, scope)) {
            Some(&port) => (port, false),
            None => {
                let port = self.allocate(internal)?;
                self.by_key.insert((internal, scope), port);
                let mapping = Mapping {
                    internal,
                    scope,
                    flows: BTreeMap::new(),
                };
                self.by_port.insert(port, mapping);
                (port, true)
            }
        };
        if let Some(mapping) = self.by_port.get_mut(&port) {
            let flow = mapping.flows.entry(remote).or_insert(Flow {
                last: now,
                answered: false,
            });
            flow.last = now;
        }
        Ok(Outbound {
            external: SocketAddr::new(self.public_ip, port),
            created,
        })
    }

    /// Decides about a datagram from `remote` to the box's public `port`:
    /// the internal endpoint to hand it to, its flow refreshed and marked
    /// answered.
    ///
    /// # Errors
    ///
    /// No live mapping on that port, or filtering refuses `remote`; the
    /// reason follows [`NatConfig::unsolicited`].
    pub(crate) fn inbound(
        &mut self,
        now: Timestamp,
        remote: SocketAddr,
        port: u16,
    ) -> Result<SocketAddr, DropReason> {
        self.expire(now);
        let refuse = |reason| match self.config.unsolicited {
            Unsolicited::Drop => reason,
            Unsolicited::Icmp => DropReason::NatIcmp,
        };
        let filtering = self.config.filtering;
        let Some(mapping) = self.by_port.get_mut(&port) else {
            return Err(refuse(DropReason::NatNoMapping));
        };
        let permitted = mapping
            .flows
            .keys()
            .any(|&seen| filtering.scope(seen).admits(remote));
        if !permitted {
            return Err(refuse(DropReason::NatFiltered));
        }
        // Conntrack refreshes on traffic either way; an endpoint-independent
        // filter lets a new remote in, and its flow starts here.
        mapping.flows.insert(
            remote,
            Flow {
                last: now,
                answered: true,
            },
        );
        Ok(mapping.internal)
    }

    /// Forgets every mapping, as a reboot would.
    pub(crate) fn reset(&mut self) {
        self.by_port.clear();
        self.by_key.clear();
    }

    /// The mappings still alive at `now`, by public port.
    pub(crate) fn mappings(&self, now: Timestamp) -> Vec<NatMapping> {
        self.by_port
            .iter()
            .filter(|(_, m)| m.flows.values().any(|f| f.alive(&self.config, now)))
            .map(|(&port, m)| NatMapping {
                internal: m.internal,
                external: SocketAddr::new(self.public_ip, port),
            })
            .collect()
    }

    /// Drops dead flows, then mappings left without a live flow.
    fn expire(&mut self, now: Timestamp) {
        let config = &self.config;
        let by_key = &mut self.by_key;
        self.by_port.retain(|_, mapping| {
            mapping.flows.retain(|_, f| f.alive(config, now));
            let keep = !mapping.flows.is_empty();
            if !keep {
                by_key.remove(&(mapping.internal, mapping.scope));
            }
            keep
        });
    }

    /// A free public port for a new mapping of `internal`.
    fn allocate(&mut self, internal: SocketAddr) -> Result<u16, DropReason> {
        let free = |port: &u16| !self.by_port.contains_key(port);
        if self.config.port_preservation && free(&internal.port()) {
            return Ok(internal.port());
        }
        let (lo, len) = range(&self.config.ports);
        // A few guesses in the allocator's own pattern, then a scan, so that
        // a nearly full table still finds its last ports.
        const GUESSES: u64 = 64;
        let guess = match self.config.allocation {
            PortAllocation::Sequential { stride } => {
                let stride = u64::from(stride.max(1));
                let start = u64::from(self.cursor.saturating_sub(lo));
                (0..len.min(GUESSES))
                    .map(|i| port_at(lo, len, start + i * stride))
                    .find(free)
            }
            PortAllocation::Random => {
                let rng = &mut self.rng;
                (0..GUESSES)
                    .map(|_| port_at(lo, len, rng.below(len)))
                    .find(free)
            }
            PortAllocation::Hashed => {
                let label = internal.to_string();
                let mut hash = SimRng::derive(
                    self.world_seed,
                    "nat-hash",
                    &[self.name.as_bytes(), label.as_bytes()],
                );
                (0..GUESSES)
                    .map(|_| port_at(lo, len, hash.below(len)))
                    .find(free)
            }
        };
        let port = guess
            .or_else(|| (0..len).map(|i| port_at(lo, len, i)).find(free))
            .ok_or(DropReason::NatPorts)?;
        if let PortAllocation::Sequential { stride } = self.config.allocation {
            let next = u64::from(port.saturating_sub(lo)) + u64::from(stride.max(1));
            self.cursor = port_at(lo, len, next);
        }
        Ok(port)
    }
}

/// The first port of `ports` and how many there are (at least one, so an
/// empty range behaves as its start alone rather than dividing by zero).
fn range(ports: &RangeInclusive<u16>) -> (u16, u64) {
    let (lo, hi) = (*ports.start(), *ports.end());
    (lo, u64::from(hi.saturating_sub(lo)) + 1)
}

/// The port `offset` places after `lo`, wrapping within `len` ports.
fn port_at(lo: u16, len: u64, offset: u64) -> u16 {
    // The sum stays below lo + len <= 65536, so the conversion never fails.
    u16::try_from(u64::from(lo) + offset % len).unwrap_or(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSIDE: &str = "10.0.0.2:4000";
    const PEER: &str = "198.51.100.2:5000";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn nat(config: NatConfig) -> NatBox {
        NatBox::new(
            7,
            "home",
            Network::Internet,
            "203.0.113.7".parse().unwrap(),
            config,
        )
    }

    fn secs(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    /// The public endpoint `from` gets when sending to `to` at `now`.
    fn out(n: &mut NatBox, now: Timestamp, from: &str, to: &str) -> SocketAddr {
        n.outbound(now, addr(from), addr(to)).unwrap().external
    }

    #[test]
    fn endpoint_independent_mapping_is_reused() {
        let mut n = nat(NatConfig::port_restricted());
        let first = n.outbound(secs(0), addr(INSIDE), addr(PEER)).unwrap();
        assert!(first.created);
        let again = n.outbound(secs(1), addr(INSIDE), addr(PEER)).unwrap();
        assert!(!again.created);
        let other = out(&mut n, secs(1), INSIDE, "192.0.2.9:80");
        assert_eq!(first.external, again.external);
        assert_eq!(first.external, other);
        assert_eq!(n.mappings(secs(1)).len(), 1);
    }

    #[test]
    fn address_dependent_mapping_splits_by_ip_only() {
        let mut n = nat(NatConfig {
            mapping: Behaviour::AddressDependent,
            ..NatConfig::port_restricted()
        });
        let a = out(&mut n, secs(0), INSIDE, "198.51.100.2:1");
        let b = out(&mut n, secs(0), INSIDE, "198.51.100.2:2");
        let c = out(&mut n, secs(0), INSIDE, "198.51.100.3:1");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn symmetric_mapping_is_new_per_destination() {
        let mut n = nat(NatConfig::symmetric_sequential());
        let a = out(&mut n, secs(0), INSIDE, "198.51.100.2:1");
        let b = out(&mut n, secs(0), INSIDE, "198.51.100.2:2");
        assert_ne!(a, b);
        assert_eq!(out(&mut n, secs(0), INSIDE, "198.51.100.2:1"), a);
    }

    #[test]
    fn port_preservation_keeps_the_source_port_while_free() {
        let mut n = nat(NatConfig::port_restricted());
        assert_eq!(out(&mut n, secs(0), INSIDE, PEER).port(), 4000);
        // A second host with the same port cannot have it too.
        assert_ne!(out(&mut n, secs(0), "10.0.0.3:4000", PEER).port(), 4000);

        let mut n = nat(NatConfig::symmetric_sequential());
        assert_ne!(out(&mut n, secs(0), INSIDE, PEER).port(), 4000);
    }

    #[test]
    fn sequential_allocation_follows_the_stride() {
        let mut n = nat(NatConfig {
            allocation: PortAllocation::Sequential { stride: 3 },
            ..NatConfig::symmetric_sequential()
        });
        let ports: Vec<u16> = (1..=4)
            .map(|i| out(&mut n, secs(0), INSIDE, &format!("198.51.100.2:{i}")).port())
            .collect();
        for pair in ports.windows(2) {
            assert_eq!(pair[1], pair[0] + 3, "{ports:?}");
        }
    }

    #[test]
    fn sequential_allocation_wraps_and_skips_taken_ports() {
        let mut n = nat(NatConfig {
            ports: 2000..=2002,
            ..NatConfig::symmetric_sequential()
        });
        let mut ports: Vec<u16> = (1..=3)
            .map(|i| out(&mut n, secs(0), INSIDE, &format!("198.51.100.2:{i}")).port())
            .collect();
        ports.sort_unstable();
        assert_eq!(ports, [2000, 2001, 2002]);
        assert_eq!(
            n.outbound(secs(0), addr(INSIDE), addr("198.51.100.2:4")),
            Err(DropReason::NatPorts)
        );
    }

    #[test]
    fn random_allocation_is_seeded_and_not_sequential() {
        let ports = |seed| {
            let mut n = NatBox::new(
                seed,
                "home",
                Network::Internet,
                "203.0.113.7".parse().unwrap(),
                NatConfig::symmetric_random(),
            );
            (1..=8)
                .map(|i| out(&mut n, secs(0), INSIDE, &format!("198.51.100.2:{i}")).port())
                .collect::<Vec<u16>>()
        };
        assert_eq!(ports(1), ports(1));
        assert_ne!(ports(1), ports(2));
        let p = ports(1);
        assert!(p.windows(2).any(|w| w[1] != w[0].wrapping_add(1)), "{p:?}");
    }

    #[test]
    fn hashed_allocation_returns_the_same_port_after_a_reset() {
        let config = NatConfig {
            allocation: PortAllocation::Hashed,
            ..NatConfig::symmetric_sequential()
        };
        let mut n = nat(config);
        let first = out(&mut n, secs(0), INSIDE, PEER);
        n.reset();
        assert!(n.mappings(secs(0)).is_empty());
        assert_eq!(out(&mut n, secs(0), INSIDE, PEER), first);
    }

    /// Whether `from` may send in to the mapping INSIDE made towards PEER.
    fn lets_in(filtering: Behaviour, from: &str) -> Result<SocketAddr, DropReason> {
        let mut n = nat(NatConfig {
            filtering,
            ..NatConfig::port_restricted()
        });
        let public = out(&mut n, secs(0), INSIDE, PEER);
        n.inbound(secs(1), addr(from), public.port())
    }

    #[test]
    fn filtering_by_behaviour() {
        use Behaviour::*;
        let inside = Ok(addr(INSIDE));
        let filtered = Err(DropReason::NatFiltered);
        for (filtering, same_port, other_port, other_ip) in [
            (EndpointIndependent, &inside, &inside, &inside),
            (AddressDependent, &inside, &inside, &filtered),
            (AddressAndPortDependent, &inside, &filtered, &filtered),
        ] {
            assert_eq!(&lets_in(filtering, PEER), same_port, "{filtering:?}");
            assert_eq!(
                &lets_in(filtering, "198.51.100.2:5001"),
                other_port,
                "{filtering:?}"
            );
            assert_eq!(
                &lets_in(filtering, "192.0.2.50:5000"),
                other_ip,
                "{filtering:?}"
            );
        }
    }

    #[test]
    fn unsolicited_without_mapping_drops_or_answers_icmp() {
        let mut n = nat(NatConfig::full_cone());
        assert_eq!(
            n.inbound(secs(0), addr(PEER), 4000),
            Err(DropReason::NatNoMapping)
        );
        let mut n = nat(NatConfig {
            unsolicited: Unsolicited::Icmp,
            ..NatConfig::port_restricted()
        });
        assert_eq!(
            n.inbound(secs(0), addr(PEER), 4000),
            Err(DropReason::NatIcmp)
        );
        let public = out(&mut n, secs(0), INSIDE, PEER);
        assert_eq!(
            n.inbound(secs(0), addr("192.0.2.50:1"), public.port()),
            Err(DropReason::NatIcmp)
        );
    }

    #[test]
    fn unanswered_flows_expire_sooner_than_answered_ones() {
        let mut n = nat(NatConfig::port_restricted());
        let public = out(&mut n, secs(0), INSIDE, PEER);
        assert_eq!(n.mappings(secs(29)).len(), 1);
        assert!(n.mappings(secs(30)).is_empty());
        assert_eq!(
            n.inbound(secs(30), addr(PEER), public.port()),
            Err(DropReason::NatNoMapping)
        );

        let public = out(&mut n, secs(100), INSIDE, PEER);
        assert_eq!(
            n.inbound(secs(101), addr(PEER), public.port()),
            Ok(addr(INSIDE))
        );
        assert_eq!(n.mappings(secs(220)).len(), 1);
        assert!(n.mappings(secs(221)).is_empty());
    }

    #[test]
    fn outbound_traffic_refreshes_a_mapping() {
        let mut n = nat(NatConfig::port_restricted());
        let first = out(&mut n, secs(0), INSIDE, PEER);
        assert_eq!(out(&mut n, secs(25), INSIDE, PEER), first);
        assert_eq!(
            n.inbound(secs(50), addr(PEER), first.port()),
            Ok(addr(INSIDE))
        );
    }

    #[test]
    fn a_permission_expires_with_its_flow_even_if_the_mapping_lives() {
        let mut n = nat(NatConfig::port_restricted());
        let public = out(&mut n, secs(0), INSIDE, PEER);
        // Another flow keeps the mapping up, but PEER's was never answered.
        out(&mut n, secs(20), INSIDE, "192.0.2.9:80");
        assert_eq!(
            n.inbound(secs(40), addr(PEER), public.port()),
            Err(DropReason::NatFiltered)
        );
    }
}
