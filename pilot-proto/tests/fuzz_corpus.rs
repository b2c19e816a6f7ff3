//! Replays the committed fuzz corpora, plus deterministic pseudo-random
//! inputs, through the same checks as the fuzz targets in `fuzz/`, so that
//! `cargo test` on stable guards what the fuzzers found.
//!
//! Adding a decoder: write `check_<target>` mirroring its fuzz target, then a
//! `#[test]` that runs `corpus("<target>")` and some generated inputs through
//! it. Each check must hold for any input, valid or not.

mod common;

use common::{corpus, Rng};
use pilot_proto::addr::{Address, Hostname, SocketAddress};
use pilot_proto::msg::{Certificate, ErrorCode, Message, Query, Register, Registered, Resolved};
use pilot_proto::overlay::{self, MAX_DATAGRAM};
use pilot_proto::tunnel::{TunnelConfig, Tunnels};
use pilot_proto::wire;
use pilot_proto::{Identity, SocketId, Timestamp};

/// The decoder checks, shared with the fuzz targets.
#[path = "../../fuzz/fuzz_targets/shared/decoders.rs"]
mod decoders;

use decoders::{
    check_addr_parse, check_hostname, check_msg_decode, check_overlay_decode,
    check_trust_state_decode, check_wire_decode,
};

/// The world the state-machine targets run in, shared with their fuzz
/// targets so a corpus file means the same program to both.
#[path = "../../fuzz/fuzz_targets/shared/world.rs"]
mod world;

/// Pseudo-random inputs generated per target, on top of the corpus.
const GENERATED: usize = 20_000;

/// Text made mostly of the characters the grammars care about, so random
/// strings reach deep into the parsers instead of failing at byte one.
fn random_text(rng: &mut Rng, alphabet: &[char], max_len: usize) -> String {
    let len = rng.below(max_len + 1);
    (0..len)
        .map(|_| {
            if rng.below(16) == 0 {
                // Anything at all, now and then, multi-byte included.
                char::from_u32(rng.below(0x800) as u32).unwrap_or('?')
            } else {
                *rng.pick(alphabet)
            }
        })
        .collect()
}

/// Random edits of a valid text: the near misses that matter most.
fn mutate_text(rng: &mut Rng, valid: &str, alphabet: &[char]) -> String {
    let mut chars: Vec<char> = valid.chars().collect();
    for _ in 0..=rng.below(3) {
        let at = rng.below(chars.len() + 1);
        match rng.below(3) {
            0 if at < chars.len() => chars[at] = *rng.pick(alphabet),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ => chars.insert(at, *rng.pick(alphabet)),
        }
    }
    chars.into_iter().collect()
}

// --- addr_parse -----------------------------------------------------------

const ADDR_CHARS: &[char] = &[
    '0', '1', '2', '5', '6', '9', 'a', 'A', 'f', 'F', 'g', 'G', 'z', ':', ':', '.', '.', '.', '+',
    '-', ' ', 'é',
];

#[test]
fn addr_parse() {
    for input in corpus("addr_parse") {
        check_addr_parse(&input);
    }
    let mut rng = Rng(0x0A11_CE5E_ED00_0001);
    let mut accepted = 0;
    for i in 0..GENERATED {
        let text = match i % 3 {
            0 => random_text(&mut rng, ADDR_CHARS, 28),
            _ => {
                let r = rng.next();
                let a = Address::new(r as u16, (r >> 16) as u32);
                let valid = if i % 2 == 0 {
                    a.to_string()
                } else {
                    SocketAddress::new(a, (r >> 48) as u16).to_string()
                };
                mutate_text(&mut rng, &valid, ADDR_CHARS)
            }
        };
        accepted += usize::from(text.parse::<Address>().is_ok());
        check_addr_parse(text.as_bytes());
    }
    // The generator must reach the success path, or the round trip
    // assertions above test nothing.
    assert!(accepted > 100, "only {accepted} generated inputs parsed");
}

// --- hostname -------------------------------------------------------------

const HOST_CHARS: &[char] = &[
    'a', 'b', 'k', 'x', 'z', 'a', 'e', '0', '7', '9', '-', '-', 'A', 'Z', '_', '.', ':', ' ', 'é',
];

#[test]
fn hostname() {
    for input in corpus("hostname") {
        check_hostname(&input);
    }
    let mut rng = Rng(0x4057_4E41_4D45_0002);
    let mut accepted = 0;
    for i in 0..GENERATED {
        let text = match i % 4 {
            0 => random_text(&mut rng, HOST_CHARS, 70),
            1 => mutate_text(&mut rng, "agent-7", HOST_CHARS),
            // Around the length limit.
            2 => "a".repeat(Hostname::MAX_LEN - 2 + rng.below(5)),
            _ => random_text(&mut rng, &HOST_CHARS[..11], 12),
        };
        accepted += usize::from(Hostname::new(&text).is_ok());
        check_hostname(text.as_bytes());
    }
    assert!(
        accepted > 100,
        "only {accepted} generated inputs were valid"
    );
}

// --- overlay_decode -------------------------------------------------------

/// A valid packet with random addresses, ports and payload.
fn random_packet(rng: &mut Rng) -> Vec<u8> {
    let r = rng.next();
    let src = SocketAddress::new(Address::new(r as u16, (r >> 16) as u32), (r >> 48) as u16);
    let r = rng.next();
    let dst = SocketAddress::new(Address::new(r as u16, (r >> 16) as u32), (r >> 48) as u16);
    let len = match rng.below(4) {
        0 => rng.below(MAX_DATAGRAM + 1),
        _ => rng.below(40),
    };
    let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
    let mut out = Vec::new();
    overlay::encode_udp(src, dst, &payload, &mut out);
    out
}

#[test]
fn overlay_decode() {
    let seeds = corpus("overlay_decode");
    for input in &seeds {
        check_overlay_decode(input);
    }
    let mut rng = Rng(0x0E7E_41A7_0000_0003);
    let mut accepted = 0;
    for i in 0..GENERATED {
        let mut packet = if i % 5 == 0 {
            rng.pick(&seeds).clone()
        } else {
            random_packet(&mut rng)
        };
        match rng.below(6) {
            // Left valid: the round trip must hold.
            0 => {}
            // Flip a few random bits anywhere.
            1 | 2 => {
                for _ in 0..=rng.below(3) {
                    if packet.is_empty() {
                        break;
                    }
                    let at = rng.below(packet.len());
                    packet[at] ^= 1 << rng.below(8);
                }
            }
            // Overwrite a header byte, where the decisions are made.
            3 if !packet.is_empty() => {
                let at = rng.below(packet.len().min(48));
                packet[at] = rng.next() as u8;
            }
            // Truncate, or append garbage.
            4 => packet.truncate(rng.below(packet.len() + 1)),
            _ => packet.extend((0..=rng.below(8)).map(|_| rng.next() as u8)),
        }
        accepted += usize::from(overlay::decode(&packet).is_ok());
        check_overlay_decode(&packet);
    }
    // Pure noise too, short and long.
    for _ in 0..GENERATED / 10 {
        let len = rng.below(1400);
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_overlay_decode(&noise);
    }
    assert!(
        accepted > 1_000,
        "only {accepted} generated packets decoded"
    );
}

/// Random edits of a valid packet: bit flips, overwritten bytes (mostly in
/// the header, where decisions are made), truncation, appended garbage.
fn mutate_bytes(rng: &mut Rng, packet: &mut Vec<u8>) {
    match rng.below(6) {
        // Left valid.
        0 => {}
        1 | 2 => {
            for _ in 0..=rng.below(3) {
                if packet.is_empty() {
                    break;
                }
                let at = rng.below(packet.len());
                packet[at] ^= 1 << rng.below(8);
            }
        }
        3 if !packet.is_empty() => {
            let at = rng.below(packet.len().min(24));
            packet[at] = rng.next() as u8;
        }
        4 => packet.truncate(rng.below(packet.len() + 1)),
        _ => packet.extend((0..=rng.below(8)).map(|_| rng.next() as u8)),
    }
}

// --- wire_decode ----------------------------------------------------------

/// One of every outer packet, from two real `Tunnels`: an initiation, a
/// cookie reply (the responder is made to feel loaded), the retried
/// initiation with mac2, the response, data and a keepalive.
fn wire_samples() -> Vec<Vec<u8>> {
    let ep = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
    let (a_at, b_at) = (ep("192.0.2.1:1000"), ep("192.0.2.2:2000"));
    let loaded = TunnelConfig {
        load_threshold: 0,
        ..TunnelConfig::default()
    };
    let mut a = Tunnels::new(TunnelConfig::default(), [1; 32], &[1; 32], world::WALL);
    let mut b = Tunnels::new(loaded, [2; 32], &[2; 32], world::WALL);
    a.set_local_payload(vec![7; 110]);
    let bk = *b.public_key();
    a.set_endpoint(bk, b_at);
    let mut out = Vec::new();
    let mut now = Timestamp::from_secs(1);
    a.send(now, &bk, b"first").unwrap();
    for _ in 0..8 {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            moved = true;
            let _ = b.handle_datagram(now, SocketId::PRIMARY, a_at, &t.payload, &mut |_, _| true);
            out.push(t.payload);
        }
        while let Some(t) = b.poll_transmit() {
            moved = true;
            let _ = a.handle_datagram(now, SocketId::PRIMARY, b_at, &t.payload, &mut |_, _| true);
            out.push(t.payload);
        }
        if !moved {
            // Retry with the cookie, or let a keepalive fall due.
            now = now + std::time::Duration::from_secs(11);
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
    }
    let kinds: std::collections::BTreeSet<u8> = out.iter().map(|p| p[0]).collect();
    assert_eq!(kinds.len(), 4, "every packet type sampled");
    out
}

#[test]
fn wire_decode() {
    for input in corpus("wire_decode") {
        check_wire_decode(&input);
    }
    let seeds = wire_samples();
    let mut rng = Rng(0x3143_DEC0_DE00_0004);
    let mut accepted = 0;
    for _ in 0..GENERATED {
        let mut packet = rng.pick(&seeds).clone();
        mutate_bytes(&mut rng, &mut packet);
        if rng.below(8) == 0 && packet.len() >= 4 {
            // The type byte, which picks the layout.
            packet[0] = rng.below(6) as u8;
        }
        accepted += usize::from(wire::decode(&packet).is_ok());
        check_wire_decode(&packet);
    }
    for len in 0..200 {
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_wire_decode(&noise);
        let mut typed = noise;
        if typed.len() >= 4 {
            typed[0] = 1 + rng.below(4) as u8;
            typed[1..4].fill(0);
        }
        check_wire_decode(&typed);
    }
    assert!(
        accepted > 1_000,
        "only {accepted} generated packets decoded"
    );
}

// --- msg_decode -----------------------------------------------------------

/// One of every message, valid.
fn msg_samples() -> Vec<Vec<u8>> {
    let rv = Identity::from_seed(&[1; 32]);
    let agent = Identity::from_seed(&[2; 32]);
    let addr = Address::new(0, 0x2A);
    let cert = Certificate::issue(&rv, addr, agent.public(), 1_800_000_000);
    let bob = Hostname::new("bob").ok();
    [
        Message::Register(Register::new(&agent, &[7; 32], 9, true, bob.clone(), &[])),
        Message::Register(Register::new(&agent, &[7; 32], 10, false, None, &[])),
        Message::Resolve {
            req: 3,
            query: Query::Address(addr),
        },
        Message::Resolve {
            req: 4,
            query: Query::Hostname(Hostname::new("bob").unwrap()),
        },
        Message::Data(b"\x60packet"),
        Message::Registered(Registered {
            req: 9,
            address: addr,
            observed: "203.0.113.5:40000".parse().unwrap(),
            refresh_secs: 25,
            ttl_secs: 90,
            cert,
        }),
        Message::Resolved(Resolved {
            req: 4,
            address: addr,
            key: agent.public(),
            public: true,
            online: true,
            hostname: bob,
            endpoints: vec![
                "203.0.113.5:40000".parse().unwrap(),
                "[2001:db8::5]:4000".parse().unwrap(),
            ],
        }),
        Message::Error {
            req: 4,
            code: ErrorCode::HostnameTaken,
            message: "hostname `bob` belongs to another identity".into(),
        },
    ]
    .iter()
    .map(Message::to_vec)
    .collect()
}

#[test]
fn msg_decode() {
    for input in corpus("msg_decode") {
        check_msg_decode(&input);
    }
    let seeds = msg_samples();
    let mut rng = Rng(0x4D53_4744_4543_0005);
    let mut accepted = 0;
    for _ in 0..GENERATED {
        let mut m = rng.pick(&seeds).clone();
        mutate_bytes(&mut rng, &mut m);
        if rng.below(6) == 0 && !m.is_empty() {
            // Another kind's layout over these fields.
            m[0] = *rng.pick(&[0x01, 0x02, 0x10, 0x81, 0x82, 0x8F, 0x00, 0xFF]);
        }
        accepted += usize::from(Message::decode(&m).is_ok());
        check_msg_decode(&m);
    }
    for _ in 0..GENERATED / 10 {
        let len = rng.below(300);
        let noise: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check_msg_decode(&noise);
    }
    assert!(
        accepted > 1_000,
        "only {accepted} generated messages decoded"
    );
}

// --- trust_state_decode ---------------------------------------------------

/// Trust states with every kind of record, encoded.
fn trust_state_samples() -> Vec<Vec<u8>> {
    use pilot_proto::trust::{Outgoing, Pending, Rejected, TrustRequest, TrustState, Trusted};
    let a = Identity::from_seed(&[1; 32]);
    let b = Identity::from_seed(&[2; 32]);
    let req = |to: Query, at: u64, reason: &str| {
        TrustRequest::new(&a, Address::new(0, 0x10), to, at, reason)
    };
    let full = TrustState {
        trusted: vec![Trusted {
            address: Address::new(0, 0x11),
            key: b.public(),
            hostname: Hostname::new("bob").ok(),
            since: 1_800_000_000,
        }],
        pending: vec![Pending {
            request: req(Query::Address(Address::new(0, 0x12)), 3, "hello"),
            hostname: Hostname::new("carol").ok(),
        }],
        outgoing: vec![Outgoing {
            request: req(Query::Hostname(Hostname::new("dave").unwrap()), 4, ""),
        }],
        last_issued_at: 4,
        rejected: vec![Rejected {
            peer: Address::new(0, 0x13),
            hostname: Hostname::new("erin").ok(),
            by_peer: true,
            reason: "not now".into(),
            at: 1_800_000_002,
        }],
    };
    vec![TrustState::default().encode(), full.encode()]
}

#[test]
fn trust_state_decode() {
    for input in corpus("trust_state_decode") {
        check_trust_state_decode(&input);
    }
    let seeds = trust_state_samples();
    for s in &seeds {
        check_trust_state_decode(s);
    }
    let mut rng = Rng(0x5452_5553_5453_0007);
    let mut accepted = 0;
    for _ in 0..GENERATED {
        let mut m = rng.pick(&seeds).clone();
        mutate_bytes(&mut rng, &mut m);
        accepted += usize::from(pilot_proto::trust::TrustState::decode(&m).is_ok());
        check_trust_state_decode(&m);
    }
    assert!(accepted > 100, "only {accepted} generated states decoded");
}

// --- node_datagram and rendezvous_datagram ---------------------------------

/// Programs generated per state-machine target (each runs a whole world,
/// handshakes and all, so far fewer than for a decoder).
const PROGRAMS: usize = 1_000;

/// An op of the world's input language (see `world.rs`), with arguments
/// that mostly make sense: raw datagrams are usually mutated copies of
/// packets really seen on the wire.
fn random_op(rng: &mut Rng, out: &mut Vec<u8>, seen: &[Vec<u8>], messages: &[Vec<u8>]) {
    let len16 = |out: &mut Vec<u8>, n: usize| out.extend_from_slice(&(n as u16).to_le_bytes());
    match rng.below(12) {
        0..=2 => {
            let mut p = if seen.is_empty() || rng.below(5) == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                rng.pick(seen).clone()
            };
            mutate_bytes(rng, &mut p);
            out.extend_from_slice(&[0, rng.next() as u8]);
            len16(out, p.len());
            out.extend_from_slice(&p);
        }
        3 => out.extend((0..7).map(|i| if i == 0 { 1 } else { rng.next() as u8 })),
        4 => out.extend_from_slice(&[2, rng.next() as u8, rng.next() as u8]),
        5 => out.extend_from_slice(&[3, rng.next() as u8]),
        6 => out.push(4),
        7 => {
            let mut m = rng.pick(messages).clone();
            mutate_bytes(rng, &mut m);
            out.extend_from_slice(&[5, rng.next() as u8]);
            len16(out, m.len());
            out.extend_from_slice(&m);
        }
        8..=10 => {
            out.extend_from_slice(&[6, rng.next() as u8, rng.next() as u8]);
            // Fields, and a short payload for the kinds that take one.
            out.extend((0..7).map(|_| rng.next() as u8));
            let n = rng.below(24);
            len16(out, n);
            out.extend((0..n).map(|_| rng.next() as u8));
        }
        _ => out.extend((0..5).map(|i| if i == 0 { 7 } else { rng.next() as u8 })),
    }
}

/// Runs generated programs through `run`: a happy prefix now and then (so
/// later ops meet established sessions), then random ops.
fn state_machine_programs(seed: u64, happy: &[u8], run: fn(&[u8]) -> Vec<Vec<u8>>) {
    let seen = run(happy);
    let messages = msg_samples();
    let mut rng = Rng(seed);
    for i in 0..PROGRAMS {
        let mut program = vec![rng.next() as u8 | 3];
        if i % 3 == 0 {
            program.clear();
            program.extend_from_slice(happy);
        }
        for _ in 0..=rng.below(6) {
            random_op(&mut rng, &mut program, &seen, &messages);
        }
        run(&program);
    }
    // And noise: the language must take any bytes.
    for _ in 0..PROGRAMS / 10 {
        let noise: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        run(&noise);
    }
}

/// The node registers, binds a port, gets a datagram from bob, looks him
/// up and answers: every kind of packet a node handles goes by.
const NODE_HAPPY: &[u8] = &[
    3, // the stand-in rendezvous answers registrations and lookups
    4, // deadline: the node registers
    7, 0, 1, // bind 5000
    6, 1, 5, // bob opens a session
    6, 1, 0, 1, 1, 1, 1, 2, 0, // bob: datagram to our port 5000, "hi"
    b'h', b'i', //
    7, 3, 1, 1, 1, 9, // send 9 bytes to bob:5000 (resolves him first)
    7, 4, 1, // change our hostname: registers again at once
    7, 5, 0, // and go private
    3, 0xC3, // wait 30 s: refresh, keepalives
];

#[test]
fn node_datagram() {
    for input in corpus("node_datagram") {
        world::run_node(&input);
    }
    state_machine_programs(0x40DE_DA7A_0000_0006, NODE_HAPPY, world::run_node);
}

/// Both agents register (alice as "alice", bob as "bob"), alice looks bob
/// up, time passes until registrations expire.
const RENDEZVOUS_HAPPY: &[u8] = &[
    0, //
    6, 0, 0, 1, 1, 1, // alice registers, public, as "alice"
    6, 1, 0, 2, 1, 2, // bob registers, public, as "bob"
    6, 0, 2, 3, 0, // alice resolves bob by address
    3, 0xCA, // wait 100 s: both expire
];

#[test]
fn rendezvous_datagram() {
    for input in corpus("rendezvous_datagram") {
        world::run_rendezvous(&input);
    }
    state_machine_programs(
        0x4E2D_7E20_0000_0007,
        RENDEZVOUS_HAPPY,
        world::run_rendezvous,
    );
}
