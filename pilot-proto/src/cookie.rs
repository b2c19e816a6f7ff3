//! MACs and cookies: the defence that lets a responder refuse work.
//!
//! Every handshake packet carries `mac1`, keyed by the responder's public
//! key, so a responder drops packets not meant for it after one HMAC and
//! before any Diffie-Hellman. When a responder is under load it also
//! demands `mac2`, keyed by a cookie that only a sender who can receive at
//! its source address can learn; packets without it get a cookie reply,
//! computed from a rotating secret, so the responder keeps no state for
//! them.
//!
//! A cookie only proves that the sender receives at its address; one
//! address can still send as many handshakes as it likes. So under load
//! each source (an IPv4 address, an IPv6 /64, or an agent behind the
//! relay) also gets a small token bucket, as WireGuard does: a flood from
//! one place is cut to a trickle and everyone else still gets in.

use alloc::collections::{BTreeMap, BTreeSet};
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
    /// Under load, mac2 is good, but its source is over its handshake
    /// rate. Drop silently: a cookie would not help it.
    SourceLimited,
}

/// Where a handshake comes from, as far as the per-source limit cares:
/// one bucket per IPv4 address, per IPv6 /64 (what one host usually
/// holds), and per agent the relay brings packets from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LimitSource {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
    /// An agent behind the relay, by its overlay address.
    Relayed([u8; 6]),
}

impl LimitSource {
    /// The source of a datagram from `addr`.
    pub fn of(addr: SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(ip) => LimitSource::V4(ip.octets()),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => LimitSource::V4(v4.octets()),
                None => {
                    let mut prefix = [0u8; 8];
                    prefix.copy_from_slice(&ip.octets()[..8]);
                    LimitSource::V6(prefix)
                }
            },
        }
    }
}

/// The handshake rate each source is allowed while we are under load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLimits {
    /// Handshakes per second per source, sustained.
    pub per_second: u32,
    /// Handshakes a source may send at once.
    pub burst: u32,
    /// Sources remembered; the one heard from least recently goes first.
    pub max_sources: usize,
    /// How long we count as under load after the load threshold was
    /// last crossed.
    pub load_hold: Duration,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            per_second: 20,
            burst: 5,
            max_sources: 8192,
            load_hold: Duration::from_secs(1),
        }
    }
}

struct SourceBucket {
    /// Tokens, in millionths of a handshake.
    micro_tokens: u64,
    last: Timestamp,
}

/// The responder's side: rotating secret, load estimate, per-source
/// buckets.
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
    /// Under load until then (the threshold was crossed within
    /// `limits.load_hold`).
    loaded_until: Option<Timestamp>,
    limits: SourceLimits,
    buckets: BTreeMap<LimitSource, SourceBucket>,
    /// The buckets by when they were last used, oldest first.
    by_age: BTreeSet<(Timestamp, LimitSource)>,
}

impl CookieChecker {
    /// A checker for the responder whose static public key is `local`.
    pub fn new(local: &[u8; 32], load_threshold: u32) -> Self {
        Self::with_limits(local, load_threshold, SourceLimits::default())
    }

    /// Like [`CookieChecker::new`], with per-source limits.
    pub fn with_limits(local: &[u8; 32], load_threshold: u32, limits: SourceLimits) -> Self {
        CookieChecker {
            mac1_key: mac1_key(local),
            cookie_key: cookie_key(local),
            secret: [0; 32],
            secret_born: None,
            window_start: Timestamp::ZERO,
            window_count: 0,
            load_threshold,
            loaded_until: None,
            limits,
            buckets: BTreeMap::new(),
            by_age: BTreeSet::new(),
        }
    }

    /// Sources with a bucket right now (bounded by `max_sources`).
    pub fn limited_sources(&self) -> usize {
        self.buckets.len()
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

    /// Whether we are under load right now (counts this handshake). Load
    /// is the handshake rate over the threshold, and it lasts `load_hold`
    /// after the rate was last seen over it. Once the load is gone, the
    /// buckets go too.
    fn note_handshake(&mut self, now: Timestamp) -> bool {
        if now.saturating_since(self.window_start) >= Duration::from_secs(1) {
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count = self.window_count.saturating_add(1);
        if self.window_count > self.load_threshold {
            self.loaded_until = Some(now + self.limits.load_hold);
        }
        let loaded = self.loaded_until.is_some_and(|t| now < t);
        if !loaded && !self.buckets.is_empty() {
            self.buckets.clear();
            self.by_age.clear();
        }
        loaded
    }

    /// Takes one handshake from `source`'s bucket; false if it is empty.
    fn take_token(&mut self, now: Timestamp, source: LimitSource) -> bool {
        const MICRO: u64 = 1_000_000;
        let cap = u64::from(self.limits.burst.max(1)) * MICRO;
        let rate = u64::from(self.limits.per_second);
        let bucket = match self.buckets.get_mut(&source) {
            Some(b) => {
                self.by_age.remove(&(b.last, source));
                let elapsed = now.saturating_since(b.last).as_micros() as u64;
                b.micro_tokens = b.micro_tokens.saturating_add(elapsed * rate).min(cap);
                b
            }
            None => {
                while self.buckets.len() >= self.limits.max_sources.max(1) {
                    let Some((_, oldest)) = self.by_age.pop_first() else {
                        break;
                    };
                    self.buckets.remove(&oldest);
                }
                self.buckets.entry(source).or_insert(SourceBucket {
                    micro_tokens: cap,
                    last: now,
                })
            }
        };
        bucket.last = now;
        self.by_age.insert((now, source));
        if bucket.micro_tokens < MICRO {
            return false;
        }
        bucket.micro_tokens -= MICRO;
        true
    }

    fn cookie_for(&self, src: &[u8]) -> [u8; 16] {
        mac(&self.secret, src)
    }

    /// Checks the MACs of a handshake packet from `src` (the bytes naming
    /// where it came from: see [`source_bytes`]); `limit` is the bucket
    /// it counts against under load.
    pub fn verify(
        &mut self,
        now: Timestamp,
        rng: &mut Stream,
        src: &[u8],
        limit: LimitSource,
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
        if !mac_eq(&m2, hs.mac2) {
            return MacVerdict::NeedCookie;
        }
        if self.take_token(now, limit) {
            MacVerdict::Accept
        } else {
            MacVerdict::SourceLimited
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
        let lim = LimitSource::V4([192, 0, 2, 1]);
        let len = wire::INIT_HEADER_LEN + crate::noise::MSG1_OVERHEAD + 8 + 32;
        let mut p = fake_init(len);
        let m1 = seal_macs(&mut p, &mac1_key(&responder), None);
        let hs = match decode(&p) {
            Ok(Packet::Init(h)) => h,
            other => panic!("{other:?}"),
        };
        let now = Timestamp::from_secs(5);
        assert_eq!(
            checker.verify(now, &mut rng, src, lim, &hs),
            MacVerdict::Accept
        );
        assert_eq!(
            checker.verify(now, &mut rng, src, lim, &hs),
            MacVerdict::Accept
        );
        // Third in the same second: over the threshold.
        assert_eq!(
            checker.verify(now, &mut rng, src, lim, &hs),
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
        assert_eq!(
            checker.verify(now, &mut rng, src, lim, &hs),
            MacVerdict::Accept
        );
        // The cookie is bound to the source address.
        let other = &source_bytes("192.0.2.1:1001".parse().unwrap());
        assert_eq!(
            checker.verify(now, &mut rng, other, lim, &hs),
            MacVerdict::NeedCookie
        );
        // A packet for someone else fails mac1.
        seal_macs(&mut p, &mac1_key(&[8; 32]), None);
        let hs = match decode(&p) {
            Ok(Packet::Init(h)) => h,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            checker.verify(now, &mut rng, src, lim, &hs),
            MacVerdict::BadMac1
        );
    }

    fn init_with(responder: &[u8; 32], cookie: Option<&[u8; 16]>) -> (Vec<u8>, [u8; 16]) {
        let len = wire::INIT_HEADER_LEN + crate::noise::MSG1_OVERHEAD + 8 + 32;
        let mut p = fake_init(len);
        let m1 = seal_macs(&mut p, &mac1_key(responder), cookie);
        (p, m1)
    }

    fn verdict(
        checker: &mut CookieChecker,
        rng: &mut Stream,
        now: Timestamp,
        from: SocketAddr,
        packet: &[u8],
    ) -> MacVerdict {
        let hs = match decode(packet) {
            Ok(Packet::Init(h)) => h,
            other => panic!("{other:?}"),
        };
        checker.verify(now, rng, &source_bytes(from), LimitSource::of(from), &hs)
    }

    /// The cookie `checker` hands to `from`, opened as the initiator would.
    fn cookie_for_source(
        checker: &mut CookieChecker,
        rng: &mut Stream,
        now: Timestamp,
        responder: &[u8; 32],
        from: SocketAddr,
    ) -> [u8; 16] {
        let (_, m1) = init_with(responder, None);
        let reply = checker.cookie_reply(now, rng, &source_bytes(from), 77, &m1);
        match decode(&reply) {
            Ok(Packet::Cookie { nonce, sealed, .. }) => {
                open_cookie_reply(responder, &m1, nonce, sealed).unwrap()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn under_load_one_source_is_limited_and_others_still_get_in() {
        let responder = [9u8; 32];
        let mut checker = CookieChecker::new(&responder, 0);
        let mut rng = Stream::derive(&[1; 32], "t");
        let now = Timestamp::from_secs(5);
        let flooder: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        let cookie = cookie_for_source(&mut checker, &mut rng, now, &responder, flooder);
        let (p, _) = init_with(&responder, Some(&cookie));
        let limits = SourceLimits::default();
        let mut accepted = 0;
        for _ in 0..100 {
            match verdict(&mut checker, &mut rng, now, flooder, &p) {
                MacVerdict::Accept => accepted += 1,
                MacVerdict::SourceLimited => {}
                other => panic!("{other:?}"),
            }
        }
        // A cookie answered is no licence to flood: the burst, then nothing.
        assert_eq!(accepted, limits.burst);
        // Another port of the same IPv4 host shares the bucket.
        let same_host: SocketAddr = "203.0.113.9:4001".parse().unwrap();
        let c2 = cookie_for_source(&mut checker, &mut rng, now, &responder, same_host);
        let (p2, _) = init_with(&responder, Some(&c2));
        assert_eq!(
            verdict(&mut checker, &mut rng, now, same_host, &p2),
            MacVerdict::SourceLimited
        );
        // Someone else, with a cookie, is let in at once.
        let legit: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let c3 = cookie_for_source(&mut checker, &mut rng, now, &responder, legit);
        let (p3, _) = init_with(&responder, Some(&c3));
        assert_eq!(
            verdict(&mut checker, &mut rng, now, legit, &p3),
            MacVerdict::Accept
        );
        // The flooder's bucket refills at the sustained rate.
        let later = now + Duration::from_millis(1000 / u64::from(limits.per_second));
        assert_eq!(
            verdict(&mut checker, &mut rng, later, flooder, &p),
            MacVerdict::Accept
        );
        assert_eq!(
            verdict(&mut checker, &mut rng, later, flooder, &p),
            MacVerdict::SourceLimited
        );
    }

    #[test]
    fn load_ends_a_second_after_the_rate_drops() {
        let responder = [9u8; 32];
        let mut checker = CookieChecker::new(&responder, 3);
        let mut rng = Stream::derive(&[1; 32], "t");
        let from: SocketAddr = "[2001:db8:1:2:3::4]:4000".parse().unwrap();
        let (p, _) = init_with(&responder, None);
        let t0 = Timestamp::from_secs(5);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for _ in 0..3 {
            assert_eq!(
                verdict(&mut checker, &mut rng, t0, from, &p),
                MacVerdict::Accept
            );
        }
        assert_eq!(
            verdict(&mut checker, &mut rng, at(500), from, &p),
            MacVerdict::NeedCookie
        );
        // A new one-second window with one handshake in it: the load
        // still holds, a second after it was last seen.
        assert_eq!(
            verdict(&mut checker, &mut rng, at(1200), from, &p),
            MacVerdict::NeedCookie
        );
        let cookie = cookie_for_source(&mut checker, &mut rng, at(1200), &responder, from);
        let (pc, _) = init_with(&responder, Some(&cookie));
        assert_eq!(
            verdict(&mut checker, &mut rng, at(1300), from, &pc),
            MacVerdict::Accept
        );
        assert_eq!(checker.limited_sources(), 1);
        // Past the hold, with the rate below the threshold: no cookies,
        // and no buckets kept.
        assert_eq!(
            verdict(&mut checker, &mut rng, at(1600), from, &p),
            MacVerdict::Accept
        );
        assert_eq!(checker.limited_sources(), 0);
    }

    #[test]
    fn source_table_is_bounded_and_evicts_the_stalest() {
        let responder = [9u8; 32];
        let limits = SourceLimits {
            max_sources: 4,
            ..SourceLimits::default()
        };
        let mut checker = CookieChecker::with_limits(&responder, 0, limits);
        let mut rng = Stream::derive(&[1; 32], "t");
        let now = Timestamp::from_secs(5);
        for i in 0..10u8 {
            let from = SocketAddr::from(([198, 51, 100, i], 1000));
            let cookie = cookie_for_source(&mut checker, &mut rng, now, &responder, from);
            let (p, _) = init_with(&responder, Some(&cookie));
            let at = now + Duration::from_micros(u64::from(i));
            assert_eq!(
                verdict(&mut checker, &mut rng, at, from, &p),
                MacVerdict::Accept
            );
            assert!(checker.limited_sources() <= 4);
        }
        assert_eq!(checker.limited_sources(), 4);
        // /64s: two addresses in one prefix share a bucket.
        let a = LimitSource::of("[2001:db8::1]:1".parse().unwrap());
        let b = LimitSource::of("[2001:db8::ffff:2]:2".parse().unwrap());
        let c = LimitSource::of("[2001:db8:0:1::1]:1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
