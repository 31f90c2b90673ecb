//! Coalesced reads of the shared generation: one read answers every check
//! that arrived before it began, and none that arrived after.
//!
//! # Invariants
//!
//! - **No check is answered by a read that began before it arrived**
//!   (strict and push modes; interval mode takes any read sent within the
//!   interval). A
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
//! - **Interval mode: one read per interval, an outage included.** The
//!   last read that answered with a generation, or that failed, is kept: a
//!   generation vouches for the interval after the read was sent, a
//!   failure stands for the interval after it ended. While the last read
//!   failed (recently: see `failed_recently`), no check waits for another
//!   check's read; only the check that makes the interval's read waits for
//!   it. A cancelled read is no
//!   answer and is not kept; a missing or corrupt key clears what is kept
//!   (the check that saw it repairs the key, and the next check reads).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::generation::Generation;
use crate::synchronizer::{GenerationSynchronizer, Observed};
use crate::unpoisoned;

/// One finished read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Read {
    /// Its number: reads are numbered in the order they start, from 1.
    no: u64,
    /// When it was sent.
    began: Instant,
    /// When its answer (or failure) came.
    ended: Instant,
    observed: Observed,
    /// Whether it ran to its end: a read cancelled or panicking midway
    /// observed nothing, whatever `observed` says.
    finished: bool,
}

impl Read {
    /// The generation it read, if it read one less than `every` ago: as
    /// fresh as interval mode promises.
    pub(super) fn fresh(&self, every: Duration) -> Option<Generation> {
        match self.observed {
            Observed::Value(g) if self.began.elapsed() < every => Some(g),
            _ => None,
        }
    }
}

/// The read in flight, the next one asked for, and the results.
#[derive(Debug)]
pub(super) struct Reads {
    state: Mutex<State>,
    results: watch::Sender<Option<Read>>,
    /// The last read that answered with a generation or failed, for a
    /// check that may take it without waiting (interval mode).
    last: ArcSwapOption<Read>,
}

#[derive(Debug, Default)]
struct State {
    /// How many reads have started.
    started: u64,
    /// Whether a check asked for the read after the one in flight.
    again: bool,
    /// When the read in flight was numbered; `None` while none is.
    running_since: Option<Instant>,
}

impl State {
    /// Whether a read is in flight.
    fn running(&self) -> bool {
        self.running_since.is_some()
    }
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
            if state.running() {
                Ok(self.ask_next(&mut state))
            } else {
                Err(self.begin(&mut state, sync))
            }
        };
        self.answer(joined).await
    }

    /// Interval mode: whether the backend failed the interval's read, so a
    /// check now is answered at once with the settings in service (see
    /// [`failed_recently`]).
    pub(super) fn down(&self, every: Duration) -> bool {
        match self.last() {
            // The lock only when the last read failed: a check on a healthy
            // backend takes none here.
            Some(last) if last.observed == Observed::Unavailable => {
                failed_recently(&last, &self.state(), every)
            }
            _ => false,
        }
    }

    /// Interval mode: what a read no older than `every` observed: the last
    /// one, the one in flight if it began within `every`, or one this
    /// check makes. `None` when the backend is [`down`](Self::down): the
    /// check is answered without waiting.
    pub(super) async fn within(
        self: &Arc<Self>,
        sync: &Arc<dyn GenerationSynchronizer>,
        every: Duration,
    ) -> Option<Observed> {
        let joined = {
            let mut state = self.state();
            // Under the lock a read's guard stores `last` under: consistent.
            if let Some(last) = self.last() {
                if let Some(g) = last.fresh(every) {
                    return Some(Observed::Value(g));
                }
                if failed_recently(&last, &state, every) {
                    return None;
                }
            }
            if !state.running() {
                Err(self.begin(&mut state, sync))
            } else if state.running_since.is_some_and(|at| at.elapsed() < every) {
                // Sent within the interval: as fresh as the mode promises.
                Ok((state.started, self.results.subscribe()))
            } else {
                Ok(self.ask_next(&mut state))
            }
        };
        Some(self.answer(joined).await)
    }

    /// Asks for the read after the one in flight, and subscribes to its
    /// result (under the lock, so the result cannot slip past).
    fn ask_next(&self, state: &mut State) -> (u64, watch::Receiver<Option<Read>>) {
        state.again = true;
        (state.started + 1, self.results.subscribe())
    }

    /// What a read observes: one this check makes itself (`Err`), or the
    /// one numbered `wanted` or later, which others make.
    async fn answer(
        &self,
        joined: Result<(u64, watch::Receiver<Option<Read>>), Publish>,
    ) -> Observed {
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
        state.again = false;
        let now = Instant::now();
        state.running_since = Some(now);
        Publish {
            reads: Arc::clone(self),
            sync: Arc::clone(sync),
            read: Read {
                no: state.started,
                began: now,
                ended: now,
                observed: Observed::Unavailable,
                finished: false,
            },
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        unpoisoned::lock(&self.state)
    }
}

/// Interval mode: whether `last` is a failed read that still stands for
/// the interval: it ended less than `every` ago, or the read in flight is
/// the next interval's, sent within two intervals of it (a check would only
/// wait for that read to fail too). After a longer idle spell, a check waits
/// for the read in flight: the backend may have come back meanwhile, and
/// the settings are an interval old.
fn failed_recently(last: &Read, state: &State, every: Duration) -> bool {
    last.observed == Observed::Unavailable
        && (last.ended.elapsed() < every
            || state
                .running_since
                .is_some_and(|sent| sent.saturating_duration_since(last.ended) < every * 2))
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
        self.read.ended = Instant::now();
        self.read.finished = true;
        self.read.observed
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        let reads = &self.reads;
        let mut state = reads.state();
        if self.read.finished {
            match self.read.observed {
                Observed::Value(_) | Observed::Unavailable => {
                    reads.last.store(Some(Arc::new(self.read)));
                }
                Observed::Missing | Observed::Corrupt => reads.last.store(None),
            }
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
        state.running_since = None;
    }
}
