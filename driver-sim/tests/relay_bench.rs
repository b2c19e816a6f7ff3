//! `pilotctl bench` over the rendezvous relay, in the simulator: two agents
//! behind random-port symmetric NATs (so the relay is their only path), the
//! rendezvous with its default relay limits, and a bulk stream to the
//! peer's echo service, written and read back at once as bench does.

use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::{HostId, LinkConfig, NatConfig};
use pilot_proto::addr::{ports, SocketAddress};
use pilot_proto::node::{CommandError, Event};
use pilot_proto::stream::{StreamError, StreamEvent};
use pilot_proto::tunnel::Route;

const MAX: Duration = Duration::from_secs(60);
/// What `pilotctl bench` calls a stall.
const STALL: Duration = Duration::from_secs(30);

struct Bench {
    /// Longest time without a byte echoed back.
    longest_gap: Duration,
    took: Duration,
    echoed: usize,
    limited: u64,
}

fn relayed_pair(seed: u64, link: LinkConfig) -> (Scenario, HostId, HostId) {
    let mut s = Scenario::new(seed);
    let n1 = s.world.add_nat(
        "nat1",
        "198.51.100.1".parse().unwrap(),
        NatConfig::symmetric_random(),
    );
    let n2 = s.world.add_nat(
        "nat2",
        "198.51.100.2".parse().unwrap(),
        NatConfig::symmetric_random(),
    );
    let alice = s.add_node_in(n1, "alice", "192.168.1.2:4000", |_| {});
    let bob = s.add_node_in(n2, "bob", "192.168.2.2:4000", |_| {});
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(id, link.clone());
    }
    s.run_until_registered(&[alice, bob], MAX)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    s.trust(alice, bob, MAX)
        .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    (s, alice, bob)
}

/// Writes `total` bytes to bob's echo and reads them back, like bench.
fn bench(s: &mut Scenario, alice: HostId, bob: HostId, total: usize) -> Bench {
    let pattern: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
    let bob_addr = s.node(bob).address().unwrap();
    let rv = s.rendezvous;
    let limited_before = s.world.host(rv).rendezvous().relay_stats().limited;
    let start = s.world.now();
    let id = s
        .world
        .with_host(alice, |h, now| {
            h.node_mut()
                .connect(now, SocketAddress::new(bob_addr, ports::ECHO))
        })
        .unwrap();
    let (mut sent, mut echoed, mut shut) = (0usize, 0usize, false);
    let mut last = start;
    let mut longest_gap = Duration::ZERO;
    let mut buf = vec![0u8; 64 * 1024];
    let mut seen = s.world.events().len();
    loop {
        for (_, h, e) in &s.world.events()[seen..] {
            if let HostEvent::Node(Event::Stream(StreamEvent::Closed { id: c, reason })) = e {
                assert!(
                    !(*h == alice && *c == id),
                    "stream closed after {echoed} of {total} echoed: {reason:?}"
                );
            }
        }
        seen = s.world.events().len();
        if sent < total {
            match s.world.with_host(alice, |h, now| {
                h.node_mut().stream_write(now, id, &pattern[sent..])
            }) {
                Ok(n) => sent += n,
                Err(CommandError::Stream(StreamError::WouldBlock)) => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        if sent == total && !shut {
            s.world
                .with_host(alice, |h, now| h.node_mut().stream_shutdown(now, id));
            shut = true;
        }
        loop {
            match s
                .world
                .with_host(alice, |h, now| h.node_mut().stream_read(now, id, &mut buf))
            {
                Ok(0) => break,
                Ok(n) => {
                    assert_eq!(buf[..n], pattern[echoed..echoed + n], "echo differs");
                    echoed += n;
                    last = s.world.now();
                }
                Err(CommandError::Stream(StreamError::WouldBlock)) => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        let now = s.world.now();
        longest_gap = longest_gap.max(now.saturating_since(last));
        if echoed == total || longest_gap > STALL {
            break;
        }
        assert!(s.world.step(), "the world went idle");
    }
    s.world
        .with_host(alice, |h, now| h.node_mut().stream_close(now, id));
    Bench {
        longest_gap,
        took: s.world.now().saturating_since(start),
        echoed,
        limited: s.world.host(rv).rendezvous().relay_stats().limited - limited_before,
    }
}

fn route(s: &Scenario, a: HostId, b: HostId) -> Option<Route> {
    let b_addr = s.node(b).address().unwrap();
    s.node(a)
        .peer_stats(s.world.now())
        .into_iter()
        .find(|p| p.address == b_addr)
        .and_then(|p| p.stats.route)
}

fn sweep(seeds: std::ops::Range<u64>, total: usize, link: LinkConfig) -> Vec<u64> {
    let mut stalled = Vec::new();
    for seed in seeds {
        let (mut s, alice, bob) = relayed_pair(seed, link.clone());
        s.world.set_tracing(false);
        let b = bench(&mut s, alice, bob, total);
        let r = route(&s, alice, bob);
        eprintln!(
            "seed {seed}: {} of {total} echoed in {:.3} s, longest gap {:.3} s, relay limited {}, route {r:?}",
            b.echoed,
            b.took.as_secs_f64(),
            b.longest_gap.as_secs_f64(),
            b.limited
        );
        if b.echoed < total {
            stalled.push(seed);
        }
    }
    stalled
}

/// Jitter on every link reorders the relayed packets: before the fix a
/// data segment overtaken by a later ACK of the same peer was thrown away
/// with its payload, and once the echo's buffers filled, the window-edge
/// and go-back-N cases below left both ends ignoring each other's ACKs
/// (seeds 2, 4 and 9 of these stalled for 30 s).
#[test]
fn relayed_bench_survives_reordering() {
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        jitter: Duration::from_micros(500),
        ..LinkConfig::default()
    };
    let stalled = sweep(0..10, 4 << 20, link);
    assert!(stalled.is_empty(), "stalled seeds: {stalled:?}");
}

/// A 100 Mbit/s uplink on every host with a 20 ms tail-drop queue: bursts
/// overflow it both ways at once. Before the fix both ends timed out,
/// went back N, and then ignored each other's ACKs as old segments
/// (every seed stalled).
#[test]
fn relayed_bench_survives_tail_drop() {
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        bandwidth_bps: Some(100_000_000),
        queue_limit: Some(Duration::from_millis(20)),
        ..LinkConfig::default()
    };
    let stalled = sweep(0..2, 4 << 20, link);
    assert!(stalled.is_empty(), "stalled seeds: {stalled:?}");
}

/// Explores other settings: `SEEDS`, `FIRST`, `MIB`, `JIT` (µs), `LOSS`
/// (ppm per link), `BW` (bit/s) and `QMS` (queue limit, ms), e.g.
/// `BW=100000000 QMS=20 SEEDS=200 cargo test --release -p driver-sim
/// --test relay_bench -- --ignored --nocapture`.
#[test]
#[ignore]
fn explore() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let first = env("FIRST").unwrap_or(0);
    let link = LinkConfig {
        latency: Duration::from_millis(1),
        jitter: Duration::from_micros(env("JIT").unwrap_or(0)),
        loss_ppm: env("LOSS").unwrap_or(0) as u32,
        bandwidth_bps: env("BW"),
        queue_limit: env("QMS").map(Duration::from_millis),
        ..LinkConfig::default()
    };
    let total = (env("MIB").unwrap_or(4) as usize) << 20;
    let stalled = sweep(first..first + env("SEEDS").unwrap_or(20), total, link);
    eprintln!("stalled seeds: {stalled:?}");
}
