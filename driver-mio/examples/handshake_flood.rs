//! The handshake flood of issue 10 (items 1 and 2) against a running
//! `pilot-rendezvous` on loopback, with figures: the server's RSS before,
//! at the end of the flood and 15 s later, and how long a legitimate agent
//! takes to register before the flood (the baseline) and in the middle of
//! it.
//!
//! ```text
//! cargo run --release -p driver-mio --example handshake_flood -- ADDR PUBLIC_KEY PID [RATE] [SECONDS] [DAEMON_ADDR DAEMON_KEY DAEMON_PID]
//! ```
//!
//! With a daemon's UDP address, public key and pid, that daemon is flooded
//! at the same rate too and its RSS printed alongside
//! (`scripts/handshake-flood.sh` has a trusted peer reach it meanwhile).
//!
//! Every handshake comes from a fresh identity: the simulator's own
//! flooder (`driver_sim::flood::Flooder`, the one the flood tests use),
//! driven here over one real UDP socket on 127.0.0.1; cookie replies and
//! responses are answered, so each handshake completes if the server lets
//! it. The
//! legitimate agent sends from 127.0.0.2, another source for the server's
//! per-source limit. Only loopback: ADDR must be a 127.0.0.0/8 address.

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
        return Err(
            "usage: handshake_flood ADDR PUBLIC_KEY PID [RATE] [SECONDS] [DAEMON_ADDR DAEMON_KEY DAEMON_PID]"
                .into(),
        );
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
    let mut targets = vec![(target, target_key)];
    let daemon = match args.get(6..9) {
        Some([addr, key, pid]) => {
            let addr: SocketAddr = addr.parse()?;
            if !addr.ip().is_loopback() {
                return Err("DAEMON_ADDR must be a loopback address".into());
            }
            let key = parse_public_key(key).ok_or("DAEMON_KEY: 64 hex digits")?;
            targets.push((addr, key.x25519().map_err(|_| "not a valid key")?));
            Some(pid.parse::<u32>()?)
        }
        _ if args.len() > 6 => return Err("DAEMON_ADDR DAEMON_KEY DAEMON_PID go together".into()),
        _ => None,
    };
    let mut buf = vec![0u8; 2048];
    // The baseline, in the same run: a legitimate agent registers before
    // the flood.
    let baseline = register_alone(&clock, key, target, &mut buf)?;
    println!(
        "a legitimate agent registered in {} ms without flood",
        baseline.as_millis()
    );
    let until = Timestamp::from_micros(clock.now().as_micros() + seconds * 1_000_000);
    let rate = u32::try_from(rate).map_err(|_| "RATE too large")?;
    let mut flood = Flooder::new(os_seed()?, targets, rate, clock.now(), until);
    let before = rss_kib(pid).ok_or("no such process")?;
    println!("rendezvous RSS before: {before} KiB");
    let daemon_before = daemon
        .map(|d| rss_kib(d).ok_or("no such daemon process"))
        .transpose()?;
    if let Some(b) = daemon_before {
        println!("daemon RSS before: {b} KiB");
    }
    let start = Instant::now();
    // Halfway through, a legitimate agent registers: in a thread of its
    // own, as another host would, not behind the flooder's loop.
    let legit = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(seconds / 2));
        let mut buf = vec![0u8; 2048];
        register_alone(&clock, key, target, &mut buf).map_err(|e| e.to_string())
    });
    while start.elapsed() < Duration::from_secs(seconds) {
        while let Ok((len, from)) = socket.recv_from(&mut buf) {
            flood.handle_datagram(clock.now(), SocketId::PRIMARY, from, &buf[..len]);
        }
        flood.handle_timeout(clock.now());
        while let Some(t) = flood.poll_transmit() {
            let _ = socket.send_to(&t.payload, t.destination);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let end = rss_kib(pid).ok_or("the rendezvous exited")?;
    println!(
        "{} handshakes from fresh identities in {seconds} s",
        flood.started
    );
    match legit.join() {
        Ok(Ok(d)) => println!(
            "a legitimate agent registered in {} ms under flood",
            d.as_millis()
        ),
        Ok(Err(e)) => println!("under flood: {e}"),
        Err(_) => println!("the legitimate agent's thread panicked"),
    }
    println!("rendezvous RSS at the end of the flood: {end} KiB");
    let daemon_end = daemon
        .map(|d| rss_kib(d).ok_or("the daemon exited"))
        .transpose()?;
    if let Some(e) = daemon_end {
        println!("daemon RSS at the end of the flood: {e} KiB");
    }
    std::thread::sleep(Duration::from_secs(15));
    let later = rss_kib(pid).ok_or("the rendezvous exited")?;
    println!("rendezvous RSS 15 s later: {later} KiB");
    if let Some(d) = daemon {
        let later = rss_kib(d).ok_or("the daemon exited")?;
        println!("daemon RSS 15 s later: {later} KiB");
    }
    Ok(())
}

/// A legitimate agent with a fresh identity, sending from 127.0.0.2:
/// another host as far as per-source limits go (on loopback every 127/8
/// address is ours).
fn legitimate(
    clock: &Clock,
    key: pilot_proto::PublicKey,
    target: SocketAddr,
) -> Result<(Node, UdpSocket), Box<dyn std::error::Error>> {
    let mut config = NodeConfig::new(Identity::from_seed(&os_seed()?), key, target);
    config.wall_origin_micros = clock.wall_origin_micros();
    let node = Node::new(config, &os_seed()?, clock.now());
    let s = UdpSocket::bind("127.0.0.2:0")?;
    s.set_nonblocking(true)?;
    Ok((node, s))
}

/// Runs what `node` has to do now over `s`; true once it is registered.
fn step(clock: &Clock, node: &mut Node, s: &UdpSocket, buf: &mut [u8]) -> bool {
    while let Ok((len, from)) = s.recv_from(buf) {
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
    node.is_registered()
}

/// How long a legitimate agent takes to register with nothing else going
/// on.
fn register_alone(
    clock: &Clock,
    key: pilot_proto::PublicKey,
    target: SocketAddr,
    buf: &mut [u8],
) -> Result<Duration, Box<dyn std::error::Error>> {
    let (mut node, s) = legitimate(clock, key, target)?;
    let at = Instant::now();
    while !step(clock, &mut node, &s, buf) {
        if at.elapsed() > Duration::from_secs(30) {
            return Err("a legitimate agent did not register in 30 s".into());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(at.elapsed())
}
