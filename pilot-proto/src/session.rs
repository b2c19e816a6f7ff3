//! Transport sessions: what a finished handshake leaves behind.
//!
//! A session holds one key per direction, our and the peer's receiver
//! index, a 64-bit send counter used as the AEAD nonce, and the replay
//! window for the receive direction.

use alloc::vec::Vec;
use core::fmt;
use core::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};

use crate::noise::Split;
use crate::replay::{ReplayError, ReplayWindow, COUNTER_LIMIT};
use crate::time::Timestamp;
use crate::wire::{self, TAG_LEN, TRANSPORT_HEADER_LEN};

/// Timer and counter limits of a session (WireGuard's values by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Start a new handshake before sending once a session is this old.
    pub rekey_after_time: Duration,
    /// Never send or accept on a session older than this.
    pub reject_after_time: Duration,
    /// Start a new handshake once this many packets were sent.
    pub rekey_after_messages: u64,
    /// Never send past this counter.
    pub reject_after_messages: u64,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_after_messages: 1 << 60,
            reject_after_messages: COUNTER_LIMIT,
        }
    }
}

/// Why a packet could not be sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The send counter reached its limit; a new handshake is needed.
    CounterExhausted,
    /// The session is past its reject time.
    Expired,
}

impl fmt::Display for SealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealError::CounterExhausted => "session send counter exhausted",
            SealError::Expired => "session expired",
        })
    }
}

/// Why a transport packet was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OpenError {
    /// Counter seen before or behind the window.
    Replay(ReplayError),
    /// The AEAD tag did not verify: tampered or wrong key.
    Auth,
    /// The session is past its reject time.
    Expired,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Replay(r) => write!(f, "replay: {r}"),
            OpenError::Auth => f.write_str("authentication failed"),
            OpenError::Expired => f.write_str("session expired"),
        }
    }
}

/// One direction pair of transport keys and their counters.
pub struct Session {
    local_index: u32,
    remote_index: u32,
    send: ChaCha20Poly1305,
    recv: ChaCha20Poly1305,
    send_counter: u64,
    replay: ReplayWindow,
    created: Timestamp,
    initiator: bool,
    handshake_hash: [u8; 32],
    limits: SessionLimits,
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n.into()
}

impl Session {
    /// A session from a finished handshake.
    pub fn new(
        split: &Split,
        initiator: bool,
        local_index: u32,
        remote_index: u32,
        now: Timestamp,
        limits: SessionLimits,
    ) -> Self {
        let (send, recv) = if initiator {
            (&split.initiator_to_responder, &split.responder_to_initiator)
        } else {
            (&split.responder_to_initiator, &split.initiator_to_responder)
        };
        Session {
            local_index,
            remote_index,
            send: ChaCha20Poly1305::new(send.into()),
            recv: ChaCha20Poly1305::new(recv.into()),
            send_counter: 0,
            replay: ReplayWindow::new(),
            created: now,
            initiator,
            handshake_hash: split.handshake_hash,
            limits,
        }
    }

    /// Our receiver index.
    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    /// The peer's receiver index.
    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    /// True if we started the handshake.
    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    /// When the handshake finished.
    pub fn created(&self) -> Timestamp {
        self.created
    }

    /// The handshake hash, unique to this session; signatures bind to it.
    pub fn handshake_hash(&self) -> &[u8; 32] {
        &self.handshake_hash
    }

    /// Packets sealed so far.
    pub fn sent(&self) -> u64 {
        self.send_counter
    }

    /// Skips the send counter forward (tests of counter exhaustion).
    pub fn set_send_counter(&mut self, counter: u64) {
        self.send_counter = counter;
    }

    /// True once the session may no longer be used at all.
    pub fn expired(&self, now: Timestamp) -> bool {
        now.saturating_since(self.created) >= self.limits.reject_after_time
    }

    /// When the session stops being usable.
    pub fn expires_at(&self) -> Timestamp {
        self.created + self.limits.reject_after_time
    }

    /// True when a new handshake should start before the next send.
    pub fn wants_rekey(&self, now: Timestamp) -> bool {
        now.saturating_since(self.created) >= self.limits.rekey_after_time
            || self.send_counter >= self.limits.rekey_after_messages
    }

    /// Appends a transport packet carrying `plaintext` to `out`.
    pub fn seal(
        &mut self,
        now: Timestamp,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        if self.expired(now) {
            return Err(SealError::Expired);
        }
        if self.send_counter >= self.limits.reject_after_messages {
            return Err(SealError::CounterExhausted);
        }
        let counter = self.send_counter;
        self.send_counter += 1;
        let start = out.len();
        out.reserve(TRANSPORT_HEADER_LEN + plaintext.len() + TAG_LEN);
        wire::put_header(out, wire::TYPE_TRANSPORT, self.remote_index);
        out.extend_from_slice(&counter.to_le_bytes());
        out.extend_from_slice(plaintext);
        let body = &mut out[start + TRANSPORT_HEADER_LEN..];
        // ChaCha20Poly1305 fails only for messages over 256 GiB.
        match self
            .send
            .encrypt_in_place_detached(&nonce(counter), &[], body)
        {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => {
                out.truncate(start);
                return Err(SealError::Expired);
            }
        }
        Ok(())
    }

    /// Cheap pre-check before decryption.
    pub fn check_counter(&self, counter: u64) -> Result<(), OpenError> {
        self.replay.check(counter).map_err(OpenError::Replay)
    }

    /// Decrypts a transport packet's ciphertext into `out` (appended).
    pub fn open(
        &mut self,
        now: Timestamp,
        counter: u64,
        ciphertext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), OpenError> {
        if self.expired(now) {
            return Err(OpenError::Expired);
        }
        self.check_counter(counter)?;
        if ciphertext.len() < TAG_LEN {
            return Err(OpenError::Auth);
        }
        let (body, tag) = ciphertext.split_at(ciphertext.len() - TAG_LEN);
        let start = out.len();
        out.extend_from_slice(body);
        let result = self.recv.decrypt_in_place_detached(
            &nonce(counter),
            &[],
            &mut out[start..],
            Tag::from_slice(tag),
        );
        if result.is_err() {
            out.truncate(start);
            return Err(OpenError::Auth);
        }
        if let Err(e) = self.replay.accept(counter) {
            out.truncate(start);
            return Err(OpenError::Replay(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Packet};

    fn pair(limits: SessionLimits) -> (Session, Session) {
        let split = Split {
            initiator_to_responder: [1; 32],
            responder_to_initiator: [2; 32],
            handshake_hash: [3; 32],
        };
        let now = Timestamp::ZERO;
        (
            Session::new(&split, true, 10, 20, now, limits),
            Session::new(&split, false, 20, 10, now, limits),
        )
    }

    fn open(s: &mut Session, now: Timestamp, pkt: &[u8]) -> Result<Vec<u8>, OpenError> {
        match decode(pkt) {
            Ok(Packet::Transport {
                receiver,
                counter,
                ciphertext,
            }) => {
                assert_eq!(receiver, s.local_index());
                let mut out = Vec::new();
                s.open(now, counter, ciphertext, &mut out).map(|_| out)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn seal_open_both_ways_and_replay() {
        let (mut a, mut b) = pair(SessionLimits::default());
        let now = Timestamp::from_secs(1);
        let mut p = Vec::new();
        a.seal(now, b"hello", &mut p).unwrap();
        assert_eq!(open(&mut b, now, &p).unwrap(), b"hello");
        assert_eq!(
            open(&mut b, now, &p),
            Err(OpenError::Replay(ReplayError::Duplicate))
        );
        let mut q = Vec::new();
        b.seal(now, b"back", &mut q).unwrap();
        assert_eq!(open(&mut a, now, &q).unwrap(), b"back");
        // A flipped bit anywhere in the ciphertext fails authentication.
        for i in TRANSPORT_HEADER_LEN..q.len() {
            let mut bad = q.clone();
            bad[i] ^= 1;
            // Fresh counter so the replay window is not what refuses it.
            assert!(open(&mut a, now, &bad).is_err());
        }
    }

    #[test]
    fn counter_exhaustion_refuses_to_send() {
        let limits = SessionLimits {
            rekey_after_messages: 5,
            reject_after_messages: 8,
            ..SessionLimits::default()
        };
        let (mut a, _) = pair(limits);
        let now = Timestamp::ZERO;
        let mut p = Vec::new();
        for _ in 0..5 {
            a.seal(now, b"x", &mut p).unwrap();
        }
        assert!(a.wants_rekey(now));
        for _ in 0..3 {
            a.seal(now, b"x", &mut p).unwrap();
        }
        let len = p.len();
        assert_eq!(a.seal(now, b"x", &mut p), Err(SealError::CounterExhausted));
        assert_eq!(p.len(), len, "nothing written on failure");
    }

    #[test]
    fn sessions_age_out() {
        let (mut a, mut b) = pair(SessionLimits::default());
        let t = Timestamp::from_secs(121);
        assert!(a.wants_rekey(t));
        let mut p = Vec::new();
        a.seal(t, b"late", &mut p).unwrap();
        let late = Timestamp::from_secs(181);
        assert_eq!(open(&mut b, late, &p), Err(OpenError::Expired));
        assert_eq!(a.seal(late, b"x", &mut Vec::new()), Err(SealError::Expired));
    }
}
