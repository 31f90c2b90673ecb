//! How long to wait before dialling Redis again after connects that
//! failed, and where in its period a heartbeat starts: drawn at random, so
//! a fleet that lost its server at the same instant (a restart) does not
//! redial, nor heartbeat, in lockstep.
//!
//! The pause of the `n`-th failure in a row is drawn uniformly from
//! `[hi / 2, hi]`, where `hi = min(first × 2ⁿ, cap)` ("equal jitter"):
//! never less than `first / 2`, which bounds the attempts per second
//! whatever happens; never more than `cap`, which bounds the time to
//! converge once the server is back; and spread over a window at least
//! half as wide as the pause itself.

use std::time::Duration;

/// The pause before the next dial after `failures` failures in a row
/// (0 for the first), from a uniform `draw` in `[0, 1)`: within
/// `[hi / 2, hi]`, `hi = min(first × 2^failures, cap)`. The caller keeps
/// `first <= cap`.
pub(super) fn pause(first: Duration, cap: Duration, failures: u32, draw: f64) -> Duration {
    let hi = first
        .checked_mul(1u32.checked_shl(failures).unwrap_or(u32::MAX))
        .unwrap_or(Duration::MAX)
        .min(cap);
    let lo = hi / 2;
    lo + (hi - lo).mul_f64(draw.clamp(0.0, 1.0))
}

/// When a heartbeat period that begins now has its first beat, from a
/// uniform `draw` in `[0, 1)`: anywhere in `(0, every]`, so sessions armed
/// (or reading a bumped key) at the same moment beat spread over a period.
/// Never later than `every`, so the heartbeat bound holds.
pub(super) fn phase(every: Duration, draw: f64) -> Duration {
    every
        .mul_f64(1.0 - draw.clamp(0.0, 1.0))
        .max(Duration::from_micros(1))
}

/// A uniform draw in `[0, 1)` from the thread's generator.
pub(super) fn draw() -> f64 {
    rand::random::<f64>()
}

/// Failed connects in a row, and the pause each one earns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Redials {
    failures: u32,
}

impl Redials {
    /// Counts one more failure, and draws the pause it earns on the
    /// schedule of `first` and `cap` (see [`pause`]; the failures before
    /// it in a row are its `failures`).
    pub(super) fn failed(&mut self, first: Duration, cap: Duration) -> Duration {
        let before = self.failures;
        self.failures = before.saturating_add(1);
        pause(first, cap, before, draw())
    }

    /// A connect succeeded: the next failure starts the schedule again.
    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn pauses_double_within_half_and_whole_up_to_the_cap() {
        let (first, cap) = (MS(1000), MS(4000));
        for (failures, hi) in [(0, 1000), (1, 2000), (2, 4000), (3, 4000), (200, 4000)] {
            assert_eq!(pause(first, cap, failures, 0.0), MS(hi / 2), "{failures}");
            let top = pause(first, cap, failures, 0.999_999);
            assert!(top <= MS(hi) && top > MS(hi) - MS(1), "{failures}: {top:?}");
            let mid = pause(first, cap, failures, 0.5);
            assert_eq!(mid, MS(hi * 3 / 4), "{failures}");
        }
        // Out-of-range draws and huge schedules stay within the bounds.
        assert_eq!(pause(first, cap, 0, 7.0), MS(1000));
        assert_eq!(pause(first, cap, 0, -1.0), MS(500));
        assert_eq!(
            pause(Duration::MAX, Duration::MAX, 40, 0.0),
            Duration::MAX / 2
        );
    }

    #[test]
    fn every_draw_is_between_half_the_first_pause_and_the_cap() {
        let (first, cap) = (MS(300), MS(2000));
        let mut redials = Redials::default();
        let mut spread = (Duration::MAX, Duration::ZERO);
        for i in 0..10_000 {
            let wait = redials.failed(first, cap);
            assert!(wait >= first / 2 && wait <= cap, "{i}: {wait:?}");
            if i % 7 == 0 {
                let again = {
                    redials.reset();
                    redials.failed(first, cap)
                };
                assert!(again >= first / 2 && again <= first, "{again:?}");
                spread = (spread.0.min(again), spread.1.max(again));
            }
        }
        // The first pauses are spread over their window, not one value.
        assert!(spread.1 - spread.0 > first / 3, "{spread:?}");
    }

    #[test]
    fn a_heartbeat_phase_falls_within_one_period() {
        let every = MS(200);
        assert_eq!(phase(every, 0.0), every);
        assert!(phase(every, 0.999_999_99) > Duration::ZERO);
        assert_eq!(phase(every, 0.5), MS(100));
        for _ in 0..10_000 {
            let p = phase(every, draw());
            assert!(p > Duration::ZERO && p <= every, "{p:?}");
        }
    }
}
