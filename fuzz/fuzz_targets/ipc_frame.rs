//! IPC framing never panics, whatever the bytes:
//! - cut into frames whole or in pieces, and with a small maximum, the
//!   decoder gives the same frames and stops at the same error;
//! - the frames re-encode to the input's prefix, and the error names the
//!   bytes that caused it (length over the maximum or under 5, unknown kind);
//! - request, response and event bodies (and the input as a body) decode
//!   without panicking, and what decodes round-trips.
//! The checks live in `shared/ipc_frame.rs`, which
//! `driver-mio/tests/ipc_corpus.rs` includes to replay the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/ipc_frame.rs"]
mod ipc_frame;

fuzz_target!(|data: &[u8]| ipc_frame::check(data));
