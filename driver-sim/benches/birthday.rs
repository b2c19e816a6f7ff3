//! Birthday probing in the simulator against the analytic birthday
//! formula, for the same numbers of open ports and probes.
//!
//! A port-restricted agent (alice) and one behind a random-port symmetric
//! NAT (bob), realistic latencies and 1 % loss. Bob opens
//! `BIRTHDAY_SOCKETS` sockets and sends from each, which opens as many
//! mappings among the NAT's 64 512 ports; alice probes random ports. For
//! each run the bench records which of alice's probes found a mapping
//! (`PeerStats::spray_hit`), and prints, for several probe counts n, the
//! share of runs that had succeeded by probe n next to the formula
//! `1 - (1 - 256/64512)^n` (`pilot_proto::nat::birthday_success`). Loss
//! makes the simulator a little worse than the formula (a probe or its
//! answer lost does not count). Also printed: the time to direct and the
//! probes alice sent in all, as medians.
//!
//! `cargo bench -p driver-sim --bench birthday`

use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::{HostId, LinkConfig, NatConfig, Network};
use pilot_proto::addr::SocketAddress;
use pilot_proto::nat::birthday_success;
use pilot_proto::node::{Event, BIRTHDAY_PROBES, BIRTHDAY_SOCKETS};
use pilot_proto::tunnel::Route;

const MAX: Duration = Duration::from_secs(30);
const RUNS: u64 = 200;
/// The ports a NAT allocates from (1024-65535).
const RANGE: u32 = 64512;

fn link(ms: u64) -> LinkConfig {
    LinkConfig {
        latency: Duration::from_millis(ms),
        jitter: Duration::from_millis(ms / 10),
        loss_ppm: 10_000,
        ..LinkConfig::default()
    }
}

fn behind(s: &mut Scenario, config: NatConfig, side: u8, name: &str) -> HostId {
    let nat = s.world.add_nat(
        &format!("nat{side}"),
        format!("198.51.100.{side}").parse().unwrap(),
        config,
    );
    s.add_node_in(
        Network::Behind(nat),
        name,
        &format!("192.168.{side}.2:4000"),
        |_| {},
    )
}

struct Run {
    hit: Option<u32>,
    to_direct: Option<Duration>,
    probes: u64,
}

fn run(seed: u64) -> Run {
    let mut s = Scenario::with_reflect(seed);
    s.world.set_tracing(false);
    let rv = s.rendezvous;
    s.world.set_link(rv, link(5));
    let alice = behind(&mut s, NatConfig::port_restricted(), 1, "alice");
    let bob = behind(&mut s, NatConfig::symmetric_random(), 2, "bob");
    s.world.set_link(alice, link(15));
    s.world.set_link(bob, link(25));
    s.run_until_registered(&[alice, bob], MAX).unwrap();
    s.world.run_for(Duration::from_secs(4));
    s.trust(alice, bob, MAX).unwrap();
    let bob_addr = s.node(bob).address().unwrap();
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .unwrap();
    let before = s.world.events().len();
    let t0 = s.world.now();
    for i in 0..40u32 {
        s.send(
            alice,
            1000,
            SocketAddress::new(bob_addr, 1000),
            &i.to_be_bytes(),
        )
        .unwrap();
        s.world.run_for(Duration::from_millis(100));
    }
    let to_direct = s.world.events()[before..]
        .iter()
        .find_map(|(t, h, e)| match e {
            HostEvent::Node(Event::PathChanged {
                route: Some(Route::Direct { .. }),
                ..
            }) if *h == alice => Some(t.saturating_since(t0)),
            _ => None,
        });
    let now = s.world.now();
    let stats = s.node(alice).peer_stats(now);
    let peer = stats.iter().find(|p| p.address == bob_addr).unwrap();
    Run {
        hit: peer.stats.spray_hit,
        to_direct,
        probes: peer.stats.probes_sent,
    }
}

fn main() {
    let runs: Vec<Run> = (0..RUNS).map(|i| run(70_000 + i)).collect();
    println!(
        "birthday probing: {BIRTHDAY_SOCKETS} mappings among {RANGE} ports, \
         up to {BIRTHDAY_PROBES} probes, {RUNS} runs, 1 % loss"
    );
    println!("{:>8} {:>12} {:>12}", "probes", "simulated", "formula");
    for n in [64u32, 128, 256, 512, 768, 1024, 1536, 2048] {
        let ok = runs
            .iter()
            .filter(|r| r.hit.is_some_and(|h| h <= n))
            .count();
        println!(
            "{n:>8} {:>11.1}% {:>11.1}%",
            100.0 * ok as f64 / runs.len() as f64,
            100.0 * birthday_success(BIRTHDAY_SOCKETS, RANGE, n)
        );
    }
    let mut times: Vec<Duration> = runs.iter().filter_map(|r| r.to_direct).collect();
    times.sort();
    let mut probes: Vec<u64> = runs.iter().map(|r| r.probes).collect();
    probes.sort();
    println!(
        "direct in {}/{} runs; median time to direct {:?}; median probes sent by alice {}",
        times.len(),
        runs.len(),
        times.get(times.len() / 2).copied().unwrap_or_default(),
        probes[probes.len() / 2]
    );
}
