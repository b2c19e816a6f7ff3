//! How fast the simulator runs: 100 toy hosts chatting for N simulated
//! seconds, reported as simulated events (steps) per wall-clock second.
//!
//! `cargo bench -p driver-sim --bench sim_speed -- [SECONDS]` (default 10).
//!
//! The run with tracing off is the baseline; the run with tracing on is
//! reported as a ratio to it, measured in the same process. [`harness`] is
//! machine-agnostic so a bench of the real protocol can reuse it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use driver_sim::speed::Speed;
use driver_sim::{LinkConfig, Machine, SocketId, Timestamp, Transmit, World};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// A reusable driver for speed benchmarks of any machine.
pub mod harness {
    use std::time::Duration;

    use driver_sim::speed::{measure, Speed};
    use driver_sim::{Machine, World};

    /// Simulated seconds from the command line: the first argument that is
    /// a number (cargo bench passes flags such as `--bench` too).
    pub fn seconds_from_args(default: u64) -> u64 {
        std::env::args()
            .skip(1)
            .find_map(|a| a.parse().ok())
            .unwrap_or(default)
    }

    /// Builds a world with `build`, lets it settle for one simulated second
    /// (so start-up is not measured), then measures `simulated` more and
    /// prints the result under `label`.
    pub fn run<M: Machine>(
        label: &str,
        simulated: Duration,
        tracing: bool,
        build: impl FnOnce() -> World<M>,
    ) -> Speed {
        let mut world = build();
        world.set_tracing(tracing);
        world.run_for(Duration::from_secs(1));
        let speed = measure(&mut world, simulated);
        // Keep the optimiser honest and show that the run did something.
        let stats = world.stats();
        println!(
            "{label}: {speed}\n    (sent {}, delivered {}, dropped {}, trace {} bytes)",
            stats.sent,
            stats.delivered,
            stats.dropped.total(),
            world.trace().len()
        );
        speed
    }
}

const HOSTS: usize = 100;
const PERIOD_US: u64 = 10_000;

/// Every ~10 ms sends a datagram to a random other host; answers every
/// datagram it receives that is not itself an answer.
struct Chatter {
    rng: ChaCha20Rng,
    peers: Vec<SocketAddr>,
    next: Timestamp,
    out: VecDeque<Transmit>,
}

impl Chatter {
    fn new(seed: [u8; 32], peers: Vec<SocketAddr>) -> Self {
        let mut rng = ChaCha20Rng::from_seed(seed);
        // Spread the hosts over the first period so they do not all fire
        // at once.
        let next = Timestamp::from_micros(rng.next_u64() % PERIOD_US);
        Chatter {
            rng,
            peers,
            next,
            out: VecDeque::new(),
        }
    }
}

impl Machine for Chatter {
    type Event = Infallible;

    fn handle_datagram(
        &mut self,
        _now: Timestamp,
        _socket: SocketId,
        from: SocketAddr,
        payload: &[u8],
    ) {
        if payload.first() != Some(&b'?') {
            return;
        }
        let mut answer = payload.to_vec();
        answer[0] = b'!';
        self.out
            .push_back(Transmit::new(SocketId::PRIMARY, from, answer));
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        if now < self.next {
            return;
        }
        let peer = self.peers[(self.rng.next_u32() as usize) % self.peers.len()];
        let mut payload = vec![0u8; 200];
        payload[0] = b'?';
        self.out
            .push_back(Transmit::new(SocketId::PRIMARY, peer, payload));
        let wobble = self.rng.next_u64() % 2_000;
        self.next = now + Duration::from_micros(PERIOD_US - 1_000 + wobble);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    fn poll_event(&mut self) -> Option<Infallible> {
        None
    }

    fn poll_timeout(&mut self) -> Option<(Timestamp, &'static str)> {
        Some((self.next, "chat"))
    }

    fn describe(payload: &[u8]) -> String {
        match payload.first() {
            Some(b'?') => "question".to_owned(),
            _ => "answer".to_owned(),
        }
    }
}

fn chatter_world() -> World<Chatter> {
    let mut world = World::new(0x5eed);
    let addrs: Vec<SocketAddr> = (0..HOSTS)
        .map(|i| {
            let octet = u8::try_from(i + 1).expect("fewer than 255 hosts");
            SocketAddr::from((Ipv4Addr::new(198, 51, 100, octet), 4000))
        })
        .collect();
    for (i, &addr) in addrs.iter().enumerate() {
        let peers: Vec<SocketAddr> = addrs.iter().copied().filter(|&a| a != addr).collect();
        let id = world.add_host(&format!("h{i:03}"), addr, |seed| Chatter::new(seed, peers));
        world.set_link(
            id,
            LinkConfig {
                jitter: Duration::from_millis(2),
                loss_ppm: 10_000,
                ..LinkConfig::default()
            },
        );
    }
    world
}

/// 100 real Pilot agents and a rendezvous: every agent sends a 200-byte
/// datagram to a random other agent every 100 ms, over the same lossy links
/// as the toy chatter. The first window includes the lookups and
/// handshakes of ~4950 agent pairs (X25519 and Ed25519 dominate); the
/// second is steady state. Returns both.
fn pilot_run(simulated: Duration) -> (Speed, Speed) {
    use driver_sim::pilot::Scenario;
    use pilot_proto::addr::SocketAddress;

    let mut s = Scenario::new(0x5eed);
    let ids: Vec<_> = (0..HOSTS)
        .map(|i| {
            let addr = format!("198.51.100.{}:4000", i + 1);
            s.add_node(&format!("agent{i:03}"), &addr, |_| {})
        })
        .collect();
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(
            id,
            LinkConfig {
                jitter: Duration::from_millis(2),
                loss_ppm: 10_000,
                ..LinkConfig::default()
            },
        );
    }
    s.world.set_tracing(false);
    s.run_until_registered(&ids, Duration::from_secs(60))
        .expect("agents register");
    let addrs: Vec<_> = ids
        .iter()
        .map(|id| s.node(*id).address().expect("registered"))
        .collect();
    for id in &ids {
        s.world
            .with_host(*id, |h, _| h.node_mut().bind(9))
            .expect("port free");
    }
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let mut window = |label: &str| {
        let steps_before = s.world.stats().steps;
        let start = std::time::Instant::now();
        let ticks = simulated.as_millis() / 100;
        for _ in 0..ticks {
            for (i, id) in ids.iter().enumerate() {
                let mut to = (rng.next_u32() as usize) % HOSTS;
                if to == i {
                    to = (to + 1) % HOSTS;
                }
                let dst = SocketAddress::new(addrs[to], 9);
                // Queue-full refusals under loss are part of the workload.
                let _ = s.world.with_host(*id, |h, now| {
                    h.node_mut().send_datagram(now, 9, dst, &[0xAB; 200])
                });
            }
            s.world.run_for(Duration::from_millis(100));
        }
        let speed = Speed {
            steps: s.world.stats().steps - steps_before,
            simulated,
            wall: start.elapsed(),
        };
        let delivered: u64 = ids.iter().map(|id| s.node(*id).stats().delivered).sum();
        let handshakes: u64 = ids
            .iter()
            .map(|id| s.node(*id).stats().handshakes_completed)
            .sum();
        println!(
        "pilot agents, {label}: {speed}\n    (so far: {} datagrams sent by the application, {delivered} delivered, {handshakes} handshakes)",
        ticks as usize * HOSTS
    );
        speed
    };
    let first = window("first window");
    let steady = window("steady state");
    (first, steady)
}

fn main() {
    let secs = harness::seconds_from_args(10);
    let simulated = Duration::from_secs(secs);
    println!("{HOSTS} chatting hosts, {secs} simulated seconds");
    let baseline: Speed = harness::run("trace off", simulated, false, chatter_world);
    let traced = harness::run("trace on ", simulated, true, chatter_world);
    println!(
        "trace on runs at {:.2}x the speed of trace off",
        traced.steps_per_second() / baseline.steps_per_second()
    );
    let (first, steady) = pilot_run(simulated);
    for (label, speed) in [("first window", first), ("steady state", steady)] {
        println!(
            "pilot agents, {label}: {:.0} simulated events/s, {:.3}x the toy chatter's rate (trace off)",
            speed.steps_per_second(),
            speed.steps_per_second() / baseline.steps_per_second()
        );
    }
}
