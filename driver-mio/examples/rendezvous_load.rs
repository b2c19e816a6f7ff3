//! Registers many agents with a running `pilot-rendezvous`, in batches,
//! and prints how long it took; for measuring the server (its RSS in
//! /proc/PID/status, its CPU time) under a known load.
//!
//! ```text
//! cargo run --release -p driver-mio --example rendezvous_load -- ADDR PUBLIC_KEY N [BATCH]
//! ```
//!
//! Each agent is the real `Node` with its own UDP socket on 127.0.0.1, a
//! random identity and a hostname `load-XXXXXXXX-N` (unique per run).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use driver_mio::clock::Clock;
use driver_mio::seed::os_seed;
use pilot_proto::addr::Hostname;
use pilot_proto::identity::parse_public_key;
use pilot_proto::node::{Node, NodeConfig};
use pilot_proto::Identity;

struct Agent {
    node: Node,
    socket: UdpSocket,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: rendezvous_load ADDR PUBLIC_KEY N [BATCH]".into());
    }
    let rv: SocketAddr = args[1].parse()?;
    let key = parse_public_key(&args[2]).ok_or("PUBLIC_KEY: 64 hex digits")?;
    let n: usize = args[3].parse()?;
    let batch: usize = args.get(4).map(|b| b.parse()).transpose()?.unwrap_or(200);
    let clock = Clock::new();
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        let count = batch.min(n - done);
        let mut agents = Vec::with_capacity(count);
        for i in 0..count {
            let identity = Identity::from_seed(&os_seed()?);
            // Unique across runs against the same registry: a taken
            // hostname is refused (and retried only after a long wait).
            let tag = identity.public().fingerprint().0;
            let name = format!(
                "load-{:02x}{:02x}{:02x}{:02x}-{}",
                tag[0],
                tag[1],
                tag[2],
                tag[3],
                done + i
            );
            let mut config = NodeConfig::new(identity, key, rv);
            config.hostname = Hostname::new(&name).ok();
            config.wall_origin_micros = clock.wall_origin_micros();
            let node = Node::new(config, &os_seed()?, clock.now());
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.set_nonblocking(true)?;
            agents.push(Agent { node, socket });
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut buf = [0u8; 2048];
        while !agents.iter().all(|a| a.node.is_registered()) {
            if Instant::now() > deadline {
                return Err("agents did not register within 60 s".into());
            }
            let mut idle = true;
            for a in agents.iter_mut() {
                while let Ok((len, from)) = a.socket.recv_from(&mut buf) {
                    idle = false;
                    a.node.handle_datagram(
                        clock.now(),
                        pilot_proto::SocketId::PRIMARY,
                        from,
                        &buf[..len],
                    );
                }
                let now = clock.now();
                if a.node.poll_timeout().is_some_and(|(at, _)| at <= now) {
                    a.node.handle_timeout(now);
                }
                while let Some(t) = a.node.poll_transmit() {
                    let _ = a.socket.send_to(&t.payload, t.destination);
                }
                while a.node.poll_event().is_some() {}
            }
            if idle {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        done += count;
        eprintln!(
            "{done} registered, {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{n} agents registered in {secs:.2} s ({:.0} registrations/s)",
        n as f64 / secs
    );
    Ok(())
}
