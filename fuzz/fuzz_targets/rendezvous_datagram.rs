//! A whole `Rendezvous` never panics on what the network sends it: the
//! input is a program (see `shared/world.rs`) that injects raw, replayed
//! and mutated datagrams, makes two honest agents send chosen plaintexts
//! and well-formed registrations and lookups over real sessions, moves
//! time and restores records, checking the drain and timer rules
//! throughout.
//! Replayed by `pilot-proto/tests/fuzz_corpus.rs`, which includes the same
//! `shared/world.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/world.rs"]
mod world;

fuzz_target!(|data: &[u8]| drop(world::run_rendezvous(data)));
