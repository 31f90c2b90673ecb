//! The reloader handle: what a service holds to read its settings, check
//! them, and hear of reloads.

use std::fmt;
use std::sync::Arc;
use std::task::Waker;

use tokio::sync::watch;

use super::answer::{Answer, Freshness};
use super::core::Core;
use super::future::{AnswerFuture, CheckFuture, Checking};
use super::listeners::ListenerId;
use super::metrics::{ReloadMetrics, Stopwatch};
use super::snapshot::Snapshot;
use crate::generation::Generation;
use crate::synchronizer::{Check, GenerationSynchronizer, Observed};

/// Keeps one process's settings current.
///
/// [`check`](Self::check) runs before each request (the
/// [`SettingsReloadLayer`](super::SettingsReloadLayer) calls it): when the
/// shared generation moved, it reloads the settings, once per process
/// however many requests find them expired at once, and waits for that load
/// up to a bound. The generation recorded after a load is the one the check
/// observed before loading (the reload fence), and only after the load
/// succeeded. A failed load keeps the last good settings, is logged once per
/// failure episode and is retried with capped exponential backoff. While
/// the shared generation cannot be read, loads still read the source (at
/// most once per backoff window, the backoff starting afresh at each
/// outage), serving what it holds with no generation known to match
/// ([`Snapshot::generation`] `None`).
///
/// Checks, reloads and writes must run inside a tokio runtime: a load runs
/// on a task of its own, so a request that stops waiting for it cancels
/// nothing, and a panicking loader is caught there. (Code with no runtime
/// uses [`BlockingReloader`](super::BlockingReloader), which brings one.)
///
/// Cloning is cheap; clones share everything.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use gensync::reload::Reloader;
/// use gensync::{Key, MemoryBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = Arc::new(Mutex::new(String::from("theme=light")));
/// let (read, write) = (db.clone(), db.clone());
/// let reloader = Reloader::builder(
///     Synchronizer::new(MemoryBackend::new(), Key::new(["site", "settings"])?),
///     move || {
///         let db = read.clone();
///         async move { Ok::<_, std::io::Error>(db.lock().unwrap().clone()) }
///     },
/// )
/// .saver(move |s: &String| {
///     *write.lock().unwrap() = s.clone();
///     async { Ok::<_, std::io::Error>(()) }
/// })
/// .build(String::new())?;
///
/// assert_eq!(*reloader.check().await, "theme=light");
/// reloader.publish(String::from("theme=dark")).await?;
/// assert_eq!(*reloader.check().await, "theme=dark");
/// # Ok(()) }
/// ```
pub struct Reloader<S> {
    core: Arc<Core<S>>,
}

impl<S> Clone for Reloader<S> {
    fn clone(&self) -> Self {
        Reloader {
            core: Arc::clone(&self.core),
        }
    }
}

impl<S> fmt::Debug for Reloader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &*self.core;
        f.debug_struct("Reloader")
            .field("key", core.sync.key())
            .field("recorded", &core.sync.sync_gen())
            .field("serving", &self.current().generation())
            .field("saver", &core.writes.is_some())
            .field("config", &core.config)
            .field("metrics", &core.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl<S> Reloader<S> {
    pub(super) fn from_core(core: Core<S>) -> Self {
        Reloader {
            core: Arc::new(core),
        }
    }

    pub(super) fn with_core(core: Arc<Core<S>>) -> Self {
        Reloader { core }
    }

    pub(super) fn core(&self) -> &Arc<Core<S>> {
        &self.core
    }

    /// The settings in service now, without checking anything.
    pub fn current(&self) -> Snapshot<S> {
        self.core.current()
    }

    /// The synchronizer underneath, for writers that bump by hand.
    pub fn synchronizer(&self) -> &dyn GenerationSynchronizer {
        &*self.core.sync
    }

    /// What this reloader has done so far.
    pub fn metrics(&self) -> ReloadMetrics {
        self.core.counters.snapshot()
    }

    /// A receiver that always holds the newest settings.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot<S>> {
        self.core.listeners.subscribe()
    }

    /// Calls `listener(old, new)` after each reload, on the task that
    /// loaded. A panicking listener is caught and logged. A listener may
    /// itself add or remove listeners; that takes effect from the next
    /// reload.
    pub fn on_reload(
        &self,
        listener: impl Fn(&Snapshot<S>, &Snapshot<S>) + Send + Sync + 'static,
    ) -> ListenerId {
        self.core.listeners.add(Arc::new(listener))
    }

    /// Stops calling a listener given to [`on_reload`](Self::on_reload).
    /// Returns whether it was still registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.core.listeners.remove(id)
    }
}

impl<S: Send + Sync + 'static> Reloader<S> {
    /// Checks the shared generation and returns settings as fresh as the
    /// reloader's [`CheckMode`](super::CheckMode) promises (by default, at least as new as
    /// every update whose bump completed before this call), reloading if
    /// needed. Never fails: when the backend or the loader misbehaves, or
    /// the reload outlasts the wait bound, it returns the last good
    /// settings and counts that in [`ReloadMetrics::stale_served`].
    pub fn check(&self) -> CheckFuture<S> {
        CheckFuture::new(self.answer())
    }

    /// A [`check`](Self::check) that also says how fresh its answer is:
    /// read for this check, vouched for without a read, or stale (the
    /// last good settings, counted in
    /// [`ReloadMetrics::stale_served`]). Costs what a check costs.
    pub fn answer(&self) -> AnswerFuture<S> {
        if let Some(current) = self.vouched_current() {
            return AnswerFuture::ready(Answer::new(current, Freshness::Vouched));
        }
        if let Some(stale) = self.unread_in_outage() {
            return AnswerFuture::ready(Answer::new(stale, Freshness::Stale));
        }
        AnswerFuture::start(self.clone())
    }

    /// The settings in service, when the mode vouches for the generation
    /// they were loaded at without a read: the path of a check that costs
    /// no round trip.
    fn vouched_current(&self) -> Option<Snapshot<S>> {
        let core = &self.core;
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
        let core = &self.core;
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
        let counters = &self.core.counters;
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
        self.core.counters.served(stopwatch, &current);
        current
    }

    /// The shared generation as the mode vouches for it now, without a
    /// read: pushed (and heard from within the heartbeat bound), or read
    /// within the interval.
    fn vouched(&self) -> Option<Generation> {
        let core = &self.core;
        let mode = core.config.mode;
        if mode.pushes() && core.tracking.get().is_none() {
            self.start_tracking();
        }
        mode.vouched(&*core.sync, &core.reads)
    }

    /// Starts push tracking, once, and a task that checks whenever what it
    /// vouches for changes (a pushed change among them), so the settings
    /// follow without waiting for a request.
    fn start_tracking(&self) {
        if tokio::runtime::Handle::try_current().is_err() {
            // Nothing could run the tracking here; a check in a runtime will.
            return;
        }
        let core = &self.core;
        core.tracking.get_or_init(|| {
            let Some(tracker) = core.sync.track() else {
                tracing::info!(key = %core.sync.key(), "gensync push mode: this backend cannot push changes; checking the key on every request (strict)");
                return;
            };
            let changes = tracker.notifier();
            let weak = Arc::downgrade(&self.core);
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
                            let _ = Reloader { core }.check().await;
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
    pub(super) fn start_check(self, waker: &Waker) -> Checking<S> {
        let core = &self.core;
        let stopwatch = Stopwatch::start();
        let began = core.flight.began();
        core.counters.checks.add();
        if let Some(g) = self.vouched() {
            return self.observed(began, stopwatch, Observed::Value(g), Freshness::Vouched);
        }
        match core.config.mode.observe(&core.sync, &core.reads, waker) {
            Some(observe) => Checking::Observing {
                reloader: self,
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
    pub(super) fn observed(
        self,
        began: u64,
        stopwatch: Stopwatch,
        observed: Observed,
        freshness: Freshness,
    ) -> Checking<S> {
        let core = &self.core;
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
        if let Some(deferred) = core.deferred(&check) {
            counters.deferred_served.add();
            let answer = Answer::new(deferred, Freshness::Deferred);
            counters.served(stopwatch, &answer.snapshot);
            return Checking::Ready(answer);
        }
        Checking::CatchingUp(Box::pin(async move {
            let core = &self.core;
            let answer = match core.catch_up(check, began, false).await {
                Ok(snapshot) => Answer::new(snapshot, freshness),
                Err(stale) => {
                    core.counters.stale_served.add();
                    Answer::new(stale, Freshness::Stale)
                }
            };
            core.counters.served(stopwatch, &answer.snapshot);
            answer
        }))
    }

    /// Loads the settings now, whatever the generation says and whatever
    /// the backoff, and waits for that load (bounded by the load timeout).
    /// For start-up and tests.
    pub async fn reload_now(&self) -> Result<Snapshot<S>, Snapshot<S>> {
        let began = self.core.flight.began();
        let check = self.core.sync.check().await;
        self.core.catch_up(check, began, true).await
    }
}
