//! The writers' path: save new settings through the saver and tell every
//! process, under the writers' lock.

use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::lease::Lease;
use super::reloader::Reloader;
use super::source::{BoxError, SettingsSaver, StaleFence};
use crate::error::Error;
use crate::generation::Generation;
use crate::synchronizer::WriterLock;

/// A failed [`Reloader::publish`] or [`Reloader::update`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The reloader was built without a saver.
    #[error("this reloader has no saver: build it with ReloaderBuilder::saver to publish")]
    NoSaver,
    /// Other writers held the lease for every try.
    #[error("another writer held the writers' lease {lock} (of {key}) through {tries} tries; retry later, or look for a stuck writer: a lease lapses {lock_ttl:?} after its writer stops renewing it, a write is abandoned after {write_timeout:?}, and a lease that would never lapse is taken over by the next writer; `gensync break-lock` on the key breaks one at once")]
    Locked {
        /// The generation's key.
        key: String,
        /// The lease's own key, as stored.
        lock: String,
        /// How many times the lease was tried.
        tries: u32,
        /// How long a lease lasts without renewal.
        lock_ttl: Duration,
        /// How long a writer may hold it at most.
        write_timeout: Duration,
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
    /// The writers' lease lapsed before this write finished: the writer was
    /// stalled (or cut off from the backend) for longer than the lease,
    /// and another writer may have written meanwhile. Reported whatever
    /// the saver did; a [fenced](super::fenced) store refuses the save.
    /// [`PublishError::saved`] says what became of it.
    #[error("the writers' lease on {key} lapsed before this write finished (it went {lease:?} without a renewal: a stalled process, Redis out of reach, or a Redis that restarted or failed over without it), so another writer may have written meanwhile; {}", lease_lost_outcome(*saved, *announced, .source))]
    LeaseLost {
        /// The generation's key.
        key: String,
        /// How long a lease lasts without renewal.
        lease: Duration,
        /// Whether the saver reported this write saved: it may have
        /// replaced a newer change.
        saved: bool,
        /// Whether the saved write was also announced (bumped).
        announced: bool,
        /// What the saver said when it failed (a fenced store refusing a
        /// stale token, say).
        #[source]
        source: Option<BoxError>,
    },
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

fn lease_lost_outcome(saved: bool, announced: bool, source: &Option<BoxError>) -> String {
    match (saved, announced, source) {
        (true, true, _) => "this write was saved and announced anyway, and may have replaced a newer change: check the settings".to_owned(),
        (true, false, _) => "this write was saved but not announced, and may have replaced a newer change: check the settings and publish again".to_owned(),
        (false, _, None) => "nothing of this write was saved".to_owned(),
        (false, _, Some(e)) if refused(e) => format!("the store refused it ({e}): nothing of it was saved"),
        (false, _, Some(e)) => format!("the saver failed ({e}) and may have saved part of it: check the settings"),
    }
}

/// Whether a saver's error is a fenced store's refusal, which saved
/// nothing: a [`StaleFence`], or one that carries it (as its source, or
/// inside an `io::Error`).
fn refused(e: &BoxError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if e.is::<StaleFence>() || inner.is_some_and(|i| i.is::<StaleFence>()) {
            return true;
        }
        next = e.source();
    }
    false
}

impl PublishError {
    /// Whether this write's settings reached the source of truth:
    /// `Some(false)` when surely not (the write never got to save, or the
    /// store refused it), `Some(true)` when the saver reported them saved
    /// (but the write failed after), `None` when the saver failed and may
    /// have saved part of them.
    pub fn saved(&self) -> Option<bool> {
        match self {
            PublishError::NoSaver
            | PublishError::Locked { .. }
            | PublishError::Start(_)
            | PublishError::Load(_) => Some(false),
            PublishError::Save(e) => refused(e).then_some(false),
            PublishError::LeaseLost { saved: true, .. } | PublishError::Bump { .. } => Some(true),
            PublishError::LeaseLost { source: None, .. } => Some(false),
            PublishError::LeaseLost {
                source: Some(e), ..
            } => refused(e).then_some(false),
        }
    }
}

/// What a reloader writes with: the saver, and the lock writers take turns
/// under.
pub(super) struct Writers<S> {
    saver: Arc<dyn SettingsSaver<S>>,
    lock: Arc<dyn WriterLock>,
}

impl<S> Writers<S> {
    pub(super) fn new(saver: Arc<dyn SettingsSaver<S>>, lock: Arc<dyn WriterLock>) -> Self {
        Writers { saver, lock }
    }
}

impl<S> fmt::Debug for Writers<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writers").finish_non_exhaustive()
    }
}

/// The pause between tries for the writers' lock: short at first, then
/// capped, so 40 tries outlast a dead holder's 5 s lock.
fn lock_retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(5)).min(200))
}

impl<S: Send + Sync + 'static> Reloader<S> {
    /// Saves `settings` through the saver and tells every process, under the
    /// writers' lease. Returns the new shared generation.
    ///
    /// The lease is renewed while the write runs, so a slow save keeps it;
    /// the saver gets the lease's fencing token. Before saving, the writer
    /// records its intent, so if this process dies between saving and
    /// bumping, the key lapses within the lease and every process still
    /// reloads, whatever other bumps happen meanwhile. A writer whose lease
    /// lapsed anyway (it stalled longer than the lease, or Redis restarted
    /// or failed over without it) is told so with
    /// [`PublishError::LeaseLost`]. A write that fails after recording its
    /// intent leaves the intent to lapse: every process then reloads once,
    /// which costs little if nothing was saved and is what is needed if
    /// part of it was.
    pub async fn publish(&self, settings: S) -> Result<Generation, PublishError> {
        self.spawn_write(|| async { Ok(settings) }).await
    }

    /// Loads the current settings from the source, applies `change`, saves
    /// and tells every process, all under the writers' lease (as
    /// [`publish`](Self::publish)), so concurrent updates from several
    /// processes are not lost.
    pub async fn update(
        &self,
        change: impl FnOnce(&S) -> S + Send + 'static,
    ) -> Result<Generation, PublishError> {
        let loader = Arc::clone(&self.shared().loader);
        let timeout = self.shared().config.load_timeout;
        self.spawn_write(move || async move {
            let current = tokio::time::timeout(timeout, loader.load())
                .await
                .map_err(|_| {
                    PublishError::Load(
                        format!("the loader did not finish within {timeout:?}").into(),
                    )
                })?
                .map_err(PublishError::Load)?;
            Ok(change(&current))
        })
        .await
    }

    /// Runs a write on a task of its own, so a caller that stops waiting (a
    /// request dropped mid-write) does not cut it off halfway: between a
    /// save and its bump, or before the lease is released.
    async fn spawn_write<F, Fut>(&self, produce: F) -> Result<Generation, PublishError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<S, PublishError>> + Send + 'static,
    {
        let this = self.clone();
        match tokio::spawn(async move { this.write(produce).await }).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(PublishError::Save(
                "the write panicked (in the loader or the saver); its lease lapses on its own"
                    .into(),
            )),
            Err(_) => Err(PublishError::Save("the write's task was cancelled".into())),
        }
    }

    async fn write<F, Fut>(&self, produce: F) -> Result<Generation, PublishError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<S, PublishError>>,
    {
        let shared = self.shared();
        let writers = shared.writers.as_ref().ok_or(PublishError::NoSaver)?;
        let lock = &*writers.lock;
        let lock_ttl = shared.config.lock_ttl;
        let write_timeout = shared.config.write_timeout;
        let lease = self.take_lease(lock).await?;
        let work = lease.keep_while(lock, lock_ttl, async {
            lock.mark_intent(lease.token, lock_ttl)
                .await
                .map_err(PublishError::Start)?;
            lease.intended.store(true, Ordering::SeqCst);
            let settings = produce().await?;
            if lease.server_changed(lock) {
                // A restarted or failed-over server may not hold the
                // lease: make sure it does (which records the intent
                // there again) before saving.
                lease.renew(lock, lock_ttl).await;
            }
            if !lease.holds() || lease.server_changed(lock) {
                // Saving now could overwrite a newer writer's change.
                return Err(lease_lost(shared, false, false, None));
            }
            writers
                .saver
                .save(&settings, lease.fence)
                .await
                .map_err(PublishError::Save)
        });
        let saved = match tokio::time::timeout(write_timeout, work).await {
            Ok(saved) => saved,
            // Abandoned, so a hung saver cannot hold the lease for ever.
            Err(_) => Err(PublishError::Save(
                format!(
                    "the write did not finish within {write_timeout:?} and was abandoned; \
                     a save still running elsewhere may land later, which a fenced store \
                     refuses once a newer writer saved"
                )
                .into(),
            )),
        };
        let saved_ok = saved.is_ok();
        // Announced even when the lease lapsed meanwhile: the source holds
        // this save now, and every process should load what it holds.
        let result = match saved {
            Ok(()) => lock
                .mark_updated_by(lease.token)
                .await
                .map_err(|source| PublishError::Bump { source, lock_ttl }),
            Err(e) => Err(e),
        };
        let released = lock.unlock(lease.token).await;
        if let Err(e) = &released {
            // Harmless: the lease lapses on its own.
            tracing::warn!(key = %shared.sync.key(), "gensync could not release the writers' lease: {e}");
        }
        // Held to the end: nothing said otherwise, and if the server changed
        // meanwhile, the release found the lease there.
        let held = lease.holds()
            && !matches!(released, Ok(false))
            && (!lease.server_changed(lock) || matches!(released, Ok(true)));
        if !held {
            return Err(match result {
                Err(e @ PublishError::LeaseLost { .. }) => e,
                Err(PublishError::Save(e)) => lease_lost(shared, false, false, Some(e)),
                other => lease_lost(shared, saved_ok, other.is_ok(), None),
            });
        }
        result
    }

    async fn take_lease(&self, lock: &dyn WriterLock) -> Result<Lease, PublishError> {
        let shared = self.shared();
        let config = &shared.config;
        let token = Generation::fresh();
        for attempt in 0..config.lock_tries {
            let asked = Instant::now();
            let epoch = lock.epoch();
            let taken = lock
                .try_lock(token, config.lock_ttl)
                .await
                .map_err(PublishError::Start)?;
            if let Some(fence) = taken {
                return Ok(Lease::new(token, fence, asked + config.lock_ttl, epoch));
            }
            if attempt + 1 < config.lock_tries {
                tokio::time::sleep(lock_retry_delay(attempt)).await;
            }
        }
        Err(PublishError::Locked {
            key: shared.sync.key().to_string(),
            lock: shared.sync.key().companion("lock").to_string(),
            tries: config.lock_tries,
            lock_ttl: config.lock_ttl,
            write_timeout: config.write_timeout,
        })
    }
}

/// The error of a write whose lease lapsed.
fn lease_lost<S>(
    shared: &super::reloader::Shared<S>,
    saved: bool,
    announced: bool,
    source: Option<BoxError>,
) -> PublishError {
    PublishError::LeaseLost {
        key: shared.sync.key().to_string(),
        lease: shared.config.lock_ttl,
        saved,
        announced,
        source,
    }
}
