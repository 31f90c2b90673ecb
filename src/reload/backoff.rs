//! The pause after a failed load, doubling with each further failure up to
//! a cap: one type for a reloader's loads and a keyed reloader's first
//! loads.

use std::time::Duration;

/// The pause the next failure waits; [`grow`](Self::grow) takes it and
/// doubles the one after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// A backoff whose first pause is `initial`.
    pub(crate) fn new(initial: Duration) -> Self {
        Backoff { next: initial }
    }

    /// The pause of the failure that happened now, and the next one doubled
    /// (up to `max`).
    pub(crate) fn grow(&mut self, max: Duration) -> Duration {
        let now = self.next.min(max);
        self.next = now.saturating_mul(2).min(max);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_cap() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(100));
        let pauses: Vec<_> = (0..5).map(|_| backoff.grow(ms(500))).collect();
        assert_eq!(pauses, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        let mut huge = Backoff::new(Duration::MAX);
        assert_eq!(huge.grow(Duration::MAX), Duration::MAX);
        assert_eq!(huge.grow(Duration::MAX), Duration::MAX);
    }
}
