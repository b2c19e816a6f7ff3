//! Daemons on loopback, measured next to baselines from the same run:
//!
//! 1. stream throughput daemon to daemon through the IPC client, against
//!    kernel TCP over 127.0.0.1;
//! 2. round trip of a small echo through both daemons, against a plain UDP
//!    echo;
//! 3. resident memory of an idle daemon and rendezvous.
//!
//! `cargo bench -p pilotctl --bench daemon` (`PILOT_BENCH_QUICK=1` for a
//! short run). It starts its own rendezvous and daemons in a temporary
//! directory and stops them at the end.

mod common;
#[path = "../tests/common/mod.rs"]
mod net;

use std::time::{Duration, Instant};

use common::{kernel_tcp, median, udp_echo, T};
use driver_mio::ipc::api::{Event, Request};
use net::Net;

fn rss_kib(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let quick = std::env::var_os("PILOT_BENCH_QUICK").is_some();
    let mut net = Net::new();
    let mut pids = Vec::new();
    for name in ["alice", "bob"] {
        pids.push(net.start(name, &[])["pid"].as_u64().unwrap_or(0));
    }
    std::thread::sleep(Duration::from_millis(300));
    println!("3. resident memory (VmRSS)");
    println!("   idle daemon:     {:>7} KiB", rss_kib(pids[0]));
    println!(
        "   idle rendezvous: {:>7} KiB (2 agents registered)",
        rss_kib(net.rv_pid)
    );

    net.trust("alice", "bob");
    let mut alice = net.client("alice");
    let mut bob = net.client("bob");

    // 1. Throughput: alice writes, bob's application reads and discards.
    let mib = if quick { 16 } else { 128 };
    let total = mib << 20;
    bob.request(Request::Listen { port: 5000 }, T)
        .expect("listen");
    let v = alice
        .request(
            Request::Connect {
                peer: "bob".into(),
                port: 5000,
            },
            T,
        )
        .expect("connect");
    let tx = v["stream"].as_u64().expect("stream") as u32;
    let rx = loop {
        if let Ok(Some(Event::Incoming { stream, .. })) = bob.next_event(T) {
            break stream;
        }
    };
    let chunk = vec![0x42u8; 256 * 1024];
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        while let Ok(Some(bytes)) = bob.read_stream(rx, T) {
            got += bytes.len();
            if got >= total {
                break;
            }
        }
        (got, Instant::now())
    });
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        alice.write_stream(tx, &chunk).expect("write");
        sent += chunk.len();
    }
    let (got, end) = reader.join().expect("reader");
    let pilot = end.duration_since(start);
    let tcp = kernel_tcp(total);
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    println!("1. stream throughput on loopback, {mib} MiB");
    println!(
        "   daemon to daemon via IPC: {:>8.1} MiB/s ({got} bytes in {:.2} s)",
        rate(pilot),
        pilot.as_secs_f64()
    );
    println!("   baseline kernel TCP:      {:>8.1} MiB/s", rate(tcp));
    println!(
        "   Pilot = {:.1} % of kernel TCP",
        100.0 * tcp.as_secs_f64() / pilot.as_secs_f64()
    );

    // 2. Round trip of 64 bytes through bob's echo service.
    let mut alice = net.client("alice");
    let v = alice
        .request(
            Request::Connect {
                peer: "bob".into(),
                port: 7,
            },
            T,
        )
        .expect("connect echo");
    let echo = v["stream"].as_u64().expect("stream") as u32;
    let n = if quick { 200 } else { 1000 };
    let msg = [7u8; 64];
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        alice.write_stream(echo, &msg).expect("write");
        let mut got = 0;
        while got < msg.len() {
            got += alice
                .read_stream(echo, T)
                .expect("read")
                .expect("open")
                .len();
        }
        rtts.push(t.elapsed());
    }
    let udp = udp_echo(n, Duration::ZERO);
    println!("2. round trip of 64 B, median of {n}");
    println!(
        "   through both daemons (stream echo): {:>8.1} µs",
        median(rtts).as_secs_f64() * 1e6
    );
    println!(
        "   baseline plain UDP echo:            {:>8.1} µs",
        median(udp).as_secs_f64() * 1e6
    );
    drop(net);
}
