//! Noise IK handshake: `Noise_IK_25519_ChaChaPoly_SHA256`.
//!
//! STUB: the API below is fixed; bodies are being written.

use alloc::vec::Vec;
use core::fmt;

/// Bytes a first message adds to its payload: e (32), encrypted s (48), tag (16).
pub const MSG1_OVERHEAD: usize = 32 + 48 + 16;
/// Bytes a second message adds to its payload: e (32), tag (16).
pub const MSG2_OVERHEAD: usize = 32 + 16;

/// The handshake failed; nothing about why leaks beyond this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoiseError {
    /// The message is shorter than the pattern requires.
    TooShort,
    /// AEAD decryption failed.
    Decrypt,
    /// A Diffie-Hellman result was all zeros (low-order point).
    WeakKey,
}

impl fmt::Display for NoiseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NoiseError::TooShort => "handshake message too short",
            NoiseError::Decrypt => "handshake message failed to decrypt",
            NoiseError::WeakKey => "low-order public key",
        })
    }
}

/// The result of a finished handshake.
#[derive(Clone)]
pub struct Split {
    /// Key for initiator-to-responder transport messages.
    pub initiator_to_responder: [u8; 32],
    /// Key for responder-to-initiator transport messages.
    pub responder_to_initiator: [u8; 32],
    /// The final handshake hash `h`, unique to this handshake.
    pub handshake_hash: [u8; 32],
}

/// The X25519 public key for a secret.
pub fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    let _ = secret;
    todo!()
}

/// The initiator's side, between its first message and the reply.
#[derive(Clone)]
pub struct Initiator {}

impl Initiator {
    /// Writes message 1 (`-> e, es, s, ss`) carrying `payload` to `out`
    /// (appended) and returns the state waiting for the reply.
    pub fn start(
        prologue: &[u8],
        local_static: &[u8; 32],
        remote_static: &[u8; 32],
        ephemeral: &[u8; 32],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Initiator, NoiseError> {
        let _ = (
            prologue,
            local_static,
            remote_static,
            ephemeral,
            payload,
            out,
        );
        todo!()
    }

    /// Reads message 2 (`<- e, ee, se`), appending its payload to `payload`.
    pub fn finish(self, msg: &[u8], payload: &mut Vec<u8>) -> Result<Split, NoiseError> {
        let _ = (msg, payload);
        todo!()
    }
}

/// The responder's side, after reading message 1.
pub struct Responder {}

impl Responder {
    /// Reads message 1, appending its payload to `payload`.
    pub fn read(
        prologue: &[u8],
        local_static: &[u8; 32],
        msg: &[u8],
        payload: &mut Vec<u8>,
    ) -> Result<Responder, NoiseError> {
        let _ = (prologue, local_static, msg, payload);
        todo!()
    }

    /// The initiator's static X25519 public key, authenticated by message 1.
    pub fn remote_static(&self) -> &[u8; 32] {
        todo!()
    }

    /// Writes message 2 carrying `payload` to `out` (appended).
    pub fn reply(
        self,
        ephemeral: &[u8; 32],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Split, NoiseError> {
        let _ = (ephemeral, payload, out);
        todo!()
    }
}
