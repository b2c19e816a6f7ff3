//! The rendezvous's relay forwarding rate on one core, next to a baseline
//! from the same run.
//!
//! A scenario registers two agents on the open internet and has them trust
//! each other, so the real `Rendezvous` holds their records, endpoints and
//! pair. Then the bench feeds that rendezvous pre-built relay packets
//! (`wire::relay(bob's address, a 1200-byte type 4 transport packet)`) as if
//! from alice's registered endpoint, through `handle_datagram`, and drains
//! `poll_transmit` after each: lookups, pair check, meters, re-wrapping. The
//! relay limits are raised to `u32::MAX` per second with an hour of burst so
//! the limiter charges every packet but never drops one (the bench asserts
//! that nothing was limited).
//!
//! Baselines: seal + open of the same 1200 B through a session pair, which is
//! what a relay that decrypted and re-encrypted would pay per packet; and a
//! plain UDP forwarder on loopback (`recv_from` then `send_to` of the same
//! datagram, timed on the forwarder alone), the system-call floor that the
//! real rendezvous pays on top of its forwarding decision.
//!
//! This lives in driver-sim because building the registered, paired state
//! needs the simulator; pilot-proto's benches cannot depend on it.
//!
//! `cargo bench -p driver-sim --bench relay` (`PILOT_BENCH_QUICK=1` for a
//! short run).

use std::hint::black_box;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use driver_sim::pilot::{Host, Scenario};
use pilot_proto::noise::Split;
use pilot_proto::rendezvous::RelayLimits;
use pilot_proto::session::{Session, SessionLimits};
use pilot_proto::{wire, SocketId, Timestamp};

const PACKET: usize = 1200;

fn quick() -> bool {
    std::env::var_os("PILOT_BENCH_QUICK").is_some()
}

/// A 1200-byte packet that looks like transport: type 4, a receiver index,
/// a counter, then "ciphertext".
fn transport_packet() -> Vec<u8> {
    let mut p = Vec::with_capacity(PACKET);
    wire::put_header(&mut p, wire::TYPE_TRANSPORT, 7);
    p.extend_from_slice(&42u64.to_le_bytes());
    p.extend((p.len()..PACKET).map(|i| (i * 31 % 251) as u8));
    assert!(matches!(
        wire::decode(&p),
        Ok(wire::Packet::Transport { .. })
    ));
    p
}

/// Seal and open `packets` packets of `size` plaintext bytes through a
/// session pair.
fn seal_open(packets: usize, size: usize) -> Duration {
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

/// A plain UDP forwarder on 127.0.0.1: a sender queues a batch of
/// datagrams to the forwarder's socket, the forwarder receives each and
/// sends it on to a receiver, the receiver drains them. Only the
/// forwarder's loop is timed; batches stay well under the default socket
/// buffers so nothing is dropped.
fn udp_forward(packets: usize, size: usize) -> Duration {
    const BATCH: usize = 32;
    let bind = || UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let (sender, forwarder, receiver) = (bind(), bind(), bind());
    let fwd_at = forwarder.local_addr().expect("addr");
    let recv_at = receiver.local_addr().expect("addr");
    let payload = vec![0x5au8; size];
    let mut buf = vec![0u8; 2048];
    let mut timed = Duration::ZERO;
    let mut left = packets;
    while left > 0 {
        let n = left.min(BATCH);
        for _ in 0..n {
            sender.send_to(&payload, fwd_at).expect("send");
        }
        let start = Instant::now();
        for _ in 0..n {
            let (len, _) = forwarder.recv_from(&mut buf).expect("forwarder recv");
            forwarder.send_to(&buf[..len], recv_at).expect("forward");
        }
        timed += start.elapsed();
        for _ in 0..n {
            let (len, _) = receiver.recv_from(&mut buf).expect("receiver recv");
            assert_eq!(len, size, "the forwarder changed the datagram");
        }
        left -= n;
    }
    timed
}

fn main() {
    let (rounds, packets) = if quick() { (2, 20_000) } else { (5, 400_000) };
    let unlimited = RelayLimits {
        pair_packets_per_sec: u32::MAX,
        pair_bytes_per_sec: u32::MAX,
        agent_packets_per_sec: u32::MAX,
        agent_bytes_per_sec: u32::MAX,
        burst: Duration::from_secs(3600),
    };
    let mut s = Scenario::with_rendezvous(1, |c| c.relay = unlimited);
    s.world.set_tracing(false);
    let alice = s.add_node("alice", "203.0.113.1:4000", |_| {});
    let bob = s.add_node("bob", "203.0.113.2:4000", |_| {});
    s.run_until_registered(&[alice, bob], Duration::from_secs(60))
        .expect("register");
    s.trust(alice, bob, Duration::from_secs(60)).expect("trust");
    let from = s.world.addr(alice);
    let bob_at = s.world.addr(bob);
    let bob_addr = s.node(bob).address().expect("registered");
    let datagram = wire::relay(bob_addr.to_bytes(), &transport_packet());
    let rv = s.rendezvous;

    let (best, forwarded, out_len) = s.world.with_host(rv, |h, now| {
        let Host::Rendezvous(r) = h else {
            panic!("not the rendezvous")
        };
        let before = r.relay_stats();
        // One packet first: it must be forwarded to bob, re-addressed.
        r.handle_datagram(now, SocketId::PRIMARY, from, &datagram);
        let t = r.poll_transmit().expect("relay forwarded the packet");
        assert_eq!(t.destination, bob_at);
        let out_len = t.payload.len();
        let mut best = Duration::MAX;
        for _ in 0..rounds {
            let start = Instant::now();
            for _ in 0..packets {
                r.handle_datagram(now, SocketId::PRIMARY, from, &datagram);
                while let Some(t) = r.poll_transmit() {
                    black_box(t.payload.len());
                }
            }
            best = best.min(start.elapsed());
        }
        let after = r.relay_stats();
        assert_eq!(after.limited, before.limited, "the limiter dropped packets");
        (
            best,
            after.forwarded_packets - before.forwarded_packets,
            out_len,
        )
    });
    assert_eq!(forwarded, 1 + (rounds * packets) as u64);

    let mut base = Duration::MAX;
    for _ in 0..rounds {
        base = base.min(seal_open(packets, PACKET));
    }
    let mut udp = Duration::MAX;
    for _ in 0..rounds {
        udp = udp.min(udp_forward(packets, datagram.len()));
    }
    let pps = |d: Duration| packets as f64 / d.as_secs_f64();
    let gbit = |d: Duration, len: usize| pps(d) * len as f64 * 8.0 / 1e9;
    println!(
        "rendezvous relay, one core, {} B relay packets in ({} B out), best of {rounds} x {packets}",
        datagram.len(),
        out_len
    );
    println!(
        "   relay forwarding:   {:>10.0} packets/s  {:>6.2} Gbit/s  {:>6.3} µs/packet",
        pps(best),
        gbit(best, out_len),
        best.as_secs_f64() * 1e6 / packets as f64
    );
    println!(
        "   baseline: seal+open of {PACKET} B (a decrypt-and-re-encrypt relay): {:>10.0} packets/s  {:>6.2} Gbit/s  {:>6.3} µs/packet",
        pps(base),
        gbit(base, PACKET),
        base.as_secs_f64() * 1e6 / packets as f64
    );
    println!(
        "   baseline: plain UDP forward on loopback (recv_from + send_to of {} B): {:>10.0} packets/s  {:>6.2} Gbit/s  {:>6.3} µs/packet",
        datagram.len(),
        pps(udp),
        gbit(udp, datagram.len()),
        udp.as_secs_f64() * 1e6 / packets as f64
    );
    println!(
        "   the forwarding decision adds {:.0} % to the system calls a real rendezvous makes per packet",
        100.0 * best.as_secs_f64() / udp.as_secs_f64()
    );
    println!(
        "   forwarding is {:.1}x the seal+open rate (limits raised to u32::MAX/s, nothing limited)",
        pps(best) / pps(base)
    );
}
