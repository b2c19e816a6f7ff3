//! A small scenario's trace, snapshotted into the workspace's `testdata/`.

mod common;

use std::time::Duration;

use common::{addr, PingEvent, PingPong};
use driver_sim::{LinkConfig, World};

/// alice pings bob three times over slightly jittery links, and the test
/// cuts bob off while the first pong is on its way back.
fn toy_pingpong(seed: u64) -> String {
    let mut world = World::new(seed);
    let alice = world.add_host(
        "alice",
        addr("192.0.2.1:4000"),
        PingPong::client(addr("198.51.100.2:4000"), 3),
    );
    let bob = world.add_host("bob", addr("198.51.100.2:4000"), PingPong::server());
    let jittery = LinkConfig {
        jitter: Duration::from_millis(2),
        ..LinkConfig::default()
    };
    world.set_link(alice, jittery.clone());
    world.set_link(bob, jittery);

    world.note("alice starts; bob will be cut off before he answers");
    world.with_host(alice, |m, now| m.start(now));
    world.run_for(Duration::from_millis(5));
    world.partition(alice, bob);
    world.run_for(Duration::from_millis(295));
    world.heal(alice, bob);
    world
        .run_until(
            |w| w.events().iter().any(|(_, _, e)| *e == PingEvent::Done),
            Duration::from_secs(2),
        )
        .expect("three rounds finish once the partition heals");
    world.note("done");
    world.trace().to_owned()
}

#[test]
fn toy_pingpong_trace() {
    let trace = toy_pingpong(2024);
    assert_eq!(trace, toy_pingpong(2024), "same seed, same trace");
    insta::with_settings!({
        snapshot_path => concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/snapshots"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => "driver-sim toy ping-pong: jitter, a partition, a retransmission",
    }, {
        insta::assert_snapshot!("sim_toy_pingpong", trace);
    });
}
