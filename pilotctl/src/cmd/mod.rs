//! One module per command group.

pub mod daemon;
pub mod info;
pub mod rendezvous;
pub mod trust;
