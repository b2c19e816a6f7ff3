//! A tour of Pilot in the simulated network: a rendezvous and two agents
//! register, find each other by hostname, open an encrypted session and
//! exchange datagrams, and the whole thing is printed as a timed trace.
//!
//! `cargo run --release -p driver-sim --example tour [-- SEED]`

use std::time::Duration;

use driver_sim::pilot::{HostEvent, Scenario};
use driver_sim::LinkConfig;
use pilot_proto::addr::{Hostname, SocketAddress};
use pilot_proto::msg::Query;
use pilot_proto::node::Event;

fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut s = Scenario::new(seed);
    let alice = s.add_node("alice", "198.51.100.10:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.20:4000", |_| {});
    // A realistic internet: 20 ms each way to the backbone, some jitter,
    // 1 % loss.
    for id in s.world.host_ids().collect::<Vec<_>>() {
        s.world.set_link(
            id,
            LinkConfig {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(3),
                loss_ppm: 10_000,
                ..LinkConfig::default()
            },
        );
    }
    s.world
        .note("rendezvous 192.0.2.1:9000; alice and bob start and register");
    if let Err(e) = s.run_until_registered(&[alice, bob], Duration::from_secs(60)) {
        eprintln!("{}\nregistration did not finish: {e}", s.world.trace());
        std::process::exit(1);
    }
    let bob_name = Hostname::new("bob").expect("valid hostname");
    s.world.note("alice looks bob up by hostname");
    let id = s.world.with_host(alice, |h, now| {
        h.node_mut().resolve(now, Query::Hostname(bob_name))
    });
    let resolved = |w: &driver_sim::World<driver_sim::pilot::Host>| {
        w.events().iter().any(
            |(_, _, e)| matches!(e, HostEvent::Node(Event::Resolved { id: i, .. }) if *i == id),
        )
    };
    if let Err(e) = s.world.run_until(resolved, Duration::from_secs(30)) {
        eprintln!("{}\nlookup did not finish: {e}", s.world.trace());
        std::process::exit(1);
    }
    let bob_addr = s.node(bob).address().expect("bob registered");
    let alice_addr = s.node(alice).address().expect("alice registered");
    s.world
        .with_host(bob, |h, _| h.node_mut().bind(1000))
        .expect("port free");
    s.world
        .with_host(alice, |h, _| h.node_mut().bind(1000))
        .expect("port free");
    s.world
        .note("alice sends bob a datagram on port 1000; the first one opens the session");
    let _ = s.world.with_host(alice, |h, now| {
        h.node_mut()
            .send_datagram(now, 1000, SocketAddress::new(bob_addr, 1000), b"hello, bob")
    });
    s.world.run_for(Duration::from_millis(500));
    s.world.note("bob answers");
    let _ = s.world.with_host(bob, |h, now| {
        h.node_mut().send_datagram(
            now,
            1000,
            SocketAddress::new(alice_addr, 1000),
            b"hello, alice",
        )
    });
    s.world.run_for(Duration::from_millis(500));
    print!("{}", s.world.trace());
    println!();
    println!("seed {seed}: alice is {alice_addr}, bob is {bob_addr}");
    for (name, id) in [("alice", alice), ("bob", bob)] {
        let got: Vec<String> = s
            .datagrams(id)
            .iter()
            .map(|(_, _, d)| String::from_utf8_lossy(d).into_owned())
            .collect();
        let st = s.node(id).stats();
        println!(
            "{name}: received {got:?}; {} datagrams in, {} out, {} handshakes, {} dropped",
            st.datagrams_in,
            st.datagrams_out,
            st.handshakes_completed,
            st.dropped()
        );
    }
}
