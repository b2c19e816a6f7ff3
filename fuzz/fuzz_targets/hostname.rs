//! Hostname validation never panics, and an accepted hostname is returned
//! verbatim, validates again, and is never also an address.
//! Mirrored by `pilot-proto/tests/fuzz_corpus.rs`; keep the two in step.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pilot_proto::addr::{Address, Hostname};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = core::str::from_utf8(data) else {
        return;
    };
    match Hostname::new(s) {
        Ok(h) => {
            assert_eq!(h.as_str(), s);
            assert_eq!(Hostname::new(&h.to_string()).as_ref(), Ok(&h));
            assert!(s.parse::<Address>().is_err());
        }
        Err(e) => drop(e.to_string()),
    }
});
