//! The reloader: checks the shared generation, reloads the settings once per
//! change per process, and publishes writers' changes.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::{Counters, ReloadMetrics};
use super::snapshot::{Inner as SnapshotInner, Snapshot};
use super::source::{BoxError, SettingsLoader, SettingsSaver};
use crate::error::Error;
use crate::generation::Generation;
use crate::synchronizer::{Check, GenerationSynchronizer, Observed};

/// Bounds and pacing of a [`Reloader`], set through [`ReloaderBuilder`].
#[derive(Clone, Debug, PartialEq, Eq)]
struct Config {
    max_wait: Duration,
    load_timeout: Duration,
    backoff_initial: Duration,
    backoff_max: Duration,
    lock_ttl: Duration,
    lock_tries: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_wait: Duration::from_secs(1),
            load_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(5),
            lock_tries: 40,
        }
    }
}

/// The pause between tries for the writers' lock: short at first, then
/// capped, so 40 tries outlast a dead holder's 5 s lock.
fn lock_retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(5)).min(200))
}

/// A failed [`Reloader::publish`] or [`Reloader::update`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The reloader was built without a saver.
    #[error("this reloader has no saver: build it with ReloaderBuilder::saver to publish")]
    NoSaver,
    /// Other writers held the lock for every try.
    #[error("another writer held the lock on {key} through {tries} tries; retry later, or look for a stuck writer (the lock lapses after {lock_ttl:?})")]
    Locked {
        /// The generation's key.
        key: String,
        /// How many times the lock was tried.
        tries: u32,
        /// How long a holder keeps the lock at most.
        lock_ttl: Duration,
    },
    /// The backend failed before anything was saved.
    #[error("could not start the write, nothing was saved: {0}")]
    Start(#[source] Error),
    /// Loading the current settings for an update failed.
    #[error("could not load the current settings to update them, nothing was saved: {0}")]
    Load(#[source] BoxError),
    /// The saver failed.
    #[error("saving the settings failed: {0}")]
    Save(#[source] BoxError),
    /// The settings were saved, but the bump failed.
    #[error("the settings were saved but other processes were not told: {source}; they reload when the write intent lapses (within {lock_ttl:?}), or publish again")]
    Bump {
        /// Why the bump failed.
        #[source]
        source: Error,
        /// When the intent recorded before saving lapses.
        lock_ttl: Duration,
    },
}

type Listener<S> = Box<dyn Fn(&Snapshot<S>, &Snapshot<S>) + Send + Sync>;

/// Keeps one process's settings current.
///
/// [`check`](Self::check) runs before each request (the
/// [`SettingsReloadLayer`](super::SettingsReloadLayer) calls it): when the
/// shared generation moved, it reloads the settings, once per process
/// however many requests find them expired at once, and waits for that load
/// up to a bound. The generation recorded after a load is the one the check
/// observed before loading (the reload fence), and only after the load
/// succeeded. A failed load keeps the last good settings, is logged once per
/// failure episode and is retried with capped exponential backoff.
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
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    sync: Arc<dyn GenerationSynchronizer>,
    loader: Arc<dyn SettingsLoader<S>>,
    saver: Option<Arc<dyn SettingsSaver<S>>>,
    config: Config,
    current: ArcSwap<SnapshotInner<S>>,
    notify: watch::Sender<Snapshot<S>>,
    listeners: RwLock<Vec<Listener<S>>>,
    state: Mutex<State>,
    /// Orders checks and loads: a check reads it, a load takes the next
    /// number, so a load numbered at or above a check's reading read the
    /// source after that check began. Checks only read it: no shared write
    /// per request.
    seq: AtomicU64,
    /// The number of the load that produced the current settings.
    loaded_seq: AtomicU64,
    counters: Counters,
}

struct State {
    inflight: Option<InFlight>,
    /// No new load before this, after a failure.
    retry_at: Option<Instant>,
    /// Whether the last failure was the loader's, not the backend's: only
    /// then does the backoff hold back a check that reads a generation.
    loader_failed: bool,
    backoff: Duration,
    /// Failed loads since the last good one: the first is logged as an
    /// error, the rest quietly, so an outage is one log line, not thousands.
    failures: u32,
}

struct InFlight {
    seq: u64,
    /// The generation the load will record, when known before it starts.
    target: Option<Generation>,
    /// `Some(true)` once the load replaced the settings, `Some(false)` when
    /// it failed.
    done: watch::Receiver<Option<bool>>,
}

/// What one load did.
struct Outcome {
    /// The settings were replaced.
    loaded: bool,
    /// Why the failure episode goes on; `None` when the generation was
    /// recorded, which ends it.
    problem: Option<String>,
}

/// Builds a [`Reloader`]: the synchronizer and loader it needs, a saver if
/// it publishes, and its bounds.
pub struct ReloaderBuilder<S> {
    sync: Arc<dyn GenerationSynchronizer>,
    loader: Arc<dyn SettingsLoader<S>>,
    saver: Option<Arc<dyn SettingsSaver<S>>>,
    config: Config,
}

impl<S: Send + Sync + 'static> ReloaderBuilder<S> {
    /// The saver [`Reloader::publish`] and [`Reloader::update`] write with.
    pub fn saver(mut self, saver: impl SettingsSaver<S>) -> Self {
        self.saver = Some(Arc::new(saver));
        self
    }

    /// How long a request waits for a reload before it is served the last
    /// good settings (counted as `stale_served`). Default 1 s.
    pub fn max_wait(mut self, bound: Duration) -> Self {
        self.config.max_wait = bound;
        self
    }

    /// How long one load may take before it counts as failed. Default 10 s.
    pub fn load_timeout(mut self, bound: Duration) -> Self {
        self.config.load_timeout = bound;
        self
    }

    /// The pause after a first failed load, doubled after each further one
    /// up to `max`. Defaults 100 ms and 30 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max;
        self
    }

    /// The writers' lock: how long a holder keeps it at most (also how long
    /// a dead writer's intent takes to lapse), and how many times a writer
    /// tries to take it. Defaults 5 s and 40 tries (about 7 s).
    pub fn write_lock(mut self, ttl: Duration, tries: u32) -> Self {
        self.config.lock_ttl = ttl;
        self.config.lock_tries = tries;
        self
    }

    /// The reloader, serving `initial` until the first load succeeds.
    pub fn build(self, initial: S) -> Result<Reloader<S>, Error> {
        let c = &self.config;
        let positive = [
            ("max_wait", c.max_wait),
            ("load_timeout", c.load_timeout),
            ("backoff initial", c.backoff_initial),
            ("write_lock ttl", c.lock_ttl),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(Error::Config(format!("{name} must be greater than zero")));
        }
        if c.backoff_max < c.backoff_initial {
            return Err(Error::Config(format!(
                "the backoff maximum ({:?}) is below its initial pause ({:?})",
                c.backoff_max, c.backoff_initial
            )));
        }
        if c.lock_ttl < Duration::from_millis(1) || c.lock_tries == 0 {
            return Err(Error::Config(
                "write_lock needs a ttl of at least 1 ms and at least one try".into(),
            ));
        }
        let first = Snapshot::new(initial, None);
        let (notify, _) = watch::channel(first.clone());
        Ok(Reloader {
            shared: Arc::new(Shared {
                sync: self.sync,
                loader: self.loader,
                saver: self.saver,
                current: ArcSwap::new(Arc::clone(first.as_arc())),
                notify,
                listeners: RwLock::new(Vec::new()),
                state: Mutex::new(State {
                    inflight: None,
                    retry_at: None,
                    loader_failed: false,
                    backoff: self.config.backoff_initial,
                    failures: 0,
                }),
                seq: AtomicU64::new(1),
                loaded_seq: AtomicU64::new(0),
                counters: Counters::default(),
                config: self.config,
            }),
        })
    }
}

impl<S> Clone for Reloader<S> {
    fn clone(&self) -> Self {
        Reloader {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: Send + Sync + 'static> Reloader<S> {
    /// Starts building a reloader over a synchronizer and a loader.
    pub fn builder(
        sync: impl GenerationSynchronizer + 'static,
        loader: impl SettingsLoader<S>,
    ) -> ReloaderBuilder<S> {
        ReloaderBuilder {
            sync: Arc::new(sync),
            loader: Arc::new(loader),
            saver: None,
            config: Config::default(),
        }
    }

    /// The settings in service now, without checking anything.
    pub fn current(&self) -> Snapshot<S> {
        Snapshot::from_arc(self.shared.current.load_full())
    }

    /// The synchronizer underneath, for writers that bump by hand.
    pub fn synchronizer(&self) -> &dyn GenerationSynchronizer {
        &*self.shared.sync
    }

    /// What this reloader has done so far.
    pub fn metrics(&self) -> ReloadMetrics {
        self.shared.counters.snapshot()
    }

    /// A receiver that always holds the newest settings.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot<S>> {
        self.shared.notify.subscribe()
    }

    /// Calls `listener(old, new)` after each reload, on the task that
    /// loaded. A panicking listener is caught and logged.
    pub fn on_reload(&self, listener: impl Fn(&Snapshot<S>, &Snapshot<S>) + Send + Sync + 'static) {
        self.shared
            .listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(listener));
    }

    /// Checks the shared generation and returns settings at least as new as
    /// every update whose bump completed before this call, reloading if
    /// needed. Never fails: when the backend or the loader misbehaves, or
    /// the reload outlasts the wait bound, it returns the last good
    /// settings and counts that in [`ReloadMetrics::stale_served`].
    pub async fn check(&self) -> Snapshot<S> {
        let shared = &self.shared;
        let began = shared.seq.load(Ordering::SeqCst);
        Counters::bump(&shared.counters.checks);
        let check = shared.sync.check().await;
        if !check.is_expired() {
            return self.current();
        }
        Counters::bump(&shared.counters.expired);
        if check.shared == Observed::Unavailable {
            Counters::bump(&shared.counters.backend_errors);
        }
        match self.catch_up(check, began, false).await {
            Ok(snapshot) => snapshot,
            Err(stale) => {
                Counters::bump(&shared.counters.stale_served);
                stale
            }
        }
    }

    /// Loads the settings now, whatever the generation says and whatever
    /// the backoff, and waits for that load (bounded by the load timeout).
    /// For start-up and tests.
    pub async fn reload_now(&self) -> Result<Snapshot<S>, Snapshot<S>> {
        let began = self.shared.seq.load(Ordering::SeqCst);
        let check = self.shared.sync.check().await;
        self.catch_up(check, began, true).await
    }

    /// Brings the settings up to what `check` observed: joins a load that
    /// will read the source late enough, or starts one. `Err` carries the
    /// last good settings when no such load succeeded in time.
    async fn catch_up(
        &self,
        check: Check,
        began: u64,
        force: bool,
    ) -> Result<Snapshot<S>, Snapshot<S>> {
        let wanted = check.observed();
        let deadline = (!force).then(|| Instant::now() + self.shared.config.max_wait);
        loop {
            let (done, joinable) = {
                let mut state = self.state();
                // Another load may have caught up while this check ran:
                // one that started after it, or one for what it saw.
                let caught_up = self.shared.loaded_seq.load(Ordering::SeqCst) >= began
                    || (wanted.is_some() && self.shared.sync.sync_gen() == wanted);
                if caught_up && !force {
                    return Ok(self.current());
                }
                match &state.inflight {
                    // A load that started after this check began, or that
                    // was started by a check that saw the same generation,
                    // reads the source late enough.
                    Some(f) => (
                        f.done.clone(),
                        f.seq >= began || (wanted.is_some() && f.target == wanted),
                    ),
                    None => {
                        // A backend that answers with a generation again
                        // ends the reason to back off: holding back would
                        // serve settings older than a completed update.
                        let backing_off = state.retry_at.is_some_and(|at| Instant::now() < at)
                            && (state.loader_failed || wanted.is_none());
                        if backing_off && !force {
                            return Err(self.current());
                        }
                        (self.start_load(&mut state, check), true)
                    }
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

    fn start_load(&self, state: &mut State, check: Check) -> watch::Receiver<Option<bool>> {
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = watch::channel(None);
        state.inflight = Some(InFlight {
            seq,
            target: check.observed(),
            done: rx.clone(),
        });
        let this = self.clone();
        // Spawned, so a request that stops waiting (or is dropped) does not
        // cancel the load everyone else is waiting for.
        tokio::spawn(async move {
            let mut guard = FinishGuard {
                reloader: &this,
                tx,
                outcome: None,
            };
            guard.outcome = Some(this.load_once(check.shared).await);
        });
        rx
    }

    async fn load_once(&self, shared: Observed) -> Outcome {
        let sync = &self.shared.sync;
        let target = match shared {
            Observed::Value(g) => Some(g),
            // Create (or repair) the key before loading, so the value
            // recorded afterwards predates the load.
            Observed::Missing | Observed::Corrupt => sync.fetch_or_create().await.ok(),
            Observed::Unavailable => None,
        };
        // Numbered again right before the loader reads the source: every
        // check that began before this number is served by this load.
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst);
        if let Some(inflight) = self.state().inflight.as_mut() {
            inflight.seq = seq;
            inflight.target = target;
        }
        Counters::bump(&self.shared.counters.loader_runs);
        let timeout = self.shared.config.load_timeout;
        let loader = Arc::clone(&self.shared.loader);
        // Its own task, so a panicking loader is caught as a JoinError.
        let mut task = tokio::spawn(async move { loader.load().await });
        let loaded = match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(Ok(settings))) => Ok(settings),
            Ok(Ok(Err(e))) => Err(format!("the loader failed: {e}")),
            Ok(Err(e)) if e.is_panic() => Err("the loader panicked".to_owned()),
            Ok(Err(_)) => Err("the loader task was cancelled".to_owned()),
            Err(_) => {
                task.abort();
                Err(format!("the loader did not finish within {timeout:?}"))
            }
        };
        let settings = match loaded {
            Ok(settings) => settings,
            Err(problem) => {
                Counters::bump(&self.shared.counters.reload_failures);
                return Outcome {
                    loaded: false,
                    problem: Some(problem),
                };
            }
        };
        let old = self.current();
        let new = Snapshot::new(settings, target.or(old.generation()));
        self.shared.current.store(Arc::clone(new.as_arc()));
        self.shared.loaded_seq.fetch_max(seq, Ordering::SeqCst);
        // Recorded after the settings are in place, so a check that finds
        // itself fresh also finds the new settings.
        if let Some(g) = target {
            sync.record(g);
        }
        Counters::bump(&self.shared.counters.reloads);
        self.shared.notify.send_replace(new.clone());
        self.tell_listeners(&old, &new);
        Outcome {
            loaded: true,
            problem: target.is_none().then(|| {
                "the shared generation could not be read, so the reload was not recorded".to_owned()
            }),
        }
    }

    fn tell_listeners(&self, old: &Snapshot<S>, new: &Snapshot<S>) {
        let listeners = self
            .shared
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner());
        for listener in listeners.iter() {
            if catch_unwind(AssertUnwindSafe(|| listener(old, new))).is_err() {
                tracing::error!(key = %self.shared.sync.key(), "a gensync reload listener panicked");
            }
        }
    }

    /// Ends a load: frees the slot and sets the backoff. Runs even if the
    /// load's task panicked, so the reloader never stays stuck.
    fn finish(&self, outcome: &Outcome) {
        let mut state = self.state();
        state.inflight = None;
        let key = self.shared.sync.key();
        let config = &self.shared.config;
        let Some(problem) = outcome.problem.as_deref() else {
            if state.failures > 0 {
                tracing::info!(key = %key, failures = state.failures, "gensync settings reload recovered");
            }
            state.failures = 0;
            state.retry_at = None;
            state.backoff = config.backoff_initial;
            return;
        };
        if state.failures == 0 {
            tracing::error!(
                key = %key,
                serving = ?self.current().generation(),
                "gensync settings reload failed: {problem}; serving the last good settings \
                 and retrying with backoff (up to {:?}); fix the loader or the cache server",
                config.backoff_max
            );
        } else {
            tracing::debug!(key = %key, failures = state.failures + 1, "gensync settings reload failed again: {problem}");
        }
        state.failures += 1;
        state.loader_failed = !outcome.loaded;
        state.retry_at = Some(Instant::now() + state.backoff);
        state.backoff = (state.backoff * 2).min(config.backoff_max);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock, but a poisoned lock still
        // holds consistent state.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves `settings` through the saver and tells every process, under the
    /// writers' lock. Returns the new shared generation.
    ///
    /// Before saving it records its intent (the shared generation's time to
    /// live is cut to the lock's), so if this process dies between saving and
    /// bumping, the key lapses and every process still reloads.
    pub async fn publish(&self, settings: S) -> Result<Generation, PublishError> {
        self.write(|| async { Ok(settings) }).await
    }

    /// Loads the current settings from the source, applies `change`, saves
    /// and tells every process, all under the writers' lock, so concurrent
    /// updates from several processes are not lost.
    pub async fn update(
        &self,
        change: impl FnOnce(&S) -> S + Send,
    ) -> Result<Generation, PublishError> {
        let loader = Arc::clone(&self.shared.loader);
        self.write(|| async move {
            let current = loader.load().await.map_err(PublishError::Load)?;
            Ok(change(&current))
        })
        .await
    }

    async fn write<F, Fut>(&self, produce: F) -> Result<Generation, PublishError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<S, PublishError>>,
    {
        let saver = self.shared.saver.clone().ok_or(PublishError::NoSaver)?;
        let sync = &self.shared.sync;
        let lock_ttl = self.shared.config.lock_ttl;
        let token = self.lock_for_writing().await?;
        let result = async {
            sync.mark_intent(lock_ttl)
                .await
                .map_err(PublishError::Start)?;
            let settings = produce().await?;
            saver.save(&settings).await.map_err(PublishError::Save)?;
            sync.mark_updated()
                .await
                .map_err(|source| PublishError::Bump { source, lock_ttl })
        }
        .await;
        // A failed unlock is harmless: the lock lapses on its own.
        if let Err(e) = sync.unlock(token).await {
            tracing::warn!(key = %sync.key(), "gensync could not release the writers' lock: {e}");
        }
        result
    }

    async fn lock_for_writing(&self) -> Result<Generation, PublishError> {
        let sync = &self.shared.sync;
        let config = &self.shared.config;
        let token = Generation::fresh();
        for attempt in 0..config.lock_tries {
            if sync
                .try_lock(token, config.lock_ttl)
                .await
                .map_err(PublishError::Start)?
            {
                return Ok(token);
            }
            if attempt + 1 < config.lock_tries {
                tokio::time::sleep(lock_retry_delay(attempt)).await;
            }
        }
        Err(PublishError::Locked {
            key: sync.key().to_string(),
            tries: config.lock_tries,
            lock_ttl: config.lock_ttl,
        })
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
    reloader: &'a Reloader<S>,
    tx: watch::Sender<Option<bool>>,
    outcome: Option<Outcome>,
}

impl<S: Send + Sync + 'static> Drop for FinishGuard<'_, S> {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or(Outcome {
            loaded: false,
            problem: Some("the reload task stopped before finishing".to_owned()),
        });
        self.reloader.finish(&outcome);
        self.tx.send_replace(Some(outcome.loaded));
    }
}
