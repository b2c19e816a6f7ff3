//! Local attacks on a real daemon's IPC socket (issue 10, items 4 and 5),
//! bounded in count and time. Run with `--nocapture` to see the figures:
//!
//! ```sh
//! cargo test -p pilotctl --test ipc_abuse -- --nocapture --test-threads 1
//! ```

mod common;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Net;
use driver_mio::ipc::api::Request;
use driver_mio::ipc::frame;

/// The daemon's resident memory in KiB (VmRSS).
fn rss_kib(net: &Net, name: &str) -> u64 {
    let pid = std::fs::read_to_string(net.home(name).join("daemon.pid")).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn pipelined_requests_from_a_client_that_never_reads_stay_bounded() {
    let mut net = Net::new();
    net.start("alice", &[]);
    let before = rss_kib(&net, "alice");

    // 4 MiB of tiny `info` requests, written as fast as the daemon takes
    // them, never reading an answer; stop once the daemon has stopped
    // reading for a second (or after 20 s).
    let mut batch = Vec::new();
    for id in 1..=4096u32 {
        frame::encode_request(id, &Request::Info, &mut batch).unwrap();
    }
    let mut sock = UnixStream::connect(net.home("alice").join("pilot.sock")).unwrap();
    sock.set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let (mut sent, start) = (0usize, Instant::now());
    while sent < 4 << 20 && start.elapsed() < Duration::from_secs(20) {
        match sock.write(&batch) {
            Ok(n) => sent += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => panic!("the daemon dropped the client: {e}"),
        }
    }
    let during = rss_kib(&net, "alice");
    drop(sock);
    // The daemon still answers (and has let go of the client).
    let mut c = net.client("alice");
    c.info().unwrap();
    let after = rss_kib(&net, "alice");
    println!(
        "pipelined requests: {} KiB written unanswered; daemon VmRSS {before} KiB before, {during} KiB during, {after} KiB after",
        sent >> 10
    );
    // Before the bound: ~0.5 GB for 4 MiB of requests.
    assert!(during < before + (64 << 10), "{before} -> {during} KiB");
}

/// A running alice and 300 connections to her socket that say nothing.
fn alice_with_300_idle_connections() -> (Net, Vec<UnixStream>) {
    let mut net = Net::new();
    net.start("alice", &[]);
    let path = net.home("alice").join("pilot.sock");
    let conns = (0..300)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    (net, conns)
}

#[test]
fn idle_connections_are_refused_with_an_error_frame_beyond_the_limit() {
    let (net, conns) = alice_with_300_idle_connections();
    let blocked = net.ctl("alice", &["info", "--json"]);
    let (mut accepted, mut refused) = (0, 0);
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0; 512];
        match c.read(&mut buf) {
            Ok(n) if n > 0 => refused += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                accepted += 1
            }
            other => panic!("neither an error frame nor silence: {other:?}"),
        }
    }
    let after = net.ctl("alice", &["info", "--json"]);
    println!(
        "300 idle connections: {accepted} accepted, {refused} refused with an error frame; \
         pilotctl info meanwhile: {}; once they closed: {}",
        blocked.json()["message"],
        after.json()["status"]
    );
    assert_eq!(blocked.error_code(), "internal");
    assert_eq!(accepted + refused, 300);
    assert_eq!(after.json()["status"], "ok");
}

/// Issue 10 item 5, to the end: connections that hold nothing open and
/// stay silent are closed after the daemon's idle timeout (60 s), each
/// with an error frame, so `pilotctl` gets in again while the attacker
/// still holds them. (Before: never timed out, locked out for good.)
#[test]
fn idle_connections_time_out_and_pilotctl_gets_in_again() {
    let (net, conns) = alice_with_300_idle_connections();
    let start = Instant::now();
    assert_eq!(
        net.ctl("alice", &["info", "--json"]).error_code(),
        "internal",
        "the connections did not fill the daemon"
    );
    let back = net.wait(120, || {
        std::thread::sleep(Duration::from_secs(1));
        net.ctl("alice", &["info", "--json"]).json()["status"] == "ok"
    });
    let waited = start.elapsed();
    // Every held connection was answered (refused at once, or timed out)
    // and then closed.
    let (mut answered, mut silent) = (0, 0);
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut got = Vec::new();
        match c.read_to_end(&mut got) {
            Ok(_) if !got.is_empty() => answered += 1,
            _ => silent += 1,
        }
    }
    println!(
        "300 idle connections held: pilotctl {} after {:.1} s; \
         {answered} connections answered with an error frame and closed, {silent} not",
        if back {
            "got in again"
        } else {
            "still locked out"
        },
        waited.as_secs_f64()
    );
    assert!(back, "pilotctl still locked out");
    assert_eq!(silent, 0);
}
