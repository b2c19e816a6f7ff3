//! A whole `Node` never panics on what the network sends it: the input is
//! a program (see `shared/world.rs`) that injects raw, replayed and mutated
//! datagrams, makes honest peers (a stand-in rendezvous, an agent with a
//! certificate) send chosen plaintexts over real sessions, moves time and
//! issues commands, checking the drain and timer rules throughout.
//! Replayed by `pilot-proto/tests/fuzz_corpus.rs`, which includes the same
//! `shared/world.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "shared/world.rs"]
mod world;

fuzz_target!(|data: &[u8]| drop(world::run_node(data)));
