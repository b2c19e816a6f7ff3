//! The local IPC between the daemon and its clients (`pilotctl`,
//! applications): a Unix socket, length-prefixed frames, request IDs.

pub mod api;
