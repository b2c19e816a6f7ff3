//! The agent daemon: a node on real sockets, its IPC server and its files.

pub mod agent;
pub mod bridge;
pub mod gateway;
pub mod home;
pub mod run;
