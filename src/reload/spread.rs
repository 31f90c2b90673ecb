//! Spread loads ([`ReloaderBuilder::spread_loads`](super::ReloaderBuilder::spread_loads)):
//! when a change reaches a whole fleet at once, each instance waits its own
//! random delay within a window before loading, so the source sees the
//! fleet's loads spread over the window instead of all at once.
//!
//! The state is one window per change heard: opened by the first check
//! that finds the generation moved (the push task's or a request's), and
//! ended by its deadline, when a task loads. A check inside the window is
//! answered at once with the settings in service, labelled
//! [`Freshness::Deferred`](super::Freshness::Deferred); after it, a check
//! waits for the load as without spread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::generation::Generation;
use crate::unpoisoned;

/// A reloader's spread: its window (zero: off), the window open now, and
/// its own write not yet loaded.
#[derive(Debug)]
pub(super) struct Spread {
    window: Duration,
    open: Mutex<Option<Window>>,
    /// The generation this reloader's own write made and no load has
    /// caught up with yet (0: none). While set, changes load at once: a
    /// writer reads its own write.
    own: AtomicU64,
}

/// A change heard and when its load is due.
#[derive(Clone, Copy, Debug)]
struct Window {
    heard: Generation,
    due: Instant,
}

/// What a check that found the generation moved does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Load now, as without spread.
    Load,
    /// Serve the settings in service; the load is due at this instant.
    Defer(Instant),
    /// As `Defer`, and this check opened the window: it schedules the load.
    Open(Instant),
}

impl Spread {
    pub(super) fn new(window: Duration) -> Self {
        Spread {
            window,
            open: Mutex::new(None),
            own: AtomicU64::new(0),
        }
    }

    /// Whether loads are spread at all.
    pub(super) fn is_on(&self) -> bool {
        !self.window.is_zero()
    }

    /// A check observed `heard` while the settings in service match
    /// another generation, `local`: load now, or defer to the window's end.
    /// Only a move from one known generation to another is deferred: a
    /// first load, a missing key or an unreadable backend load as today.
    pub(super) fn verdict(&self, local: Option<Generation>, heard: Generation) -> Verdict {
        if !self.is_on() || local.is_none() || self.own.load(Ordering::Acquire) != 0 {
            return Verdict::Load;
        }
        let now = Instant::now();
        let mut open = unpoisoned::lock(&self.open);
        match *open {
            // Inside the window: a newer change joins it, as the load at
            // its end reads the source after both.
            Some(ref mut w) if now < w.due => {
                w.heard = heard;
                Verdict::Defer(w.due)
            }
            // The window for this change has ended: its load is due (or
            // ran and failed); load as without spread.
            Some(w) if w.heard == heard => Verdict::Load,
            // A change heard after the last window: a new one.
            _ => {
                let delay = rand::rng().random_range(Duration::ZERO..self.window);
                let due = now + delay;
                *open = Some(Window { heard, due });
                if delay.is_zero() {
                    Verdict::Load
                } else {
                    Verdict::Open(due)
                }
            }
        }
    }

    /// This reloader's own write made `generation`: load it at once.
    pub(super) fn wrote(&self, generation: Generation) {
        self.own.store(generation.get(), Ordering::Release);
    }

    /// What [`loaded_since`](Self::loaded_since) compares with: read right
    /// before a load reads the source.
    pub(super) fn own(&self) -> u64 {
        self.own.load(Ordering::Acquire)
    }

    /// A load that read the source after `own` (from [`own`](Self::own))
    /// was set succeeded: that write is in service, so later changes are
    /// spread again. A write recorded since the load began stays.
    pub(super) fn loaded_since(&self, own: u64) {
        if own != 0 {
            let _ = self
                .own
                .compare_exchange(own, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u64) -> Generation {
        Generation::new(n).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_opens_one_window_and_later_changes_join_it() {
        let window = Duration::from_secs(10);
        let spread = Spread::new(window);
        let start = Instant::now();
        let due = loop {
            // A zero delay (rare) loads at once; try another change.
            match spread.verdict(Some(g(1)), g(2)) {
                Verdict::Open(due) => break due,
                Verdict::Load => *unpoisoned::lock(&spread.open) = None,
                other => panic!("{other:?}"),
            }
        };
        assert!(due > start && due < start + window, "{due:?}");
        assert_eq!(spread.verdict(Some(g(1)), g(2)), Verdict::Defer(due));
        assert_eq!(spread.verdict(Some(g(1)), g(3)), Verdict::Defer(due));
        tokio::time::sleep_until(due).await;
        // The window's change (the newest heard in it) now loads.
        assert_eq!(spread.verdict(Some(g(1)), g(3)), Verdict::Load);
        // A change after the window opens another.
        assert!(matches!(
            spread.verdict(Some(g(3)), g(4)),
            Verdict::Open(_) | Verdict::Load
        ));
    }

    #[test]
    fn off_first_loads_and_own_writes_load_at_once() {
        assert_eq!(
            Spread::new(Duration::ZERO).verdict(Some(g(1)), g(2)),
            Verdict::Load
        );
        let spread = Spread::new(Duration::from_secs(10));
        assert_eq!(spread.verdict(None, g(2)), Verdict::Load);
        spread.wrote(g(2));
        let own = spread.own();
        assert_eq!(spread.verdict(Some(g(1)), g(2)), Verdict::Load);
        spread.loaded_since(own);
        assert_eq!(spread.own(), 0);
        // A write recorded while a load was under way stays.
        spread.wrote(g(3));
        spread.loaded_since(0);
        assert_eq!(spread.own(), 3);
    }
}
