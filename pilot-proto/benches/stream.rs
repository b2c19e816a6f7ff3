//! Stream throughput: two `Streams` in one process, packets handed straight
//! from one to the other, against the ceiling of the tunnel itself.
//!
//! `cargo bench -p pilot-proto --bench stream -- [MIB]` (default 256).
//!
//! 1. Goodput of one stream, no latency, no loss, wall clock: what the TCP
//!    layer (smoltcp plus our demultiplexing and copies) costs per byte,
//!    for each congestion controller.
//! 2. The baseline, measured in the same run: as many 1280-byte overlay
//!    packets as the stream sent, sealed and opened with a transport
//!    `Session` (ChaCha20-Poly1305). A stream's packets pay both in a
//!    real node; the ratio says which dominates.
//! 3. Goodput in virtual time over a 20 ms RTT link with 1 % loss, per
//!    congestion controller: how well each recovers, not how fast the CPU
//!    is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pilot_proto::noise::Split;
use pilot_proto::overlay::OVERLAY_MTU;
use pilot_proto::session::{Session, SessionLimits};
use pilot_proto::stream::{CloseReason, Congestion, StreamConfig, StreamEvent, StreamId, Streams};
use pilot_proto::wire::{self, Packet};
use pilot_proto::{Address, SocketAddress, Timestamp};

const A: Address = Address::new(1, 0x20);
const B: Address = Address::new(1, 0x21);
const PORT: u16 = 1001;

/// A link: one-way latency and a loss rate in parts per thousand.
#[derive(Clone, Copy)]
struct Link {
    latency: Duration,
    loss_permille: u64,
}

struct Outcome {
    wall: Duration,
    virtual_time: Duration,
    /// Packets A sent (data, mostly).
    packets_a: u64,
    packets_b: u64,
}

/// Sends `total` bytes from A to B and waits for both ends to close.
fn transfer(congestion: Congestion, total: u64, link: Link) -> Outcome {
    let config = StreamConfig {
        congestion,
        ..StreamConfig::default()
    };
    let start = Timestamp::from_secs(1);
    let mut a = Streams::new(config, A, &[1; 32], start);
    let mut b = Streams::new(config, B, &[2; 32], start);
    b.listen(PORT).unwrap();
    let mut now = start;
    let id = a.connect(now, SocketAddress::new(B, PORT)).unwrap();
    let chunk = vec![0x5au8; 256 * 1024];
    let mut buf = vec![0u8; 256 * 1024];
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut open: Option<StreamId> = None;
    let mut closed = 0;
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    // (delivery time, sequence) -> (to B?, packet)
    let mut wire: BTreeMap<(Timestamp, u64), (bool, Vec<u8>)> = BTreeMap::new();
    let mut seq = 0u64;
    let (mut packets_a, mut packets_b) = (0u64, 0u64);

    let wall = Instant::now();
    loop {
        // Drain both sides: packets onto the wire, then events.
        let mut moved = false;
        for to_b in [true, false] {
            let from = if to_b { &mut a } else { &mut b };
            while let Some((_, packet)) = from.poll_packet() {
                moved = true;
                if to_b {
                    packets_a += 1;
                } else {
                    packets_b += 1;
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if rng % 1000 < link.loss_permille {
                    continue;
                }
                seq += 1;
                wire.insert((now + link.latency, seq), (to_b, packet));
            }
        }
        let mut write = false;
        while let Some(e) = a.poll_event() {
            match e {
                StreamEvent::Connected { .. } | StreamEvent::Writable { .. } => write = true,
                StreamEvent::Closed { reason, .. } => {
                    assert_eq!(reason, CloseReason::Normal);
                    closed += 1;
                }
                _ => {}
            }
        }
        let mut read = false;
        while let Some(e) = b.poll_event() {
            match e {
                StreamEvent::Incoming { id, .. } => open = Some(id),
                StreamEvent::Readable { .. } | StreamEvent::Finished { .. } => read = true,
                StreamEvent::Closed { reason, .. } => {
                    assert_eq!(reason, CloseReason::Normal);
                    closed += 1;
                }
                _ => {}
            }
        }
        if write && sent < total {
            while sent < total {
                let len = (total - sent).min(chunk.len() as u64) as usize;
                let n = a.write(now, id, &chunk[..len]).unwrap();
                sent += n as u64;
                if n < len {
                    break;
                }
            }
            if sent == total {
                a.close(now, id);
            }
        }
        if let (true, Some(bid)) = (read, open) {
            loop {
                match b.read(now, bid, &mut buf) {
                    Ok(0) => {
                        b.close(now, bid);
                        break;
                    }
                    Ok(n) => received += n as u64,
                    Err(_) => break,
                }
            }
        }
        if closed == 2 {
            break;
        }
        if deliver(&mut wire, now, &mut a, &mut b) || moved {
            continue;
        }
        let next = [
            wire.keys().next().map(|k| k.0),
            a.poll_timeout(),
            b.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
        .expect("the transfer stalled");
        now = now.max(next);
        if deliver(&mut wire, now, &mut a, &mut b) {
            continue;
        }
        if a.poll_timeout().is_some_and(|t| t <= now) {
            a.handle_timeout(now);
        }
        if b.poll_timeout().is_some_and(|t| t <= now) {
            b.handle_timeout(now);
        }
    }
    assert_eq!(received, total);
    Outcome {
        wall: wall.elapsed(),
        virtual_time: now.saturating_since(start),
        packets_a,
        packets_b,
    }
}

/// Hands the first packet due by `now` to its receiver; true if there was
/// one. One at a time, because a node drains after every input.
fn deliver(
    wire: &mut BTreeMap<(Timestamp, u64), (bool, Vec<u8>)>,
    now: Timestamp,
    a: &mut Streams,
    b: &mut Streams,
) -> bool {
    let Some(entry) = wire.first_entry() else {
        return false;
    };
    if entry.key().0 > now {
        return false;
    }
    let (to_b, packet) = entry.remove();
    let to = if to_b { &mut *b } else { &mut *a };
    to.handle_packet(now, &packet);
    true
}

/// Seals and opens `count` packets of `size` bytes with a transport session
/// pair: the tunnel's cost for the same traffic.
fn seal_open(count: u64, size: usize) -> Duration {
    let split = Split {
        initiator_to_responder: [1; 32],
        responder_to_initiator: [2; 32],
        handshake_hash: [3; 32],
    };
    let now = Timestamp::from_secs(1);
    let limits = SessionLimits::default();
    let mut tx = Session::new(&split, true, 10, 20, now, limits);
    let mut rx = Session::new(&split, false, 20, 10, now, limits);
    let plaintext = vec![0xa5u8; size];
    let mut sealed = Vec::with_capacity(size + 64);
    let mut opened = Vec::with_capacity(size);
    let mut check = 0u64;
    let start = Instant::now();
    for _ in 0..count {
        sealed.clear();
        tx.seal(now, &plaintext, &mut sealed).unwrap();
        let Ok(Packet::Transport {
            counter,
            ciphertext,
            ..
        }) = wire::decode(&sealed)
        else {
            panic!("not a transport packet");
        };
        opened.clear();
        rx.open(now, counter, ciphertext, &mut opened).unwrap();
        check = check.wrapping_add(u64::from(opened[size / 2]));
    }
    let took = start.elapsed();
    assert_eq!(check, count * 0xa5);
    took
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn main() {
    let mib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(256);
    let total = mib << 20;
    let instant_link = Link {
        latency: Duration::ZERO,
        loss_permille: 0,
    };

    println!("stream goodput, {mib} MiB, one stream, no latency, no loss (wall clock):");
    let mut cubic = None;
    for (name, cc) in [
        ("cubic", Congestion::Cubic),
        ("reno", Congestion::Reno),
        ("none", Congestion::None),
    ] {
        let o = transfer(cc, total, instant_link);
        println!(
            "  {name:5}: {:8.1} MiB/s  ({} packets out, {} back, {:.3}s)",
            mib_per_s(total, o.wall),
            o.packets_a,
            o.packets_b,
            o.wall.as_secs_f64()
        );
        if cc == Congestion::Cubic {
            cubic = Some(o);
        }
    }
    let cubic = cubic.expect("ran");

    let baseline = seal_open(cubic.packets_a, OVERLAY_MTU);
    println!(
        "baseline: {} packets of {OVERLAY_MTU} bytes sealed+opened: {:8.1} MiB/s of stream payload ({:.3}s)",
        cubic.packets_a,
        mib_per_s(total, baseline),
        baseline.as_secs_f64()
    );
    println!(
        "ratio: the stream layer takes {:.2}x the time of the tunnel's crypto for the same packets \
         (stream goodput / crypto ceiling = {:.2})",
        cubic.wall.as_secs_f64() / baseline.as_secs_f64(),
        baseline.as_secs_f64() / cubic.wall.as_secs_f64()
    );

    let lossy = Link {
        latency: Duration::from_millis(10),
        loss_permille: 10,
    };
    let lossy_total = (mib / 8).max(1) << 20;
    println!(
        "goodput in virtual time, {} MiB over 20 ms RTT with 1 % loss each way:",
        lossy_total >> 20
    );
    for (name, cc) in [
        ("cubic", Congestion::Cubic),
        ("reno", Congestion::Reno),
        ("none", Congestion::None),
    ] {
        let o = transfer(cc, lossy_total, lossy);
        println!(
            "  {name:5}: {:8.2} MiB/s virtual  ({:.1}s virtual, {} packets out, {:.3}s wall)",
            mib_per_s(lossy_total, o.virtual_time),
            o.virtual_time.as_secs_f64(),
            o.packets_a,
            o.wall.as_secs_f64()
        );
    }
}
