//! Pilot's protocol core: pure, deterministic and sans-IO.
//!
//! Nothing in this crate reads a clock, opens a socket, spawns a thread,
//! touches a file or asks the OS for randomness. Time arrives as a
//! [`Timestamp`] argument and randomness comes from one 32-byte seed.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod addr;
pub mod codec;
pub mod cookie;
pub mod identity;
pub mod io;
pub mod msg;
pub mod nat;
pub mod node;
pub mod noise;
pub mod overlay;
pub mod rendezvous;
pub mod replay;
pub mod rng;
pub mod services;
pub mod session;
pub mod stats;
pub mod stream;
pub mod time;
pub mod trust;
pub mod tunnel;
pub mod wire;

pub use addr::{Address, Hostname, SocketAddress};
pub use identity::{Identity, PublicKey};
pub use io::{SocketId, SocketOp, Transmit};
pub use time::Timestamp;
