//! Agent identity: an Ed25519 key pair, and its X25519 form for Noise.

use core::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// An agent's (or a rendezvous's) long-term identity.
///
/// The Ed25519 key signs registrations and trust records; its X25519 form
/// is the static Diffie-Hellman key in every Noise handshake, so one key
/// both names an agent and authenticates its sessions.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// Builds an identity from its 32-byte secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Identity {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed (what the daemon stores, mode 0600).
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// Signs `msg` with Ed25519.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.signing.sign(msg).to_bytes()
    }

    /// The X25519 secret scalar that matches [`PublicKey::x25519`].
    pub fn x25519_secret(&self) -> [u8; 32] {
        self.signing.to_scalar_bytes()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity({})", self.public())
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// A public key or signature that does not check out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The bytes are not a valid Ed25519 point.
    InvalidKey,
    /// The signature does not verify under this key.
    BadSignature,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::InvalidKey => f.write_str("not a valid Ed25519 public key"),
            KeyError::BadSignature => f.write_str("signature does not verify"),
        }
    }
}

impl PublicKey {
    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Verifies an Ed25519 signature (strict: no malleable signatures, no
    /// small-order keys).
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> Result<(), KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidKey)?;
        key.verify_strict(msg, &Signature::from_bytes(sig))
            .map_err(|_| KeyError::BadSignature)
    }

    /// The X25519 (Montgomery) form, the static key used in Noise.
    pub fn x25519(&self) -> Result<[u8; 32], KeyError> {
        let key = VerifyingKey::from_bytes(&self.0).map_err(|_| KeyError::InvalidKey)?;
        if key.is_weak() {
            return Err(KeyError::InvalidKey);
        }
        Ok(key.to_montgomery().to_bytes())
    }

    /// A short, human-comparable fingerprint: `sha256:` and the first 16
    /// hex digits of the SHA-256 of the key.
    pub fn fingerprint(&self) -> Fingerprint {
        let digest = Sha256::digest(self.0);
        let mut f = [0u8; 8];
        f.copy_from_slice(&digest[..8]);
        Fingerprint(f)
    }
}

impl fmt::Display for PublicKey {
    /// Lower-case hex, 64 digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

/// Eight bytes of a key's SHA-256, shown as `sha256:0123456789abcdef`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Fingerprint(pub [u8; 8]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Parses 64 hex digits into a public key.
pub fn parse_public_key(s: &str) -> Option<PublicKey> {
    parse_hex32(s).map(PublicKey)
}

/// Parses 64 hex digits (surrounding whitespace ignored) into 32 bytes:
/// keys and seeds in text files and on command lines.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hi = (chunk[0] as char).to_digit(16)?;
        let lo = (chunk[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::montgomery::MontgomeryPoint;

    #[test]
    fn x25519_forms_agree() {
        let id = Identity::from_seed(&[42; 32]);
        let pk = id.public().x25519().unwrap();
        // The scalar from the seed times the base point is the Montgomery
        // form of the Ed25519 public key.
        let derived = MontgomeryPoint::mul_base_clamped(id.x25519_secret());
        assert_eq!(derived.to_bytes(), pk);
    }

    #[test]
    fn sign_verify_and_reject() {
        let id = Identity::from_seed(&[1; 32]);
        let sig = id.sign(b"hello");
        assert_eq!(id.public().verify(b"hello", &sig), Ok(()));
        assert_eq!(
            id.public().verify(b"hellp", &sig),
            Err(KeyError::BadSignature)
        );
        let other = Identity::from_seed(&[2; 32]);
        assert_eq!(
            other.public().verify(b"hello", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn key_hex_round_trips() {
        let pk = Identity::from_seed(&[9; 32]).public();
        let s = alloc::format!("{pk}");
        assert_eq!(parse_public_key(&s), Some(pk));
        assert_eq!(parse_public_key("zz"), None);
        assert!(alloc::format!("{}", pk.fingerprint()).starts_with("sha256:"));
    }
}
