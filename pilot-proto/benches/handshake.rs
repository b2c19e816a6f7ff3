//! Handshake rate: Noise IK alone, and the tunnel layer's full exchange,
//! against the X25519 operations they are made of, measured in the same run.
//!
//! A Noise IK handshake costs 4 variable-base Diffie-Hellman operations on
//! each side (es, ss, ee, se), 8 in all, so `DH/s / 8` is the ceiling no
//! implementation can pass; the table shows how close each level gets. The
//! fixed-base multiplications that derive public keys (ephemeral and, as
//! the code stands, static) are cheaper and shown separately, with the
//! ceiling that counts them too.
//!
//! `cargo bench -p pilot-proto --bench handshake`; set `PILOT_BENCH_QUICK=1`
//! (or pass `--quick`) for a short run that only checks it works.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use curve25519_dalek::montgomery::MontgomeryPoint;
use pilot_proto::noise::{x25519_public, Initiator, Responder};
use pilot_proto::rng::Stream;
use pilot_proto::tunnel::{TunnelConfig, TunnelEvent, Tunnels, PROLOGUE};
use pilot_proto::Timestamp;

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
            sample: Duration::from_millis(30),
        }
    } else {
        Settings {
            rounds: 7,
            sample: Duration::from_millis(300),
        }
    }
}

/// Nanoseconds per call of `f`, over `iters` calls.
fn time(iters: u64, f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// Calls of `f` that take about `sample`.
fn calibrate(sample: Duration, f: &mut dyn FnMut()) -> u64 {
    let mut iters = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let took = start.elapsed();
        if took >= sample / 8 {
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

/// Variable-base X25519, as each of es, ss, ee, se does.
struct Dh {
    secret: [u8; 32],
    point: MontgomeryPoint,
}

impl Dh {
    fn op(&mut self) {
        let shared = black_box(self.point).mul_clamped(black_box(self.secret));
        // Feed the result back so no two operations are alike.
        self.point = shared;
        self.secret[0] = self.secret[0].wrapping_add(1);
    }
}

/// Fixed-base X25519: a public key from a secret.
struct BaseMul {
    secret: [u8; 32],
}

impl BaseMul {
    fn op(&mut self) {
        let public = x25519_public(black_box(&self.secret));
        self.secret[..31].copy_from_slice(&public[..31]);
    }
}

/// One complete Noise IK exchange with fresh ephemerals, payloads the size
/// the tunnel layer sends (timestamp plus certificate one way, certificate
/// the other).
struct NoiseIk {
    initiator_static: [u8; 32],
    responder_static: [u8; 32],
    responder_public: [u8; 32],
    ephemerals: Stream,
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    payload: Vec<u8>,
    init_payload: Vec<u8>,
    resp_payload: Vec<u8>,
}

impl NoiseIk {
    fn new() -> Self {
        let responder_static = [2; 32];
        NoiseIk {
            initiator_static: [1; 32],
            responder_static,
            responder_public: x25519_public(&responder_static),
            ephemerals: Stream::derive(&[9; 32], "bench ephemerals"),
            msg1: Vec::with_capacity(512),
            msg2: Vec::with_capacity(512),
            payload: Vec::with_capacity(512),
            init_payload: vec![0xA5; 8 + 110],
            resp_payload: vec![0x5A; 110],
        }
    }

    fn op(&mut self) {
        let e_i = self.ephemerals.bytes32();
        let e_r = self.ephemerals.bytes32();
        self.msg1.clear();
        self.msg2.clear();
        self.payload.clear();
        let initiator = Initiator::start(
            PROLOGUE,
            &self.initiator_static,
            &self.responder_public,
            &e_i,
            &self.init_payload,
            &mut self.msg1,
        )
        .expect("msg1");
        let responder = Responder::read(
            PROLOGUE,
            &self.responder_static,
            black_box(&self.msg1),
            &mut self.payload,
        )
        .expect("read msg1");
        let r = responder
            .reply(&e_r, &self.resp_payload, &mut self.msg2)
            .expect("msg2");
        self.payload.clear();
        let i = initiator
            .finish(black_box(&self.msg2), &mut self.payload)
            .expect("read msg2");
        assert_eq!(i.handshake_hash, r.handshake_hash);
        black_box((i.initiator_to_responder, r.responder_to_initiator));
    }
}

/// Two `Tunnels` completing handshake after handshake: init, response, and
/// the initiator's confirming keepalive, with MACs, cookies checks, index
/// allocation and session set-up, as on the wire.
struct TunnelPair {
    a: Tunnels,
    b: Tunnels,
    a_key: [u8; 32],
    b_key: [u8; 32],
    now: Timestamp,
    done: u64,
}

const A: &str = "192.0.2.1:1000";
const B: &str = "192.0.2.2:2000";

fn ep(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

impl TunnelPair {
    fn new() -> Self {
        let config = TunnelConfig::default();
        let wall = 1_800_000_000_000_000;
        let mut a = Tunnels::new(config, [1; 32], &[11; 32], wall);
        let mut b = Tunnels::new(config, [2; 32], &[12; 32], wall);
        // Payloads the size of a certificate, as between two agents.
        a.set_local_payload(vec![0xA5; 110]);
        b.set_local_payload(vec![0x5A; 110]);
        let (a_key, b_key) = (*a.public_key(), *b.public_key());
        a.set_endpoint(b_key, ep(B));
        TunnelPair {
            a,
            b,
            a_key,
            b_key,
            now: Timestamp::from_secs(1),
            done: 0,
        }
    }

    fn op(&mut self) {
        // 10 ms apart: 100 handshakes per second of virtual time stays
        // under the default cookie threshold (200/s), as a lightly loaded
        // responder would see them.
        self.now = self.now + Duration::from_millis(10);
        let now = self.now;
        self.a.connect(now, &self.b_key);
        let mut established = 0;
        // Hand packets across until both sides are quiet.
        loop {
            let mut moved = false;
            while let Some(t) = self.a.poll_transmit() {
                moved = true;
                let _ = self.b.handle_datagram(
                    now,
                    pilot_proto::SocketId::PRIMARY,
                    ep(A),
                    &t.payload,
                    &mut |_, _| true,
                );
            }
            while let Some(t) = self.b.poll_transmit() {
                moved = true;
                let _ = self.a.handle_datagram(
                    now,
                    pilot_proto::SocketId::PRIMARY,
                    ep(B),
                    &t.payload,
                    &mut |_, _| true,
                );
            }
            if !moved {
                break;
            }
        }
        for t in [&mut self.a, &mut self.b] {
            while let Some(e) = t.poll_event() {
                if let TunnelEvent::Established { .. } = e {
                    established += 1;
                }
            }
        }
        assert_eq!(established, 2, "handshake {} did not complete", self.done);
        assert_eq!(
            self.a.handshake_hash(&self.b_key, now),
            self.b.handshake_hash(&self.a_key, now)
        );
        self.done += 1;
    }
}

/// A named operation to time.
type Case<'a> = Box<dyn FnMut() + 'a>;

struct Measured {
    name: &'static str,
    ns: f64,
    spread: (f64, f64),
}

fn main() {
    let s = settings();
    let mut dh = Dh {
        secret: [3; 32],
        point: MontgomeryPoint(x25519_public(&[4; 32])),
    };
    let mut base = BaseMul { secret: [5; 32] };
    let mut noise = NoiseIk::new();
    let mut tunnels = TunnelPair::new();
    let mut cases: Vec<(&'static str, Case<'_>)> = vec![
        ("x25519 DH (variable base)", Box::new(|| dh.op())),
        ("x25519 public (fixed base)", Box::new(|| base.op())),
        ("Noise IK handshake", Box::new(|| noise.op())),
        ("tunnel handshake", Box::new(|| tunnels.op())),
    ];
    let iters: Vec<u64> = cases
        .iter_mut()
        .map(|(_, f)| calibrate(s.sample, f.as_mut()))
        .collect();
    let mut samples = vec![Vec::new(); cases.len()];
    // Interleaved rounds, so drift in clock speed or load hits all alike.
    for _ in 0..s.rounds {
        for (i, (_, f)) in cases.iter_mut().enumerate() {
            samples[i].push(time(iters[i], f.as_mut()));
        }
    }
    let results: Vec<Measured> = cases
        .iter()
        .zip(samples.iter_mut())
        .map(|((name, _), v)| {
            let ns = median(v);
            Measured {
                name,
                ns,
                spread: (v[0], v[v.len() - 1]),
            }
        })
        .collect();

    println!(
        "handshakes: median of {} rounds of ~{} ms; baseline: X25519 in the same run",
        s.rounds,
        s.sample.as_millis()
    );
    println!();
    println!(
        "{:<28} {:>11} {:>22} {:>12}",
        "operation", "µs/op", "min..max µs", "ops/s"
    );
    for m in &results {
        println!(
            "{:<28} {:>11.2} {:>22} {:>12.0}",
            m.name,
            m.ns / 1e3,
            format!("{:.2}..{:.2}", m.spread.0 / 1e3, m.spread.1 / 1e3),
            1e9 / m.ns
        );
    }
    let dh_ns = results[0].ns;
    let base_ns = results[1].ns;
    let dh_per_s = 1e9 / dh_ns;
    // 8 variable-base DH per handshake: es, ss, ee, se on each side.
    let ceiling = dh_per_s / 8.0;
    // Public keys derived per handshake as the code stands: each side's
    // ephemeral, and each side's static (recomputed from the secret).
    let base_muls = 4.0;
    let ceiling_with_base = 1e9 / (8.0 * dh_ns + base_muls * base_ns);
    println!();
    println!("ceiling = DH/s / 8 = {dh_per_s:.0} / 8 = {ceiling:.0} handshakes/s");
    println!(
        "ceiling counting {base_muls} fixed-base public-key derivations too = {ceiling_with_base:.0} handshakes/s"
    );
    println!();
    println!(
        "{:<28} {:>12} {:>16} {:>22}",
        "", "handshakes/s", "of DH/8 ceiling", "of DH+base ceiling"
    );
    for m in &results[2..] {
        let rate = 1e9 / m.ns;
        println!(
            "{:<28} {:>12.0} {:>15.1}% {:>21.1}%",
            m.name,
            rate,
            100.0 * rate / ceiling,
            100.0 * rate / ceiling_with_base
        );
    }
    let tunnel_vs_noise = results[3].ns / results[2].ns;
    println!();
    println!(
        "tunnel / Noise time = {tunnel_vs_noise:.3}x ({:+.1} µs per handshake for MACs, indices, sessions, the confirming keepalive)",
        (results[3].ns - results[2].ns) / 1e3
    );
}
