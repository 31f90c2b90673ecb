//! A backend wrapper that misbehaves on command.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::backend::{Backend, BlockingBackend, Stored};
use crate::error::BackendError;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

/// The server name injected errors carry.
const TARGET: &str = "fault injection";

/// Wraps a [`Backend`] and injects the faults its [`Faults`] handle asks
/// for: errors, latency, hangs, corrupt values and evictions.
///
/// The handle is cheap to clone and can be driven from any task or thread
/// while the backend is in use, so a test can start an outage in the middle
/// of a load test and end it later. Calls that no fault applies to go to
/// the wrapped backend unchanged.
///
/// ```
/// use gensync::testing::FaultyBackend;
/// use gensync::{GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), gensync::Error> {
/// let backend = FaultyBackend::new(MemoryBackend::new());
/// let faults = backend.faults();
/// let sync = Synchronizer::new(backend, Key::new(["flags"])?);
/// sync.refresh().await?;
/// assert!(!sync.is_expired().await);
///
/// faults.fail_all();
/// assert!(sync.is_expired().await); // an error reads as expired
/// assert!(sync.mark_updated().await.is_err()); // a writer is told
///
/// faults.heal();
/// assert!(!sync.is_expired().await);
/// assert_eq!(faults.counts().failed, 2);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct FaultyBackend<B> {
    inner: B,
    faults: Faults,
    /// Latency and hangs block the thread instead of sleeping on tokio.
    blocking: bool,
}

impl<B> FaultyBackend<B> {
    /// Wraps `inner`, with no fault set. Latency and hangs sleep on the
    /// tokio timer when a runtime is present, and block the thread
    /// otherwise.
    pub fn new(inner: B) -> Self {
        FaultyBackend {
            inner,
            faults: Faults::default(),
            blocking: false,
        }
    }

    /// Wraps `inner` for a [`BlockingSynchronizer`](crate::BlockingSynchronizer):
    /// latency and hangs always block the calling thread, even inside a
    /// tokio runtime, whose timer the blocking synchronizer does not drive.
    pub fn new_blocking(inner: B) -> Self {
        FaultyBackend {
            blocking: true,
            ..FaultyBackend::new(inner)
        }
    }

    /// The handle that sets faults and reads the counters.
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    /// The wrapped backend, to inspect or change the stored state behind
    /// the faults' back.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

/// Controls the faults of a [`FaultyBackend`] and counts what happened.
///
/// Faults combine: latency is added before anything else, then a hang, a
/// failure (next-N, every call, or a random fraction), an eviction, and
/// last the corruption of what a read returns. [`heal`](Faults::heal)
/// clears them all; the counters keep counting.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    plan: Mutex<Plan>,
    calls: AtomicU64,
    failed: AtomicU64,
    delayed: AtomicU64,
    hung: AtomicU64,
    corrupted: AtomicU64,
    evicted: AtomicU64,
    /// Calls that met at least one fault.
    injected: AtomicU64,
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

/// What a [`FaultyBackend`] has seen and done, as read by
/// [`Faults::counts`].
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
        self.shared
            .plan
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// [`Unreachable`](BackendError::Unreachable) error naming
    /// "fault injection".
    pub fn fail_with(&self, error: BackendError) {
        self.plan().error = Some(error);
    }

    /// Adds `latency` before every call (zero removes it).
    pub fn latency(&self, latency: Duration) {
        self.plan().latency = latency;
    }

    /// Makes every call hang for `timeout` and then fail with
    /// [`BackendError::Timeout`], as a call to a paused server does once
    /// the client's response timeout runs out.
    pub fn hang(&self, timeout: Duration) {
        self.plan().hang = Some(timeout);
    }

    /// Makes reads and increments answer [`Stored::Corrupt`], as a key
    /// holding text or a value of another type does.
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
    /// or restarted server (its [epoch](crate::Backend::epoch) moves), as a
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
    fn draw(&self) -> Draw {
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
            plan.error
                .clone()
                .unwrap_or_else(|| BackendError::Unreachable {
                    target: TARGET.to_owned(),
                    reason: "injected failure".to_owned(),
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

    fn count(&self, counter: fn(&Shared) -> &AtomicU64) {
        counter(&self.shared).fetch_add(1, Ordering::Relaxed);
    }
}

/// The faults one call meets.
struct Draw {
    /// Whether a fault other than a read's corruption applies (already
    /// counted in `injected`).
    met: bool,
    latency: Duration,
    hang: Option<Duration>,
    error: Option<BackendError>,
    evict: bool,
    corrupt: bool,
}

impl<B: Backend> FaultyBackend<B> {
    /// Applies the faults that come before the wrapped call. `Err` ends the
    /// call; `Ok` carries whether to corrupt or hide a read's answer.
    async fn before(&self, key: &Key) -> Result<Draw, BackendError> {
        let draw = self.faults.draw();
        if !draw.latency.is_zero() {
            self.faults.count(|s| &s.delayed);
            pause(draw.latency, self.blocking).await;
        }
        if let Some(after) = draw.hang {
            self.faults.count(|s| &s.hung);
            pause(after, self.blocking).await;
            return Err(BackendError::Timeout {
                target: TARGET.to_owned(),
                after,
            });
        }
        if let Some(error) = draw.error {
            self.faults.count(|s| &s.failed);
            return Err(error);
        }
        if draw.evict {
            self.faults.count(|s| &s.evicted);
            self.inner.delete(key).await?;
        }
        Ok(draw)
    }

    /// What a read answers under the drawn faults.
    fn read(&self, draw: &Draw, stored: Stored) -> Stored {
        if !draw.corrupt {
            return stored;
        }
        if !draw.met {
            self.faults.count(|s| &s.injected);
        }
        self.faults.count(|s| &s.corrupted);
        Stored::Corrupt
    }
}

#[async_trait]
impl<B: Backend> Backend for FaultyBackend<B> {
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        let draw = self.before(key).await?;
        let stored = self.inner.get(key).await?;
        Ok(self.read(&draw, stored))
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.before(key).await?;
        self.inner.add(key, generation, ttl).await
    }

    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        let draw = self.before(key).await?;
        if draw.corrupt {
            // A corrupt key is never incremented.
            return Ok(self.read(&draw, Stored::Corrupt));
        }
        self.inner.incr(key, step, ttl, finished).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.before(key).await?;
        self.inner.delete(key).await
    }

    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        self.before(key).await?;
        self.inner.lock(key, token, ttl).await
    }

    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.before(key).await?;
        self.inner.renew(key, token, ttl, key_ttl).await
    }

    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        self.before(key).await?;
        self.inner.unlock(key, token).await
    }

    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        self.before(key).await?;
        self.inner.intend(key, token, ttl, key_ttl).await
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch() + self.faults.shared.servers.load(Ordering::SeqCst)
    }
}

/// Latency and hangs block the calling thread when no tokio runtime is
/// there to sleep on, as a blocking call to a slow server would. Inside a
/// runtime, build it with [`FaultyBackend::new_blocking`].
impl<B: BlockingBackend> BlockingBackend for FaultyBackend<B> {}

/// Sleeps on the tokio timer inside a runtime, and blocks the thread
/// outside one or when built for blocking callers.
async fn pause(duration: Duration, blocking: bool) {
    if !blocking && tokio::runtime::Handle::try_current().is_ok() {
        tokio::time::sleep(duration).await;
    } else {
        std::thread::sleep(duration);
    }
}
