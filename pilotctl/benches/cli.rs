//! The built `pilotctl` as a user runs it, through real daemons on
//! loopback, next to baselines measured in the same run:
//!
//! 1. `pilotctl bench` (stream echo through the peer's echo service) for
//!    1 MiB, 64 MiB and 1 GiB, against kernel TCP over 127.0.0.1 doing the
//!    same echo;
//! 2. `pilotctl ping --count 50` median round trip, against a plain UDP
//!    echo (and the handshake RTT `pilotctl peers` reports);
//! 3. cold start: `pilotctl daemon start` until it answers with a
//!    registered address, and `handshake` + `approve` until the first
//!    datagram echoes through the new trust, against the cost of running
//!    `pilotctl --version`.
//!
//! `cargo bench -p pilotctl --bench cli` (`PILOT_BENCH_QUICK=1` for a
//! short run: no 1 GiB, fewer samples; `PILOT_BENCH_ONLY=cold,bench,ping`
//! for some parts only).

mod common;
#[path = "../tests/common/mod.rs"]
mod net;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{kernel_tcp_echo, median, ms, udp_echo, T};
use driver_mio::client::Client;
use driver_mio::ipc::api::Event;
use net::{Net, PILOTCTL};
use serde_json::Value;

/// `pilotctl args --json` as agent `name`: the answer's data.
fn ctl(net: &Net, name: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    net.ctl(name, &args).data()
}

fn main() {
    let quick = std::env::var_os("PILOT_BENCH_QUICK").is_some();
    let only = std::env::var("PILOT_BENCH_ONLY").ok();
    let part = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|p| p == name))
    };
    let floor = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let out = Command::new(PILOTCTL).arg("--version").output();
                assert!(out.is_ok_and(|o| o.status.success()));
                t.elapsed()
            })
            .collect(),
    );
    let mut net = Net::new();
    if part("cold") {
        cold_start(&mut net, if quick { 3 } else { 5 }, floor);
    }

    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("alice", "bob");
    if part("bench") {
        throughput(&net, quick);
    }
    if part("ping") {
        round_trips(&net, quick);
    }
}

/// `pilotctl bench` against the same echo over kernel TCP.
fn throughput(net: &Net, quick: bool) {
    let mut sizes = vec![("1M", 1usize << 20, 5), ("64M", 64 << 20, 3)];
    if !quick {
        sizes.push(("1G", 1 << 30, 1));
    }
    println!("1. `pilotctl bench` (echo through the peer's echo service) vs kernel TCP echo");
    for (arg, size, reps) in sizes {
        let mut rates = Vec::new();
        let mut walls = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let v = ctl(net, "alice", &["bench", "bob", arg]);
            walls.push(t.elapsed());
            rates.push(Duration::from_secs_f64(v["seconds"].as_f64().unwrap()));
        }
        let pilot = median(rates);
        let tcp = median((0..reps).map(|_| kernel_tcp_echo(size)).collect());
        let rate = |d: Duration| size as f64 / (1 << 20) as f64 / d.as_secs_f64();
        println!(
            "   {arg:>4}: pilotctl bench {:>8.1} MiB/s ({:.3} s; whole command {:.3} s)  kernel TCP echo {:>8.1} MiB/s  ratio {:.1} %  (median of {reps})",
            rate(pilot),
            pilot.as_secs_f64(),
            median(walls).as_secs_f64(),
            rate(tcp),
            100.0 * tcp.as_secs_f64() / pilot.as_secs_f64()
        );
    }
}

/// `pilotctl ping` and the handshake RTT against plain UDP echoes.
fn round_trips(net: &Net, quick: bool) {
    let count = if quick { 10 } else { 50 };
    let ping = ctl(
        net,
        "alice",
        &["ping", "bob", "--count", &count.to_string()],
    );
    let udp = median(udp_echo(1000, Duration::ZERO));
    // ping paces its echoes 200 ms apart: every hop then wakes an idle
    // process, which the back-to-back baseline never pays.
    let udp_paced = median(udp_echo(count, Duration::from_millis(200)));
    let peers = ctl(net, "alice", &["peers"]);
    // The same datagram echo as ping through an IPC client, back to back.
    let mut c = net.client("alice");
    c.bind(40001).expect("bind");
    let b2b: Vec<Duration> = (0..1000)
        .map(|_| {
            let t = Instant::now();
            c.send_datagram("bob", 7, 40001, &[7u8; 64]).expect("send");
            wait_event(&mut c, |e| matches!(e, Event::Datagram { .. }));
            t.elapsed()
        })
        .collect();
    println!("2. round trips over loopback");
    println!(
        "   `pilotctl ping --count {count}` median: {:>8.1} µs (min {:.1} µs)",
        ping["rtt_ms"]["median"].as_f64().unwrap() * 1e3,
        ping["rtt_ms"]["min"].as_f64().unwrap() * 1e3
    );
    println!(
        "   same datagram echo via IPC, back to back: {:>8.1} µs",
        median(b2b).as_secs_f64() * 1e6
    );
    println!(
        "   handshake RTT (`pilotctl peers`):     {:>8.1} µs",
        peers[0]["rtt_ms"].as_f64().unwrap_or(f64::NAN) * 1e3
    );
    println!(
        "   baseline plain UDP echo median:       {:>8.1} µs back to back, {:.1} µs paced like ping",
        udp.as_secs_f64() * 1e6,
        udp_paced.as_secs_f64() * 1e6
    );
}

/// `reps` fresh pairs of agents: each `daemon start` timed until it
/// answers registered, then the trust handshake and the first echo.
fn cold_start(net: &mut Net, reps: usize, floor: Duration) {
    let (mut starts, mut asked, mut approved, mut first, mut total) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..reps {
        let (a, b) = (format!("cold-a{i}"), format!("cold-b{i}"));
        let mut b_addr = String::new();
        for name in [&a, &b] {
            let t = Instant::now();
            let d = net.start(name, &[]);
            starts.push(t.elapsed());
            assert!(d["address"].as_str().is_some_and(|s| s.contains(':')));
            b_addr = d["address"].as_str().unwrap_or_default().to_string();
        }
        let mut ca = net.client(&a);
        let mut cb = net.client(&b);
        ca.bind(40000).expect("bind");
        let t0 = Instant::now();
        // b is private: named by address (its hostname names nobody yet).
        ctl(net, &a, &["handshake", &b_addr]);
        wait_event(&mut cb, |e| matches!(e, Event::TrustRequested { .. }));
        let t1 = Instant::now();
        ctl(net, &b, &["approve", &a]);
        wait_event(&mut ca, |e| matches!(e, Event::Trusted { .. }));
        let t2 = Instant::now();
        ca.send_datagram(&b, 7, 40000, b"first").expect("send");
        wait_event(&mut ca, |e| matches!(e, Event::Datagram { .. }));
        let t3 = Instant::now();
        asked.push(t1 - t0);
        approved.push(t2 - t1);
        first.push(t3 - t2);
        total.push(t3 - t0);
        net.stop(&a);
        net.stop(&b);
    }
    println!("3. cold start (median of {})", starts.len());
    println!(
        "   `pilotctl daemon start` until registered:    {:>7.1} ms",
        ms(median(starts))
    );
    println!(
        "   `handshake` + `approve` to the first echo:   {:>7.1} ms (median of {reps})",
        ms(median(total))
    );
    println!(
        "     handshake until the request is pending:    {:>7.1} ms",
        ms(median(asked))
    );
    println!(
        "     approve until the requester trusts:        {:>7.1} ms",
        ms(median(approved))
    );
    println!(
        "     first datagram echoed (new session):       {:>7.1} ms",
        ms(median(first))
    );
    println!(
        "   baseline `pilotctl --version` (process cost): {:>7.1} ms",
        ms(floor)
    );
}

fn wait_event(c: &mut Client, want: impl Fn(&Event) -> bool) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if let Ok(Some(e)) = c.next_event(deadline - Instant::now()) {
            if want(&e) {
                return;
            }
        }
    }
    panic!("event not seen in time");
}
