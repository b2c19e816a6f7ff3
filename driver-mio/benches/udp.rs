//! Loopback UDP throughput of `UdpEndpoint`: 1200-byte datagrams queued
//! and flushed in rounds of 128, then read back in budgets of 64, on the
//! batched path (`sendmmsg`/`recvmmsg` on Linux) and on the forced
//! one-datagram-per-call fallback, in the same run. One thread does both
//! sides, so the figures are system-call cost, not a contest between
//! cores. Run with `cargo bench -p driver-mio --bench udp`.

use std::time::{Duration, Instant};

use driver_mio::proto::Transmit;
use driver_mio::udp::{UdpEndpoint, UdpStats};
use mio::{Events, Poll, Token};

const SIZE: usize = 1200;
/// Small enough for any receive buffer the kernel grants (~300 KiB).
const ROUND: usize = 128;
const RUN: Duration = Duration::from_millis(1500);

struct Result {
    datagrams: u64,
    lost: u64,
    send: Duration,
    recv: Duration,
    tx: UdpStats,
    rx: UdpStats,
}

fn run(fallback: bool) -> Result {
    let mut poll = Poll::new().unwrap();
    let mut events = Events::with_capacity(8);
    let mut rx = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(1))
        .expect("bind receiver");
    let mut tx = UdpEndpoint::bind("127.0.0.1:0".parse().unwrap(), poll.registry(), Token(2))
        .expect("bind sender");
    if fallback {
        rx.force_fallback();
        tx.force_fallback();
    }
    let to = rx.local_addr();
    let payload = vec![0xa5u8; SIZE];
    let (mut send, mut recv) = (Duration::ZERO, Duration::ZERO);
    let (mut datagrams, mut lost) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < RUN {
        let t = Instant::now();
        for _ in 0..ROUND {
            tx.send_later(Transmit::new(
                pilot_proto::SocketId::PRIMARY,
                to,
                payload.clone(),
            ));
        }
        tx.flush();
        send += t.elapsed();
        assert_eq!(tx.queued(), 0, "loopback never makes a send wait");

        let t = Instant::now();
        let mut got = 0;
        let mut idle = 0;
        while got < ROUND && idle < 3 {
            let n = rx
                .recv_batch(64, |_, d| debug_assert_eq!(d.len(), SIZE))
                .unwrap();
            got += n;
            if n == 0 {
                idle += 1;
                poll.poll(&mut events, Some(Duration::from_millis(20)))
                    .unwrap();
            }
        }
        recv += t.elapsed();
        datagrams += got as u64;
        lost += (ROUND - got) as u64;
    }
    Result {
        datagrams,
        lost,
        send,
        recv,
        tx: tx.stats(),
        rx: rx.stats(),
    }
}

fn main() {
    // Warm up (page faults in the receive slots, caches).
    let _ = run(false);
    let batched = run(false);
    let single = run(true);
    println!("UDP loopback, {SIZE}-byte datagrams, rounds of {ROUND}, {RUN:?} per path");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>11} {:>11} {:>6}",
        "path", "datagrams/s", "send ns/dg", "recv ns/dg", "send calls", "recv calls", "lost"
    );
    for (name, r) in [
        ("batched (sendmmsg/recvmmsg)", &batched),
        ("fallback (sendto/recvfrom)", &single),
    ] {
        let per = |d: Duration| d.as_nanos() as f64 / r.datagrams.max(1) as f64;
        let send_calls = if r.tx.send_batches > 0 {
            r.tx.send_batches
        } else {
            r.tx.datagrams_out
        };
        let recv_calls = if r.rx.recv_batches > 0 {
            r.rx.recv_batches
        } else {
            r.rx.datagrams_in
        };
        println!(
            "{:<28} {:>12.0} {:>12.0} {:>12.0} {:>11} {:>11} {:>6}",
            name,
            r.datagrams as f64 / (r.send + r.recv).as_secs_f64(),
            per(r.send),
            per(r.recv),
            send_calls,
            recv_calls,
            r.lost
        );
    }
    println!(
        "speed-up: {:.2}x (calls counted exclude the final WouldBlock reads)",
        (batched.datagrams as f64 / (batched.send + batched.recv).as_secs_f64())
            / (single.datagrams as f64 / (single.send + single.recv).as_secs_f64())
    );
}
