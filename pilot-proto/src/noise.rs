//! Noise IK handshake: `Noise_IK_25519_ChaChaPoly_SHA256`.
//!
//! Follows the Noise Protocol Framework, revision 34. The pattern is
//!
//! ```text
//! <- s
//! ...
//! -> e, es, s, ss
//! <- e, ee, se
//! ```
//!
//! so the initiator must already know the responder's static key, and the
//! responder learns the initiator's from message 1. Randomness is not drawn
//! here: callers pass ephemeral secrets in, which keeps this module pure and
//! lets the published test vectors be replayed byte for byte.

use alloc::vec::Vec;
use core::fmt;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce, Tag};
use curve25519_dalek::montgomery::MontgomeryPoint;
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

/// Bytes a first message adds to its payload: e (32), encrypted s (48), tag (16).
pub const MSG1_OVERHEAD: usize = 32 + 48 + 16;
/// Bytes a second message adds to its payload: e (32), tag (16).
pub const MSG2_OVERHEAD: usize = 32 + 16;

/// The Noise protocol name; it seeds the handshake hash, so both sides must
/// agree on it exactly.
pub const PROTOCOL_NAME: &[u8] = b"Noise_IK_25519_ChaChaPoly_SHA256";

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
    MontgomeryPoint::mul_base_clamped(*secret).to_bytes()
}

/// The initiator's side, between its first message and the reply.
///
/// Clone it to try a candidate response without consuming the state: a
/// forged response must not end a real handshake.
#[derive(Clone)]
pub struct Initiator {
    symmetric: SymmetricState,
    local_static: [u8; 32],
    ephemeral: [u8; 32],
}

impl Drop for Initiator {
    fn drop(&mut self) {
        self.local_static.zeroize();
        self.ephemeral.zeroize();
    }
}

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
        let mut initiator = Initiator {
            symmetric: SymmetricState::new(PROTOCOL_NAME, prologue),
            local_static: *local_static,
            ephemeral: *ephemeral,
        };
        // A failed write must not leave half a message for the caller to send.
        let mark = out.len();
        match initiator.write_first(remote_static, payload, out) {
            Ok(()) => Ok(initiator),
            Err(err) => {
                out.truncate(mark);
                Err(err)
            }
        }
    }

    /// Reads message 2 (`<- e, ee, se`), appending its payload to `payload`.
    pub fn finish(mut self, msg: &[u8], payload: &mut Vec<u8>) -> Result<Split, NoiseError> {
        if msg.len() < MSG2_OVERHEAD {
            return Err(NoiseError::TooShort);
        }
        let (remote_ephemeral, rest) = take_key(msg)?;
        let sym = &mut self.symmetric;
        sym.mix_hash(&remote_ephemeral);
        sym.mix_dh(&self.ephemeral, &remote_ephemeral)?; // ee
        sym.mix_dh(&self.local_static, &remote_ephemeral)?; // se
        sym.decrypt_and_hash(rest, payload)?;
        Ok(sym.split())
    }

    fn write_first(
        &mut self,
        remote_static: &[u8; 32],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        let sym = &mut self.symmetric;
        sym.mix_hash(remote_static); // pre-message `<- s`
        let ephemeral_public = x25519_public(&self.ephemeral);
        out.extend_from_slice(&ephemeral_public);
        sym.mix_hash(&ephemeral_public);
        sym.mix_dh(&self.ephemeral, remote_static)?; // es
        sym.encrypt_and_hash(&x25519_public(&self.local_static), out)?;
        sym.mix_dh(&self.local_static, remote_static)?; // ss
        sym.encrypt_and_hash(payload, out)
    }
}

/// The responder's side, after reading message 1.
pub struct Responder {
    symmetric: SymmetricState,
    remote_static: [u8; 32],
    remote_ephemeral: [u8; 32],
}

impl Responder {
    /// Reads message 1, appending its payload to `payload`.
    pub fn read(
        prologue: &[u8],
        local_static: &[u8; 32],
        msg: &[u8],
        payload: &mut Vec<u8>,
    ) -> Result<Responder, NoiseError> {
        if msg.len() < MSG1_OVERHEAD {
            return Err(NoiseError::TooShort);
        }
        let mut sym = SymmetricState::new(PROTOCOL_NAME, prologue);
        sym.mix_hash(&x25519_public(local_static)); // pre-message `<- s`
        let (remote_ephemeral, rest) = take_key(msg)?;
        sym.mix_hash(&remote_ephemeral);
        sym.mix_dh(local_static, &remote_ephemeral)?; // es
        let (encrypted_static, rest) = rest
            .split_at_checked(32 + TAG_LEN)
            .ok_or(NoiseError::TooShort)?;
        let mut remote_static = [0u8; 32];
        sym.decrypt_into(encrypted_static, &mut remote_static)?;
        sym.mix_dh(local_static, &remote_static)?; // ss
        sym.decrypt_and_hash(rest, payload)?;
        Ok(Responder {
            symmetric: sym,
            remote_static,
            remote_ephemeral,
        })
    }

    /// The initiator's static X25519 public key, authenticated by message 1.
    pub fn remote_static(&self) -> &[u8; 32] {
        &self.remote_static
    }

    /// Writes message 2 carrying `payload` to `out` (appended).
    pub fn reply(
        mut self,
        ephemeral: &[u8; 32],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<Split, NoiseError> {
        let mark = out.len();
        match self.write_reply(ephemeral, payload, out) {
            Ok(()) => Ok(self.symmetric.split()),
            Err(err) => {
                out.truncate(mark);
                Err(err)
            }
        }
    }

    fn write_reply(
        &mut self,
        ephemeral: &[u8; 32],
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NoiseError> {
        let sym = &mut self.symmetric;
        let ephemeral_public = x25519_public(ephemeral);
        out.extend_from_slice(&ephemeral_public);
        sym.mix_hash(&ephemeral_public);
        sym.mix_dh(ephemeral, &self.remote_ephemeral)?; // ee
        sym.mix_dh(ephemeral, &self.remote_static)?; // se
        sym.encrypt_and_hash(payload, out)
    }
}

const HASH_LEN: usize = 32;
const TAG_LEN: usize = 16;

/// Splits a leading 32-byte public key off a message.
fn take_key(msg: &[u8]) -> Result<([u8; 32], &[u8]), NoiseError> {
    let (key, rest) = msg.split_first_chunk::<32>().ok_or(NoiseError::TooShort)?;
    Ok((*key, rest))
}

/// Noise's SymmetricState: the chaining key, the transcript hash and the
/// CipherState keyed from them.
#[derive(Clone)]
struct SymmetricState {
    ck: [u8; HASH_LEN],
    h: [u8; HASH_LEN],
    cipher: CipherState,
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.ck.zeroize();
        self.h.zeroize();
    }
}

impl SymmetricState {
    /// InitializeSymmetric followed by MixHash(prologue).
    fn new(protocol_name: &[u8], prologue: &[u8]) -> Self {
        let mut h = [0u8; HASH_LEN];
        // Short names are used as-is so the name stays visible in `h`;
        // only names that do not fit are hashed.
        if protocol_name.len() <= HASH_LEN {
            h[..protocol_name.len()].copy_from_slice(protocol_name);
        } else {
            h = Sha256::digest(protocol_name).into();
        }
        let mut state = SymmetricState {
            ck: h,
            h,
            cipher: CipherState::empty(),
        };
        state.mix_hash(prologue);
        state
    }

    fn mix_hash(&mut self, data: &[u8]) {
        let mut hasher = Sha256::new();
        hasher.update(self.h);
        hasher.update(data);
        self.h = hasher.finalize().into();
    }

    fn mix_key(&mut self, input_key_material: &[u8]) {
        let mut okm = hkdf2(&self.ck, input_key_material);
        self.ck.copy_from_slice(&okm[..HASH_LEN]);
        let mut key = [0u8; 32];
        key.copy_from_slice(&okm[HASH_LEN..]);
        self.cipher = CipherState::keyed(key);
        key.zeroize();
        okm.zeroize();
    }

    /// MixKey(DH(secret, public)), refusing low-order points: an all-zero
    /// shared secret would let an attacker fix the key without knowing ours.
    fn mix_dh(&mut self, secret: &[u8; 32], public: &[u8; 32]) -> Result<(), NoiseError> {
        let mut shared = MontgomeryPoint(*public).mul_clamped(*secret).to_bytes();
        // Fold rather than `all` so timing says nothing about the bytes.
        if shared.iter().fold(0u8, |acc, b| acc | b) == 0 {
            // All zeros: nothing secret to wipe.
            return Err(NoiseError::WeakKey);
        }
        self.mix_key(&shared);
        shared.zeroize();
        Ok(())
    }

    /// Appends EncryptAndHash(plaintext) to `out`.
    fn encrypt_and_hash(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let start = out.len();
        out.extend_from_slice(plaintext);
        if let Some(tag) = self.cipher.seal(&self.h, &mut out[start..])? {
            out.extend_from_slice(&tag);
        }
        self.mix_hash(&out[start..]);
        Ok(())
    }

    /// Appends DecryptAndHash(ciphertext) to `out`, or leaves `out` as it
    /// was if the ciphertext does not authenticate.
    fn decrypt_and_hash(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), NoiseError> {
        let plain_len = self.cipher.plaintext_len(ciphertext)?;
        let start = out.len();
        out.resize(start + plain_len, 0);
        let result = self.decrypt_into(ciphertext, &mut out[start..]);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// DecryptAndHash into a buffer sized exactly for the plaintext.
    fn decrypt_into(&mut self, ciphertext: &[u8], plain: &mut [u8]) -> Result<(), NoiseError> {
        if self.cipher.plaintext_len(ciphertext)? != plain.len() {
            return Err(NoiseError::TooShort);
        }
        let (body, tag) = match self.cipher.key {
            Some(_) => {
                let (body, tag) = ciphertext
                    .split_last_chunk::<TAG_LEN>()
                    .ok_or(NoiseError::TooShort)?;
                (body, Some(tag))
            }
            None => (ciphertext, None),
        };
        plain.copy_from_slice(body);
        if let Some(tag) = tag {
            self.cipher.open(&self.h, plain, tag)?;
        }
        self.mix_hash(ciphertext);
        Ok(())
    }

    /// Split(): the initiator sends with the first key, the responder with
    /// the second.
    fn split(&self) -> Split {
        let mut okm = hkdf2(&self.ck, &[]);
        let mut split = Split {
            initiator_to_responder: [0; 32],
            responder_to_initiator: [0; 32],
            handshake_hash: self.h,
        };
        split
            .initiator_to_responder
            .copy_from_slice(&okm[..HASH_LEN]);
        split
            .responder_to_initiator
            .copy_from_slice(&okm[HASH_LEN..]);
        okm.zeroize();
        split
    }
}

/// Noise's HKDF with two outputs. It is RFC 5869 HKDF with the chaining key
/// as salt and empty info, so the `hkdf` crate computes it directly.
fn hkdf2(chaining_key: &[u8; HASH_LEN], input_key_material: &[u8]) -> [u8; 2 * HASH_LEN] {
    let mut okm = [0u8; 2 * HASH_LEN];
    // 64 bytes is far below HKDF's 255 * 32 limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(chaining_key), input_key_material).expand(&[], &mut okm);
    okm
}

/// Noise's CipherState: an optional key and the nonce counter.
#[derive(Clone)]
struct CipherState {
    key: Option<[u8; 32]>,
    nonce: u64,
}

impl Drop for CipherState {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl CipherState {
    fn empty() -> Self {
        CipherState {
            key: None,
            nonce: 0,
        }
    }

    fn keyed(key: [u8; 32]) -> Self {
        CipherState {
            key: Some(key),
            nonce: 0,
        }
    }

    /// How long the plaintext of `ciphertext` is: before any key is mixed
    /// in, Noise sends plaintext, afterwards every ciphertext carries a tag.
    fn plaintext_len(&self, ciphertext: &[u8]) -> Result<usize, NoiseError> {
        match self.key {
            Some(_) => ciphertext
                .len()
                .checked_sub(TAG_LEN)
                .ok_or(NoiseError::TooShort),
            None => Ok(ciphertext.len()),
        }
    }

    /// Encrypts `buf` in place, returning the tag, or `None` (leaving `buf`
    /// as plaintext) when there is no key yet.
    fn seal(&mut self, ad: &[u8], buf: &mut [u8]) -> Result<Option<[u8; TAG_LEN]>, NoiseError> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let tag = ChaCha20Poly1305::new(key.into())
            .encrypt_in_place_detached(&nonce(self.nonce), ad, buf)
            // Only payloads beyond ChaCha20's 256 GiB limit fail to encrypt.
            .map_err(|_| NoiseError::Decrypt)?;
        self.nonce = self.nonce.wrapping_add(1);
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(Some(out))
    }

    /// Authenticates and decrypts `buf` in place.
    fn open(&mut self, ad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), NoiseError> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        ChaCha20Poly1305::new(key.into())
            .decrypt_in_place_detached(&nonce(self.nonce), ad, buf, Tag::from_slice(tag))
            .map_err(|_| NoiseError::Decrypt)?;
        self.nonce = self.nonce.wrapping_add(1);
        Ok(())
    }
}

/// The ChaChaPoly nonce: 32 zero bits then the counter, little-endian.
fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;
    use alloc::vec;

    struct Keys {
        initiator_static: [u8; 32],
        responder_static: [u8; 32],
        initiator_ephemeral: [u8; 32],
        responder_ephemeral: [u8; 32],
    }

    fn keys(seed: u8) -> Keys {
        let mut rng = Stream::derive(&[seed; 32], "noise tests");
        let mut next = || {
            let mut k = [0u8; 32];
            rng.fill(&mut k);
            k
        };
        Keys {
            initiator_static: next(),
            responder_static: next(),
            initiator_ephemeral: next(),
            responder_ephemeral: next(),
        }
    }

    const PROLOGUE: &[u8] = b"pilot test";

    fn first(k: &Keys, payload: &[u8]) -> (Initiator, Vec<u8>) {
        let mut msg = Vec::new();
        let init = Initiator::start(
            PROLOGUE,
            &k.initiator_static,
            &x25519_public(&k.responder_static),
            &k.initiator_ephemeral,
            payload,
            &mut msg,
        )
        .unwrap();
        (init, msg)
    }

    fn respond(k: &Keys, msg1: &[u8], payload: &[u8]) -> (Split, Vec<u8>) {
        let mut got = Vec::new();
        let resp = Responder::read(PROLOGUE, &k.responder_static, msg1, &mut got).unwrap();
        let mut msg2 = Vec::new();
        let split = resp
            .reply(&k.responder_ephemeral, payload, &mut msg2)
            .unwrap();
        (split, msg2)
    }

    #[test]
    fn round_trip() {
        for seed in 0..8u8 {
            let k = keys(seed);
            let p1 = vec![seed; usize::from(seed) * 7];
            let p2 = vec![seed ^ 0xff; usize::from(seed) * 3];
            let (init, msg1) = first(&k, &p1);
            assert_eq!(msg1.len(), MSG1_OVERHEAD + p1.len());

            let mut got1 = Vec::new();
            let resp = Responder::read(PROLOGUE, &k.responder_static, &msg1, &mut got1).unwrap();
            assert_eq!(got1, p1);
            assert_eq!(resp.remote_static(), &x25519_public(&k.initiator_static));

            let mut msg2 = b"kept".to_vec();
            let rsplit = resp.reply(&k.responder_ephemeral, &p2, &mut msg2).unwrap();
            assert_eq!(&msg2[..4], b"kept");
            assert_eq!(msg2.len(), 4 + MSG2_OVERHEAD + p2.len());

            let mut got2 = b"x".to_vec();
            let isplit = init.finish(&msg2[4..], &mut got2).unwrap();
            assert_eq!(&got2[1..], &p2[..]);
            assert_eq!(isplit.initiator_to_responder, rsplit.initiator_to_responder);
            assert_eq!(isplit.responder_to_initiator, rsplit.responder_to_initiator);
            assert_eq!(isplit.handshake_hash, rsplit.handshake_hash);
            assert_ne!(isplit.initiator_to_responder, isplit.responder_to_initiator);
        }
    }

    #[test]
    fn different_ephemerals_give_different_keys() {
        let a = keys(1);
        let mut b = keys(1);
        // Byte 1: clamping would erase a change to the low bits of byte 0.
        b.initiator_ephemeral[1] ^= 1;
        let (init_a, m1a) = first(&a, b"");
        let (init_b, m1b) = first(&b, b"");
        let (_, m2a) = respond(&a, &m1a, b"");
        let (_, m2b) = respond(&b, &m1b, b"");
        let sa = init_a.finish(&m2a, &mut Vec::new()).unwrap();
        let sb = init_b.finish(&m2b, &mut Vec::new()).unwrap();
        assert_ne!(sa.handshake_hash, sb.handshake_hash);
        assert_ne!(sa.initiator_to_responder, sb.initiator_to_responder);
    }

    #[test]
    fn wrong_responder_static_fails_to_decrypt() {
        let k = keys(2);
        let (_, msg1) = first(&k, b"hello");
        let other = keys(3).responder_static;
        let mut got = Vec::new();
        let err = Responder::read(PROLOGUE, &other, &msg1, &mut got).err();
        assert_eq!(err, Some(NoiseError::Decrypt));
        assert!(got.is_empty());
    }

    #[test]
    fn wrong_prologue_fails_to_decrypt() {
        let k = keys(4);
        let (_, msg1) = first(&k, b"hello");
        let err = Responder::read(b"other", &k.responder_static, &msg1, &mut Vec::new()).err();
        assert_eq!(err, Some(NoiseError::Decrypt));
    }

    #[test]
    fn tampered_first_message_is_refused() {
        let k = keys(5);
        let (_, msg1) = first(&k, b"payload");
        for i in 0..msg1.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = msg1.clone();
                bad[i] ^= flip;
                let mut got = Vec::new();
                let res = Responder::read(PROLOGUE, &k.responder_static, &bad, &mut got);
                assert!(res.is_err(), "byte {i} flip {flip:#x} accepted");
                assert!(got.is_empty());
            }
        }
    }

    #[test]
    fn tampered_second_message_is_refused() {
        let k = keys(6);
        let (_, msg1) = first(&k, b"one");
        let (_, msg2) = respond(&k, &msg1, b"two");
        for i in 0..msg2.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = msg2.clone();
                bad[i] ^= flip;
                let (init, _) = first(&k, b"one");
                let mut got = Vec::new();
                assert!(init.finish(&bad, &mut got).is_err(), "byte {i} accepted");
                assert!(got.is_empty());
            }
        }
    }

    #[test]
    fn truncated_messages_are_too_short() {
        let k = keys(7);
        let (_, msg1) = first(&k, b"");
        assert_eq!(msg1.len(), MSG1_OVERHEAD);
        for len in 0..MSG1_OVERHEAD {
            let res = Responder::read(PROLOGUE, &k.responder_static, &msg1[..len], &mut Vec::new());
            assert_eq!(res.err(), Some(NoiseError::TooShort), "length {len}");
        }
        let (_, msg2) = respond(&k, &msg1, b"");
        assert_eq!(msg2.len(), MSG2_OVERHEAD);
        for len in 0..MSG2_OVERHEAD {
            let (init, _) = first(&k, b"");
            let res = init.finish(&msg2[..len], &mut Vec::new());
            assert_eq!(res.err(), Some(NoiseError::TooShort), "length {len}");
        }
    }

    #[test]
    fn truncated_payload_fails_to_decrypt() {
        let k = keys(8);
        let (_, msg1) = first(&k, b"some payload");
        let short = &msg1[..msg1.len() - 1];
        let res = Responder::read(PROLOGUE, &k.responder_static, short, &mut Vec::new());
        assert_eq!(res.err(), Some(NoiseError::Decrypt));
    }

    #[test]
    fn garbage_never_panics() {
        let k = keys(9);
        let mut rng = Stream::derive(&[9; 32], "garbage");
        for len in 0..300 {
            let mut junk = vec![0u8; len];
            rng.fill(&mut junk);
            assert!(
                Responder::read(PROLOGUE, &k.responder_static, &junk, &mut Vec::new()).is_err()
            );
            let (init, _) = first(&k, b"");
            assert!(init.finish(&junk, &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn low_order_points_are_weak() {
        let k = keys(10);
        // u = 0 is a low-order point: every scalar multiple of it is zero.
        let mut out = b"prefix".to_vec();
        let res = Initiator::start(
            PROLOGUE,
            &k.initiator_static,
            &[0; 32],
            &k.initiator_ephemeral,
            b"",
            &mut out,
        );
        assert_eq!(res.err(), Some(NoiseError::WeakKey));
        assert_eq!(out, b"prefix");

        let mut msg1 = vec![0u8; MSG1_OVERHEAD];
        msg1[0] = 1; // u = 1 is low-order too.
        let res = Responder::read(PROLOGUE, &k.responder_static, &msg1, &mut Vec::new());
        assert_eq!(res.err(), Some(NoiseError::WeakKey));
    }

    #[test]
    fn protocol_name_rule() {
        let short = SymmetricState::new(b"abc", b"");
        let mut padded = [0u8; 32];
        padded[..3].copy_from_slice(b"abc");
        assert_eq!(short.ck, padded);

        let long_name = [b'n'; 33];
        let long = SymmetricState::new(&long_name, b"");
        let hashed: [u8; 32] = Sha256::digest(long_name).into();
        assert_eq!(long.ck, hashed);

        let exact = SymmetricState::new(PROTOCOL_NAME, b"");
        assert_eq!(&exact.ck[..], PROTOCOL_NAME);
    }

    #[test]
    fn nonce_layout() {
        let n = nonce(0x0102_0304_0506_0708);
        assert_eq!(n.as_slice(), &[0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
    }
}
