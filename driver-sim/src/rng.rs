//! Randomness for the simulated world, all of it derived from the world's seed.
//!
//! Every consumer gets its own ChaCha20 stream, keyed by SHA-256 of the world
//! seed and a label (a host's name, a pair of names). Separate streams keep a
//! scenario's trace stable as it grows: more traffic on alice's link does not
//! shift the dice rolled on bob's.

use core::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// The 32-byte seed the world hands to the machine of the host called `name`.
///
/// It depends only on the world seed and the name, so a host keeps its seed
/// when other hosts are added to, or removed from, a scenario.
pub fn host_seed(world_seed: u64, name: &str) -> [u8; 32] {
    derive_key(world_seed, "host", &[name.as_bytes()])
}

/// SHA-256 over a domain tag, the purpose, the world seed and each label
/// part, every variable-length piece length-prefixed so that no two inputs
/// collide ("ab"+"c" versus "a"+"bc").
fn derive_key(world_seed: u64, purpose: &str, parts: &[&[u8]]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"pilot driver-sim seed v1");
    hash.update((purpose.len() as u64).to_le_bytes());
    hash.update(purpose.as_bytes());
    hash.update(world_seed.to_le_bytes());
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

/// A ChaCha20 stream owned by one part of the simulated world.
pub(crate) struct SimRng(ChaCha20Rng);

impl SimRng {
    /// The stream for `purpose` and `parts`, derived from the world seed.
    pub(crate) fn derive(world_seed: u64, purpose: &str, parts: &[&[u8]]) -> Self {
        SimRng(ChaCha20Rng::from_seed(derive_key(
            world_seed, purpose, parts,
        )))
    }

    /// A value in `0..n`; zero when `n` is zero.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: the bias is at most n / 2^64, far below anything a
        // test could measure.
        ((u128::from(self.0.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `ppm` parts per million.
    ///
    /// Draws nothing for 0 or 1 000 000 and more, so an unimpaired link
    /// leaves its stream untouched.
    pub(crate) fn chance_ppm(&mut self, ppm: u32) -> bool {
        if ppm == 0 {
            return false;
        }
        if ppm >= 1_000_000 {
            return true;
        }
        self.below(1_000_000) < u64::from(ppm)
    }

    /// A duration uniform in `0..=max`, at microsecond resolution.
    pub(crate) fn up_to(&mut self, max: Duration) -> Duration {
        let max = micros(max);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_micros(self.below(max.saturating_add(1)))
    }
}

/// A duration in whole microseconds, saturating.
pub(crate) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_seeds_depend_on_world_seed_and_name() {
        assert_eq!(host_seed(1, "alice"), host_seed(1, "alice"));
        assert_ne!(host_seed(1, "alice"), host_seed(2, "alice"));
        assert_ne!(host_seed(1, "alice"), host_seed(1, "bob"));
    }

    #[test]
    fn parts_are_unambiguous() {
        assert_ne!(
            derive_key(0, "p", &[b"ab", b"c"]),
            derive_key(0, "p", &[b"a", b"bc"])
        );
    }

    #[test]
    fn chance_extremes_draw_nothing() {
        let mut a = SimRng::derive(7, "t", &[]);
        let mut b = SimRng::derive(7, "t", &[]);
        assert!(!a.chance_ppm(0));
        assert!(a.chance_ppm(1_000_000));
        assert_eq!(a.below(1000), b.below(1000));
    }

    #[test]
    fn up_to_stays_in_range() {
        let mut r = SimRng::derive(3, "t", &[]);
        let max = Duration::from_micros(10);
        let mut seen_max = false;
        for _ in 0..1000 {
            let d = r.up_to(max);
            assert!(d <= max);
            seen_max |= d == max;
        }
        assert!(seen_max, "the upper bound is inclusive");
    }
}
