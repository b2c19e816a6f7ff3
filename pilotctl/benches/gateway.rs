//! The gateway, through real daemons on loopback (rootless mode), next to
//! baselines measured in the same run:
//!
//! 1. a 1 GiB download through the gateway, against `pilotctl bench 1G`
//!    (stream echo through both daemons) and kernel TCP over 127.0.0.1;
//! 2. time to first byte of a small page through the gateway, against the
//!    same fetch straight from the server;
//! 3. small pages per second with 100 concurrent clients (a connection per
//!    request, as curl does), through the gateway and straight.
//!
//! `cargo bench -p pilotctl --bench gateway` (`PILOT_BENCH_QUICK=1`: 64 MiB
//! instead of 1 GiB, fewer requests).

mod common;
#[path = "../tests/common/mod.rs"]
mod net;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::{kernel_tcp, median, ms};
use net::Net;

const PAGE: &[u8] = b"<!doctype html><title>alice</title><h1>hello</h1>\n";

/// A tiny HTTP server on 127.0.0.1: `GET /big` streams `big` bytes, any
/// other path gets PAGE; a thread per connection.
fn serve(big: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            std::thread::spawn(move || {
                let _ = c.set_nodelay(true);
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.starts_with(b"GET /big ") {
                    let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {big}\r\n\r\n");
                    let _ = c.write_all(head.as_bytes());
                    let chunk = vec![0x5au8; 256 * 1024];
                    let mut sent = 0;
                    while sent < big {
                        let n = (big - sent).min(chunk.len());
                        if c.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        sent += n;
                    }
                } else {
                    let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", PAGE.len());
                    let _ = c.write_all(head.as_bytes());
                    let _ = c.write_all(PAGE);
                }
            });
        }
    });
    port
}

/// GETs `path` from `addr`: time to the first byte, time to the end, and
/// the bytes received.
fn get(addr: &str, path: &str) -> (Duration, Duration, usize) {
    let t = Instant::now();
    let mut c = TcpStream::connect(addr).expect("connect");
    let _ = c.set_nodelay(true);
    c.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("write");
    let mut buf = vec![0u8; 256 * 1024];
    let mut first = None;
    let mut got = 0;
    loop {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                first.get_or_insert_with(|| t.elapsed());
                got += n;
            }
            Err(e) => panic!("GET {addr}{path}: {e}"),
        }
    }
    (first.unwrap_or_default(), t.elapsed(), got)
}

/// Small pages per second with `clients` threads doing `each` requests.
fn rate(addr: &str, clients: usize, each: usize) -> f64 {
    let t = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let addr = addr.to_string();
            std::thread::spawn(move || {
                for _ in 0..each {
                    let (_, _, n) = get(&addr, "/");
                    assert!(n > PAGE.len(), "a short page");
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("client");
    }
    (clients * each) as f64 / t.elapsed().as_secs_f64()
}

fn mib_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let quick = std::env::var_os("PILOT_BENCH_QUICK").is_some();
    let big = if quick { 64 << 20 } else { 1 << 30 };
    let mut net = Net::new();
    net.start("alice", &[]);
    net.start("bob", &[]);
    net.trust("bob", "alice");
    let port = serve(big);
    let p = port.to_string();
    net.ctl(
        "bob",
        &[
            "gateway",
            "start",
            "--subnet",
            "127.77.0.0/16",
            "--ports",
            &p,
            "alice",
            "--json",
        ],
    )
    .data();
    let through = format!("127.77.0.1:{port}");
    let straight = format!("127.0.0.1:{port}");

    // 1. Download.
    let (_, took, got) = get(&through, "/big");
    assert!(got >= big, "short download: {got}");
    let kernel = kernel_tcp(big);
    let size = if quick { "64M" } else { "1G" };
    let bench = net.ctl("bob", &["bench", "alice", size, "--json"]).data();
    println!(
        "download {} MiB through the gateway: {:.1} MiB/s | pilotctl bench {size} (echo): {} MiB/s | kernel TCP over 127.0.0.1: {:.1} MiB/s",
        big >> 20,
        mib_s(got, took),
        bench["rate_mib_s"]
            .as_f64()
            .map_or_else(|| bench.to_string(), |v| format!("{v:.1}")),
        mib_s(big, kernel),
    );

    // 2. Time to first byte, small page (after a warm-up each).
    let n = if quick { 20 } else { 100 };
    get(&through, "/");
    get(&straight, "/");
    let ttfb = |addr: &str| median((0..n).map(|_| get(addr, "/").0).collect());
    let (g, s) = (ttfb(&through), ttfb(&straight));
    println!(
        "time to first byte, small page (median of {n}): through the gateway {:.3} ms | straight to the server {:.3} ms",
        ms(g),
        ms(s)
    );

    // 3. Requests per second, 100 concurrent clients.
    let each = if quick { 5 } else { 20 };
    let (g, s) = (rate(&through, 100, each), rate(&straight, 100, each));
    println!(
        "small pages, 100 concurrent clients x {each}: through the gateway {g:.0} req/s | straight to the server {s:.0} req/s"
    );
}
