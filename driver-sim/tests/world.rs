//! The world's behaviour: the drain rule, timers, determinism, partitions,
//! the attacker's tools and running to a condition.

mod common;

use std::time::Duration;

use common::{addr, PingEvent, PingPong, Sloppy, Spinner, MAX_RETRIES, RTO};
use driver_sim::{host_seed, HostId, LinkConfig, Stalled, Timestamp, World};

const ALICE: &str = "192.0.2.1:4000";
const BOB: &str = "198.51.100.2:4000";

/// alice pings bob `rounds` times; neither has started yet.
fn ping_world(seed: u64, rounds: u32) -> (World<PingPong>, HostId, HostId) {
    let mut world = World::new(seed);
    let alice = world.add_host("alice", addr(ALICE), PingPong::client(addr(BOB), rounds));
    let bob = world.add_host("bob", addr(BOB), PingPong::server());
    (world, alice, bob)
}

fn done(world: &World<PingPong>) -> bool {
    world
        .events()
        .iter()
        .any(|(_, _, e)| matches!(e, PingEvent::Done | PingEvent::GaveUp { .. }))
}

#[test]
fn pingpong_completes_over_default_links() {
    let (mut world, alice, bob) = ping_world(1, 3);
    world.with_host(alice, |m, now| m.start(now));
    world.run_until(done, Duration::from_secs(5)).unwrap();

    // Two default links of 5 ms each way.
    let rtt = Duration::from_millis(20);
    let events: Vec<_> = world
        .events()
        .iter()
        .map(|(t, h, e)| (*t, *h, e.clone()))
        .collect();
    assert_eq!(
        events,
        [
            (
                Timestamp::from_millis(20),
                alice,
                PingEvent::Pong { seq: 1, rtt }
            ),
            (
                Timestamp::from_millis(40),
                alice,
                PingEvent::Pong { seq: 2, rtt }
            ),
            (
                Timestamp::from_millis(60),
                alice,
                PingEvent::Pong { seq: 3, rtt }
            ),
            (Timestamp::from_millis(60), alice, PingEvent::Done),
        ]
    );
    assert_eq!(world.host(bob).pings, 3);
    let stats = world.stats();
    assert_eq!((stats.sent, stats.delivered, stats.events), (6, 6, 4));
    // Every round moved the retransmit deadline, and none of the outdated
    // wakeups reached the machine.
    assert_eq!(stats.timer_wakeups, 0);
    assert_eq!(stats.steps, 6);
    assert_eq!(world.now(), Timestamp::from_millis(60));
    assert_eq!(world.take_events().len(), 4);
    assert!(world.events().is_empty());
}

#[test]
fn hosts_get_seeds_from_world_seed_and_name() {
    let (world, alice, bob) = ping_world(42, 1);
    assert_eq!(world.host(alice).seed, host_seed(42, "alice"));
    assert_eq!(world.host(bob).seed, host_seed(42, "bob"));
    assert_eq!(world.host_id("bob"), Some(bob));
    assert_eq!(world.host_id("carol"), None);
    assert_eq!(world.name(alice), "alice");
    assert_eq!(world.addr(bob), addr(BOB));
    assert_eq!(world.host_ids().collect::<Vec<_>>(), [alice, bob]);
}

#[test]
#[should_panic(expected = "a host called `alice` already exists")]
fn duplicate_names_are_refused() {
    let (mut world, _, _) = ping_world(1, 1);
    world.add_host("alice", addr("203.0.113.1:1"), PingPong::server());
}

/// Several clients, one server, every impairment on: the trace depends on
/// every random draw the world makes.
fn impaired_trace(seed: u64) -> String {
    let mut world = World::new(seed);
    let server = world.add_host("rv", addr("203.0.113.1:7000"), PingPong::server());
    world.set_link(
        server,
        LinkConfig {
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(15),
            loss_ppm: 150_000,
            duplicate_ppm: 100_000,
            reorder_ppm: 100_000,
            ..LinkConfig::default()
        },
    );
    let names = ["alice", "bob", "carol"];
    for (i, name) in names.iter().enumerate() {
        let a = addr(&format!("192.0.2.{}:4000", i + 1));
        let id = world.add_host(name, a, PingPong::client(addr("203.0.113.1:7000"), 5));
        world.set_link(
            id,
            LinkConfig {
                jitter: Duration::from_millis(3),
                loss_ppm: 50_000,
                ..LinkConfig::default()
            },
        );
        world.with_host(id, |m, now| m.start(now));
    }
    world.run_for(Duration::from_secs(10));
    world.trace().to_owned()
}

#[test]
fn same_seed_gives_identical_trace() {
    let first = impaired_trace(7);
    assert!(
        first.lines().count() > 50,
        "a run worth comparing:\n{first}"
    );
    assert_eq!(first, impaired_trace(7));
}

#[test]
fn different_seed_gives_different_trace() {
    assert_ne!(impaired_trace(7), impaired_trace(8));
}

#[test]
fn run_until_reports_seed_and_time() {
    let (mut world, _, _) = ping_world(99, 1);
    let err = world
        .run_until(|_| false, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(
        err,
        Stalled {
            seed: 99,
            now: Timestamp::from_secs(1),
            idle: true
        }
    );
    assert_eq!(world.now(), Timestamp::from_secs(1));
    let message = err.to_string();
    assert!(message.contains("seed 99"), "{message}");
    assert!(message.contains("+1.000000s"), "{message}");
}

#[test]
fn run_until_stalls_while_busy() {
    let (mut world, alice, bob) = ping_world(5, 1);
    world.isolate(bob);
    world.with_host(alice, |m, now| m.start(now));
    let err = world
        .run_until(done, Duration::from_millis(500))
        .unwrap_err();
    // alice is still retransmitting.
    assert!(!err.idle);
    assert_eq!(err.now, Timestamp::from_millis(500));
    assert_eq!(world.stats().timer_wakeups, 2);
}

#[test]
fn step_and_run_until_time() {
    let (mut world, alice, _) = ping_world(3, 1);
    assert!(!world.step(), "nothing to do before the client starts");
    world.with_host(alice, |m, now| m.start(now));
    assert!(world.step());
    assert_eq!(world.now(), Timestamp::from_millis(10), "ping arrived");
    world.run_until_time(Timestamp::from_millis(15));
    assert_eq!(world.now(), Timestamp::from_millis(15));
    assert!(world.events().is_empty());
    world.run_for(Duration::from_millis(5));
    assert_eq!(world.events().len(), 2, "pong and done at 20 ms");
    assert!(!world.step());
    // The clock never goes back.
    world.run_until_time(Timestamp::from_millis(1));
    assert_eq!(world.now(), Timestamp::from_millis(20));
}

#[test]
fn partition_drops_until_healed() {
    let (mut world, alice, bob) = ping_world(11, 1);
    world.partition(bob, alice);
    world.with_host(alice, |m, now| m.start(now));
    world.run_for(Duration::from_millis(500));
    assert!(world.events().is_empty());
    // The first ping and two retransmissions.
    assert_eq!(world.stats().dropped.partition, 3);
    assert!(world
        .trace()
        .contains("drop(partition) alice -> bob ping 1"));

    world.heal(alice, bob);
    world.run_until(done, Duration::from_secs(1)).unwrap();
    assert_eq!(world.host(bob).pings, 1);
    assert!(world.trace().contains("+0.500000s heal alice bob"));
}

#[test]
fn datagrams_in_flight_cross_a_new_partition() {
    let (mut world, alice, bob) = ping_world(12, 1);
    world.with_host(alice, |m, now| m.start(now));
    world.partition(alice, bob);
    world.run_for(Duration::from_millis(100));
    // The ping was already on its way; bob's pong was not let out.
    assert_eq!(world.host(bob).pings, 1);
    assert_eq!(world.stats().dropped.partition, 1);
    assert!(world
        .trace()
        .contains("drop(partition) bob -> alice pong 1"));
}

#[test]
fn isolation_cuts_a_host_off_until_it_rejoins() {
    let (mut world, alice, bob) = ping_world(13, 1);
    world.isolate(alice);
    world.with_host(alice, |m, now| m.start(now));
    world.run_for(RTO * 2);
    assert_eq!(world.host(bob).pings, 0);
    assert!(world.trace().contains("isolate alice"));
    world.rejoin(alice);
    world.run_until(done, Duration::from_secs(1)).unwrap();
    assert!(matches!(world.events()[1].2, PingEvent::Done));
}

#[test]
fn unknown_destination_is_dropped() {
    let mut world = World::new(4);
    let alice = world.add_host(
        "alice",
        addr(ALICE),
        PingPong::client(addr("203.0.113.9:1"), 1),
    );
    world.with_host(alice, |m, now| m.start(now));
    world.run_until(done, Duration::from_secs(10)).unwrap();
    assert_eq!(world.stats().dropped.no_route, u64::from(MAX_RETRIES) + 1);
    assert!(world
        .trace()
        .contains("drop(no-route) alice -> 203.0.113.9:1 ping 1 (6B)"));
    assert_eq!(world.events()[0].2, PingEvent::GaveUp { seq: 1 });
}

#[test]
fn capture_and_replay() {
    let (mut world, alice, bob) = ping_world(21, 1);
    world.set_capture(true);
    world.with_host(alice, |m, now| m.start(now));
    world.run_until(done, Duration::from_secs(1)).unwrap();

    let captured = world.captured().to_vec();
    assert_eq!(captured.len(), 2);
    assert_eq!(captured[0].at, Timestamp::ZERO);
    assert_eq!((captured[0].from, captured[0].to), (addr(ALICE), addr(BOB)));
    assert_eq!(captured[0].payload, b"ping 1");
    assert_eq!(captured[1].payload, b"pong 1");

    // Replay alice's ping as if from alice: it takes alice's links.
    let replay = &captured[0];
    world.inject(replay.from, replay.to, replay.payload.clone());
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.host(bob).pings, 2);
    let trace = world.trace();
    assert!(
        trace.contains("+0.020000s inject alice -> bob ping 1 (6B)"),
        "{trace}"
    );
    assert!(
        trace.contains("+0.030000s bob <- alice ping 1 (6B) [injected]"),
        "{trace}"
    );
    // alice ignores the stale pong, and the capture saw bob's answer but
    // not the injection.
    assert_eq!(world.events().len(), 2);
    assert_eq!(world.take_captured().len(), 3);
    assert!(world.captured().is_empty());
}

#[test]
fn injection_from_outside_arrives_at_once() {
    let (mut world, _, bob) = ping_world(22, 1);
    world.run_for(Duration::from_millis(3));
    let mallory = addr("203.0.113.66:666");
    world.inject(mallory, addr(BOB), b"ping 9".to_vec());
    assert!(world.step());
    assert_eq!(world.now(), Timestamp::from_millis(3));
    assert_eq!(world.host(bob).pings, 1);
    let trace = world.trace();
    assert!(
        trace.contains("+0.003000s bob <- 203.0.113.66:666 ping 9 (6B) [injected]"),
        "{trace}"
    );
    // bob's answer goes nowhere: no host owns mallory's address.
    assert!(
        trace.contains("drop(no-route) bob -> 203.0.113.66:666 pong 9"),
        "{trace}"
    );
    assert_eq!(world.stats().injected, 1);
}

#[test]
fn injection_honours_isolation() {
    let (mut world, _, bob) = ping_world(23, 1);
    world.isolate(bob);
    world.inject(addr("203.0.113.66:666"), addr(BOB), b"ping 9".to_vec());
    world.run_for(Duration::from_millis(10));
    assert_eq!(world.host(bob).pings, 0);
    assert_eq!(world.stats().dropped.partition, 1);
}

#[test]
fn notes_go_into_the_trace() {
    let (mut world, _, _) = ping_world(1, 1);
    world.run_for(Duration::from_millis(1500));
    world.note("checkpoint");
    assert_eq!(world.trace(), "+1.500000s note checkpoint\n");
}

#[test]
fn tracing_can_be_turned_off() {
    let (mut world, alice, _) = ping_world(1, 2);
    world.set_tracing(false);
    world.with_host(alice, |m, now| m.start(now));
    world.run_until(done, Duration::from_secs(1)).unwrap();
    assert_eq!(world.trace(), "");
    assert_eq!(world.stats().delivered, 4);
}

#[test]
#[should_panic(expected = "drain rule broken by host `sloppy` at +0.000000s (seed 77)")]
fn drain_rule_violation_panics() {
    let mut world = World::new(77);
    let sloppy = world.add_host("sloppy", addr("192.0.2.50:1"), |_| Sloppy::default());
    world.with_host(sloppy, |m, _| m.poke());
}

#[test]
#[should_panic(expected = "host `spinner` woke more than 10000 times at +0.000000s")]
fn busy_loop_panics() {
    let mut world = World::new(78);
    world.add_host("spinner", addr("192.0.2.51:1"), |_| Spinner::default());
    world.run_for(Duration::from_secs(1));
}
