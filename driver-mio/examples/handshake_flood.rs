//! The handshake flood of issue 10 (items 1 and 2) against a running
//! `pilot-rendezvous` on loopback, with figures: the server's RSS before,
//! at the end of the flood and 15 s later, and how long a legitimate agent
//! takes to register in the middle of the flood.
//!
//! ```text
//! cargo run --release -p driver-mio --example handshake_flood -- ADDR PUBLIC_KEY PID [RATE] [SECONDS]
//! ```
//!
//! Every handshake comes from a fresh identity: the simulator's own
//! flooder (`driver_sim::flood::Flooder`, the one the flood tests use),
//! driven here over one real UDP socket on 127.0.0.1; cookie replies and
//! responses are answered, so each handshake completes if the server lets
//! it. The
//! legitimate agent sends from 127.0.0.2, another source for the server's
//! per-source limit. Only loopback: ADDR must be a 127.0.0.0/8 address.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use driver_mio::clock::Clock;
use driver_mio::seed::os_seed;
use driver_sim::flood::Flooder;
use pilot_proto::identity::parse_public_key;
use pilot_proto::node::{Node, NodeConfig};
use pilot_proto::{Identity, SocketId, Timestamp};

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: handshake_flood ADDR PUBLIC_KEY PID [RATE] [SECONDS]".into());
    }
    let target: SocketAddr = args[1].parse()?;
    if !target.ip().is_loopback() {
        return Err("ADDR must be a loopback address".into());
    }
    let key = parse_public_key(&args[2]).ok_or("PUBLIC_KEY: 64 hex digits")?;
    let pid: u32 = args[3].parse()?;
    let rate: u64 = args.get(4).map(|r| r.parse()).transpose()?.unwrap_or(2000);
    let seconds: u64 = args.get(5).map(|s| s.parse()).transpose()?.unwrap_or(30);
    let clock = Clock::new();
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_nonblocking(true)?;
    let target_key = key.x25519().map_err(|_| "not a valid key")?;
    let until = Timestamp::from_micros(clock.now().as_micros() + seconds * 1_000_000);
    let rate = u32::try_from(rate).map_err(|_| "RATE too large")?;
    let mut flood = Flooder::new(
        os_seed()?,
        vec![(target, target_key)],
        rate,
        clock.now(),
        until,
    );
    let before = rss_kib(pid).ok_or("no such process")?;
    println!("rendezvous RSS before: {before} KiB");
    let start = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut legit: Option<(Instant, Node, UdpSocket)> = None;
    let mut legit_done: VecDeque<Duration> = VecDeque::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            flood.handle_datagram(clock.now(), SocketId::PRIMARY, from, &buf[..len]);
        }
        flood.handle_timeout(clock.now());
        while let Some(t) = flood.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination);
        }
        // Halfway through, a legitimate agent registers.
        if legit.is_none()
            && legit_done.is_empty()
            && start.elapsed() >= Duration::from_secs(seconds / 2)
        {
            let mut config = NodeConfig::new(Identity::from_seed(&os_seed()?), key, target);
            config.wall_origin_micros = clock.wall_origin_micros();
            let node = Node::new(config, &os_seed()?, clock.now());
            // Another host as far as per-source limits go: on loopback
            // every 127/8 address is ours.
            let s = UdpSocket::bind("127.0.0.2:0")?;
            s.set_nonblocking(true)?;
            legit = Some((Instant::now(), node, s));
        }
        if let Some((at, node, s)) = legit.as_mut() {
            while let Ok((len, from)) = s.recv_from(&mut buf) {
                node.handle_datagram(clock.now(), SocketId::PRIMARY, from, &buf[..len]);
            }
            let now = clock.now();
            if node.poll_timeout().is_some_and(|(t, _)| t <= now) {
                node.handle_timeout(now);
            }
            while let Some(t) = node.poll_transmit() {
                let _ = s.send_to(&t.payload, t.destination);
            }
            while node.poll_event().is_some() {}
            if node.is_registered() {
                legit_done.push_back(at.elapsed());
                legit = None;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let end = rss_kib(pid).ok_or("the rendezvous exited")?;
    println!(
        "{} handshakes from fresh identities in {seconds} s",
        flood.started
    );
    match legit_done.front() {
        Some(d) => println!(
            "a legitimate agent registered in {} ms under flood",
            d.as_millis()
        ),
        None => println!("a legitimate agent did not register during the flood"),
    }
    println!("rendezvous RSS at the end of the flood: {end} KiB");
    std::thread::sleep(Duration::from_secs(15));
    let later = rss_kib(pid).ok_or("the rendezvous exited")?;
    println!("rendezvous RSS 15 s later: {later} KiB");
    Ok(())
}
