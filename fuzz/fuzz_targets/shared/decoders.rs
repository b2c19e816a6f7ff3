//! The decoder checks of the fuzz targets `addr_parse`, `hostname`,
//! `overlay_decode`, `wire_decode`, `msg_decode` and `trust_state_decode`,
//! shared with `pilot-proto/tests/fuzz_corpus.rs` (which replays the
//! corpora in every `cargo test`): one copy, so the two cannot drift
//! apart. Each check holds for any input, valid or not.
#![allow(dead_code)]

use pilot_proto::addr::{Address, Hostname, PeerRef, SocketAddress};
use pilot_proto::msg::Message;
use pilot_proto::noise::{MSG1_OVERHEAD, MSG2_OVERHEAD};
use pilot_proto::overlay::{self, Packet};
use pilot_proto::trust::TrustState;
use pilot_proto::wire::{self, Handshake};

pub fn check_addr_parse(data: &[u8]) {
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

pub fn check_hostname(data: &[u8]) {
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

pub fn check_overlay_decode(data: &[u8]) {
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

pub fn check_wire_handshake(data: &[u8], kind: u8, h: &Handshake<'_>, min_noise: usize) {
    let mut out = Vec::new();
    wire::put_header(&mut out, kind, h.sender);
    if kind == wire::TYPE_RESPONSE {
        out.extend_from_slice(&h.receiver.to_le_bytes());
    } else {
        assert_eq!(h.receiver, 0);
    }
    out.extend_from_slice(h.noise);
    assert_eq!(out.as_slice(), h.mac1_covered);
    out.extend_from_slice(h.mac1);
    assert_eq!(out.as_slice(), h.mac2_covered);
    out.extend_from_slice(h.mac2);
    assert_eq!(out, data);
    assert!(h.noise.len() >= min_noise);
    assert!(h.noise.len() <= min_noise + wire::MAX_HANDSHAKE_PAYLOAD);
}

pub fn check_wire_decode(data: &[u8]) {
    drop(wire::describe(data));
    match wire::decode(data) {
        Err(e) => drop(e.to_string()),
        Ok(wire::Packet::Init(h)) => check_wire_handshake(data, wire::TYPE_INIT, &h, MSG1_OVERHEAD),
        Ok(wire::Packet::Response(h)) => {
            check_wire_handshake(data, wire::TYPE_RESPONSE, &h, MSG2_OVERHEAD)
        }
        Ok(wire::Packet::Cookie {
            receiver,
            nonce,
            sealed,
        }) => {
            let mut out = Vec::new();
            wire::put_header(&mut out, wire::TYPE_COOKIE, receiver);
            out.extend_from_slice(nonce);
            out.extend_from_slice(sealed);
            assert_eq!(out, data);
        }
        Ok(wire::Packet::Transport {
            receiver,
            counter,
            ciphertext,
        }) => {
            assert!(ciphertext.len() >= wire::TAG_LEN);
            let mut out = Vec::new();
            wire::put_header(&mut out, wire::TYPE_TRANSPORT, receiver);
            out.extend_from_slice(&counter.to_le_bytes());
            out.extend_from_slice(ciphertext);
            assert_eq!(out, data);
        }
        Ok(wire::Packet::Relay { address, inner }) => {
            // One level only, and the framing round-trips.
            assert!((wire::TYPE_INIT..=wire::TYPE_TRANSPORT).contains(&inner[0]));
            assert_eq!(wire::relay(address, inner), data);
        }
        Ok(wire::Packet::Reflect { token, other_port }) => {
            assert_eq!(wire::reflect(token, other_port), data)
        }
        Ok(wire::Packet::Reflected { token, observed }) => {
            assert_eq!(wire::reflected(token, observed), data)
        }
    }
}

pub fn check_msg_decode(data: &[u8]) {
    let m = match Message::decode(data) {
        Ok(m) => m,
        Err(e) => return drop(e.to_string()),
    };
    let bytes = m.to_vec();
    assert_eq!(Message::decode(&bytes).as_ref(), Ok(&m));
    assert_eq!(bytes, data);
    match &m {
        Message::Register(r) => {
            let _ = r.key.x25519();
            let _ = r.verify(&[0; 32]);
        }
        Message::Resolve { query, .. } => drop(query.to_string()),
        Message::Registered(r) => {
            let _ = r.cert.key.x25519();
            let _ = r.cert.verify(&r.cert.key, r.cert.not_after);
        }
        Message::Resolved(r) => {
            let _ = r.key.x25519();
        }
        Message::Error { code, .. } => drop(code.to_string()),
        _ => {}
    }
}

pub fn check_trust_state_decode(data: &[u8]) {
    match TrustState::decode(data) {
        // The form is canonical: what decodes encodes back byte for byte.
        Ok(state) => assert_eq!(state.encode(), data),
        Err(e) => drop(e.to_string()),
    }
}
