//! MACs and cookies: the defence that lets a responder refuse work.
//!
//! Every handshake packet carries `mac1`, keyed by the responder's public
//! key, so a responder drops packets not meant for it after one HMAC and
//! before any Diffie-Hellman. When a responder is under load it also
//! demands `mac2`, keyed by a cookie that only a sender who can receive at
//! its source address can learn; packets without it get a cookie reply,
//! computed from a rotating secret, so the responder keeps no state for
//! them.

use alloc::vec::Vec;
use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::rng::Stream;
use crate::time::Timestamp;
use crate::wire::{self, COOKIE_REPLY_LEN, MAC_LEN};

type HmacSha256 = Hmac<Sha256>;

/// How often the cookie secret changes; cookies live as long.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// A 16-byte MAC: the first half of HMAC-SHA256.
pub fn mac(key: &[u8], data: &[u8]) -> [u8; 16] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match <HmacSha256 as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return [0; 16],
    };
    m.update(data);
    let full = m.finalize().into_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

fn labelled_key(label: &[u8; 8], static_public: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(label);
    h.update(static_public);
    h.finalize().into()
}

/// The key for `mac1` of packets sent to `static_public`.
pub fn mac1_key(static_public: &[u8; 32]) -> [u8; 32] {
    labelled_key(b"mac1----", static_public)
}

/// The key sealing cookie replies sent by `static_public`.
pub fn cookie_key(static_public: &[u8; 32]) -> [u8; 32] {
    labelled_key(b"cookie--", static_public)
}

/// Constant-time equality for MACs.
pub fn mac_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// Fills in mac1 and mac2 of a handshake packet whose last 32 bytes are
/// reserved for them. `cookie` is the one the responder gave us, if still
/// fresh. Returns mac1, which a cookie reply will be bound to.
pub fn seal_macs(packet: &mut [u8], mac1_key: &[u8; 32], cookie: Option<&[u8; 16]>) -> [u8; 16] {
    let len = packet.len();
    let m1 = mac(mac1_key, &packet[..len - 2 * MAC_LEN]);
    packet[len - 2 * MAC_LEN..len - MAC_LEN].copy_from_slice(&m1);
    let m2 = match cookie {
        Some(c) => mac(c, &packet[..len - MAC_LEN]),
        None => [0; 16],
    };
    packet[len - MAC_LEN..].copy_from_slice(&m2);
    m1
}

/// What the responder decided about a handshake packet's MACs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacVerdict {
    /// Process the handshake.
    Accept,
    /// mac1 is wrong: not for us, or corrupted. Drop silently.
    BadMac1,
    /// Under load and mac2 is missing or stale: answer with a cookie.
    NeedCookie,
}

/// The responder's side: rotating secret, load estimate.
pub struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    secret: [u8; 32],
    secret_born: Option<Timestamp>,
    /// Handshakes seen in the current one-second window.
    window_start: Timestamp,
    window_count: u32,
    /// Above this many handshakes per second we demand cookies.
    load_threshold: u32,
}

impl CookieChecker {
    /// A checker for the responder whose static public key is `local`.
    pub fn new(local: &[u8; 32], load_threshold: u32) -> Self {
        CookieChecker {
            mac1_key: mac1_key(local),
            cookie_key: cookie_key(local),
            secret: [0; 32],
            secret_born: None,
            window_start: Timestamp::ZERO,
            window_count: 0,
            load_threshold,
        }
    }

    /// The mac1 key of packets meant for us.
    pub fn mac1_key(&self) -> &[u8; 32] {
        &self.mac1_key
    }

    fn refresh_secret(&mut self, now: Timestamp, rng: &mut Stream) {
        let stale = match self.secret_born {
            None => true,
            Some(born) => now.saturating_since(born) >= COOKIE_SECRET_LIFETIME,
        };
        if stale {
            self.secret = rng.bytes32();
            self.secret_born = Some(now);
        }
    }

    /// Whether we are under load right now (counts this handshake).
    fn note_handshake(&mut self, now: Timestamp) -> bool {
        if now.saturating_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        self.window_count > self.load_threshold
    }

    fn cookie_for(&self, src: &[u8]) -> [u8; 16] {
        mac(&self.secret, src)
    }

    /// Checks the MACs of a handshake packet from `src` (the bytes naming
    /// where it came from: see [`source_bytes`]).
    pub fn verify(
        &mut self,
        now: Timestamp,
        rng: &mut Stream,
        src: &[u8],
        hs: &wire::Handshake<'_>,
    ) -> MacVerdict {
        let m1 = mac(&self.mac1_key, hs.mac1_covered);
        if !mac_eq(&m1, hs.mac1) {
            return MacVerdict::BadMac1;
        }
        if !self.note_handshake(now) {
            return MacVerdict::Accept;
        }
        self.refresh_secret(now, rng);
        let cookie = self.cookie_for(src);
        let m2 = mac(&cookie, hs.mac2_covered);
        if mac_eq(&m2, hs.mac2) {
            MacVerdict::Accept
        } else {
            MacVerdict::NeedCookie
        }
    }

    /// Builds a cookie reply to a handshake from `src` with sender index
    /// `sender` and mac1 `mac1`. Stateless: the cookie is derived from the
    /// rotating secret and the source address.
    pub fn cookie_reply(
        &mut self,
        now: Timestamp,
        rng: &mut Stream,
        src: &[u8],
        sender: u32,
        mac1: &[u8; 16],
    ) -> Vec<u8> {
        self.refresh_secret(now, rng);
        let mut cookie = self.cookie_for(src).to_vec();
        let mut nonce = [0u8; 24];
        rng.fill(&mut nonce);
        let aead = XChaCha20Poly1305::new((&self.cookie_key).into());
        let mut out = Vec::with_capacity(COOKIE_REPLY_LEN);
        wire::put_header(&mut out, wire::TYPE_COOKIE, sender);
        out.extend_from_slice(&nonce);
        // Encrypting 16 bytes into a Vec cannot fail.
        match aead.encrypt_in_place_detached(XNonce::from_slice(&nonce), mac1, &mut cookie) {
            Ok(tag) => {
                out.extend_from_slice(&cookie);
                out.extend_from_slice(&tag);
            }
            Err(_) => out.resize(COOKIE_REPLY_LEN, 0),
        }
        out
    }
}

/// The bytes a cookie binds to for a datagram from a UDP address: its IP
/// and port, so a cookie is good only for the address that asked for it.
pub fn source_bytes(src: SocketAddr) -> Vec<u8> {
    let mut data = Vec::with_capacity(18);
    match src.ip() {
        IpAddr::V4(ip) => data.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => data.extend_from_slice(&ip.octets()),
    }
    data.extend_from_slice(&src.port().to_be_bytes());
    data
}

/// Opens a cookie reply from the responder whose static key is `remote`,
/// answering a handshake whose mac1 was `sent_mac1`.
pub fn open_cookie_reply(
    remote: &[u8; 32],
    sent_mac1: &[u8; 16],
    nonce: &[u8; 24],
    sealed: &[u8; 32],
) -> Option<[u8; 16]> {
    let aead = XChaCha20Poly1305::new((&cookie_key(remote)).into());
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&sealed[..16]);
    let tag = Tag::from_slice(&sealed[16..]);
    aead.decrypt_in_place_detached(XNonce::from_slice(nonce), sent_mac1, &mut cookie, tag)
        .ok()?;
    Some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, Packet};

    fn fake_init(len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        wire::put_header(&mut p, wire::TYPE_INIT, 77);
        p.resize(len, 0xAB);
        p
    }

    #[test]
    fn cookie_round_trip_under_load() {
        let responder = [9u8; 32];
        let mut checker = CookieChecker::new(&responder, 2);
        let mut rng = Stream::derive(&[1; 32], "t");
        let src = &source_bytes("192.0.2.1:1000".parse().unwrap());
        let len = wire::INIT_HEADER_LEN + crate::noise::MSG1_OVERHEAD + 8 + 32;
        let mut p = fake_init(len);
        let m1 = seal_macs(&mut p, &mac1_key(&responder), None);
        let hs = match decode(&p) {
            Ok(Packet::Init(h)) => h,
            other => panic!("{other:?}"),
        };
        let now = Timestamp::from_secs(5);
        assert_eq!(checker.verify(now, &mut rng, src, &hs), MacVerdict::Accept);
        assert_eq!(checker.verify(now, &mut rng, src, &hs), MacVerdict::Accept);
        // Third in the same second: over the threshold.
        assert_eq!(
            checker.verify(now, &mut rng, src, &hs),
            MacVerdict::NeedCookie
        );
        let reply = checker.cookie_reply(now, &mut rng, src, 77, &m1);
        let (nonce, sealed) = match decode(&reply) {
            Ok(Packet::Cookie {
                nonce,
                sealed,
                receiver,
            }) => {
                assert_eq!(receiver, 77);
                (nonce, sealed)
            }
            other => panic!("{other:?}"),
        };
        let cookie = open_cookie_reply(&responder, &m1, nonce, sealed).unwrap();
        // A cookie reply bound to a different mac1 does not open.
        assert!(open_cookie_reply(&responder, &[0; 16], nonce, sealed).is_none());
        seal_macs(&mut p, &mac1_key(&responder), Some(&cookie));
        let hs = match decode(&p) {
            Ok(Packet::Init(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(checker.verify(now, &mut rng, src, &hs), MacVerdict::Accept);
        // The cookie is bound to the source address.
        let other = &source_bytes("192.0.2.1:1001".parse().unwrap());
        assert_eq!(
            checker.verify(now, &mut rng, other, &hs),
            MacVerdict::NeedCookie
        );
        // A packet for someone else fails mac1.
        seal_macs(&mut p, &mac1_key(&[8; 32]), None);
        let hs = match decode(&p) {
            Ok(Packet::Init(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(checker.verify(now, &mut rng, src, &hs), MacVerdict::BadMac1);
    }
}
