//! `trust_state_decode`: the decoder of the persisted trust state
//! (`$PILOT_HOME/trust.state`, a file anyone with access could have
//! corrupted) never panics, and what it accepts encodes back to the same
//! bytes. The check lives in `shared/decoders.rs`, which
//! `pilot-proto/tests/fuzz_corpus.rs` replays over the corpus in every
//! `cargo test`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/decoders.rs"]
mod decoders;

fuzz_target!(|data: &[u8]| decoders::check_trust_state_decode(data));
