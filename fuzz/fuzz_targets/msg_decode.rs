//! `msg_decode`: the decoder never panics and keeps its promises, whatever the
//! bytes. The check lives in `shared/decoders.rs`, which
//! `pilot-proto/tests/fuzz_corpus.rs` replays over the corpus in every
//! `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/decoders.rs"]
mod decoders;

fuzz_target!(|data: &[u8]| decoders::check_msg_decode(data));
