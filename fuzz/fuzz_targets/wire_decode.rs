//! Outer-packet decoding never panics, nor does describing a datagram; an
//! accepted packet's parts lie where the layout says and put back together
//! give the input again.
//! Mirrored by `pilot-proto/tests/fuzz_corpus.rs`; keep the two in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot_proto::noise::{MSG1_OVERHEAD, MSG2_OVERHEAD};
use pilot_proto::wire::{self, Handshake, Packet};

fn handshake(data: &[u8], kind: u8, h: &Handshake<'_>, min_noise: usize) {
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

fuzz_target!(|data: &[u8]| {
    drop(wire::describe(data));
    match wire::decode(data) {
        Err(e) => drop(e.to_string()),
        Ok(Packet::Init(h)) => handshake(data, wire::TYPE_INIT, &h, MSG1_OVERHEAD),
        Ok(Packet::Response(h)) => handshake(data, wire::TYPE_RESPONSE, &h, MSG2_OVERHEAD),
        Ok(Packet::Cookie {
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
        Ok(Packet::Transport {
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
    }
});
