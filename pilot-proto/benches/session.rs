//! Transport throughput: what the session layer costs on top of the AEAD.
//!
//! Each "packet" is one 1200-byte plaintext sealed by one `Session`, its
//! outer header decoded with `wire::decode`, and opened by the peer
//! `Session`, into buffers reused across packets. The baseline, measured in
//! the same run, is bare `ChaCha20Poly1305` sealing and opening the same
//! 1200 bytes in place: the least any transport can do. The difference is
//! the session layer: header, counter, nonce, replay window, expiry checks
//! and the two copies (plaintext into the packet, ciphertext into the
//! output), which a caller that owns its buffers cannot avoid.
//!
//! `cargo bench -p pilot-proto --bench session`; set `PILOT_BENCH_QUICK=1`
//! (or pass `--quick`) for a short run that only checks it works.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use pilot_proto::noise::Split;
use pilot_proto::session::{Session, SessionLimits};
use pilot_proto::wire::{self, Packet};
use pilot_proto::Timestamp;

/// Counts allocations, so the table can show that the harness measures the
/// session and not the allocator.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const PACKET: usize = 1200;
/// Packet sizes measured: the target one, and a small one where fixed
/// per-packet costs show.
const SIZES: [usize; 2] = [PACKET, 64];

struct Settings {
    rounds: usize,
    sample: Duration,
}

fn settings() -> Settings {
    let quick = std::env::var_os("PILOT_BENCH_QUICK").is_some_and(|v| v != "0")
        || std::env::args().any(|a| a == "--quick");
    if quick {
        Settings {
            rounds: 3,
            sample: Duration::from_millis(20),
        }
    } else {
        Settings {
            rounds: 11,
            sample: Duration::from_millis(250),
        }
    }
}

/// The full path: seal, decode the outer header, open.
struct SessionPath {
    sender: Session,
    receiver: Session,
    plaintext: Vec<u8>,
    packet: Vec<u8>,
    opened: Vec<u8>,
    now: Timestamp,
}

impl SessionPath {
    fn new(size: usize) -> Self {
        let split = Split {
            initiator_to_responder: [0x42; 32],
            responder_to_initiator: [0x24; 32],
            handshake_hash: [7; 32],
        };
        let now = Timestamp::from_secs(1);
        let limits = SessionLimits::default();
        SessionPath {
            sender: Session::new(&split, true, 1, 2, now, limits),
            receiver: Session::new(&split, false, 2, 1, now, limits),
            plaintext: (0..size).map(|i| i as u8).collect(),
            packet: Vec::with_capacity(size + wire::TRANSPORT_MIN_LEN),
            opened: Vec::with_capacity(size),
            now,
        }
    }

    #[inline(never)]
    fn packet(&mut self) {
        self.packet.clear();
        self.sender
            .seal(self.now, black_box(&self.plaintext), &mut self.packet)
            .expect("seal");
        let Ok(Packet::Transport {
            receiver,
            counter,
            ciphertext,
        }) = wire::decode(black_box(&self.packet))
        else {
            panic!("not a transport packet");
        };
        debug_assert_eq!(receiver, self.receiver.local_index());
        self.opened.clear();
        self.receiver
            .open(self.now, counter, ciphertext, &mut self.opened)
            .expect("open");
        black_box(&self.opened);
    }
}

/// The baseline: the AEAD alone, in place, on the same bytes.
struct BarePath {
    seal: ChaCha20Poly1305,
    open: ChaCha20Poly1305,
    buf: Vec<u8>,
    counter: u64,
}

impl BarePath {
    fn new(size: usize) -> Self {
        BarePath {
            seal: ChaCha20Poly1305::new((&[0x42; 32]).into()),
            open: ChaCha20Poly1305::new((&[0x42; 32]).into()),
            buf: (0..size).map(|i| i as u8).collect(),
            counter: 0,
        }
    }

    #[inline(never)]
    fn packet(&mut self) {
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.counter.to_le_bytes());
        self.counter += 1;
        let nonce = Nonce::from(nonce);
        let tag = self
            .seal
            .encrypt_in_place_detached(&nonce, &[], black_box(&mut self.buf[..]))
            .expect("seal");
        let tag = black_box(tag);
        self.open
            .decrypt_in_place_detached(&nonce, &[], black_box(&mut self.buf[..]), &tag)
            .expect("open");
        black_box(&self.buf);
    }
}

/// Nanoseconds per call of `f`, over `iters` calls.
fn time(iters: u64, f: &mut impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// Calls of `f` that take about `sample`.
fn calibrate(sample: Duration, f: &mut impl FnMut()) -> u64 {
    let mut iters = 16u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let took = start.elapsed();
        if took >= sample / 8 || iters >= 1 << 30 {
            let per = took.as_nanos().max(1) as f64 / iters as f64;
            return ((sample.as_nanos() as f64 / per) as u64).max(1);
        }
        iters *= 2;
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Row {
    size: usize,
    session_ns: f64,
    bare_ns: f64,
    session_spread: (f64, f64),
    bare_spread: (f64, f64),
    allocs_per_packet: f64,
}

fn bench(size: usize, s: &Settings) -> Row {
    let mut session = SessionPath::new(size);
    let mut bare = BarePath::new(size);
    let mut run_session = || session.packet();
    let mut run_bare = || bare.packet();
    // Warm caches and the CPU clock, then size the samples.
    let n_session = calibrate(s.sample, &mut run_session);
    let n_bare = calibrate(s.sample, &mut run_bare);
    let (mut ts, mut tb) = (Vec::new(), Vec::new());
    let mut allocs = 0u64;
    let mut packets = 0u64;
    // Interleaved, so drift in clock speed or load hits both alike.
    for _ in 0..s.rounds {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        ts.push(time(n_session, &mut run_session));
        allocs += ALLOCATIONS.load(Ordering::Relaxed) - before;
        packets += n_session;
        tb.push(time(n_bare, &mut run_bare));
    }
    let spread = |v: &[f64]| (v[0], v[v.len() - 1]);
    let session_ns = median(&mut ts);
    let bare_ns = median(&mut tb);
    Row {
        size,
        session_ns,
        bare_ns,
        session_spread: spread(&ts),
        bare_spread: spread(&tb),
        allocs_per_packet: allocs as f64 / packets as f64,
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and
    // ignored, there being one table.
    let s = settings();
    println!(
        "session transport: seal + wire::decode + open per packet, median of {} rounds of ~{} ms",
        s.rounds,
        s.sample.as_millis()
    );
    println!("baseline: bare ChaCha20Poly1305 encrypt_in_place_detached + decrypt_in_place_detached, same bytes, same run");
    println!();
    println!(
        "{:>6}  {:<9} {:>10} {:>18} {:>12} {:>9}  {:>9}",
        "bytes", "path", "ns/packet", "min..max ns", "packets/s", "Gbit/s", "allocs/pk"
    );
    let mut rows = Vec::new();
    for size in SIZES {
        let r = bench(size, &s);
        for (name, ns, (lo, hi), allocs) in [
            (
                "session",
                r.session_ns,
                r.session_spread,
                r.allocs_per_packet,
            ),
            ("bare aead", r.bare_ns, r.bare_spread, 0.0),
        ] {
            let pps = 1e9 / ns;
            println!(
                "{:>6}  {:<9} {:>10.1} {:>18} {:>12.0} {:>9.3}  {:>9}",
                r.size,
                name,
                ns,
                format!("{lo:.1}..{hi:.1}"),
                pps,
                pps * (r.size * 8) as f64 / 1e9,
                if name == "session" {
                    format!("{allocs:.3}")
                } else {
                    "-".into()
                },
            );
        }
        rows.push(r);
    }
    println!();
    for r in &rows {
        let overhead = (r.session_ns / r.bare_ns - 1.0) * 100.0;
        let verdict = if r.size != PACKET {
            "(informative)"
        } else if overhead < 20.0 {
            "(target < 20 %: met)"
        } else {
            "(target < 20 %: MISSED)"
        };
        println!(
            "{:>6} bytes: session / bare = {:.3}x, overhead {:+.1} % = {:+.1} ns/packet {verdict}",
            r.size,
            r.session_ns / r.bare_ns,
            overhead,
            r.session_ns - r.bare_ns,
        );
    }
}
