//! The clock a [`Tracker`](super::Tracker) asks on every push-mode check:
//! is the heartbeat bound still ahead?
//!
//! `Instant::now` (about 30 ns here) was half of what such a check cost.
//! This reads the CPU's time-stamp counter through `quanta` instead (about
//! 10 ns), calibrated against the monotonic clock. Each bound is placed on
//! the counter's timeline from a fresh pair of readings, counter first, so
//! the pair can only put it early; the calibration's error over the
//! bound's length moves it by microseconds at most over a heartbeat bound
//! (hundreds of milliseconds). Where the CPU has no steady counter,
//! `quanta` reads the monotonic clock.
//!
//! Bounds that follow tokio's clock (the in-memory backend's key lapses,
//! which tests pause and advance) read tokio's clock instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the clock was made, for comparing a bound with the
/// time.
#[derive(Debug)]
pub(crate) struct Clock {
    /// The counter's reading when the clock was made.
    base: u64,
    /// tokio's time when the clock was made, for [`Clock::follow_tokio`].
    tokio_base: Instant,
    tokio: AtomicBool,
}

/// One calibrated counter for the process: calibrating takes milliseconds.
fn counter() -> &'static quanta::Clock {
    static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();
    COUNTER.get_or_init(quanta::Clock::new)
}

impl Clock {
    pub(crate) fn new() -> Self {
        // The counter first: `now` may then only run ahead of tokio's time.
        let base = counter().raw();
        Clock {
            base,
            tokio_base: Instant::now(),
            tokio: AtomicBool::new(false),
        }
    }

    /// From now on, read tokio's clock: for bounds that follow it, as a
    /// key's lapse in the in-memory backend does, which a test may pause
    /// and advance. Call it before the first bound is set.
    pub(crate) fn follow_tokio(&self) {
        self.tokio.store(true, Ordering::Relaxed);
    }

    /// The time now, never earlier than it.
    pub(crate) fn now(&self) -> u64 {
        if self.tokio.load(Ordering::Relaxed) {
            return nanos(self.tokio_base.elapsed());
        }
        let counter = counter();
        counter.delta_as_nanos(self.base, counter.raw())
    }

    /// `instant` on the timeline of [`now`](Self::now), never later than
    /// it.
    pub(crate) fn at(&self, instant: Instant) -> u64 {
        if self.tokio.load(Ordering::Relaxed) {
            return nanos(instant.saturating_duration_since(self.tokio_base));
        }
        // Read before the instant it is paired with, so the pair can only
        // put `instant` early.
        let counter = counter();
        let here = counter.delta_as_nanos(self.base, counter.raw());
        let now = Instant::now();
        if instant >= now {
            here.saturating_add(nanos(instant - now))
        } else {
            here.saturating_sub(nanos(now - instant))
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_never_earlier_than_an_instant_taken_before_it() {
        let clock = Clock::new();
        for _ in 0..100_000 {
            let before = clock.at(Instant::now());
            let now = clock.now();
            assert!(now >= before, "{before} > {now}");
        }
    }

    #[test]
    fn instants_keep_their_order_and_distance() {
        let clock = Clock::new();
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        let (a, b) = (clock.at(now), clock.at(later));
        // Each conversion may put its instant early by the time between
        // its two readings, never late.
        assert!(b > a && b - a <= 1_010_000_000, "{a} {b}");
    }
}
