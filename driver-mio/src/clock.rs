//! The real clock, turned into the core's [`Timestamp`]s.
//!
//! The core counts microseconds from an origin the driver picks. Here the
//! origin is the moment the [`Clock`] was made, read from the monotonic
//! clock, so timestamps never go backwards when the wall clock is set.
//! Protocols that need wall time (certificates, handshake timestamps) get
//! [`Clock::wall_origin_micros`] in their configuration and add to it.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pilot_proto::Timestamp;

/// Monotonic time since the process's chosen origin.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    wall_origin_micros: u64,
}

impl Clock {
    /// A clock whose [`Timestamp::ZERO`] is now.
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            // A clock set before 1970 is broken; the core then sees
            // certificates as long expired or not yet valid and says so.
            .unwrap_or(0);
        Clock {
            origin: Instant::now(),
            wall_origin_micros: wall,
        }
    }

    /// The core's time now.
    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The core's time at `instant` (the origin for earlier instants).
    pub fn at(&self, instant: Instant) -> Timestamp {
        let micros = instant.saturating_duration_since(self.origin).as_micros();
        Timestamp::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }

    /// Unix time in microseconds at [`Timestamp::ZERO`], for the core's
    /// `wall_origin_micros` settings.
    pub fn wall_origin_micros(&self) -> u64 {
        self.wall_origin_micros
    }

    /// How long mio's poll may sleep before `deadline`: `None` without a
    /// deadline (sleep until an event), zero for a deadline that has
    /// passed or is less than a millisecond away (run it at once rather
    /// than spin through sub-millisecond sleeps), otherwise the time left
    /// rounded up to the next millisecond, so the loop never wakes a
    /// little early and finds nothing due.
    pub fn timeout_until(&self, deadline: Option<Timestamp>) -> Option<Duration> {
        timeout_between(self.now(), deadline)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// [`Clock::timeout_until`] with `now` given: the pure part, for tests.
pub fn timeout_between(now: Timestamp, deadline: Option<Timestamp>) -> Option<Duration> {
    let deadline = deadline?;
    let left = deadline.saturating_since(now);
    if left < Duration::from_millis(1) {
        return Some(Duration::ZERO);
    }
    let millis = left.as_micros().div_ceil(1000);
    Some(Duration::from_millis(
        u64::try_from(millis).unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_move_forward_from_zero() {
        let clock = Clock::new();
        let a = clock.now();
        std::thread::sleep(Duration::from_millis(2));
        let b = clock.now();
        assert!(b > a && b.as_micros() >= 2000);
        assert_eq!(
            clock.at(clock.origin - Duration::from_secs(1)),
            Timestamp::ZERO
        );
        // Some time after 2020.
        assert!(clock.wall_origin_micros() > 1_577_836_800_000_000);
    }

    #[test]
    fn poll_timeouts_never_spin() {
        let now = Timestamp::from_secs(10);
        assert_eq!(timeout_between(now, None), None);
        let past = Timestamp::from_secs(9);
        assert_eq!(timeout_between(now, Some(past)), Some(Duration::ZERO));
        assert_eq!(timeout_between(now, Some(now)), Some(Duration::ZERO));
        let soon = Timestamp::from_micros(now.as_micros() + 999);
        assert_eq!(timeout_between(now, Some(soon)), Some(Duration::ZERO));
        let later = Timestamp::from_micros(now.as_micros() + 1001);
        assert_eq!(
            timeout_between(now, Some(later)),
            Some(Duration::from_millis(2))
        );
        assert_eq!(
            timeout_between(now, Some(Timestamp::from_secs(12))),
            Some(Duration::from_secs(2))
        );
        assert!(timeout_between(now, Some(Timestamp::MAX)).is_some());
    }
}
