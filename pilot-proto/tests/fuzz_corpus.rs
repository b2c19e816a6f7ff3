//! Replays the committed fuzz corpora, plus deterministic pseudo-random
//! inputs, through the same checks as the fuzz targets in `fuzz/`, so that
//! `cargo test` on stable guards what the fuzzers found.
//!
//! Adding a decoder: write `check_<target>` mirroring its fuzz target, then a
//! `#[test]` that runs `corpus("<target>")` and some generated inputs through
//! it. Each check must hold for any input, valid or not.

use std::fs;
use std::path::PathBuf;

use pilot_proto::addr::{Address, Hostname, PeerRef, SocketAddress};
use pilot_proto::overlay::{self, Packet, MAX_DATAGRAM};

/// Pseudo-random inputs generated per target, on top of the corpus.
const GENERATED: usize = 20_000;

/// Every file under `fuzz/corpus/<target>/`, sorted by name so the run is
/// the same everywhere. A target without a corpus directory is a mistake.
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "corpus {} is empty", dir.display());
    paths.into_iter().map(|p| fs::read(p).unwrap()).collect()
}

/// Xorshift64: deterministic, dependency-free and plenty for input spread.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

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

fn check_addr_parse(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = s.parse::<Address>() {
        assert_eq!(a.to_string().parse::<Address>(), Ok(a), "{s:?}");
        assert_eq!(Address::from_bytes(a.to_bytes()), a);
    }
    if let Ok(sa) = s.parse::<SocketAddress>() {
        assert_eq!(sa.to_string().parse::<SocketAddress>(), Ok(sa), "{s:?}");
    }
    match PeerRef::parse(s) {
        Ok(p) => assert_eq!(PeerRef::parse(&p.to_string()), Ok(p), "{s:?}"),
        Err(e) => drop(e.to_string()),
    }
}

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

fn check_hostname(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match Hostname::new(s) {
        Ok(h) => {
            assert_eq!(h.as_str(), s);
            assert_eq!(Hostname::new(&h.to_string()).as_ref(), Ok(&h));
            assert!(s.parse::<Address>().is_err(), "{s:?}");
        }
        Err(e) => drop(e.to_string()),
    }
}

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

fn check_overlay_decode(data: &[u8]) {
    let packet = match overlay::decode(data) {
        Ok(p) => p,
        Err(e) => return drop(e.to_string()),
    };
    // Packet will grow (TCP); only UDP has a round trip to check so far.
    if let Packet::Udp { src, dst, payload } = packet {
        let mut out = Vec::new();
        overlay::encode_udp(src, dst, payload, &mut out);
        // The decoder ignores traffic class, flow label and hop limit.
        let mut input = data.to_vec();
        input[0] &= 0xF0;
        input[1..4].fill(0);
        input[7] = out[7];
        assert_eq!(out, input);
    }
}

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
