//! The link model: impairments at roughly their configured rates, MTU,
//! bandwidth, queueing and path overrides.

mod common;

use std::time::Duration;

use common::{addr, Blast, PingEvent, PingPong};
use driver_sim::{HostId, LinkConfig, Timestamp, World};

const SENDER: &str = "192.0.2.10:5000";
const SINK: &str = "198.51.100.20:5000";
const INTERVAL: Duration = Duration::from_millis(1);

/// A sender of `count` datagrams to a sink, one every millisecond, with the
/// sender-to-sink path replaced by `path`.
fn blast_over(seed: u64, count: u32, path: LinkConfig) -> (World<Blast>, HostId, HostId) {
    let mut world = World::new(seed);
    world.set_tracing(false);
    let sink = world.add_host("sink", addr(SINK), Blast::sink());
    let sender = world.add_host(
        "sender",
        addr(SENDER),
        Blast::sender(addr(SINK), count, 100, INTERVAL),
    );
    world.set_path(sender, sink, path);
    let time = INTERVAL * count + Duration::from_secs(1);
    world.run_for(time);
    (world, sender, sink)
}

/// `got` is within `tolerance` (a fraction) of `expected`.
fn roughly(got: u64, expected: f64, tolerance: f64) -> bool {
    (got as f64 - expected).abs() <= expected * tolerance
}

#[test]
fn loss_matches_configured_rate() {
    let count = 20_000;
    let (world, _, sink) = blast_over(
        1,
        count,
        LinkConfig {
            loss_ppm: 100_000,
            ..LinkConfig::default()
        },
    );
    let stats = world.stats();
    assert_eq!(stats.sent, u64::from(count));
    assert!(roughly(stats.dropped.loss, 2000.0, 0.1), "{stats:?}");
    assert_eq!(stats.delivered + stats.dropped.loss, stats.sent);
    assert_eq!(world.host(sink).received.len() as u64, stats.delivered);
}

#[test]
fn loss_compounds_across_two_links() {
    let mut world = World::new(2);
    world.set_tracing(false);
    let sink = world.add_host("sink", addr(SINK), Blast::sink());
    let lossy = LinkConfig {
        loss_ppm: 50_000,
        ..LinkConfig::default()
    };
    world.set_link(sink, lossy.clone());
    let sender = world.add_host(
        "sender",
        addr(SENDER),
        Blast::sender(addr(SINK), 20_000, 100, INTERVAL),
    );
    world.set_link(sender, lossy);
    world.run_for(Duration::from_secs(21));
    // 1 - 0.95^2 = 9.75%
    let stats = world.stats();
    assert!(roughly(stats.dropped.loss, 1950.0, 0.1), "{stats:?}");
}

#[test]
fn duplication_matches_configured_rate() {
    let (world, _, sink) = blast_over(
        3,
        20_000,
        LinkConfig {
            duplicate_ppm: 50_000,
            ..LinkConfig::default()
        },
    );
    let stats = world.stats();
    assert!(roughly(stats.duplicated, 1000.0, 0.15), "{stats:?}");
    assert_eq!(stats.delivered, stats.sent + stats.duplicated);
    let mut seqs = world.host(sink).seqs();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 20_000, "every datagram arrived at least once");
}

/// How many datagrams arrived after one with a higher sequence number.
fn overtaken(seqs: &[u32]) -> usize {
    let mut highest = None;
    let mut late = 0;
    for &s in seqs {
        if highest.is_some_and(|h| s < h) {
            late += 1;
        }
        highest = highest.max(Some(s));
    }
    late
}

#[test]
fn reordering_matches_configured_rate() {
    let (world, _, sink) = blast_over(
        4,
        20_000,
        LinkConfig {
            reorder_ppm: 100_000,
            reorder_extra: Duration::from_millis(5),
            ..LinkConfig::default()
        },
    );
    let stats = world.stats();
    assert!(roughly(stats.reordered, 2000.0, 0.1), "{stats:?}");
    let late = overtaken(&world.host(sink).seqs());
    // A hold-back shorter than the 1 ms gap lets nothing overtake; most do.
    assert!(
        late as u64 <= stats.reordered && late as u64 > stats.reordered * 2 / 3,
        "{late}"
    );
}

#[test]
fn an_unimpaired_link_keeps_order_and_timing() {
    let (world, _, sink) = blast_over(5, 1000, LinkConfig::default());
    let received = &world.host(sink).received;
    assert_eq!(overtaken(&world.host(sink).seqs()), 0);
    for &(at, seq) in received {
        // One link of 5 ms: the path replaces both default links.
        assert_eq!(at, Timestamp::from_millis(u64::from(seq) + 5));
    }
}

#[test]
fn jitter_stays_within_bounds() {
    let latency = Duration::from_millis(10);
    let jitter = Duration::from_millis(5);
    let (world, _, sink) = blast_over(
        6,
        2000,
        LinkConfig {
            latency,
            jitter,
            ..LinkConfig::default()
        },
    );
    let received = &world.host(sink).received;
    assert_eq!(received.len(), 2000);
    let mut delays: Vec<Duration> = received
        .iter()
        .map(|&(at, seq)| at.saturating_since(Timestamp::from_millis(u64::from(seq))))
        .collect();
    delays.sort_unstable();
    assert!(delays[0] >= latency && delays[0] < latency + Duration::from_millis(1));
    assert!(delays[delays.len() - 1] <= latency + jitter);
    assert!(delays[delays.len() - 1] > latency + jitter - Duration::from_millis(1));
    // Jitter wider than the gap between datagrams reorders them.
    assert!(overtaken(&world.host(sink).seqs()) > 0);
}

#[test]
fn oversize_datagrams_are_dropped() {
    let mut world = World::new(7);
    let sink = world.add_host("sink", addr(SINK), Blast::sink());
    let sender = world.add_host("sender", addr(SENDER), Blast::sink());
    world.set_link(
        sink,
        LinkConfig {
            mtu: 1280,
            ..LinkConfig::default()
        },
    );
    // IPv4 and UDP headers take 28 bytes of the MTU.
    world.with_host(sender, |m, _| m.burst(addr(SINK), 1, 1252));
    world.with_host(sender, |m, _| m.burst(addr(SINK), 1, 1253));
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.host(sink).seqs(), [0]);
    assert_eq!(world.stats().dropped.mtu, 1);
    assert!(
        world
            .trace()
            .contains("drop(mtu) sender -> sink blast #1 (1253B)"),
        "{}",
        world.trace()
    );
}

#[test]
fn ipv6_headers_count_against_the_mtu() {
    let mut world = World::new(8);
    let sink = world.add_host("sink", addr("[2001:db8::20]:5000"), Blast::sink());
    let sender = world.add_host("sender", addr("[2001:db8::10]:5000"), Blast::sink());
    world.set_link(
        sender,
        LinkConfig {
            mtu: 1280,
            ..LinkConfig::default()
        },
    );
    world.with_host(sender, |m, _| {
        m.burst(addr("[2001:db8::20]:5000"), 1, 1232);
        m.burst(addr("[2001:db8::20]:5000"), 1, 1233);
    });
    world.run_for(Duration::from_millis(100));
    assert_eq!(world.host(sink).seqs(), [0]);
    assert_eq!(world.stats().dropped.mtu, 1);
}

/// alice's uplink at 1 Mbit/s, no propagation delay anywhere.
fn slow_uplink(queue_limit: Option<Duration>) -> (World<Blast>, HostId, HostId) {
    let mut world = World::new(9);
    let sink = world.add_host("sink", addr(SINK), Blast::sink());
    let sender = world.add_host("sender", addr(SENDER), Blast::sink());
    world.set_link(
        sender,
        LinkConfig {
            latency: Duration::ZERO,
            bandwidth_bps: Some(1_000_000),
            queue_limit,
            ..LinkConfig::default()
        },
    );
    world.set_link(
        sink,
        LinkConfig {
            latency: Duration::ZERO,
            ..LinkConfig::default()
        },
    );
    (world, sender, sink)
}

#[test]
fn bandwidth_serializes_datagrams() {
    let (mut world, sender, sink) = slow_uplink(None);
    // 1222 bytes of payload are 1250 on the wire: 10 ms each at 1 Mbit/s.
    world.with_host(sender, |m, _| m.burst(addr(SINK), 10, 1222));
    world.run_for(Duration::from_secs(1));
    let arrivals: Vec<Timestamp> = world.host(sink).received.iter().map(|&(t, _)| t).collect();
    let expected: Vec<Timestamp> = (1..=10).map(|i| Timestamp::from_millis(10 * i)).collect();
    assert_eq!(arrivals, expected);
}

#[test]
fn a_full_queue_drops_the_tail() {
    let (mut world, sender, sink) = slow_uplink(Some(Duration::from_millis(35)));
    world.with_host(sender, |m, _| m.burst(addr(SINK), 10, 1222));
    world.run_for(Duration::from_secs(1));
    // Waits of 0, 10, 20 and 30 ms fit under the limit; 40 ms does not.
    assert_eq!(world.host(sink).seqs(), [0, 1, 2, 3]);
    assert_eq!(world.stats().dropped.queue, 6);
    assert!(world
        .trace()
        .contains("drop(queue) sender -> sink blast #4"));
}

#[test]
fn a_path_override_applies_one_way() {
    let mut world = World::new(10);
    let server = world.add_host("bob", addr(SINK), PingPong::server());
    let client = world.add_host("alice", addr(SENDER), PingPong::client(addr(SINK), 1));
    let slow = LinkConfig {
        latency: Duration::from_millis(50),
        ..LinkConfig::default()
    };
    world.set_path(client, server, slow.clone());
    assert_eq!(world.path(client, server), Some(&slow));
    assert_eq!(world.path(server, client), None);
    world.with_host(client, |m, now| m.start(now));
    world.run_for(Duration::from_millis(100));
    // 50 ms there, 5 + 5 ms back.
    let rtt = Duration::from_millis(60);
    assert_eq!(world.events()[0].2, PingEvent::Pong { seq: 1, rtt });

    world.clear_path(client, server);
    assert_eq!(world.path(client, server), None);
}
