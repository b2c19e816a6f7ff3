//! Sliding anti-replay window over 64-bit transport counters.
//!
//! The window remembers the highest counter accepted and, for the
//! [`WINDOW_SIZE`] counters behind it, which ones were seen. The bits live in
//! a ring of 64-bit words (as in RFC 6479): moving the window forward only
//! clears the words it slides over, never shifts the whole bitmap. The ring
//! holds one word more than the window needs, so the word the highest
//! counter sits in never overlaps the oldest counter still acceptable.

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

const WORD_BITS: u64 = u64::BITS as u64;
/// Words in the ring: the window rounded up to whole words, plus one.
const WORDS: usize = (WINDOW_SIZE.div_ceil(WORD_BITS) + 1) as usize;

/// The receive side's record of which counters it has accepted.
///
/// Accepted counters `c` are those below [`COUNTER_LIMIT`], not accepted
/// before, and either above every counter accepted so far or at most
/// [`WINDOW_SIZE`] behind the highest one.
#[derive(Clone, Debug)]
pub struct ReplayWindow {
    /// One past the highest counter accepted; 0 while nothing has been, so
    /// that counter 0 counts as new.
    next: u64,
    /// Bit `c % 64` of word `(c / 64) % WORDS` is set once `c` is accepted.
    bits: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// An empty window: every counter below the limit is acceptable.
    pub fn new() -> Self {
        ReplayWindow {
            next: 0,
            bits: [0; WORDS],
        }
    }

    /// Whether `counter` would be accepted; cheap, changes nothing. Call it
    /// before decrypting so replays cost no AEAD work.
    pub fn check(&self, counter: u64) -> Result<(), ReplayError> {
        if counter >= COUNTER_LIMIT {
            return Err(ReplayError::Exhausted);
        }
        if counter >= self.next {
            return Ok(());
        }
        // `next` > counter >= 0 here, so something was accepted.
        let highest = self.next - 1;
        if highest - counter > WINDOW_SIZE {
            return Err(ReplayError::TooOld);
        }
        if self.is_set(counter) {
            return Err(ReplayError::Duplicate);
        }
        Ok(())
    }

    /// Marks `counter` as seen. Call only after the packet authenticated.
    pub fn accept(&mut self, counter: u64) -> Result<(), ReplayError> {
        // Another packet with the same counter may have been accepted while
        // this one was being decrypted, so the earlier check is not enough.
        self.check(counter)?;
        if counter >= self.next {
            self.advance_to(counter);
        }
        let (word, bit) = position(counter);
        self.bits[word] |= bit;
        Ok(())
    }

    /// Moves the highest accepted counter up to `counter`, clearing the
    /// words that now stand for newer counters than they did before.
    fn advance_to(&mut self, counter: u64) {
        let new_top = counter / WORD_BITS;
        // With nothing accepted yet, the ring is still all zeros.
        if self.next > 0 {
            let old_top = (self.next - 1) / WORD_BITS;
            self.clear_words_after(old_top, new_top);
        }
        self.next = counter + 1;
    }

    /// Clears ring words for word indices in `(old_top, new_top]`.
    fn clear_words_after(&mut self, old_top: u64, new_top: u64) {
        let stale = new_top - old_top;
        if stale >= WORDS as u64 {
            self.bits = [0; WORDS];
            return;
        }
        for word in old_top + 1..=new_top {
            self.bits[ring_index(word)] = 0;
        }
    }

    fn is_set(&self, counter: u64) -> bool {
        let (word, bit) = position(counter);
        self.bits[word] & bit != 0
    }
}

/// The ring slot for a word index.
fn ring_index(word: u64) -> usize {
    // The remainder is below WORDS, so it fits in usize.
    (word % WORDS as u64) as usize
}

/// The ring slot and bit mask for a counter.
fn position(counter: u64) -> (usize, u64) {
    (ring_index(counter / WORD_BITS), 1 << (counter % WORD_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    fn accept_all(w: &mut ReplayWindow, counters: impl IntoIterator<Item = u64>) {
        for c in counters {
            assert_eq!(w.accept(c), Ok(()), "counter {c}");
        }
    }

    #[test]
    fn ring_has_room_for_the_window() {
        assert_eq!(WORDS, 128);
        // The oldest acceptable counter must never share a ring slot with
        // the word the highest counter is in.
        assert!((WORDS as u64 - 1) * WORD_BITS >= WINDOW_SIZE);
    }

    #[test]
    fn zero_is_acceptable_first() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(0), Ok(()));
        assert_eq!(w.accept(0), Ok(()));
        assert_eq!(w.check(0), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(0), Err(ReplayError::Duplicate));
    }

    #[test]
    fn first_counter_may_be_anything_below_the_limit() {
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(1_000_000), Ok(()));
        assert_eq!(w.accept(1_000_000 - WINDOW_SIZE), Ok(()));
        assert_eq!(
            w.check(1_000_000 - WINDOW_SIZE - 1),
            Err(ReplayError::TooOld)
        );
    }

    #[test]
    fn in_order() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, 0..50_000);
        let highest = 49_999;
        for c in highest - WINDOW_SIZE..=highest {
            assert_eq!(w.check(c), Err(ReplayError::Duplicate), "counter {c}");
        }
        assert_eq!(w.check(highest - WINDOW_SIZE - 1), Err(ReplayError::TooOld));
        assert_eq!(w.check(highest + 1), Ok(()));
    }

    #[test]
    fn check_changes_nothing() {
        let mut w = ReplayWindow::new();
        for c in [0, 5, 9000, 3] {
            assert_eq!(w.check(c), Ok(()));
        }
        assert_eq!(w.accept(7), Ok(()));
        assert_eq!(w.check(20_000), Ok(()));
        // Having checked 20_000 must not have moved the window.
        assert_eq!(w.accept(0), Ok(()));
    }

    #[test]
    fn reordering_within_window() {
        let mut w = ReplayWindow::new();
        // Evens ascending, then odds descending, all within one window.
        accept_all(&mut w, (0..4000).map(|i| i * 2));
        accept_all(&mut w, (0..4000).rev().map(|i| i * 2 + 1));
        for c in 0..8000 {
            assert_eq!(w.check(c), Err(ReplayError::Duplicate));
        }
    }

    #[test]
    fn duplicates_immediately_and_later() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(10), Ok(()));
        assert_eq!(w.accept(10), Err(ReplayError::Duplicate));
        accept_all(&mut w, 11..10 + WINDOW_SIZE);
        // 10 is now WINDOW_SIZE - 1 behind: still remembered.
        assert_eq!(w.accept(10), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(10 + WINDOW_SIZE), Ok(()));
        assert_eq!(w.accept(10), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(11 + WINDOW_SIZE), Ok(()));
        // One step further and it has fallen out of the window.
        assert_eq!(w.accept(10), Err(ReplayError::TooOld));
    }

    #[test]
    fn edge_of_window() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.accept(WINDOW_SIZE), Ok(()));
        assert_eq!(w.accept(0), Ok(()));
        for top in [WINDOW_SIZE + 1, WINDOW_SIZE + 2, 100_000, 100_063, 100_064] {
            let mut w = ReplayWindow::new();
            assert_eq!(w.accept(top), Ok(()));
            assert_eq!(w.check(top - WINDOW_SIZE - 1), Err(ReplayError::TooOld));
            assert_eq!(w.accept(top - WINDOW_SIZE), Ok(()), "top {top}");
            assert_eq!(w.accept(top - WINDOW_SIZE), Err(ReplayError::Duplicate));
            assert_eq!(w.accept(top - WINDOW_SIZE - 1), Err(ReplayError::TooOld));
        }
    }

    #[test]
    fn big_jump_clears_stale_bits() {
        let mut w = ReplayWindow::new();
        accept_all(&mut w, 0..=5);
        let far = 5 + 3 * WINDOW_SIZE;
        assert_eq!(w.accept(far), Ok(()));
        assert_eq!(w.accept(far - 1), Ok(()));
        // Counters sharing ring slots with 0..=5 must read as fresh.
        for c in far - WINDOW_SIZE..far - 1 {
            assert_eq!(w.check(c), Ok(()), "counter {c}");
        }
        assert_eq!(w.check(5), Err(ReplayError::TooOld));
    }

    #[test]
    fn jump_of_less_than_the_ring_clears_only_what_it_passes() {
        // Fill every counter, then move forward by whole and partial words:
        // slots passed over must be cleared, slots still in the window kept.
        for jump in [
            1,
            63,
            64,
            65,
            500,
            WINDOW_SIZE - 1,
            WINDOW_SIZE,
            WINDOW_SIZE + 1,
            8191,
            8192,
            8193,
        ] {
            let mut w = ReplayWindow::new();
            let base = 20_000;
            accept_all(&mut w, 0..=base);
            let top = base + jump;
            assert_eq!(w.accept(top), Ok(()));
            for c in top - WINDOW_SIZE..top {
                let want = if c <= base {
                    Err(ReplayError::Duplicate)
                } else {
                    Ok(())
                };
                assert_eq!(w.check(c), want, "jump {jump} counter {c}");
            }
        }
    }

    #[test]
    fn every_bit_slot_aliases_cleanly() {
        // Counters exactly one ring apart share a bit; the older must be out
        // of the window by the time the newer is reachable.
        let ring_span = WORDS as u64 * WORD_BITS;
        let mut w = ReplayWindow::new();
        accept_all(&mut w, 0..ring_span);
        for c in ring_span..3 * ring_span {
            assert_eq!(w.check(c), Ok(()), "counter {c}");
            assert_eq!(w.accept(c), Ok(()));
        }
    }

    #[test]
    fn counter_limit() {
        let mut w = ReplayWindow::new();
        assert_eq!(w.check(COUNTER_LIMIT), Err(ReplayError::Exhausted));
        assert_eq!(w.check(u64::MAX), Err(ReplayError::Exhausted));
        assert_eq!(w.accept(COUNTER_LIMIT - 1), Ok(()));
        assert_eq!(w.accept(COUNTER_LIMIT - 1), Err(ReplayError::Duplicate));
        assert_eq!(w.accept(COUNTER_LIMIT), Err(ReplayError::Exhausted));
        assert_eq!(w.accept(u64::MAX), Err(ReplayError::Exhausted));
        assert_eq!(w.accept(COUNTER_LIMIT - 2), Ok(()));
        assert_eq!(w.accept(COUNTER_LIMIT - 1 - WINDOW_SIZE), Ok(()));
        assert_eq!(
            w.accept(COUNTER_LIMIT - 2 - WINDOW_SIZE),
            Err(ReplayError::TooOld)
        );
        assert_eq!(w.accept(0), Err(ReplayError::TooOld));
    }

    #[test]
    fn errors_have_messages() {
        use alloc::string::ToString;
        assert!(!ReplayError::Duplicate.to_string().is_empty());
        assert!(!ReplayError::TooOld.to_string().is_empty());
        assert!(!ReplayError::Exhausted.to_string().is_empty());
    }

    /// The semantics written plainly: every accepted counter kept in a set.
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
        highest: Option<u64>,
    }

    impl Model {
        fn check(&self, c: u64) -> Result<(), ReplayError> {
            if c >= COUNTER_LIMIT {
                return Err(ReplayError::Exhausted);
            }
            match self.highest {
                Some(h) if c < h && h - c > WINDOW_SIZE => Err(ReplayError::TooOld),
                _ if self.seen.contains(&c) => Err(ReplayError::Duplicate),
                _ => Ok(()),
            }
        }

        fn accept(&mut self, c: u64) -> Result<(), ReplayError> {
            self.check(c)?;
            self.seen.insert(c);
            self.highest = self.highest.max(Some(c));
            Ok(())
        }
    }

    /// xorshift64*: deterministic and good enough to pick test counters.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// A counter likely to be interesting relative to what has been seen.
    fn pick(rng: &mut XorShift, highest: u64, recent: &[u64]) -> u64 {
        match rng.below(10) {
            0 => highest + 1 + rng.below(3),
            1 => highest.saturating_add(rng.below(4 * WINDOW_SIZE)),
            2 => highest.saturating_sub(WINDOW_SIZE + rng.below(3)) + rng.below(2),
            3 if !recent.is_empty() => recent[rng.below(recent.len() as u64) as usize],
            4 => COUNTER_LIMIT - 1 - rng.below(2 * WINDOW_SIZE),
            5 => COUNTER_LIMIT + rng.below(3),
            6 => highest.saturating_sub(rng.below(200)),
            _ => highest.saturating_sub(rng.below(WINDOW_SIZE + 100)) + rng.below(100),
        }
    }

    #[test]
    fn matches_reference_model() {
        // Ok, Duplicate, TooOld, Exhausted: each must come up, or the
        // comparison proves little.
        let mut outcomes = [0u32; 4];
        for seed in 1..=200u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut window = ReplayWindow::new();
            let mut model = Model::default();
            let mut recent: Vec<u64> = Vec::new();
            // Most runs stay far from the limit so the window gets exercised
            // at ordinary counters; a few start close to it.
            let near_limit = seed % 10 == 0;
            for step in 0..2_000 {
                let highest = model.highest.unwrap_or(0);
                let mut c = pick(&mut rng, highest, &recent);
                if !near_limit && c >= COUNTER_LIMIT - 2 * WINDOW_SIZE {
                    c = highest + rng.below(3);
                }
                let want = model.check(c);
                assert_eq!(window.check(c), want, "seed {seed} step {step} check {c}");
                let want = model.accept(c);
                assert_eq!(window.accept(c), want, "seed {seed} step {step} accept {c}");
                outcomes[match want {
                    Ok(()) => 0,
                    Err(ReplayError::Duplicate) => 1,
                    Err(ReplayError::TooOld) => 2,
                    Err(_) => 3,
                }] += 1;
                if want.is_ok() {
                    recent.push(c);
                    if recent.len() > 64 {
                        recent.remove(0);
                    }
                }
            }
        }
        assert!(outcomes.iter().all(|&n| n > 1000), "{outcomes:?}");
    }
}
