//! The load's ledger, shared by the single-key trial and the keyed one:
//! requests in flight and how they ended, what each was served, judged
//! per *slot* (the single key's settings; or one tenant's settings, or the
//! site-wide part of them) against the writes to that slot that completed
//! before it started, and the strict phases in which that is judged.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gensync::reload::{CheckMode, Reloader};
use tokio::sync::Semaphore;

use crate::fleet::vouching;
use crate::harness::{ensure, INSTANCES, IN_FLIGHT};

struct Violation {
    epoch: u64,
    instance: usize,
    slot: usize,
    /// The newest version the request had to be served.
    floor: u64,
    served: u64,
    /// How long after that version's publish (or bump) returned the
    /// request started.
    late: Duration,
}

/// A request counted in flight: when it started and the phase then.
pub struct Entered {
    pub at: Instant,
    phase: u64,
}

/// What the load's tasks and the row's driver share.
pub struct Traffic {
    /// Per slot, the newest version whose publish (or bump) returned.
    completed: Vec<AtomicU64>,
    /// Each (slot, version) whose publish (or bump) returned, with when.
    completions: Mutex<Vec<(usize, u64, Instant)>>,
    /// How long after a publish returned a request may still be served
    /// older settings: the mode's promise (see `Options::freshness_grace`).
    pub grace: Duration,
    /// `epoch << 1 | strict`: a request is judged for freshness only if it
    /// started and ended in the same strict phase, so a fault that begins
    /// or ends while it runs does not count against it.
    pub phase: AtomicU64,
    pub done: AtomicBool,
    pub in_flight: AtomicUsize,
    pub sampling: AtomicBool,
    pub min_in_flight: AtomicUsize,
    pub served: AtomicU64,
    pub failed: AtomicU64,
    pub worst_micros: AtomicU64,
    /// A permit per served request, so a writer can wait for requests to
    /// run between its publishes instead of racing through them alone.
    pub served_permits: Semaphore,
    /// A permit per load task once its first request counts in flight, so
    /// no fault window opens while the load is still ramping up.
    pub started: Semaphore,
    pub failures: Mutex<Vec<String>>,
    violations: Mutex<Vec<Violation>>,
    pub vouching: Mutex<Vouching>,
    /// What a slot is, for messages.
    name: fn(usize) -> String,
}

impl Traffic {
    pub fn new(slots: usize, grace: Duration, name: fn(usize) -> String) -> Traffic {
        Traffic {
            completed: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            completions: Mutex::new(Vec::new()),
            grace,
            phase: AtomicU64::new(0),
            done: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            sampling: AtomicBool::new(false),
            min_in_flight: AtomicUsize::new(usize::MAX),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            worst_micros: AtomicU64::new(0),
            served_permits: Semaphore::new(0),
            started: Semaphore::new(0),
            failures: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            vouching: Mutex::new(Vouching::default()),
            name,
        }
    }

    /// Counts a request in flight, and notes what it will be judged by.
    pub fn enter(&self) -> Entered {
        let entered = Entered {
            phase: self.phase.load(SeqCst),
            at: Instant::now(),
        };
        self.in_flight.fetch_add(1, SeqCst);
        entered
    }

    /// A publish (or bump) of `version` of `slot` returned.
    pub fn completed(&self, slot: usize, version: u64) {
        self.completions
            .lock()
            .unwrap()
            .push((slot, version, Instant::now()));
        self.completed[slot].fetch_max(version, SeqCst);
    }

    /// The newest version of `slot` whose publish (or bump) returned.
    pub fn latest(&self, slot: usize) -> u64 {
        self.completed[slot].load(SeqCst)
    }

    /// The newest version of `slot` a request that started at `at` must be
    /// served, and when its publish returned: the newest completed at least
    /// the grace before.
    fn floor(&self, slot: usize, at: Instant) -> Option<(u64, Instant)> {
        let completions = self.completions.lock().unwrap();
        completions
            .iter()
            .filter(|(s, _, done)| *s == slot && *done + self.grace <= at)
            .map(|(_, version, done)| (*version, *done))
            .max_by_key(|(version, _)| *version)
    }

    /// A request that started `started` ended with `outcome`: counted as
    /// served or failed (with the first reasons kept), and no longer in
    /// flight.
    pub fn answered<T>(
        &self,
        started: Instant,
        instance: usize,
        outcome: Result<T, String>,
    ) -> Option<T> {
        let took = started.elapsed();
        self.in_flight.fetch_sub(1, SeqCst);
        self.worst_micros.fetch_max(took.as_micros() as u64, SeqCst);
        match outcome {
            Ok(served) => {
                self.served.fetch_add(1, SeqCst);
                self.served_permits.add_permits(1);
                Some(served)
            }
            Err(why) => {
                self.failed.fetch_add(1, SeqCst);
                let mut failures = self.failures.lock().unwrap();
                if failures.len() < 3 {
                    failures.push(format!("instance {instance}: {why}"));
                }
                None
            }
        }
    }

    /// Judges what a request was served of `slot` against the writes that
    /// completed before it started, if it ran within one strict phase.
    pub fn judge(&self, entered: &Entered, instance: usize, slot: usize, served: u64) {
        let phase = entered.phase;
        // Settings as new as every completed publish are fresh whenever
        // the request started; only older ones need the floor looked up.
        if phase & 1 == 0 || served >= self.latest(slot) {
            return;
        }
        let Some((floor, done)) = self
            .floor(slot, entered.at)
            .filter(|(floor, _)| served < *floor)
        else {
            return;
        };
        if self.phase.load(SeqCst) == phase {
            self.violations.lock().unwrap().push(Violation {
                epoch: phase >> 1,
                instance,
                slot,
                floor,
                served,
                late: entered.at.saturating_duration_since(done),
            });
        }
    }

    /// What both kinds of trial ask of the load itself: no request failed,
    /// none took longer than `bound`, and `min_in_flight` (the fewest in
    /// flight at any point of the fault window) was at least [`IN_FLIGHT`].
    pub fn judge_load(&self, bound: Duration, min_in_flight: usize) -> Result<(), String> {
        let failed = self.failed.load(SeqCst);
        ensure(failed == 0, || {
            format!(
                "{failed} requests failed; first: {:?}",
                self.failures.lock().unwrap()
            )
        })?;
        let worst = Duration::from_micros(self.worst_micros.load(SeqCst));
        ensure(worst <= bound, || {
            format!("a request took {worst:?}, more than its bound of {bound:?}")
        })?;
        ensure((IN_FLIGHT..usize::MAX).contains(&min_in_flight), || {
            format!(
                "only {min_in_flight} requests were in flight at one point of the fault window, not {IN_FLIGHT}"
            )
        })
    }
}

/// A strict phase's stale answers per instance, counted before and after.
struct StrictPhase {
    epoch: u64,
    stale_before: Vec<u64>,
    stale_after: Vec<u64>,
}

/// The strict phases a trial went through, to judge freshness in.
#[derive(Default)]
pub struct Phases {
    open: Option<(u64, Vec<u64>)>,
    closed: Vec<StrictPhase>,
}

impl Phases {
    /// Switches freshness judging on or off. Stale answers (per instance,
    /// from `stale_counts`) are counted before a strict phase opens and
    /// after it closes, so the counts cover every request judged in it.
    pub fn set(&mut self, traffic: &Traffic, strict: bool, stale_counts: impl Fn() -> Vec<u64>) {
        let before = stale_counts();
        let epoch = (traffic.phase.load(SeqCst) >> 1) + 1;
        traffic.phase.store(epoch << 1 | u64::from(strict), SeqCst);
        let after = stale_counts();
        if let Some((epoch, stale_before)) = self.open.take() {
            self.closed.push(StrictPhase {
                epoch,
                stale_before,
                stale_after: after,
            });
        }
        if strict {
            self.open = Some((epoch, before));
        }
    }

    /// A request that started after a publish returned, in a phase where
    /// the backend and loader answered, got settings at least that new.
    /// Past a bound the reloader may serve the last good settings, but it
    /// must count each such answer: more violations than counted stale
    /// answers is a silent stale read.
    pub fn judge(
        &self,
        traffic: &Traffic,
        mode: CheckMode,
        notes: &mut Vec<String>,
    ) -> Result<(), String> {
        let violations = traffic.violations.lock().unwrap();
        for phase in &self.closed {
            for i in 0..phase.stale_after.len() {
                let counted = phase.stale_after[i] - phase.stale_before[i];
                let bad: Vec<&Violation> = violations
                    .iter()
                    .filter(|v| v.epoch == phase.epoch && v.instance == i)
                    .collect();
                if let Some(v) = bad.first().filter(|_| bad.len() as u64 > counted) {
                    let latest = bad.iter().max_by_key(|v| v.late).unwrap_or(v);
                    return Err(format!(
                        "freshness ({mode} mode, grace {:?}): instance {i} served version {} of {} \
                         to a request that started {:?} after version {} was published, while \
                         healthy ({} such requests, {counted} counted as stale; the latest started \
                         {:?} after the publish of {} of {} and was served {})",
                        traffic.grace,
                        v.served,
                        (traffic.name)(v.slot),
                        v.late,
                        v.floor,
                        bad.len(),
                        latest.late,
                        latest.floor,
                        (traffic.name)(latest.slot),
                        latest.served,
                    ));
                }
                if counted > 0 {
                    notes.push(format!(
                        "instance {i} answered {counted} requests with the last good settings \
                         (counted) during a healthy phase"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Push tracking as the in-flight sampler sees it, every millisecond.
#[derive(Default)]
pub struct Vouching {
    /// Tracking must be lost from here (the fault is in place) until the
    /// row begins to remove the fault.
    pub lost_from: Option<Instant>,
    /// The last sample in that window at which an instance still vouched.
    pub last_while_lost: Option<(Instant, usize)>,
    /// From here, each instance's first vouching sample is kept.
    pub rearm_from: Option<Instant>,
    pub rearmed: [Option<Instant>; INSTANCES],
}

/// Samples the requests in flight during fault windows and, in push mode,
/// which instances vouch.
pub async fn sample_in_flight(traffic: Arc<Traffic>, push: Option<Vec<Reloader<u64>>>) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while !traffic.done.load(SeqCst) {
        tick.tick().await;
        if traffic.sampling.load(SeqCst) {
            traffic
                .min_in_flight
                .fetch_min(traffic.in_flight.load(SeqCst), SeqCst);
        }
        for (i, reloader) in push.iter().flatten().enumerate() {
            // Taken before asking: a vouch seen now held at least until now.
            let now = Instant::now();
            if !vouching(reloader) {
                continue;
            }
            let mut watch = traffic.vouching.lock().unwrap();
            if watch.lost_from.is_some_and(|from| from <= now) {
                watch.last_while_lost = Some((now, i));
            }
            if watch.rearm_from.is_some_and(|from| from <= now) {
                watch.rearmed[i].get_or_insert(now);
            }
        }
    }
}
