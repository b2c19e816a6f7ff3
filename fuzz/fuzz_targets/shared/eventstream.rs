//! The event stream decoding checks, shared by the fuzz target
//! `eventstream_decode` and `pilot-proto/tests/services_corpus.rs`: one
//! copy, so the two cannot drift apart. Each check holds for any input.
#![allow(dead_code)]

use std::collections::BTreeMap;

use pilot_proto::services::eventstream::{
    self, check_pattern, check_topic, encode_subscribe, pattern_matches, Broker, BrokerConfig,
    ClientDecoder, Incoming,
};

pub const ES_CONFIG: BrokerConfig = BrokerConfig {
    max_frame: 128,
    max_subscriptions_per_connection: 4,
    max_subscriptions: 6,
};

pub type BrokerOutcome = (BTreeMap<u64, Vec<u8>>, Option<String>, usize);

/// Connection 1 sends `data`; connections 2 and 3 listen to everything.
pub fn broker(data: &[u8], chunk: usize) -> BrokerOutcome {
    let mut b = Broker::new(ES_CONFIG);
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
    assert!(b.subscriptions() <= ES_CONFIG.max_subscriptions);
    assert!(b.patterns(&1).count() <= ES_CONFIG.max_subscriptions_per_connection);
    (out, error, b.subscriptions())
}

pub fn client(data: &[u8], chunk: usize) -> (Vec<Incoming>, Option<String>) {
    let mut c = ClientDecoder::new(ES_CONFIG.max_frame);
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

pub fn check_eventstream(data: &[u8]) {
    use eventstream::Frame;
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
}
