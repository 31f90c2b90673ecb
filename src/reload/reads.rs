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
//!   publishes a result (unavailable, if it was cancelled or panicked),
//!   wakes the checks that waited for that read, and starts the next read
//!   if one was asked for, so the chain never stops.
//! - **One wake-up per waiting check.** Waiters are kept in two lists, for
//!   the read in flight and for the next one; a read wakes its own list
//!   only, and the next read takes over the other. A check registers
//!   under the lock it asks for its read with, so no result slips past
//!   it, and a dropped check takes its waker back out.
//! - **Interval mode: one read per interval, an outage included.** The
//!   last read that answered with a generation, or that failed, is kept: a
//!   generation vouches for the interval after the read was sent, a
//!   failure stands for the interval after it ended. While the last read
//!   failed (recently: see `failed_recently`), no check waits for another
//!   check's read; only the check that makes the interval's read waits for
//!   it. A cancelled read is no
//!   answer and is not kept; a missing or corrupt key clears what is kept
//!   (the check that saw it repairs the key, and the next check reads).

use std::mem;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use crate::generation::Generation;
use crate::synchronizer::{GenerationSynchronizer, Observed};
use crate::unpoisoned;

/// The read a check makes itself, boxed: the synchronizer is a trait
/// object whose reads allocate anyway. Only the first check after an idle
/// spell makes one.
type ReadFuture = Pin<Box<dyn std::future::Future<Output = Observed> + Send + 'static>>;

/// One finished read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Read {
    /// Its number: reads are numbered in the order they start, from 1.
    no: u64,
    /// When it was sent (numbered: a read spawned for others may go out
    /// a moment later, so it is, if anything, fresher than this says).
    began: Instant,
    /// When its failure came, for a read that failed (all that asks);
    /// when it was sent, for the others: one clock read less per read.
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

/// The read in flight, the next one asked for, the checks waiting for
/// them, and the results.
#[derive(Debug)]
pub(super) struct Reads {
    state: Mutex<State>,
    /// The last read that answered with a generation or failed, for a
    /// check that may take it without waiting (interval mode).
    last: ArcSwapOption<Read>,
    /// Whether a check ever asked for `last`: only interval mode does, so
    /// strict and push reads skip storing it (an allocation per read).
    keeps_last: AtomicBool,
}

/// The wakers of the checks waiting for one read, each at the place it
/// registered at (`None` once its check was dropped).
type Waiters = Vec<Option<Waker>>;

#[derive(Debug, Default)]
struct State {
    /// How many reads have started.
    started: u64,
    /// Whether a check asked for the read after the one in flight.
    again: bool,
    /// When the read in flight was numbered; `None` while none is.
    running_since: Option<Instant>,
    /// The number of the last read published (0: none yet), and what it
    /// observed: the answer of every check waiting for it or an earlier one.
    published: u64,
    observed: Option<Observed>,
    /// The checks waiting for the read in flight (numbered `started`).
    joined: Waiters,
    /// The checks waiting for the next read (`started + 1`).
    queued: Waiters,
    /// An emptied list, kept for its capacity.
    spare: Waiters,
}

impl State {
    /// Whether a read is in flight.
    fn running(&self) -> bool {
        self.running_since.is_some()
    }

    /// The list of the checks waiting for read `wanted`, not yet published.
    fn waiters(&mut self, wanted: u64) -> &mut Waiters {
        if wanted == self.started {
            &mut self.joined
        } else {
            debug_assert_eq!(wanted, self.started + 1);
            &mut self.queued
        }
    }

    /// Registers a check waiting for the read after the one in flight,
    /// and asks for that read.
    fn wait_for_next(&mut self, waker: &Waker) -> Observe {
        self.again = true;
        self.wait(self.started + 1, waker)
    }

    /// Registers a check waiting for read `wanted`.
    fn wait(&mut self, wanted: u64, waker: &Waker) -> Observe {
        let waiters = self.waiters(wanted);
        waiters.push(Some(waker.clone()));
        Observe::Waiting {
            wanted,
            slot: waiters.len() - 1,
        }
    }
}

/// What a check observes: the read it makes itself, or the one it waits
/// for. A named future (polled with its [`Reads`]), so a waiting check
/// allocates nothing.
pub(super) enum Observe {
    /// Known without waiting (interval mode, the interval's read).
    Ready(Observed),
    /// This check makes the read itself.
    Reading(ReadFuture),
    /// Waiting for read `wanted` or a later one; its waker is at `slot` in
    /// that read's list.
    Waiting { wanted: u64, slot: usize },
    /// Answered.
    Done,
}

impl Observe {
    /// Polls for the observation, with the reads it was asked of.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, reads: &Reads) -> Poll<Observed> {
        let observed = match self {
            Observe::Ready(observed) => *observed,
            Observe::Reading(read) => std::task::ready!(read.as_mut().poll(cx)),
            Observe::Waiting { wanted, slot } => {
                let mut state = reads.state();
                if state.published < *wanted {
                    if let Some(waker) = state.waiters(*wanted).get_mut(*slot) {
                        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                            *waker = Some(cx.waker().clone());
                        }
                    }
                    return Poll::Pending;
                }
                // The reads are numbered in order: the last published is
                // the one wanted or a later one.
                state.observed.unwrap_or(Observed::Unavailable)
            }
            Observe::Done => panic!("an observation is not polled after it completed"),
        };
        *self = Observe::Done;
        Poll::Ready(observed)
    }

    /// Whether the check waits for a read others make.
    pub(super) fn waiting(&self) -> bool {
        matches!(self, Observe::Waiting { .. })
    }

    /// The check gives up (it was dropped): its waker is let go now, not
    /// when its read is published.
    pub(super) fn cancel(&mut self, reads: &Reads) {
        if let Observe::Waiting { wanted, slot } = *self {
            let mut state = reads.state();
            if state.published < wanted {
                if let Some(waker) = state.waiters(wanted).get_mut(slot) {
                    *waker = None;
                }
            }
        }
        *self = Observe::Done;
    }
}

impl Reads {
    pub(super) fn new() -> Self {
        Reads {
            state: Mutex::new(State::default()),
            last: ArcSwapOption::empty(),
            keeps_last: AtomicBool::new(false),
        }
    }

    /// The last finished read, if any.
    pub(super) fn last(&self) -> Option<Read> {
        // Read first: once set, a check writes nothing shared here.
        if !self.keeps_last.load(Ordering::Relaxed) {
            self.keeps_last.store(true, Ordering::Relaxed);
        }
        self.last.load().as_deref().copied()
    }

    /// What the next read to begin after this call observes. With no read
    /// in flight, this check makes the read itself: one check at a time
    /// costs no spawn and no wake-up. Checks that arrive meanwhile wait
    /// for the next read, which a task of its own makes.
    pub(super) fn next(
        self: &Arc<Self>,
        sync: &Arc<dyn GenerationSynchronizer>,
        waker: &Waker,
    ) -> Observe {
        let mut state = self.state();
        if state.running() {
            state.wait_for_next(waker)
        } else {
            self.read_now(state, sync)
        }
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
    pub(super) fn within(
        self: &Arc<Self>,
        sync: &Arc<dyn GenerationSynchronizer>,
        every: Duration,
        waker: &Waker,
    ) -> Option<Observe> {
        let mut state = self.state();
        // Under the lock a read's guard stores `last` under: consistent.
        if let Some(last) = self.last() {
            if let Some(g) = last.fresh(every) {
                return Some(Observe::Ready(Observed::Value(g)));
            }
            if failed_recently(&last, &state, every) {
                return None;
            }
        }
        Some(if !state.running() {
            self.read_now(state, sync)
        } else if state.running_since.is_some_and(|at| at.elapsed() < every) {
            // Sent within the interval: as fresh as the mode promises.
            let wanted = state.started;
            state.wait(wanted, waker)
        } else {
            state.wait_for_next(waker)
        })
    }

    /// With no read in flight: this check makes the read itself.
    fn read_now(
        self: &Arc<Self>,
        mut state: MutexGuard<'_, State>,
        sync: &Arc<dyn GenerationSynchronizer>,
    ) -> Observe {
        let read = self.begin(&mut state, sync);
        drop(state);
        Observe::Reading(Box::pin(read.read()))
    }

    /// Numbers the next read and marks it in flight: the checks that asked
    /// for it now wait for it. The guard publishes it.
    fn begin(
        self: &Arc<Self>,
        state: &mut State,
        sync: &Arc<dyn GenerationSynchronizer>,
    ) -> Publish {
        state.started += 1;
        state.again = false;
        let spare = mem::take(&mut state.spare);
        state.joined = mem::replace(&mut state.queued, spare);
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
/// task unwinds or is cancelled), wakes the checks that waited for it, and
/// starts the next read if one was asked for.
struct Publish {
    reads: Arc<Reads>,
    sync: Arc<dyn GenerationSynchronizer>,
    read: Read,
}

impl Publish {
    /// Makes the read, publishes it (on drop) and returns what it saw.
    async fn read(mut self) -> Observed {
        self.read.observed = self.sync.check().await.shared;
        if self.read.observed == Observed::Unavailable {
            self.read.ended = Instant::now();
        }
        self.read.finished = true;
        self.read.observed
    }
}

impl Drop for Publish {
    fn drop(&mut self) {
        let reads = &self.reads;
        let (mut woken, next) = {
            let mut state = reads.state();
            // A check that asked for `last` did so under this lock, or
            // before it: the next read stores it at the latest.
            if self.read.finished && reads.keeps_last.load(Ordering::Relaxed) {
                match self.read.observed {
                    Observed::Value(_) | Observed::Unavailable => {
                        reads.last.store(Some(Arc::new(self.read)));
                    }
                    Observed::Missing | Observed::Corrupt => reads.last.store(None),
                }
            }
            state.published = self.read.no;
            state.observed = Some(self.read.observed);
            let woken = mem::take(&mut state.joined);
            // Inside a runtime whenever a check asked for it; a runtime
            // shutting down cancels the new task too, which publishes.
            // Without one, the checks that asked wait for the read the
            // next check begins.
            let next = (state.again && tokio::runtime::Handle::try_current().is_ok())
                .then(|| reads.begin(&mut state, &self.sync));
            if next.is_none() {
                state.running_since = None;
            }
            (woken, next)
        };
        // Woken outside the lock, so they find it free.
        for waker in woken.drain(..).flatten() {
            waker.wake();
        }
        // Spawned after the wake-ups: the runtime runs the task scheduled
        // last first, so the next read goes out now, not behind every
        // check just woken (which would then wait for it all the longer).
        if let Some(next) = next {
            tokio::spawn(next.read());
        }
        if woken.capacity() > 0 {
            let mut state = reads.state();
            if state.spare.capacity() < woken.capacity() {
                state.spare = woken;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};
    use std::sync::atomic::{AtomicU64, Ordering};

    use async_trait::async_trait;
    use tokio::sync::{Notify, Semaphore};

    use super::*;
    use crate::backend::Stored;
    use crate::error::Error;
    use crate::key::Key;
    use crate::synchronizer::Check;

    /// A backend whose reads take the shared value when they begin, then
    /// answer only when the test lets one through: a read that began
    /// before a bump and answers after it.
    struct Held {
        key: Key,
        shared: AtomicU64,
        began: AtomicU64,
        began_one: Notify,
        answers: Semaphore,
    }

    impl Held {
        fn new() -> Arc<Self> {
            Arc::new(Held {
                key: Key::new(["reads"]).unwrap(),
                shared: AtomicU64::new(1),
                began: AtomicU64::new(0),
                began_one: Notify::new(),
                answers: Semaphore::new(0),
            })
        }

        /// Waits until `n` reads have begun; panics if they never do (the
        /// clock is paused: the hour passes once nothing else can run).
        async fn began(&self, n: u64) {
            let begun = async {
                loop {
                    let next = self.began_one.notified();
                    if self.began.load(Ordering::SeqCst) >= n {
                        return;
                    }
                    next.await;
                }
            };
            tokio::time::timeout(Duration::from_secs(3600), begun)
                .await
                .unwrap_or_else(|_| panic!("read {n} never began"));
        }
    }

    #[async_trait]
    impl GenerationSynchronizer for Held {
        fn key(&self) -> &Key {
            &self.key
        }
        fn sync_gen(&self) -> Option<Generation> {
            None
        }
        fn record(&self, _: Generation) {}
        async fn check(&self) -> Check {
            let value = self.shared.load(Ordering::SeqCst);
            self.began.fetch_add(1, Ordering::SeqCst);
            self.began_one.notify_waiters();
            self.answers.acquire().await.unwrap().forget();
            Check {
                local: None,
                shared: Observed::Value(Generation::new(value).unwrap()),
            }
        }
        async fn read(&self) -> Result<Stored, Error> {
            unreachable!("reads only check")
        }
        async fn fetch_or_create(&self) -> Result<Generation, Error> {
            unreachable!("reads only check")
        }
        async fn refresh(&self) -> Result<Generation, Error> {
            unreachable!("reads only check")
        }
        async fn mark_updated(&self) -> Result<Generation, Error> {
            unreachable!("reads only check")
        }
        async fn clear(&self) -> Result<(), Error> {
            unreachable!("reads only check")
        }
    }

    /// A strict check, begun now (its first poll), as a future of what it
    /// observes. Dropping it drops the check, as a dropped request does.
    fn check(
        reads: &Arc<Reads>,
        sync: &Arc<dyn GenerationSynchronizer>,
    ) -> impl Future<Output = Observed> + Unpin {
        let mut cx = Context::from_waker(Waker::noop());
        let mut observe = Some(reads.next(sync, cx.waker()));
        let reads = Arc::clone(reads);
        // The first poll, so a check that makes its read has sent it.
        if let Some(o) = observe.as_mut() {
            assert!(o.poll(&mut cx, &reads).is_pending(), "the reads are held");
        }
        Cancelled::new(observe.take().unwrap(), reads)
    }

    /// An observation that takes its waker back out when dropped, as a
    /// dropped check does.
    struct Cancelled {
        observe: Observe,
        reads: Arc<Reads>,
    }

    impl Cancelled {
        fn new(observe: Observe, reads: Arc<Reads>) -> Self {
            Cancelled { observe, reads }
        }
    }

    impl Future for Cancelled {
        type Output = Observed;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Observed> {
            let this = &mut *self;
            this.observe.poll(cx, &this.reads)
        }
    }

    impl Drop for Cancelled {
        fn drop(&mut self) {
            self.observe.cancel(&self.reads);
        }
    }

    fn value(v: u64) -> Observed {
        Observed::Value(Generation::new(v).unwrap())
    }

    /// What `check` observes, or `None` if it is never woken: the clock is
    /// paused, so the hour passes as soon as nothing else can run, and it
    /// is looked at first, so a check polled only then does not count.
    async fn released(check: impl Future<Output = Observed> + Unpin) -> Option<Observed> {
        tokio::select! {
            biased;
            _ = tokio::time::sleep(Duration::from_secs(3600)) => None,
            observed = check => Some(observed),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_arriving_during_a_read_is_answered_by_the_next_one() {
        let held = Held::new();
        let sync: Arc<dyn GenerationSynchronizer> = held.clone();
        let reads = Arc::new(Reads::new());
        // The first check makes a read, which takes value 1 and is held.
        let first = check(&reads, &sync);
        held.began(1).await;
        // A bump completes; then a check arrives while that read is out.
        held.shared.store(2, Ordering::SeqCst);
        let mut late = check(&reads, &sync);
        held.answers.add_permits(1);
        assert_eq!(first.await, value(1));
        // The next read began after the late check arrived, and is held:
        // the late check is not answered by the one before it.
        held.began(2).await;
        assert!(poll_fn(|cx| Poll::Ready(Pin::new(&mut late).poll(cx)))
            .await
            .is_pending());
        held.answers.add_permits(1);
        assert_eq!(released(late).await, Some(value(2)));
        assert_eq!(held.began.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_check_stops_neither_the_reads_nor_the_others() {
        let held = Held::new();
        let sync: Arc<dyn GenerationSynchronizer> = held.clone();
        let reads = Arc::new(Reads::new());
        // The check that makes the read is dropped mid-read, and one of
        // the checks waiting for the next read is dropped too, each after
        // its task registered its waker.
        let first = tokio::spawn(check(&reads, &sync));
        held.began(1).await;
        let mut waiting: Vec<_> = (0..3).map(|_| tokio::spawn(check(&reads, &sync))).collect();
        tokio::task::yield_now().await;
        waiting.remove(0).abort();
        first.abort();
        // The dropped read published and started the next one, which the
        // others asked for: it answers them.
        held.began(2).await;
        held.shared.store(3, Ordering::SeqCst);
        held.answers.add_permits(1);
        for check in waiting {
            let answered = released(Box::pin(async { check.await.unwrap() })).await;
            assert_eq!(answered, Some(value(1)), "a waiter was never released");
        }
        // And a check after them reads anew.
        let after = check(&reads, &sync);
        held.answers.add_permits(1);
        assert_eq!(released(after).await, Some(value(3)));
    }
}
