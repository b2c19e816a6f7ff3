//! One module per command group.

pub mod daemon;
pub mod detach;
pub mod info;
pub mod ping;
pub mod rendezvous;
pub mod trust;
