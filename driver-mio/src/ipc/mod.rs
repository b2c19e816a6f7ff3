//! The local IPC between the daemon and its clients (`pilotctl`,
//! applications): a Unix socket, length-prefixed frames, request IDs.
//!
//! - [`api`]: the typed JSON bodies (requests, responses, events);
//! - [`frame`]: the framing, `len u32 BE || kind u8 || id u32 BE || body`;
//! - [`server`]: the daemon's non-blocking server on its `mio::Poll`;
//! - [`crate::client`]: the blocking client library.

pub mod api;
pub mod frame;
pub mod server;
