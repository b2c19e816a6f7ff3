//! dataexchange decoding never panics and keeps its promises, whatever the bytes;
//! the checks live in `shared/dataexchange.rs`, which
//! `pilot-proto/tests/services_corpus.rs` replays in every `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/dataexchange.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_dataexchange(data));
