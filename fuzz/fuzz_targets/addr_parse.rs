//! Address, socket address and peer-reference parsing never panic, and
//! whatever parses displays as text that parses back to the same value.
//! Mirrored by `pilot-proto/tests/fuzz_corpus.rs`; keep the two in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot_proto::addr::{Address, PeerRef, SocketAddress};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = s.parse::<Address>() {
        assert_eq!(a.to_string().parse::<Address>(), Ok(a));
        assert_eq!(Address::from_bytes(a.to_bytes()), a);
    }
    if let Ok(sa) = s.parse::<SocketAddress>() {
        assert_eq!(sa.to_string().parse::<SocketAddress>(), Ok(sa));
    }
    match PeerRef::parse(s) {
        Ok(p) => assert_eq!(PeerRef::parse(&p.to_string()), Ok(p)),
        // Errors must render without panicking.
        Err(e) => drop(e.to_string()),
    }
});
