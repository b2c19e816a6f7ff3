//! NAT boxes seen from the hosts: LAN delivery, translation, filtering,
//! hairpinning, CGNAT chains, the UDP-blocked firewall, roaming, and the
//! two-sided hole punch that Pilot's traversal relies on.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use driver_sim::{
    HostId, Machine, NatConfig, NatId, Network, SocketId, Timestamp, Transmit, World,
};

/// Answers every "ping" with a "pong" and reports everything it receives
/// as `<payload> from <source>`, so tests see what a real agent would.
#[derive(Default)]
struct Echo {
    out: VecDeque<Transmit>,
    got: VecDeque<String>,
}

impl Machine for Echo {
    type Event = String;
    fn handle_datagram(
        &mut self,
        _: Timestamp,
        _socket: SocketId,
        from: SocketAddr,
        payload: &[u8],
    ) {
        if payload == b"ping" {
            self.out
                .push_back(Transmit::new(SocketId::PRIMARY, from, b"pong".to_vec()));
        }
        let text = String::from_utf8_lossy(payload);
        self.got.push_back(format!("{text} from {from}"));
    }
    fn handle_timeout(&mut self, _: Timestamp) {}
    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }
    fn poll_event(&mut self) -> Option<String> {
        self.got.pop_front()
    }
    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
        None
    }
    fn describe(payload: &[u8]) -> String {
        String::from_utf8_lossy(payload).into_owned()
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const SERVER: &str = "198.51.100.2:3478";

/// Makes `host` send `payload` to `to` now.
fn send(world: &mut World<Echo>, host: HostId, to: SocketAddr, payload: &str) {
    world.with_host(host, |m, _| {
        m.out.push_back(Transmit::new(
            SocketId::PRIMARY,
            to,
            payload.as_bytes().to_vec(),
        ))
    });
}

/// What `host` received so far, as `<payload> from <source>`.
fn received(world: &World<Echo>, host: HostId) -> Vec<String> {
    world
        .events()
        .iter()
        .filter(|(_, h, _)| *h == host)
        .map(|(_, _, e)| e.clone())
        .collect()
}

/// A world with a public echo server and `alice` behind a NAT `home`.
fn behind_one(config: NatConfig) -> (World<Echo>, NatId, HostId, HostId) {
    let mut world = World::new(1);
    let server = world.add_host("server", addr(SERVER), |_| Echo::default());
    let home = world.add_nat("home", ip("203.0.113.7"), config);
    let alice = world.add_host_behind(home, "alice", addr("10.0.0.2:4000"), |_| Echo::default());
    (world, home, alice, server)
}

#[test]
fn the_server_sees_the_translated_source_and_the_reply_comes_back() {
    let (mut world, home, alice, server) = behind_one(NatConfig::port_restricted());
    send(&mut world, alice, addr(SERVER), "ping");
    world.run_for(Duration::from_millis(50));
    assert_eq!(received(&world, server), ["ping from 203.0.113.7:4000"]);
    assert_eq!(received(&world, alice), ["pong from 198.51.100.2:3478"]);
    assert_eq!(world.network(alice), Network::Behind(home));
    assert_eq!(world.stats().nat_mappings, 1);
    assert_eq!(
        world.trace(),
        "+0.000000s alice -> server ping (4B)\n\
         +0.000000s nat home map 10.0.0.2:4000 -> 203.0.113.7:4000\n\
         +0.010000s server <- 203.0.113.7:4000 ping (4B)\n\
         +0.010000s server -> 203.0.113.7:4000 pong (4B)\n\
         +0.010000s server event ping from 203.0.113.7:4000\n\
         +0.020000s alice <- server pong (4B)\n\
         +0.020000s alice event pong from 198.51.100.2:3478\n"
    );
}

#[test]
fn hosts_on_the_same_lan_talk_without_translation() {
    let (mut world, home, alice, _) = behind_one(NatConfig::symmetric_random());
    let bob = world.add_host_behind(home, "bob", addr("10.0.0.3:4000"), |_| Echo::default());
    send(&mut world, alice, addr("10.0.0.3:4000"), "ping");
    world.run_for(Duration::from_millis(50));
    assert_eq!(received(&world, bob), ["ping from 10.0.0.2:4000"]);
    assert_eq!(received(&world, alice), ["pong from 10.0.0.3:4000"]);
    assert!(world.nat_mappings(home).is_empty());
}

#[test]
fn unsolicited_inbound_is_dropped_by_reason() {
    let (mut world, _, alice, server) = behind_one(NatConfig::port_restricted());
    // Nothing mapped yet.
    send(&mut world, server, addr("203.0.113.7:4000"), "ping");
    send(&mut world, alice, addr(SERVER), "hello");
    // Mapped, but only towards SERVER's port: another port is filtered.
    let other = world.add_host("other", addr("198.51.100.2:9999"), |_| Echo::default());
    send(&mut world, other, addr("203.0.113.7:4000"), "ping");
    world.run_for(Duration::from_millis(50));
    let drops = &world.stats().dropped;
    assert_eq!((drops.nat_no_mapping, drops.nat_filtered), (1, 1));
    assert!(world
        .trace()
        .contains("drop(nat-no-mapping) server -> 203.0.113.7:4000 ping (4B)"));
    assert!(world
        .trace()
        .contains("drop(nat-filtered) other -> 203.0.113.7:4000 ping (4B)"));
    assert_eq!(received(&world, alice), Vec::<String>::new());
}

#[test]
fn full_cone_lets_anyone_in_once_mapped() {
    let (mut world, _, alice, _) = behind_one(NatConfig::full_cone());
    let other = world.add_host("other", addr("192.0.2.50:1"), |_| Echo::default());
    send(&mut world, alice, addr(SERVER), "hello");
    send(&mut world, other, addr("203.0.113.7:4000"), "hi");
    world.run_for(Duration::from_millis(50));
    assert_eq!(received(&world, alice), ["hi from 192.0.2.50:1"]);
}

#[test]
fn mappings_time_out_on_the_virtual_clock() {
    let (mut world, home, alice, server) = behind_one(NatConfig::port_restricted());
    send(&mut world, alice, addr(SERVER), "hello");
    world.run_for(Duration::from_secs(31));
    assert!(world.nat_mappings(home).is_empty(), "unanswered: 30 s");
    send(&mut world, server, addr("203.0.113.7:4000"), "late");
    world.run_for(Duration::from_millis(50));
    assert_eq!(world.stats().dropped.nat_no_mapping, 1);

    send(&mut world, alice, addr(SERVER), "ping");
    world.run_for(Duration::from_secs(100));
    assert_eq!(world.nat_mappings(home).len(), 1, "answered: 120 s");
    world.run_for(Duration::from_secs(21));
    assert!(world.nat_mappings(home).is_empty());
}

#[test]
fn hairpinning_on_and_off() {
    for hairpinning in [true, false] {
        let (mut world, home, alice, _) = behind_one(NatConfig {
            hairpinning,
            ..NatConfig::full_cone()
        });
        let bob = world.add_host_behind(home, "bob", addr("10.0.0.3:5000"), |_| Echo::default());
        // bob's mapping, learned from the server in real life.
        send(&mut world, bob, addr(SERVER), "hello");
        send(&mut world, alice, addr("203.0.113.7:5000"), "ping");
        world.run_for(Duration::from_millis(50));
        if hairpinning {
            // Both see each other's public side, as RFC 4787 REQ-9 asks.
            assert_eq!(received(&world, bob), ["ping from 203.0.113.7:4000"]);
            assert_eq!(received(&world, alice), ["pong from 203.0.113.7:5000"]);
        } else {
            assert_eq!(received(&world, bob), Vec::<String>::new());
            assert_eq!(world.stats().dropped.nat_hairpin, 1);
        }
    }
}

#[test]
fn carrier_grade_nat_translates_twice() {
    let mut world = World::new(1);
    let server = world.add_host("server", addr(SERVER), |_| Echo::default());
    let (cgnat, home) = world.add_double_nat(
        ("cgnat", ip("203.0.113.1")),
        ("home", ip("100.64.0.7")),
        NatConfig::port_restricted(),
    );
    let alice = world.add_host_behind(home, "alice", addr("10.0.0.2:4000"), |_| Echo::default());
    send(&mut world, alice, addr(SERVER), "ping");
    world.run_for(Duration::from_millis(50));
    let outer = world.nat_mappings(cgnat);
    assert_eq!(outer.len(), 1);
    assert_eq!(outer[0].internal, addr("100.64.0.7:4000"));
    assert_eq!(outer[0].external.ip(), ip("203.0.113.1"));
    assert_eq!(
        received(&world, server),
        [format!("ping from {}", outer[0].external)]
    );
    assert_eq!(received(&world, alice), ["pong from 198.51.100.2:3478"]);
}

#[test]
fn udp_blocked_lets_nothing_out_but_keeps_the_lan() {
    let (mut world, home, alice, server) = behind_one(NatConfig::udp_blocked());
    let bob = world.add_host_behind(home, "bob", addr("10.0.0.3:4000"), |_| Echo::default());
    send(&mut world, alice, addr(SERVER), "ping");
    send(&mut world, alice, addr("10.0.0.3:4000"), "lan");
    world.run_for(Duration::from_millis(50));
    assert_eq!(world.stats().dropped.udp_blocked, 1);
    assert!(world
        .trace()
        .contains("drop(udp-blocked) alice -> server ping (4B)"));
    assert_eq!(received(&world, server), Vec::<String>::new());
    assert_eq!(received(&world, bob), ["lan from 10.0.0.2:4000"]);
}

#[test]
fn an_open_router_forwards_without_translating() {
    let mut world = World::new(1);
    let server = world.add_host("server", addr(SERVER), |_| Echo::default());
    let router = world.add_nat("router", ip("192.0.2.254"), NatConfig::open());
    let alice = world.add_host_behind(router, "alice", addr("192.0.2.10:4000"), |_| {
        Echo::default()
    });
    send(&mut world, server, addr("192.0.2.10:4000"), "ping");
    world.run_for(Duration::from_millis(50));
    assert_eq!(received(&world, alice), ["ping from 198.51.100.2:3478"]);
    assert_eq!(received(&world, server), ["pong from 192.0.2.10:4000"]);
}

#[test]
fn a_host_moving_networks_gets_a_new_mapping_and_the_old_one_lingers() {
    let (mut world, home, alice, server) = behind_one(NatConfig::port_restricted());
    let cafe = world.add_nat("cafe", ip("203.0.113.99"), NatConfig::symmetric_random());
    send(&mut world, alice, addr(SERVER), "ping");
    world.run_for(Duration::from_millis(50));
    world.move_host(alice, cafe, addr("172.16.0.5:4000"));
    send(&mut world, alice, addr(SERVER), "ping");
    world.run_for(Duration::from_millis(50));
    let seen = received(&world, server);
    assert_eq!(seen.len(), 2);
    assert!(seen[1].starts_with("ping from 203.0.113.99:"), "{seen:?}");
    assert_eq!(world.nat_mappings(home).len(), 1, "old mapping still there");
    assert!(world
        .trace()
        .contains("move alice 172.16.0.5:4000 behind cafe"));
}

#[test]
fn a_reset_nat_forgets_its_mappings() {
    let (mut world, home, alice, server) = behind_one(NatConfig::port_restricted());
    send(&mut world, alice, addr(SERVER), "hello");
    world.run_for(Duration::from_millis(50));
    world.reset_nat(home);
    assert!(world.nat_mappings(home).is_empty());
    send(&mut world, server, addr("203.0.113.7:4000"), "ping");
    world.run_for(Duration::from_millis(50));
    assert_eq!(world.stats().dropped.nat_no_mapping, 1);
    assert!(world.trace().contains("nat home reset"));
}

/// Two hosts behind their own NATs learn their public mappings from a
/// server (as the beacon reflects them), then send to each other at the
/// same instant. Returns what each received from the other.
fn punch(left: NatConfig, right: NatConfig) -> (Vec<String>, Vec<String>) {
    let mut world = World::new(3);
    let server = world.add_host("server", addr(SERVER), |_| Echo::default());
    let a_nat = world.add_nat("nat-a", ip("203.0.113.7"), left);
    let b_nat = world.add_nat("nat-b", ip("198.51.100.77"), right);
    let a = world.add_host_behind(a_nat, "a", addr("10.0.0.2:4000"), |_| Echo::default());
    let b = world.add_host_behind(b_nat, "b", addr("10.0.0.2:4000"), |_| Echo::default());
    for host in [a, b] {
        send(&mut world, host, addr(SERVER), "hello");
    }
    world.run_for(Duration::from_millis(50));
    let reflected: Vec<SocketAddr> = received(&world, server)
        .iter()
        .map(|e| addr(e.trim_start_matches("hello from ")))
        .collect();
    world.take_events();
    // Each side tries a few times, as a punching agent does.
    for _ in 0..3 {
        send(&mut world, a, reflected[1], "ping");
        send(&mut world, b, reflected[0], "ping");
        world.run_for(Duration::from_millis(100));
    }
    (received(&world, a), received(&world, b))
}

#[test]
fn hole_punching_through_port_restricted_nats_works() {
    let (a, b) = punch(NatConfig::port_restricted(), NatConfig::port_restricted());
    assert!(
        a.iter().any(|e| e.starts_with("ping from 198.51.100.77:")),
        "{a:?}"
    );
    assert!(
        b.iter().any(|e| e.starts_with("ping from 203.0.113.7:")),
        "{b:?}"
    );
}

#[test]
fn hole_punching_between_symmetric_nats_fails() {
    let (a, b) = punch(NatConfig::symmetric_random(), NatConfig::symmetric_random());
    assert_eq!((a.len(), b.len()), (0, 0), "{a:?} {b:?}");
    let (a, b) = punch(
        NatConfig::symmetric_sequential(),
        NatConfig::port_restricted(),
    );
    assert_eq!((a.len(), b.len()), (0, 0), "{a:?} {b:?}");
}

#[test]
fn a_full_cone_side_learns_a_symmetric_peer_from_its_first_packet() {
    // The symmetric side's ping reaches the full cone side from a new
    // mapping, and the pong goes back to that mapping, which lets it in.
    let (a, b) = punch(NatConfig::full_cone(), NatConfig::symmetric_random());
    assert!(
        a.iter().any(|e| e.starts_with("ping from 198.51.100.77:")),
        "{a:?}"
    );
    assert!(
        b.iter().any(|e| e.starts_with("pong from 203.0.113.7:")),
        "{b:?}"
    );
}

#[test]
fn nat_scenarios_are_deterministic() {
    let run = |seed| {
        let mut world = World::new(seed);
        world.add_host("server", addr(SERVER), |_| Echo::default());
        let nat = world.add_nat("home", ip("203.0.113.7"), NatConfig::symmetric_random());
        let alice = world.add_host_behind(nat, "alice", addr("10.0.0.2:4000"), |_| Echo::default());
        for port in 1..=5 {
            send(
                &mut world,
                alice,
                addr(&format!("198.51.100.2:{port}")),
                "x",
            );
        }
        world.trace().to_owned()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}
