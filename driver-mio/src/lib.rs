//! Runs Pilot's protocol core against real sockets, clocks and files.
//!
//! The event loop, the daemon and the rendezvous server arrive with the
//! daemon issue; until then this crate only re-exports the core so the
//! workspace keeps its final shape.
#![forbid(unsafe_code)]

pub use pilot_proto as proto;
