//! A backend wrapper that misbehaves on command. Which faults, and which
//! call meets them, is decided in `faults.rs`; this applies them around the
//! wrapped backend's calls.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::faults::{Draw, Faults, TARGET};
use super::observe::{Answer, Call, Observer};
use crate::backend::{Backend, BlockingBackend, Stored};
use crate::error::BackendError;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

/// Wraps a [`Backend`], passes every call through, and injects the faults
/// its [`Faults`] handle asks for: errors, latency, hangs, corrupt values
/// and evictions. With an [`Observer`] ([`observed`](Self::observed)), it
/// also shows a test each call and its answer before the caller sees it.
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
#[derive(Clone)]
pub struct FaultyBackend<B> {
    inner: B,
    faults: Faults,
    /// Latency and hangs block the thread instead of sleeping on tokio.
    blocking: bool,
    observer: Option<Arc<dyn Observer>>,
}

impl<B: std::fmt::Debug> std::fmt::Debug for FaultyBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .field("faults", &self.faults)
            .field("blocking", &self.blocking)
            .field("observed", &self.observer.is_some())
            .finish()
    }
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
            observer: None,
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

    /// Shows `observer` each call and its answer, before the caller sees
    /// them (see [`Observer`]). Clones share it.
    pub fn observed(self, observer: impl Observer) -> Self {
        FaultyBackend {
            observer: Some(Arc::new(observer)),
            ..self
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

impl<B: Backend> FaultyBackend<B> {
    /// Shows the observer, if any, `call` and its reply, then hands the
    /// reply on.
    async fn seen<T>(
        &self,
        call: Call<'_>,
        reply: Result<T, BackendError>,
        answer: impl FnOnce(&T) -> Answer,
    ) -> Result<T, BackendError> {
        if let Some(observer) = &self.observer {
            match &reply {
                Ok(value) => observer.answered(call, Ok(&answer(value))).await,
                Err(error) => observer.answered(call, Err(error)).await,
            }
        }
        reply
    }

    /// A call with no value for the faults to corrupt: the faults drawn
    /// before it, then `inner` (not started until they pass), then the
    /// observer.
    async fn passed<T>(
        &self,
        key: &Key,
        call: Call<'_>,
        inner: impl Future<Output = Result<T, BackendError>>,
        answer: impl FnOnce(&T) -> Answer,
    ) -> Result<T, BackendError> {
        let reply = async {
            self.before(key).await?;
            inner.await
        }
        .await;
        self.seen(call, reply, answer).await
    }

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
            return Err(BackendError::timeout(TARGET, after));
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
        let reply = async {
            let draw = self.before(key).await?;
            let stored = self.inner.get(key).await?;
            Ok(self.read(&draw, stored))
        }
        .await;
        self.seen(Call::Get { key }, reply, |s| Answer::Stored(*s))
            .await
    }

    /// One operation, as the inner backend runs it (one script on Redis):
    /// its faults apply to the key's value, the parent's passes as read.
    async fn get_with_parent(
        &self,
        key: &Key,
        parent: &Key,
    ) -> Result<(Stored, Stored), BackendError> {
        let reply = async {
            let draw = self.before(key).await?;
            let (own, parent) = self.inner.get_with_parent(key, parent).await?;
            Ok((self.read(&draw, own), parent))
        }
        .await;
        self.seen(
            Call::GetWithParent { key, parent },
            reply,
            |(own, parent)| Answer::WithParent(*own, *parent),
        )
        .await
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let call = Call::Add {
            key,
            generation,
            ttl,
        };
        self.passed(key, call, self.inner.add(key, generation, ttl), |done| {
            Answer::Done(*done)
        })
        .await
    }

    async fn add_replicated(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let call = Call::AddReplicated {
            key,
            generation,
            ttl,
        };
        self.passed(
            key,
            call,
            self.inner.add_replicated(key, generation, ttl),
            |done| Answer::Done(*done),
        )
        .await
    }

    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        let reply = async {
            let draw = self.before(key).await?;
            if draw.corrupt {
                // A corrupt key is never incremented.
                return Ok(self.read(&draw, Stored::Corrupt));
            }
            self.inner.incr(key, step, ttl, finished).await
        }
        .await;
        let call = Call::Incr {
            key,
            step,
            ttl,
            finished,
        };
        self.seen(call, reply, |s| Answer::Stored(*s)).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        let call = Call::Delete { key };
        self.passed(key, call, self.inner.delete(key), |()| Answer::Unit)
            .await
    }

    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        let call = Call::Lock { key, token, ttl };
        self.passed(key, call, self.inner.lock(key, token, ttl), |fence| {
            Answer::Lease(*fence)
        })
        .await
    }

    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        let call = Call::Renew {
            key,
            token,
            ttl,
            key_ttl,
        };
        self.passed(
            key,
            call,
            self.inner.renew(key, token, ttl, key_ttl),
            |done| Answer::Done(*done),
        )
        .await
    }

    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        let call = Call::Unlock { key, token };
        self.passed(key, call, self.inner.unlock(key, token), |done| {
            Answer::Done(*done)
        })
        .await
    }

    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        let call = Call::Intend {
            key,
            token,
            ttl,
            key_ttl,
        };
        self.passed(
            key,
            call,
            self.inner.intend(key, token, ttl, key_ttl),
            |()| Answer::Unit,
        )
        .await
    }

    fn epoch(&self) -> u64 {
        self.inner.epoch() + self.faults.servers()
    }

    /// The inner backend's identity, moved by each injected failover as a
    /// new server's would be (alike for every synchronizer sharing the
    /// faults).
    fn identity(&self, key: &Key) -> (u64, Option<u64>) {
        let servers = self.faults.servers();
        let (epoch, id) = self.inner.identity(key);
        // An odd multiplier: any number of failovers moves the identity.
        let moved = id.map(|id| id.wrapping_add(servers.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        (epoch + servers, moved)
    }

    /// The inner backend's: faults hit calls, not what a server pushes
    /// (a failover still moves the epoch, so nothing vouched before it
    /// counts after).
    fn track(&self, key: &Key, tracker: &std::sync::Arc<crate::backend::Tracker>) -> bool {
        self.inner.track(key, tracker)
    }

    /// The inner backend's, as [`track`](Backend::track): a member then
    /// keeps only reads whose epoch (this backend's, moved by a failover)
    /// is the one the set was armed on.
    fn track_set(&self, set: &std::sync::Arc<crate::backend::TrackerSet>) -> bool {
        self.inner.track_set(set)
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
