//! Event stream decoding never panics, whatever the bytes:
//! - as one frame payload, what decodes re-encodes to the same bytes;
//! - as a client's stream into a `Broker`, chunking changes nothing, limits
//!   hold, and everything the broker writes decodes cleanly for its clients;
//! - as a broker's stream into a `ClientDecoder`, chunking changes nothing;
//! - as text, a valid topic matches itself and `*`, and a valid pattern
//!   matches the topic made by filling its wildcards.
//! Mirrored by `pilot-proto/tests/services_corpus.rs`; keep the two in step.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use pilot_proto::services::eventstream::{
    check_pattern, check_topic, encode_subscribe, pattern_matches, Broker, BrokerConfig,
    ClientDecoder, Frame, Incoming,
};

const CONFIG: BrokerConfig = BrokerConfig {
    max_frame: 128,
    max_subscriptions_per_connection: 4,
    max_subscriptions: 6,
};

/// Connection 1 sends `data`; connections 2 and 3 listen to everything.
fn broker(data: &[u8], chunk: usize) -> (BTreeMap<u64, Vec<u8>>, Option<String>, usize) {
    let mut b = Broker::new(CONFIG);
    let mut out: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for conn in 1..=3u64 {
        b.connect(conn).unwrap();
    }
    for conn in 2..=3 {
        let mut sub = Vec::new();
        encode_subscribe(&mut sub, "*").unwrap();
        b.on_bytes(conn, &sub).unwrap();
    }
    let mut error = None;
    for piece in data.chunks(chunk) {
        let result = b.on_bytes(1, piece);
        while let Some((conn, bytes)) = b.poll_transmit() {
            out.entry(conn).or_default().extend(bytes);
        }
        if let Err(e) = result {
            error = Some(e.to_string());
            break;
        }
    }
    assert!(b.subscriptions() <= CONFIG.max_subscriptions);
    assert!(b.patterns(&1).count() <= CONFIG.max_subscriptions_per_connection);
    (out, error, b.subscriptions())
}

fn client(data: &[u8], chunk: usize) -> (Vec<Incoming>, Option<String>) {
    let mut c = ClientDecoder::new(CONFIG.max_frame);
    let (mut items, mut error) = (Vec::new(), None);
    for piece in data.chunks(chunk) {
        let result = c.on_bytes(piece);
        while let Some(item) = c.poll() {
            items.push(item);
        }
        if let Err(e) = result {
            error = Some(e.to_string());
            break;
        }
    }
    (items, error)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let mut out = Vec::new();
        frame.encode(&mut out).expect("a decoded frame encodes");
        assert_eq!(&out[4..], data);
    }

    let step = 1 + usize::from(data.first().copied().unwrap_or(0) % 7);
    let whole = broker(data, data.len().max(1));
    assert_eq!(broker(data, step), whole);
    for bytes in whole.0.values() {
        let (_, error) = client(bytes, bytes.len().max(1));
        assert_eq!(error, None, "the broker wrote something its clients refuse");
    }

    let whole = client(data, data.len().max(1));
    assert_eq!(client(data, step), whole);

    if let Ok(text) = std::str::from_utf8(data) {
        if check_topic(text).is_ok() {
            assert_eq!(check_pattern(text), Ok(()));
            assert!(pattern_matches(text, text) && pattern_matches("*", text));
        }
        if check_pattern(text).is_ok() {
            let filled: Vec<&str> = text
                .split('.')
                .map(|s| if s == "*" { "x" } else { s })
                .collect();
            let topic = filled.join(".");
            assert_eq!(check_topic(&topic), Ok(()));
            assert!(pattern_matches(text, &topic), "{text} ~ {topic}");
        }
    }
});
