//! Coalesced reads of the shared generation: one read answers every check
//! that arrived before it began, and none that arrived after.
//!
//! # Invariants
//!
//! - **No check is answered by a read that began before it arrived.** A
//!   check that finds no read in flight starts one; a check that finds one
//!   in flight asks for the next, which starts the moment the one in flight
//!   ends. Reads are numbered in the order they start, and a check waits
//!   for the number it was promised or a later one.
//! - **At most one read in flight per reloader**, so under any concurrency
//!   the backend sees at most one read per round trip, and a check waits
//!   at most two: the read in flight and the next.
//! - **Every waiter is released.** A read that others wait for runs on a
//!   task of its own, so a check that is dropped cancels nothing they need.
//!   Only the first read after an idle spell runs inside the check that
//!   asked for it (nobody else waits for that one); every read's guard
//!   publishes a result (unavailable, if it was cancelled or panicked) and
//!   starts the next read if one was asked for, so the chain never stops.

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::synchronizer::{GenerationSynchronizer, Observed};

/// One finished read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Read {
    /// Its number: reads are numbered in the order they start, from 1.
    no: u64,
    /// When it was sent.
    pub(super) began: Instant,
    pub(super) observed: Observed,
}

/// The read in flight, the next one asked for, and the results.
#[derive(Debug)]
pub(super) struct Reads {
    state: Mutex<State>,
    results: watch::Sender<Option<Read>>,
    /// The last read, for a check that may take it without waiting
    /// (interval mode).
    last: ArcSwapOption<Read>,
}

#[derive(Debug, Default)]
struct State {
    /// How many reads have started.
    started: u64,
    /// Whether one is in flight.
    running: bool,
    /// Whether a check asked for the read after the one in flight.
    again: bool,
}

impl Reads {
    pub(super) fn new() -> Self {
        Reads {
            state: Mutex::new(State::default()),
            results: watch::Sender::new(None),
            last: ArcSwapOption::empty(),
        }
    }

    /// The last finished read, if any.
    pub(super) fn last(&self) -> Option<Read> {
        self.last.load().as_deref().copied()
    }

    /// What the next read to begin after this call observes. With no read
    /// in flight, this check makes the read itself, on its own task: one
    /// check at a time costs no spawn and no wake-up. Checks that arrive
    /// meanwhile wait for the next read, which a task of its own makes.
    pub(super) async fn next(self: &Arc<Self>, sync: &Arc<dyn GenerationSynchronizer>) -> Observed {
        let joined = {
            let mut state = self.state();
            if state.running {
                state.again = true;
                // Subscribed under the lock, so the result cannot slip past.
                Ok((state.started + 1, self.results.subscribe()))
            } else {
                Err(self.begin(&mut state, sync))
            }
        };
        let (wanted, mut results) = match joined {
            Ok(joined) => joined,
            // Dropped mid-read (its request gone), the guard still starts
            // the read others asked for.
            Err(guard) => return guard.read().await,
        };
        let answer = results
            .wait_for(|r| r.is_some_and(|r| r.no >= wanted))
            .await
            .map(|read| read.map_or(Observed::Unavailable, |r| r.observed));
        // An error: the reads are gone with their reloader.
        answer.unwrap_or(Observed::Unavailable)
    }

    /// Numbers the next read and marks it in flight; the guard publishes it.
    fn begin(
        self: &Arc<Self>,
        state: &mut State,
        sync: &Arc<dyn GenerationSynchronizer>,
    ) -> Publish {
        state.started += 1;
        state.running = true;
        state.again = false;
        Publish {
            reads: Arc::clone(self),
            sync: Arc::clone(sync),
            read: Read {
                no: state.started,
                began: Instant::now(),
                observed: Observed::Unavailable,
            },
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock, but a poisoned lock still
        // holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Publishes a read's result when dropped (after the read, or while its
/// task unwinds or is cancelled) and starts the next read if one was asked
/// for.
struct Publish {
    reads: Arc<Reads>,
    sync: Arc<dyn GenerationSynchronizer>,
    read: Read,
}

impl Publish {
    /// Makes the read, publishes it (on drop) and returns what it saw.
    async fn read(mut self) -> Observed {
        self.read.began = Instant::now();
        self.read.observed = self.sync.check().await.shared;
        self.read.observed
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        let reads = &self.reads;
        let mut state = reads.state();
        if matches!(self.read.observed, Observed::Value(_)) {
            reads.last.store(Some(Arc::new(self.read)));
        }
        reads.results.send_replace(Some(self.read));
        if state.again {
            // Inside a runtime whenever a check asked for it; a runtime
            // shutting down cancels the new task too, which publishes.
            if tokio::runtime::Handle::try_current().is_ok() {
                let next = reads.begin(&mut state, &self.sync);
                tokio::spawn(next.read());
                return;
            }
        }
        state.running = false;
    }
}
