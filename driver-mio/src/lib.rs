//! Runs Pilot's protocol core against real sockets, clocks and files: the
//! agent daemon, the rendezvous server, the local IPC and its client.
//!
//! No protocol decision lives here: the drivers move bytes, time and
//! randomness in and out of `pilot_proto`'s state machines.
#![forbid(unsafe_code)]

pub mod client;
pub mod clock;
pub mod compat;
pub mod daemon;
pub mod extra;
pub mod fsutil;
pub mod ipc;
pub mod netif;
pub mod rendezvous;
pub mod resolve;
pub mod seed;
pub mod signals;
pub mod tokens;
pub mod udp;

pub use pilot_proto as proto;
