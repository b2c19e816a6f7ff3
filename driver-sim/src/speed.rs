//! How fast the simulator runs, for benchmarks.
//!
//! This is the only place the crate reads a wall clock, and only to report;
//! nothing the world does depends on it.

use core::fmt;
use core::time::Duration;
use std::time::Instant;

use crate::{Machine, World};

/// The result of [`measure`].
#[derive(Clone, Debug, PartialEq)]
pub struct Speed {
    /// Queue entries processed (datagram deliveries and timer wakeups).
    pub steps: u64,
    /// Virtual time covered.
    pub simulated: Duration,
    /// Wall-clock time it took.
    pub wall: Duration,
}

impl Speed {
    /// Simulated events (steps) per wall-clock second.
    pub fn steps_per_second(&self) -> f64 {
        self.steps as f64 / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Virtual seconds per wall-clock second.
    pub fn speedup(&self) -> f64 {
        self.simulated.as_secs_f64() / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} steps in {:.3}s wall for {:.3}s simulated: {:.0} steps/s, {:.1}x real time",
            self.steps,
            self.wall.as_secs_f64(),
            self.simulated.as_secs_f64(),
            self.steps_per_second(),
            self.speedup()
        )
    }
}

/// Runs `world` for `simulated` virtual time and reports how quickly.
pub fn measure<M: Machine>(world: &mut World<M>, simulated: Duration) -> Speed {
    let steps_before = world.stats().steps;
    let start = Instant::now();
    world.run_for(simulated);
    let wall = start.elapsed();
    Speed {
        steps: world.stats().steps - steps_before,
        simulated,
        wall,
    }
}
