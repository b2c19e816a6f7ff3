//! Inner-message decoding never panics; an accepted message encodes back
//! to exactly the input (one encoding per message, so signatures and
//! comparisons over re-encoded messages agree) and decodes again to
//! itself. What a node or rendezvous then does with the untrusted fields
//! (key conversion, signature checks, display) must not panic either.
//! Mirrored by `pilot-proto/tests/fuzz_corpus.rs`; keep the two in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot_proto::msg::Message;

fuzz_target!(|data: &[u8]| {
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
});
