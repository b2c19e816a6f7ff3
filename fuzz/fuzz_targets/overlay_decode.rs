//! Overlay decoding never panics, and a packet it accepts re-encodes to the
//! same bytes, apart from the fields the decoder ignores (traffic class,
//! flow label, hop limit).
//! Mirrored by `pilot-proto/tests/fuzz_corpus.rs`; keep the two in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot_proto::overlay::{decode, encode_udp, Packet};

fuzz_target!(|data: &[u8]| {
    let packet = match decode(data) {
        Ok(p) => p,
        Err(e) => return drop(e.to_string()),
    };
    // Packet will grow (TCP); only UDP has a round trip to check so far.
    if let Packet::Udp { src, dst, payload } = packet {
        let mut out = Vec::new();
        encode_udp(src, dst, payload, &mut out);
        // The decoder ignores traffic class, flow label and hop limit.
        let mut input = data.to_vec();
        input[0] &= 0xF0;
        input[1..4].fill(0);
        input[7] = out[7];
        assert_eq!(out, input);
    }
});
