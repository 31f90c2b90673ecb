//! One check, step by step: answered at once when the mode vouches for
//! the settings in service, else numbered, waiting for the read that
//! answers it, and then current, put off (spread loads) or waiting for a
//! load; and the named futures that run those steps ([`AnswerFuture`],
//! [`CheckFuture`]), so a check that waits for a read shared with others
//! allocates nothing. Push mode's tracking task, which checks on every
//! pushed change, starts here too.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use super::answer::{Answer, Freshness};
use super::core::Core;
use super::metrics::Stopwatch;
use super::reads::Observe;
use super::snapshot::Snapshot;
use crate::generation::Generation;
use crate::synchronizer::{Check, Observed};

/// A boxed future, for the parts of a check that run on a trait object.
pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of [`Reloader::check`](super::Reloader::check): resolves to the settings a request
/// should use.
///
/// A named state machine: a check answered without a read (push or
/// interval mode, settings current) is ready at once, and a check that
/// waits for a read shared with others allocates nothing. Only the first
/// check after an idle spell, which makes the read itself, and a check
/// that must wait for a load, box what they wait on (the synchronizer and
/// the loader are trait objects whose calls allocate anyway).
#[must_use = "futures do nothing unless polled"]
pub struct CheckFuture<S> {
    answer: AnswerFuture<S>,
}

/// The future of [`Reloader::answer`](super::Reloader::answer): the
/// settings and how fresh they are. Allocates as [`CheckFuture`] does.
#[must_use = "futures do nothing unless polled"]
pub struct AnswerFuture<S> {
    check: Checking<S>,
}

/// Where a check stands.
pub(super) enum Checking<S> {
    /// Answered.
    Ready(Answer<S>),
    /// Not polled yet: the check begins (takes its number and asks for its
    /// read) when first polled.
    Start(Arc<Core<S>>),
    /// Waiting for the read that answers it.
    Observing {
        core: Arc<Core<S>>,
        began: u64,
        stopwatch: Stopwatch,
        observe: Observe,
    },
    /// Expired: waiting for a load.
    CatchingUp(BoxFuture<Answer<S>>),
    /// Its answer was taken.
    Done,
}

impl<S> AnswerFuture<S> {
    pub(super) fn start(core: Arc<Core<S>>) -> Self {
        AnswerFuture {
            check: Checking::Start(core),
        }
    }

    pub(super) fn ready(answer: Answer<S>) -> Self {
        AnswerFuture {
            check: Checking::Ready(answer),
        }
    }
}

impl<S> CheckFuture<S> {
    pub(super) fn new(answer: AnswerFuture<S>) -> Self {
        CheckFuture { answer }
    }

    /// The answer, when the check had it at once (no read to wait for).
    #[cfg_attr(not(feature = "layer"), allow(dead_code))]
    pub(super) fn now_or_later(mut self) -> Result<Snapshot<S>, Self> {
        match mem::replace(&mut self.answer.check, Checking::Done) {
            Checking::Ready(answer) => Ok(answer.snapshot),
            check => {
                self.answer.check = check;
                Err(self)
            }
        }
    }
}

impl<S> Unpin for AnswerFuture<S> {}

impl<S: Send + Sync + 'static> Future for AnswerFuture<S> {
    type Output = Answer<S>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer<S>> {
        let check = &mut self.check;
        loop {
            match check {
                Checking::Observing { core, observe, .. } => {
                    let observed = ready!(observe.poll(cx, &core.reads));
                    let Checking::Observing {
                        core,
                        began,
                        stopwatch,
                        ..
                    } = mem::replace(check, Checking::Done)
                    else {
                        unreachable!("matched above")
                    };
                    *check = core.observed(began, stopwatch, observed, Freshness::Read);
                }
                Checking::CatchingUp(load) => {
                    let answer = ready!(load.as_mut().poll(cx));
                    *check = Checking::Done;
                    return Poll::Ready(answer);
                }
                _ => match mem::replace(check, Checking::Done) {
                    Checking::Ready(answer) => return Poll::Ready(answer),
                    Checking::Start(core) => {
                        *check = core.start_check(cx.waker());
                        // Registered with this waker already: no need to
                        // look again before it wakes.
                        if matches!(check, Checking::Observing { observe, .. } if observe.waiting())
                        {
                            return Poll::Pending;
                        }
                    }
                    _ => panic!("a CheckFuture is not polled after it completed"),
                },
            }
        }
    }
}

impl<S> Drop for AnswerFuture<S> {
    fn drop(&mut self) {
        // A check dropped while waiting lets go of its waker now.
        if let Checking::Observing { core, observe, .. } = &mut self.check {
            observe.cancel(&core.reads);
        }
    }
}

impl<S: Send + Sync + 'static> Future for CheckFuture<S> {
    type Output = Snapshot<S>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Snapshot<S>> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.snapshot)
    }
}

impl<S> fmt::Debug for CheckFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckFuture").finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for AnswerFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerFuture").finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> Core<S> {
    /// A check's future, answered at once when the mode vouches for the
    /// settings in service (or interval mode serves them through an
    /// outage).
    pub(super) fn answer(self: &Arc<Self>) -> AnswerFuture<S> {
        if let Some(current) = self.vouched_current() {
            return AnswerFuture::ready(Answer::new(current, Freshness::Vouched));
        }
        if let Some(stale) = self.unread_in_outage() {
            return AnswerFuture::ready(Answer::new(stale, Freshness::Stale));
        }
        AnswerFuture::start(Arc::clone(self))
    }

    /// The settings in service, when the mode vouches for the generation
    /// they were loaded at without a read: the path of a check that costs
    /// no round trip.
    fn vouched_current(self: &Arc<Self>) -> Option<Snapshot<S>> {
        let core = self;
        let g = self.vouched()?;
        if core.sync.sync_gen() != Some(g) {
            return None;
        }
        let stopwatch = Stopwatch::start();
        core.counters.checks.add();
        core.flight.answered(core.flight.began());
        Some(self.serve_current(g, stopwatch))
    }

    /// Interval mode while the backend failed the interval's read: the
    /// settings in service, at once and without a read, so an outage costs
    /// one read (and one waiting check) per interval, not one per request.
    fn unread_in_outage(&self) -> Option<Snapshot<S>> {
        let core = self;
        if !core.config.mode.answers_unread(&core.reads) {
            return None;
        }
        let stopwatch = Stopwatch::start();
        core.counters.checks.add();
        Some(self.serve_stale(stopwatch))
    }

    /// The last good settings, as a check that found them expired and
    /// could not reload answers.
    fn serve_stale(&self, stopwatch: Stopwatch) -> Snapshot<S> {
        let counters = &self.counters;
        counters.expired.add();
        counters.stale_served.add();
        let current = self.current();
        counters.served(stopwatch, &current);
        current
    }

    /// The settings in service, as a check that found `g`, the generation
    /// recorded, still current answers.
    fn serve_current(&self, g: Generation, stopwatch: Stopwatch) -> Snapshot<S> {
        let current = self.current();
        if current.generation().is_none() {
            // Loaded while the generation could not be read, and that
            // generation is still the one recorded.
            current.stamp(g);
        }
        self.counters.served(stopwatch, &current);
        current
    }

    /// The shared generation as the mode vouches for it now, without a
    /// read: pushed (and heard from within the heartbeat bound), or read
    /// within the interval.
    fn vouched(self: &Arc<Self>) -> Option<Generation> {
        let core = self;
        let mode = core.config.mode;
        if mode.pushes() && core.tracking.get().is_none() {
            self.start_tracking();
        }
        mode.vouched(&*core.sync, &core.reads)
    }

    /// Starts push tracking, once, and a task that checks whenever what it
    /// vouches for changes (a pushed change among them), so the settings
    /// follow without waiting for a request.
    fn start_tracking(self: &Arc<Self>) {
        if tokio::runtime::Handle::try_current().is_err() {
            // Nothing could run the tracking here; a check in a runtime will.
            return;
        }
        let core = self;
        core.tracking.get_or_init(|| {
            let Some(tracker) = core.sync.track() else {
                tracing::info!(key = %core.sync.key(), "gensync push mode: this backend cannot push changes; checking the key on every request (strict)");
                return;
            };
            let changes = tracker.notifier();
            let weak = Arc::downgrade(self);
            tokio::spawn(async move {
                loop {
                    // Armed before the reloader is let go, so the wake-up
                    // its tracker's drop sends is not missed.
                    let changed = changes.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    match weak.upgrade() {
                        // Only once tracking has read what the key holds
                        // now, on the server the backend talks to: the
                        // check then loads if it moved (reading again only
                        // when the key is missing or corrupt, and the load
                        // repairs it). Otherwise requests read for
                        // themselves (and a load that writes the key cannot
                        // wake this task into a loop), and the tracker's
                        // next read wakes it again.
                        Some(core) if core.sync.vouched().is_some() => {
                            let _ = core.answer().await;
                        }
                        Some(_) => {}
                        None => return,
                    }
                    changed.await;
                }
            });
        });
    }

    /// The first step of a check not answered at once, when it is first
    /// polled: it takes its number and asks for the read that answers it
    /// (woken through `waker` when that read is another's).
    fn start_check(self: Arc<Self>, waker: &Waker) -> Checking<S> {
        let core = &*self;
        let stopwatch = Stopwatch::start();
        let began = core.flight.began();
        core.counters.checks.add();
        if let Some(g) = self.vouched() {
            return self.observed(began, stopwatch, Observed::Value(g), Freshness::Vouched);
        }
        match core.config.mode.observe(&core.sync, &core.reads, waker) {
            Some(observe) => Checking::Observing {
                core: self,
                began,
                stopwatch,
                observe,
            },
            // The interval's read failed: nothing to wait for.
            None => Checking::Ready(Answer::new(self.serve_stale(stopwatch), Freshness::Stale)),
        }
    }

    /// The step of a check that began at `began` once it `observed` the
    /// shared generation: answered with the settings in service if they
    /// are current, else it waits for a load (boxed: the rare path).
    fn observed(
        self: Arc<Self>,
        began: u64,
        stopwatch: Stopwatch,
        observed: Observed,
        freshness: Freshness,
    ) -> Checking<S> {
        let core = &*self;
        // The local generation now, not when the read was sent: a load may
        // have recorded the observed one meanwhile.
        let check = Check {
            local: core.sync.sync_gen(),
            shared: observed,
        };
        if let Some(g) = check.observed() {
            core.flight.answered(began);
            if !check.is_expired() {
                return Checking::Ready(Answer::new(self.serve_current(g, stopwatch), freshness));
            }
        }
        let counters = &core.counters;
        if !check.is_expired() {
            let answer = Answer::new(self.current(), freshness);
            counters.served(stopwatch, &answer.snapshot);
            return Checking::Ready(answer);
        }
        counters.expired.add();
        if check.shared == Observed::Unavailable {
            counters.backend_errors.add();
        }
        if let Some((deferred, opened)) = core.deferred(&check) {
            if let Some(due) = opened {
                // This check opened the window: a task loads when it ends.
                let core = Arc::downgrade(&self);
                tokio::spawn(async move {
                    tokio::time::sleep_until(due).await;
                    // A reloader let go meanwhile has nothing to load for.
                    if let Some(core) = core.upgrade() {
                        let _ = core.answer().await;
                    }
                });
            }
            counters.deferred_served.add();
            let answer = Answer::new(deferred, Freshness::Deferred);
            counters.served(stopwatch, &answer.snapshot);
            return Checking::Ready(answer);
        }
        Checking::CatchingUp(Box::pin(async move {
            let answer = match self.catch_up(check, began, false).await {
                Ok(snapshot) => Answer::new(snapshot, freshness),
                Err(stale) => {
                    self.counters.stale_served.add();
                    Answer::new(stale, Freshness::Stale)
                }
            };
            self.counters.served(stopwatch, &answer.snapshot);
            answer
        }))
    }
}
