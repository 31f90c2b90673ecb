//! The single-flight load machine: at most one load of the settings at a
//! time per process, shared by every request that needs it.
//!
//! # Invariants
//!
//! - **The reload fence.** A load records the generation observed *before*
//!   the loader read the source: the value the starting check read, or the
//!   value fetch-or-create returned just before the load. Never one read
//!   after loading. A bump that lands during the load therefore leaves this
//!   process expired, and the next check loads again: one more reload, not
//!   a lost update.
//! - **Record only after success.** The generation is recorded after the
//!   new settings are in place, and only when the load succeeded: a check
//!   that finds itself fresh also finds the new settings, and a failed load
//!   leaves the process expired so a later check retries (after the
//!   backoff). A load while no shared generation can be read or created
//!   still reads the source and replaces the settings, but records nothing
//!   new: the generation recorded before stays, as those settings were read
//!   after it was seen; while the backend still holds it they are current,
//!   and a bump makes the process load again.
//! - **Load numbering.** `seq` orders checks and loads. A check reads it
//!   when it begins (`began`); a load takes a number when it is started and
//!   takes the next one again right before the loader reads the source. So
//!   a load numbered at or above a check's `began` read the source after
//!   that check began, and serves it. `loaded_seq` is the number of the
//!   load that produced the settings in service: a check with
//!   `loaded_seq >= began` is already served, however its own read came
//!   out. Checks never write `seq`; only loads do.
//! - **A request never joins a load that started before it.** It joins the
//!   load in flight only when that load is numbered at or above its
//!   `began`, or was started for the very generation it observed; otherwise
//!   it waits for that load to end and starts (or joins) the next.
//! - **Every waiter is released.** A load runs on its own task, so a waiter
//!   that gives up (its `max_wait` passed, or its request was dropped)
//!   cancels nothing. The task's [`FinishGuard`] frees the slot and signals
//!   the outcome when dropped: after the load, or while unwinding if
//!   anything in it panicked. A waiter whose load task vanished reads it as
//!   failed. So no waiter waits past its own bound, and the slot is never
//!   left taken.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::metrics::Stopwatch;
use super::reloader::Reloader;
use super::snapshot::Snapshot;
use crate::generation::Generation;
use crate::synchronizer::{Check, Observed};

/// The load slot and the numbers that order loads and checks.
#[derive(Debug)]
pub(super) struct Flight {
    state: Mutex<State>,
    /// Orders checks and loads (see the module's invariants).
    seq: AtomicU64,
    /// The number of the load that produced the current settings.
    loaded_seq: AtomicU64,
    /// Loads go unrecorded because the cache server does not answer.
    outage: AtomicBool,
}

#[derive(Debug)]
struct State {
    inflight: Option<InFlight>,
    /// No new load before this, after a failure.
    retry_at: Option<Instant>,
    /// Whether the last failure was the loader's, not the backend's: only
    /// then does the backoff hold back a check that reads a generation.
    loader_failed: bool,
    backoff: Duration,
    /// What has gone wrong since the last recorded load, and how many
    /// loads it touched: the first of an episode is logged loudly, the
    /// rest quietly, so an outage is one log line, not thousands. An
    /// episode of another cause starts loud again.
    episode: Option<(Trouble, u32)>,
    /// The load number when the current episode began: an answer to a
    /// check that began before it says nothing of this episode.
    episode_began: u64,
    /// When the backend answered again after an outage: trouble after a
    /// calm of the longest backoff is a new outage, whose backoff starts
    /// from the initial pause; trouble sooner is the same flapping backend,
    /// whose backoff goes on growing (else every flap would reload).
    calm_since: Option<Instant>,
}

/// Why loads are not what they should be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trouble {
    /// No shared generation can be read or created: loads run, but cannot
    /// be recorded.
    Unreachable,
    /// The loader fails, panics or hangs.
    Loader,
}

#[derive(Debug)]
struct InFlight {
    seq: u64,
    /// The generation the load will record, when known before it starts.
    target: Option<Generation>,
    /// `Some(true)` once the load replaced the settings, `Some(false)` when
    /// it failed.
    done: watch::Receiver<Option<bool>>,
}

/// What one load did.
enum Outcome {
    /// The settings were replaced and their generation recorded.
    Recorded,
    /// The settings were replaced from their source, but no shared
    /// generation could be read or created, so nothing new was recorded:
    /// the generation recorded before stays, and the snapshot gets it back
    /// once a check finds it unchanged.
    Unrecorded,
    /// The loader failed; the settings in service stay.
    Failed(String),
}

impl Outcome {
    /// Whether the settings were replaced.
    fn loaded(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }
}

impl Flight {
    pub(super) fn new(backoff_initial: Duration) -> Self {
        Flight {
            state: Mutex::new(State {
                inflight: None,
                retry_at: None,
                loader_failed: false,
                backoff: backoff_initial,
                episode: None,
                episode_began: 0,
                calm_since: None,
            }),
            seq: AtomicU64::new(1),
            loaded_seq: AtomicU64::new(0),
            outage: AtomicBool::new(false),
        }
    }

    /// A check that began at `began` read the shared generation: if loads
    /// went unrecorded for an outage that began before it, that outage is
    /// over: the next trouble is news, and once the backend has answered
    /// for a while its backoff starts afresh (`State::calm_since`). A plain
    /// load first: the hot path
    /// stays read-only.
    pub(super) fn answered(&self, began: u64) {
        if self.outage.load(Ordering::Relaxed) {
            let mut state = self.state();
            if matches!(state.episode, Some((Trouble::Unreachable, _)))
                && state.episode_began < began
            {
                state.episode = None;
                state.calm_since = Some(Instant::now());
                self.outage.store(false, Ordering::Relaxed);
            }
        }
    }

    /// The number a check takes when it begins.
    pub(super) fn began(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock, but a poisoned lock still
        // holds consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: Send + Sync + 'static> Reloader<S> {
    /// Brings the settings up to what `check` observed: joins a load that
    /// will read the source late enough, or starts one. `Err` carries the
    /// last good settings when no such load succeeded in time.
    pub(super) async fn catch_up(
        &self,
        check: Check,
        began: u64,
        force: bool,
    ) -> Result<Snapshot<S>, Snapshot<S>> {
        let shared = self.shared();
        let flight = &shared.flight;
        let wanted = check.observed();
        let deadline = (!force).then(|| Instant::now() + shared.config.max_wait);
        loop {
            let (done, joinable) = {
                let mut state = flight.state();
                // Another load may have caught up while this check ran:
                // one that started after it, or one for what it saw.
                let caught_up = flight.loaded_seq.load(Ordering::SeqCst) >= began
                    || (wanted.is_some() && shared.sync.sync_gen() == wanted);
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
        let seq = self.shared().flight.seq.fetch_add(1, Ordering::SeqCst);
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

    async fn load_once(&self, observed: Observed) -> Outcome {
        let shared = self.shared();
        let sync = &shared.sync;
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
        let seq = shared.flight.seq.fetch_add(1, Ordering::SeqCst);
        if let Some(inflight) = shared.flight.state().inflight.as_mut() {
            inflight.seq = seq;
            inflight.target = target;
        }
        shared.counters.loader_runs.add();
        let timeout = shared.config.load_timeout;
        let loader = Arc::clone(&shared.loader);
        let stopwatch = Stopwatch::start();
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
        shared.counters.reload_took(stopwatch);
        let settings = match loaded {
            Ok(settings) => settings,
            Err(problem) => {
                shared.counters.reload_failures.add();
                return Outcome::Failed(problem);
            }
        };
        let old = self.current();
        // Without a generation read, none is known to match: `None`, not
        // the one the old settings had.
        let new = Snapshot::observed(settings, target, observed_at);
        shared.current.store(Arc::clone(new.as_arc()));
        shared.flight.loaded_seq.fetch_max(seq, Ordering::SeqCst);
        // Recorded after the settings are in place, so a check that finds
        // itself fresh also finds the new settings. Without a generation,
        // the one recorded before stays: these settings were read after it
        // was seen, so while the backend still holds it (no bump since),
        // they are current, and a bump makes the process load again.
        if let Some(g) = target {
            sync.record(g);
        }
        shared.counters.reloads.add();
        shared.listeners.tell(sync.key(), &old, &new);
        match target {
            Some(_) => Outcome::Recorded,
            None => Outcome::Unrecorded,
        }
    }

    /// Ends a load: frees the slot, sets the backoff and logs what it
    /// means. Runs even if the load's task panicked, so the reloader never
    /// stays stuck.
    fn finish(&self, outcome: &Outcome) {
        let shared = self.shared();
        let mut state = shared.flight.state();
        state.inflight = None;
        let key = shared.sync.key();
        let config = &shared.config;
        let trouble = match outcome {
            Outcome::Recorded => {
                if let Some((trouble, loads)) = state.episode.take() {
                    tracing::info!(key = %key, ?trouble, loads, "gensync settings reload recovered");
                }
                shared.flight.outage.store(false, Ordering::Relaxed);
                state.retry_at = None;
                state.backoff = config.backoff_initial;
                return;
            }
            Outcome::Unrecorded => Trouble::Unreachable,
            Outcome::Failed(_) => Trouble::Loader,
        };
        let loads = match state.episode {
            Some((same, loads)) if same == trouble => loads + 1,
            _ => {
                state.episode_began = shared.flight.seq.load(Ordering::SeqCst);
                if state
                    .calm_since
                    .take()
                    .is_some_and(|calm| calm.elapsed() >= config.backoff_max)
                {
                    state.backoff = config.backoff_initial;
                }
                1
            }
        };
        match (outcome, loads) {
            (Outcome::Failed(problem), 1) => tracing::error!(
                key = %key,
                serving = ?self.current().generation(),
                "gensync settings reload failed: {problem}; serving the last good settings \
                 and retrying with backoff (up to {:?}); fix the loader or its source",
                config.backoff_max
            ),
            (Outcome::Failed(problem), _) => {
                tracing::debug!(key = %key, loads, "gensync settings reload failed again: {problem}")
            }
            (_, 1) => tracing::warn!(
                key = %key,
                "gensync reloaded the settings from their source without a shared generation \
                 to record (the backend's error says why): serving them, and loading again at \
                 most every {:?} (doubling up to {:?}) until the backend answers",
                state.backoff,
                config.backoff_max
            ),
            (_, _) => {
                tracing::debug!(key = %key, loads, "gensync reloaded again without the shared generation")
            }
        }
        state.episode = Some((trouble, loads));
        shared
            .flight
            .outage
            .store(trouble == Trouble::Unreachable, Ordering::Relaxed);
        state.loader_failed = trouble == Trouble::Loader;
        state.retry_at = Some(Instant::now() + state.backoff);
        state.backoff = (state.backoff * 2).min(config.backoff_max);
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
        let outcome = self.outcome.take().unwrap_or_else(|| {
            Outcome::Failed("the reload task stopped before finishing".to_owned())
        });
        self.reloader.finish(&outcome);
        self.tx.send_replace(Some(outcome.loaded()));
    }
}
