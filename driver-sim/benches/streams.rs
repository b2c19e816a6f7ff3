//! Stream benchmarks with the real core, each figure next to a baseline
//! from the same run:
//!
//! 1. throughput between two nodes in one process (no simulated latency),
//!    against the bare seal+open ceiling of the same packets;
//! 2. goodput at 50 ms RTT over 20 Mbit/s links with 0 % and 1 % loss, as
//!    a fraction of the link rate, with Reno and with CUBIC;
//! 3. trust handshake to first stream byte, in round trips.
//!
//! `cargo bench -p driver-sim --bench streams` (`PILOT_BENCH_QUICK=1` for a
//! short run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::{HostId, LinkConfig};
use pilot_proto::addr::SocketAddress;
use pilot_proto::msg::Query;
use pilot_proto::node::{Event, NodeConfig};
use pilot_proto::noise::Split;
use pilot_proto::session::{Session, SessionLimits};
use pilot_proto::stream::{Congestion, StreamEvent};
use pilot_proto::{wire, Timestamp};

fn quick() -> bool {
    std::env::var_os("PILOT_BENCH_QUICK").is_some()
}

fn pair(
    seed: u64,
    link: LinkConfig,
    configure: impl Fn(&mut NodeConfig),
) -> (Scenario, HostId, HostId) {
    let mut s = Scenario::new(seed);
    let a = s.add_node("alice", "198.51.100.10:4000", &configure);
    let b = s.add_node("bob", "203.0.113.20:4000", &configure);
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(id, link.clone());
    }
    s.world.set_tracing(false);
    s.run_until_registered(&[a, b], Duration::from_secs(60))
        .expect("register");
    s.trust(a, b, Duration::from_secs(60)).expect("trust");
    (s, a, b)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// Seal and open `packets` packets of `size` plaintext bytes through a
/// session pair: what the tunnel alone costs for the same traffic.
fn seal_open_ceiling(packets: usize, size: usize) -> Duration {
    let split = Split {
        initiator_to_responder: [1; 32],
        responder_to_initiator: [2; 32],
        handshake_hash: [3; 32],
    };
    let limits = SessionLimits::default();
    let mut a = Session::new(&split, true, 1, 2, Timestamp::ZERO, limits);
    let mut b = Session::new(&split, false, 2, 1, Timestamp::ZERO, limits);
    let plain = vec![0x5a; size];
    let mut sealed = Vec::with_capacity(size + 64);
    let mut opened = Vec::with_capacity(size + 64);
    let start = Instant::now();
    for _ in 0..packets {
        sealed.clear();
        opened.clear();
        a.seal(Timestamp::ZERO, &plain, &mut sealed).expect("seal");
        if let Ok(wire::Packet::Transport {
            counter,
            ciphertext,
            ..
        }) = wire::decode(&sealed)
        {
            b.open(Timestamp::ZERO, counter, ciphertext, &mut opened)
                .expect("open");
        }
        black_box(&opened);
    }
    start.elapsed()
}

fn in_process() {
    let mib = if quick() { 16 } else { 64 };
    let data = payload(mib << 20);
    let zero = LinkConfig {
        latency: Duration::ZERO,
        ..LinkConfig::default()
    };
    let (mut s, a, b) = pair(1, zero, |_| {});
    let sent_before = s.node(a).stats().datagrams_out + s.node(b).stats().datagrams_out;
    let start = Instant::now();
    let (got, _) = s
        .transfer(a, b, 5000, &data, Duration::from_secs(3600))
        .expect("transfer");
    let wall = start.elapsed();
    assert_eq!(got.len(), data.len());
    let packets =
        (s.node(a).stats().datagrams_out + s.node(b).stats().datagrams_out - sent_before) as usize;
    // The same number of packets, at the overlay MTU plus the message kind.
    let ceiling = seal_open_ceiling(packets, pilot_proto::overlay::OVERLAY_MTU + 1);
    let rate = |d: Duration| (mib as f64) / d.as_secs_f64();
    println!("1. stream throughput, two nodes in one process, no latency ({mib} MiB)");
    println!(
        "   nodes (streams, tunnels, simulator): {:>8.1} MiB/s  ({} datagrams both ways, {:.3} s)",
        rate(wall),
        packets,
        wall.as_secs_f64()
    );
    println!(
        "   baseline: seal+open of {packets} packets of {} B: {:>8.1} MiB/s of stream payload ({:.3} s)",
        pilot_proto::overlay::OVERLAY_MTU + 1,
        rate(ceiling),
        ceiling.as_secs_f64()
    );
    println!(
        "   nodes reach {:.0} % of the crypto ceiling",
        100.0 * ceiling.as_secs_f64() / wall.as_secs_f64()
    );
}

fn goodput() {
    let mib = if quick() { 4 } else { 16 };
    let rate_bps = 20_000_000u64;
    let data = payload(mib << 20);
    println!(
        "2. goodput at 50 ms RTT over {} Mbit/s links ({mib} MiB each)",
        rate_bps / 1_000_000
    );
    for cc in [Congestion::Reno, Congestion::Cubic] {
        for loss_ppm in [0u32, 10_000] {
            let link = LinkConfig {
                latency: Duration::from_micros(12_500),
                bandwidth_bps: Some(rate_bps),
                ..LinkConfig::default()
            };
            let (mut s, a, b) = pair(2, link.clone(), |c| c.streams.congestion = cc);
            // Loss on alice's link hits data and ACKs alike.
            s.world.set_link(a, LinkConfig { loss_ppm, ..link });
            let (got, took) = s
                .transfer(a, b, 5000, &data, Duration::from_secs(24 * 3600))
                .expect("transfer");
            assert_eq!(got.len(), data.len());
            let bps = got.len() as f64 * 8.0 / took.as_secs_f64();
            println!(
                "   {:<5} loss {:>2} %: {:>6.2} Mbit/s = {:>5.1} % of the link rate ({:.1} s simulated)",
                format!("{cc:?}"),
                loss_ppm / 10_000,
                bps / 1e6,
                100.0 * bps / rate_bps as f64,
                took.as_secs_f64()
            );
        }
    }
}

fn first_byte() {
    let link = LinkConfig {
        latency: Duration::from_millis(10),
        ..LinkConfig::default()
    };
    // Every pair of hosts is 2 links apart: RTT 40 ms.
    let rtt = Duration::from_millis(40);
    let mut s = Scenario::new(3);
    let a = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let b = s.add_node("bob", "203.0.113.20:4000", |c| c.auto_approve = true);
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(id, link.clone());
    }
    s.run_until_registered(&[a, b], Duration::from_secs(60))
        .expect("register");
    let bob = s.node(b).address().expect("registered");
    s.world
        .with_host(b, |h, _| h.node_mut().listen(5000))
        .expect("listen");
    let t0 = s.world.now();
    s.world
        .with_host(a, |h, now| {
            h.node_mut().handshake(now, Query::Address(bob), "bench")
        })
        .expect("handshake");
    let has = |s: &Scenario, host: HostId, pred: &dyn Fn(&Event) -> bool| {
        s.world
            .events()
            .iter()
            .any(|(_, h, e)| *h == host && matches!(e, HostEvent::Node(n) if pred(n)))
    };
    s.world
        .run_until(
            |w| w.host(a).node().trusted().count() == 1,
            Duration::from_secs(10),
        )
        .expect("trusted");
    let t_trusted = s.world.now();
    let id = s
        .world
        .with_host(a, |h, now| {
            h.node_mut().connect(now, SocketAddress::new(bob, 5000))
        })
        .expect("connect");
    while !has(&s, a, &|e| {
        matches!(e, Event::Stream(StreamEvent::Connected { .. }))
    }) {
        assert!(s.world.step());
    }
    s.world
        .with_host(a, |h, now| h.node_mut().stream_write(now, id, b"!"))
        .expect("write");
    while !has(&s, b, &|e| {
        matches!(e, Event::Stream(StreamEvent::Readable { .. }))
    }) {
        assert!(s.world.step());
    }
    let t1 = s.world.now();
    let rtts = |d: Duration| d.as_secs_f64() / rtt.as_secs_f64();
    println!(
        "3. trust handshake to first stream byte (RTT {} ms between any two hosts)",
        rtt.as_millis()
    );
    println!(
        "   handshake -> trusted: {:.2} RTT; trusted -> first byte read by bob: {:.2} RTT; total {:.2} RTT ({} ms)",
        rtts(t_trusted.saturating_since(t0)),
        rtts(t1.saturating_since(t_trusted)),
        rtts(t1.saturating_since(t0)),
        t1.saturating_since(t0).as_millis()
    );
}

fn main() {
    in_process();
    goodput();
    first_byte();
}
