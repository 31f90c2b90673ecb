//! What a `FaultyBackend` is asked to do: the [`Faults`] handle that sets
//! the plan from any task or thread, the counters of what it did, and the
//! draw that decides, once per call and under one lock, which faults that
//! call meets. The wrapper that applies them is `faulty.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::{BackendError, BackendErrorKind};

/// The server name injected errors carry.
pub(super) const TARGET: &str = "fault injection";

/// Controls the faults of a [`FaultyBackend`](super::FaultyBackend) and
/// counts what happened.
///
/// Faults combine: latency is added before anything else, then a hang, a
/// failure (next-N, every call, or a random fraction), an eviction, and
/// last the corruption of what a read returns. [`heal`](Faults::heal)
/// clears them all; the counters keep counting.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    shared: Arc<Shared>,
}

// The counters are the wrapper's to bump (see `Faults::count`), hence
// `pub(super)`.
#[derive(Debug, Default)]
pub(super) struct Shared {
    plan: Mutex<Plan>,
    calls: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) delayed: AtomicU64,
    pub(super) hung: AtomicU64,
    pub(super) corrupted: AtomicU64,
    pub(super) evicted: AtomicU64,
    /// Calls that met at least one fault.
    pub(super) injected: AtomicU64,
    /// Server changes announced by `new_server`.
    servers: AtomicU64,
}

#[derive(Debug, Default)]
struct Plan {
    fail_next: u64,
    fail_all: bool,
    fail_fraction: Option<(f64, StdRng)>,
    error: Option<BackendError>,
    latency: Duration,
    hang: Option<Duration>,
    corrupt: bool,
    evict_next: bool,
    missing: bool,
}

/// What a [`FaultyBackend`](super::FaultyBackend) has seen and done, as
/// read by [`Faults::counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FaultCounts {
    /// Every call made to the backend.
    pub calls: u64,
    /// Calls answered with an injected error (hangs not included).
    pub failed: u64,
    /// Calls slowed by added latency.
    pub delayed: u64,
    /// Calls that hung and then timed out.
    pub hung: u64,
    /// Reads and increments answered with a corrupt value.
    pub corrupted: u64,
    /// Calls whose key was evicted just before they ran.
    pub evicted: u64,
    /// Calls that met at least one fault: a call that met two (latency,
    /// then a failure) counts once here and once in each fault's counter.
    injected: u64,
}

impl FaultCounts {
    /// Calls that met an injected fault of any kind. Never more than
    /// [`calls`](FaultCounts::calls); less than the sum of the other
    /// counters when calls met several faults.
    pub fn injected(&self) -> u64 {
        self.injected
    }
}

impl Faults {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        // A panic elsewhere cannot leave a plan half-written: every change
        // is one assignment.
        crate::unpoisoned::lock(&self.shared.plan)
    }

    /// Fails the next `n` calls (on top of any already pending).
    pub fn fail_next(&self, n: u64) {
        let mut plan = self.plan();
        plan.fail_next = plan.fail_next.saturating_add(n);
    }

    /// Fails every call until [`heal`](Faults::heal) or
    /// [`stop_failing`](Faults::stop_failing).
    pub fn fail_all(&self) {
        self.plan().fail_all = true;
    }

    /// Fails each call with probability `fraction` (clamped to 0..=1),
    /// drawn from a random source seeded with `seed`: the same seed and the
    /// same sequence of calls give the same failures.
    pub fn fail_fraction(&self, fraction: f64, seed: u64) {
        let fraction = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self.plan().fail_fraction = Some((fraction, StdRng::seed_from_u64(seed)));
    }

    /// Ends every kind of failure (next-N, every call, fraction); other
    /// faults stay.
    pub fn stop_failing(&self) {
        let mut plan = self.plan();
        plan.fail_next = 0;
        plan.fail_all = false;
        plan.fail_fraction = None;
    }

    /// The error injected failures return. By default an
    /// [`Unreachable`](crate::backend::BackendErrorKind::Unreachable) error naming
    /// "fault injection".
    pub fn fail_with(&self, error: BackendError) {
        self.plan().error = Some(error);
    }

    /// Adds `latency` before every call (zero removes it).
    pub fn latency(&self, latency: Duration) {
        self.plan().latency = latency;
    }

    /// Makes every call hang for `timeout` and then fail with
    /// a [`Timeout`](crate::backend::BackendErrorKind::Timeout) error, as a call to a paused server does once
    /// the client's response timeout runs out.
    pub fn hang(&self, timeout: Duration) {
        self.plan().hang = Some(timeout);
    }

    /// Makes reads and increments answer
    /// [`Stored::Corrupt`](crate::backend::Stored::Corrupt), as a key holding text or
    /// a value of another type does.
    pub fn corrupt(&self, on: bool) {
        self.plan().corrupt = on;
    }

    /// While on, evicts the key before every call that reaches the wrapped
    /// backend, as a server under memory pressure that keeps dropping it:
    /// reads find it missing, and a writer's repair re-creates it only for
    /// the next call to find it gone again.
    pub fn missing(&self, on: bool) {
        self.plan().missing = on;
    }

    /// Evicts, before the next call runs, the key that call names from the
    /// wrapped backend, as a server under memory pressure or a `FLUSHALL`
    /// would. Calls that fail or hang reach no server, so the eviction waits
    /// for the first call that does.
    pub fn evict_next(&self) {
        self.plan().evict_next = true;
    }

    /// Reports, from now on, that the backend reconnected to a different
    /// or restarted server (its [epoch](crate::backend::Backend::epoch) moves), as a
    /// failover does; what is stored stays as it is, as on a replica that
    /// held the same data. Not undone by [`heal`](Faults::heal).
    pub fn new_server(&self) {
        self.shared.servers.fetch_add(1, Ordering::SeqCst);
    }

    /// Clears every fault; the error chosen with
    /// [`fail_with`](Faults::fail_with) stays for the next failure. Calls in
    /// a hang finish their hang.
    pub fn heal(&self) {
        let mut plan = self.plan();
        let error = plan.error.take();
        *plan = Plan {
            error,
            ..Plan::default()
        };
    }

    /// Server changes announced so far by [`new_server`](Faults::new_server).
    pub(super) fn servers(&self) -> u64 {
        self.shared.servers.load(Ordering::SeqCst)
    }

    /// The counters so far.
    pub fn counts(&self) -> FaultCounts {
        let s = &self.shared;
        FaultCounts {
            calls: s.calls.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            delayed: s.delayed.load(Ordering::Relaxed),
            hung: s.hung.load(Ordering::Relaxed),
            corrupted: s.corrupted.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
            injected: s.injected.load(Ordering::Relaxed),
        }
    }

    /// Decides, once per call and under one lock, what this call meets.
    pub(super) fn draw(&self) -> Draw {
        self.shared.calls.fetch_add(1, Ordering::Relaxed);
        let mut plan = self.plan();
        let fail = if plan.fail_next > 0 {
            plan.fail_next -= 1;
            true
        } else if plan.fail_all {
            true
        } else if let Some((fraction, rng)) = plan.fail_fraction.as_mut() {
            rng.random_bool(*fraction)
        } else {
            false
        };
        // A call that hangs or fails reaches no server: a pending eviction
        // waits for one that does.
        let reaches = !fail && plan.hang.is_none();
        // Non-short-circuit `|`: a pending one-off eviction is used up by
        // this call even while every call evicts.
        let evict = reaches && (std::mem::take(&mut plan.evict_next) | plan.missing);
        let error = fail.then(|| {
            plan.error.clone().unwrap_or_else(|| {
                BackendError::new(BackendErrorKind::Unreachable, TARGET, "injected failure")
            })
        });
        let draw = Draw {
            met: !plan.latency.is_zero() || plan.hang.is_some() || fail || evict,
            latency: plan.latency,
            hang: plan.hang,
            error,
            evict,
            corrupt: plan.corrupt,
        };
        drop(plan);
        if draw.met {
            self.count(|s| &s.injected);
        }
        draw
    }

    pub(super) fn count(&self, counter: fn(&Shared) -> &AtomicU64) {
        counter(&self.shared).fetch_add(1, Ordering::Relaxed);
    }
}

/// The faults one call meets.
pub(super) struct Draw {
    /// Whether a fault other than a read's corruption applies (already
    /// counted in `injected`).
    pub(super) met: bool,
    pub(super) latency: Duration,
    pub(super) hang: Option<Duration>,
    pub(super) error: Option<BackendError>,
    pub(super) evict: bool,
    pub(super) corrupt: bool,
}
