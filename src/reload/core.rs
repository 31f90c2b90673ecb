//! What every clone of a reloader points to ([`Core`]), and its loads: the
//! one room where the settings are loaded, put in service and recorded,
//! driven by the single-flight machine of `flight.rs`.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::Config;
use super::flight::{Flight, Outcome, Report, Step, Trouble};
use super::listeners::Listeners;
use super::load::load_within;
use super::metrics::{Counters, Stopwatch};
use super::reads::Reads;
use super::snapshot::{Inner as SnapshotInner, Snapshot};
use super::source::{SettingsLoader, SettingsSaver};
use super::spread::{Spread, Verdict};
use crate::synchronizer::{Check, GenerationSynchronizer, Observed, Writer};

/// Everything the clones of one reloader share.
pub(super) struct Core<S> {
    pub(super) sync: Arc<dyn GenerationSynchronizer>,
    pub(super) loader: Arc<dyn SettingsLoader<S>>,
    pub(super) writes: Option<Writes<S>>,
    pub(super) config: Config,
    pub(super) current: ArcSwap<SnapshotInner<S>>,
    pub(super) listeners: Listeners<S>,
    pub(super) flight: Flight,
    pub(super) counters: Arc<Counters>,
    pub(super) reads: Arc<Reads>,
    /// Set once push mode has started tracking (and its reload task).
    pub(super) tracking: OnceLock<()>,
    /// Loads after a change put off within a window (off by default).
    pub(super) spread: Spread,
}

/// What a reloader writes with: the key's writer, and the saver.
pub(super) struct Writes<S> {
    pub(super) writer: Arc<Writer>,
    pub(super) saver: Arc<dyn SettingsSaver<S>>,
}

impl<S> Core<S> {
    /// The core of a reloader serving `first` until its first load.
    pub(super) fn new(
        sync: Arc<dyn GenerationSynchronizer>,
        loader: Arc<dyn SettingsLoader<S>>,
        writes: Option<Writes<S>>,
        config: Config,
        counters: Arc<Counters>,
        first: Snapshot<S>,
    ) -> Self {
        Core {
            flight: Flight::new(&config),
            listeners: Listeners::new(first.clone()),
            current: ArcSwap::new(Arc::clone(first.as_arc())),
            reads: Arc::new(Reads::new()),
            tracking: OnceLock::new(),
            spread: Spread::new(config.spread),
            sync,
            loader,
            writes,
            config,
            counters,
        }
    }

    /// The settings in service now.
    pub(super) fn current(&self) -> Snapshot<S> {
        Snapshot::from_arc(self.current.load_full())
    }
}

impl<S: Send + Sync + 'static> Core<S> {
    /// Brings the settings up to what `check` observed: joins a load that
    /// will read the source late enough, or starts one. `Err` carries the
    /// last good settings when no such load succeeded in time.
    pub(super) async fn catch_up(
        self: &Arc<Self>,
        check: Check,
        began: u64,
        force: bool,
    ) -> Result<Snapshot<S>, Snapshot<S>> {
        let wanted = check.observed();
        let deadline = (!force).then(|| Instant::now() + self.config.max_wait);
        loop {
            let (done, joinable) = match self
                .flight
                .step(began, wanted, force, || self.sync.sync_gen())
            {
                Step::Served => return Ok(self.current()),
                Step::Stale => return Err(self.current()),
                Step::Wait { done, joinable } => (done, joinable),
                Step::Start { done, finished } => {
                    self.start_load(check, finished);
                    (done, true)
                }
            };
            match wait(done, deadline).await {
                None => return Err(self.current()),
                Some(true) if joinable => return Ok(self.current()),
                Some(false) if joinable => return Err(self.current()),
                // An older load finished; now start or join a newer one.
                Some(_) => continue,
            }
        }
    }

    /// With spread loads, the settings in service when `check`, which
    /// found them expired, may be answered without waiting: the change it
    /// observed is loaded at the end of this instance's spread window.
    /// `None`: load now. With `Some(due)` beside the settings, this check
    /// opened the window, and its caller starts the task that loads at
    /// `due`.
    pub(super) fn deferred(&self, check: &Check) -> Option<(Snapshot<S>, Option<Instant>)> {
        if !self.spread.is_on() {
            return None;
        }
        let Observed::Value(heard) = check.shared else {
            return None;
        };
        let (due, opened) = match self.spread.verdict(check.local, heard) {
            Verdict::Load => return None,
            Verdict::Defer(due) => (due, None),
            Verdict::Open(due) => (due, Some(due)),
        };
        let current = self.current();
        current.defer_until(due.into_std());
        Some((current, opened))
    }

    fn start_load(self: &Arc<Self>, check: Check, finished: watch::Sender<Option<bool>>) {
        let core = Arc::clone(self);
        // Spawned, so a request that stops waiting (or is dropped) does not
        // cancel the load everyone else is waiting for.
        tokio::spawn(async move {
            let mut guard = FinishGuard {
                core: &core,
                finished,
                outcome: None,
            };
            guard.outcome = Some(core.load_once(check.shared).await);
        });
    }

    async fn load_once(&self, observed: Observed) -> Outcome {
        let sync = &self.sync;
        let target = match observed {
            Observed::Value(g) => Some(g),
            // Create (or repair) the key before loading, so the value
            // recorded afterwards predates the load.
            Observed::Missing | Observed::Corrupt => sync.fetch_or_create().await.ok(),
            Observed::Unavailable => None,
        };
        let observed_at = std::time::Instant::now();
        // Numbered again right before the loader reads the source: every
        // check that began before this number is served by this load.
        let seq = self.flight.reading(target);
        let own = self.spread.own();
        self.counters.loader_runs.add();
        let loader = Arc::clone(&self.loader);
        let stopwatch = Stopwatch::start();
        let loaded =
            load_within(self.config.load_timeout, async move { loader.load().await }).await;
        self.counters.reload_took(stopwatch);
        let settings = match loaded {
            Ok(settings) => settings,
            Err(problem) => {
                self.counters.reload_failures.add();
                return Outcome::Failed(problem.to_string());
            }
        };
        let old = self.current();
        // Without a generation read, none is known to match: `None`, not
        // the one the old settings had.
        let new = Snapshot::observed(settings, target, observed_at);
        self.current.store(Arc::clone(new.as_arc()));
        self.flight.loaded(seq);
        self.spread.loaded_since(own);
        // Recorded after the settings are in place, so a check that finds
        // itself fresh also finds the new settings. Without a generation,
        // the one recorded before stays: these settings were read after it
        // was seen, so while the backend still holds it (no bump since),
        // they are current, and a bump makes the process load again.
        if let Some(g) = target {
            sync.record(g);
        }
        self.counters.reloads.add();
        self.listeners.tell(sync.key(), &old, &new);
        match target {
            Some(_) => Outcome::Recorded,
            None => Outcome::Unrecorded,
        }
    }

    /// Ends a load in the flight machine, and logs what it means. Runs even
    /// if the load's task panicked, so the reloader never stays stuck.
    fn finish(&self, outcome: &Outcome) {
        let config = &self.config;
        let key = self.sync.key();
        match (self.flight.finish(outcome, config), outcome) {
            (Report::Quiet, _) => {}
            (Report::Recovered { trouble, loads }, _) => {
                tracing::info!(key = %key, ?trouble, loads, "gensync settings reload recovered");
            }
            (Report::Trouble { loads: 1, .. }, Outcome::Failed(problem)) => tracing::error!(
                key = %key,
                serving = ?self.current().generation(),
                "gensync settings reload failed: {problem}; serving the last good settings \
                 and retrying with backoff (up to {:?}); fix the loader or its source",
                config.backoff_max
            ),
            (Report::Trouble { loads, .. }, Outcome::Failed(problem)) => {
                tracing::debug!(key = %key, loads, "gensync settings reload failed again: {problem}")
            }
            (
                Report::Trouble {
                    trouble: Trouble::Unreachable,
                    loads: 1,
                    pause,
                },
                _,
            ) => tracing::warn!(
                key = %key,
                "gensync reloaded the settings from their source without a shared generation \
                 to record (the backend's error says why): serving them, and loading again at \
                 most every {:?} (doubling up to {:?}) until the backend answers",
                pause,
                config.backoff_max
            ),
            (Report::Trouble { loads, .. }, _) => {
                tracing::debug!(key = %key, loads, "gensync reloaded again without the shared generation")
            }
        }
    }
}

/// Waits for a load to finish, until the deadline if there is one. `None`
/// when the deadline passed; a load whose task vanished counts as failed.
async fn wait(mut done: watch::Receiver<Option<bool>>, deadline: Option<Instant>) -> Option<bool> {
    let finished = async {
        done.wait_for(Option::is_some)
            .await
            .map(|v| *v == Some(true))
            .unwrap_or(false)
    };
    match deadline {
        Some(at) => tokio::time::timeout_at(at, finished).await.ok(),
        None => Some(finished.await),
    }
}

/// Finishes a load when dropped: normally after it ran, or while unwinding
/// if it panicked, so waiters are always released.
struct FinishGuard<'a, S: Send + Sync + 'static> {
    core: &'a Core<S>,
    finished: watch::Sender<Option<bool>>,
    outcome: Option<Outcome>,
}

impl<S: Send + Sync + 'static> Drop for FinishGuard<'_, S> {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Outcome::Failed("the reload task stopped before finishing".to_owned())
        });
        self.core.finish(&outcome);
        self.finished.send_replace(Some(outcome.loaded()));
    }
}
