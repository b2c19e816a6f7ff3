//! Sliding anti-replay window over 64-bit transport counters.
//!
//! STUB: the API below is fixed; bodies are being written.

use core::fmt;

/// How far behind the highest counter seen a packet may still arrive.
pub const WINDOW_SIZE: u64 = 8192 - 64;

/// Counters at or above this are never sent nor accepted: a session must
/// rekey long before (see `session`).
pub const COUNTER_LIMIT: u64 = u64::MAX - (1 << 13);

/// Why a counter was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// This counter was already accepted.
    Duplicate,
    /// The counter is older than the window.
    TooOld,
    /// The counter is at or past [`COUNTER_LIMIT`].
    Exhausted,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayError::Duplicate => "counter already seen",
            ReplayError::TooOld => "counter is behind the replay window",
            ReplayError::Exhausted => "counter past the session limit",
        })
    }
}

/// The receive side's record of which counters it has accepted.
#[derive(Clone, Debug)]
pub struct ReplayWindow {}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every counter below the limit is acceptable.
    pub fn new() -> Self {
        todo!()
    }

    /// Whether `counter` would be accepted; cheap, changes nothing. Call it
    /// before decrypting so replays cost no AEAD work.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        let _ = counter;
        todo!()
    }

    /// Marks `counter` as seen. Call only after the packet authenticated.
    pub fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        let _ = counter;
        todo!()
    }
}
