//! The single-flight load machine: at most one load of the settings at a
//! time per process, shared by every request that needs it. A pure state
//! machine: it says whether a check is served, joins a load or starts one,
//! and what a finished load means for the backoff and the log; the loads
//! themselves run in `core.rs`.
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
//!   cancels nothing. The task's `FinishGuard` (in `core.rs`) frees the slot and signals
//!   the outcome when dropped: after the load, or while unwinding if
//!   anything in it panicked. A waiter whose load task vanished reads it as
//!   failed. So no waiter waits past its own bound, and the slot is never
//!   left taken.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::config::Config;
use crate::generation::Generation;
use crate::unpoisoned;

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
    backoff: Backoff,
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
pub(super) enum Trouble {
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
pub(super) enum Outcome {
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
    pub(super) fn loaded(&self) -> bool {
        !matches!(self, Outcome::Failed(_))
    }
}

/// What a check that must catch up does next.
pub(super) enum Step {
    /// A load caught up with it meanwhile: the settings in service do.
    Served,
    /// The backoff holds new loads back: the last good settings.
    Stale,
    /// Wait for the load in flight; `joinable` when that load serves this
    /// check, else it is an older one to wait out before starting anew.
    Wait {
        done: watch::Receiver<Option<bool>>,
        joinable: bool,
    },
    /// This check starts a load: run it, and signal the sender when done.
    Start {
        done: watch::Receiver<Option<bool>>,
        finished: watch::Sender<Option<bool>>,
    },
}

/// What a finished load means for the log.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Report {
    /// A recorded load, after nothing went wrong.
    Quiet,
    /// A recorded load ended an episode of trouble that touched `loads`.
    Recovered { trouble: Trouble, loads: u32 },
    /// The `loads`th load of an episode of `trouble`; the next load waits
    /// `pause` at least.
    Trouble {
        trouble: Trouble,
        loads: u32,
        pause: Duration,
    },
}

impl Flight {
    pub(super) fn new(config: &Config) -> Self {
        Flight {
            state: Mutex::new(State {
                inflight: None,
                retry_at: None,
                loader_failed: false,
                backoff: config.backoff(),
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
    /// load first: the hot path stays read-only.
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

    /// The next step of a check that began at `began` and observed
    /// `wanted` (`None`: no generation), to be brought up to it. `recorded`
    /// reads the generation recorded now (under the slot's lock, so no load
    /// finishes in between). `force` ignores what caught up and the
    /// backoff: it always loads.
    pub(super) fn step(
        &self,
        began: u64,
        wanted: Option<Generation>,
        force: bool,
        recorded: impl FnOnce() -> Option<Generation>,
    ) -> Step {
        let mut state = self.state();
        // Another load may have caught up while this check ran: one that
        // started after it, or one for what it saw.
        let caught_up = self.loaded_seq.load(Ordering::SeqCst) >= began
            || (wanted.is_some() && recorded() == wanted);
        if caught_up && !force {
            return Step::Served;
        }
        match &state.inflight {
            // A load that started after this check began, or that was
            // started by a check that saw the same generation, reads the
            // source late enough.
            Some(f) => Step::Wait {
                done: f.done.clone(),
                joinable: f.seq >= began || (wanted.is_some() && f.target == wanted),
            },
            None => {
                // A backend that answers with a generation again ends the
                // reason to back off: holding back would serve settings
                // older than a completed update.
                let backing_off = state.retry_at.is_some_and(|at| Instant::now() < at)
                    && (state.loader_failed || wanted.is_none());
                if backing_off && !force {
                    return Step::Stale;
                }
                let seq = self.seq.fetch_add(1, Ordering::SeqCst);
                let (finished, done) = watch::channel(None);
                state.inflight = Some(InFlight {
                    seq,
                    target: wanted,
                    done: done.clone(),
                });
                Step::Start { done, finished }
            }
        }
    }

    /// The load in flight is about to read the source, for `target`:
    /// numbered again, so every check that began before this number is
    /// served by it. Returns the number.
    pub(super) fn reading(&self, target: Option<Generation>) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst);
        if let Some(inflight) = self.state().inflight.as_mut() {
            inflight.seq = seq;
            inflight.target = target;
        }
        seq
    }

    /// The load numbered `seq` put its settings in service.
    pub(super) fn loaded(&self, seq: u64) {
        self.loaded_seq.fetch_max(seq, Ordering::SeqCst);
    }

    /// Ends a load: frees the slot, sets the backoff, and says what the
    /// outcome means for the log.
    pub(super) fn finish(&self, outcome: &Outcome, config: &Config) -> Report {
        let mut state = self.state();
        state.inflight = None;
        let trouble = match outcome {
            Outcome::Recorded => {
                self.outage.store(false, Ordering::Relaxed);
                state.retry_at = None;
                state.backoff = config.backoff();
                return match state.episode.take() {
                    Some((trouble, loads)) => Report::Recovered { trouble, loads },
                    None => Report::Quiet,
                };
            }
            Outcome::Unrecorded => Trouble::Unreachable,
            Outcome::Failed(_) => Trouble::Loader,
        };
        let loads = match state.episode {
            Some((same, loads)) if same == trouble => loads + 1,
            _ => {
                state.episode_began = self.seq.load(Ordering::SeqCst);
                if state
                    .calm_since
                    .take()
                    .is_some_and(|calm| calm.elapsed() >= config.backoff_max)
                {
                    state.backoff = config.backoff();
                }
                1
            }
        };
        state.episode = Some((trouble, loads));
        self.outage
            .store(trouble == Trouble::Unreachable, Ordering::Relaxed);
        state.loader_failed = trouble == Trouble::Loader;
        let pause = state.backoff.grow(config.backoff_max);
        state.retry_at = Some(Instant::now() + pause);
        Report::Trouble {
            trouble,
            loads,
            pause,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        unpoisoned::lock(&self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial: u64, max: u64) -> Config {
        let mut config = Config::default();
        (config.backoff_initial, config.backoff_max) =
            (Duration::from_millis(initial), Duration::from_millis(max));
        config
    }

    fn starts(step: Step) -> bool {
        matches!(step, Step::Start { .. })
    }

    fn joins(step: &Step) -> Option<bool> {
        match step {
            Step::Wait { joinable, .. } => Some(*joinable),
            _ => None,
        }
    }

    #[test]
    fn failed_loads_back_off_doubling_to_the_cap_and_a_recorded_one_recovers() {
        let config = config(100, 300);
        let flight = Flight::new(&config);
        let ms = Duration::from_millis;
        let mut pauses = Vec::new();
        for loads in 1..=3 {
            let began = flight.began();
            // The first load starts; the retries are forced past the backoff.
            assert!(starts(flight.step(began, None, loads > 1, || None)));
            match flight.finish(&Outcome::Failed("down".into()), &config) {
                Report::Trouble {
                    trouble: Trouble::Loader,
                    loads: n,
                    pause,
                } if n == loads => pauses.push(pause),
                other => panic!("load {loads}: {other:?}"),
            }
            // A check meanwhile is held back by the backoff, even with a
            // generation to load: the loader is what failed.
            let g = Some(Generation::fresh());
            assert!(matches!(
                flight.step(flight.began(), g, false, || None),
                Step::Stale
            ));
        }
        assert_eq!(pauses, [ms(100), ms(200), ms(300)]);
        assert!(starts(flight.step(flight.began(), None, true, || None)));
        assert_eq!(
            flight.finish(&Outcome::Recorded, &config),
            Report::Recovered {
                trouble: Trouble::Loader,
                loads: 3
            }
        );
        assert!(starts(flight.step(flight.began(), None, false, || None)));
        assert_eq!(flight.finish(&Outcome::Recorded, &config), Report::Quiet);
    }

    #[test]
    fn a_check_joins_only_a_load_that_read_the_source_after_it_began() {
        let config = config(100, 300);
        let flight = Flight::new(&config);
        let (seen, other) = (Some(Generation::fresh()), Some(Generation::fresh()));
        let first = flight.began();
        assert!(starts(flight.step(first, seen, false, || None)));
        // Numbered when started: a check that began with it joins.
        assert_eq!(
            joins(&flight.step(first, other, false, || None)),
            Some(true)
        );
        let seq = flight.reading(seen);
        // A check that began after the loader read the source waits it
        // out, unless it saw the very generation the load records.
        let late = flight.began();
        assert!(late > seq);
        assert_eq!(
            joins(&flight.step(late, other, false, || None)),
            Some(false)
        );
        assert_eq!(joins(&flight.step(late, seen, false, || None)), Some(true));
        flight.loaded(seq);
        assert!(matches!(
            flight.finish(&Outcome::Recorded, &config),
            Report::Quiet
        ));
        // Served by that load: began before it read the source.
        assert!(matches!(
            flight.step(first, other, false, || None),
            Step::Served
        ));
        // Caught up by what is recorded: the generation it saw.
        assert!(matches!(
            flight.step(late, seen, false, || seen),
            Step::Served
        ));
    }
}
