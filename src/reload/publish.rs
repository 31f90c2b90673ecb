//! The writers' path: save new settings through the saver and tell every
//! process, under the writers' lock.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::reloader::Reloader;
use super::source::{BoxError, SettingsSaver};
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
        let loader = Arc::clone(&self.shared().loader);
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
        let shared = self.shared();
        let writers = shared.writers.as_ref().ok_or(PublishError::NoSaver)?;
        let sync = &shared.sync;
        let lock_ttl = shared.config.lock_ttl;
        let token = self.lock_for_writing(&*writers.lock).await?;
        let result = async {
            writers
                .lock
                .mark_intent(lock_ttl)
                .await
                .map_err(PublishError::Start)?;
            let settings = produce().await?;
            writers
                .saver
                .save(&settings)
                .await
                .map_err(PublishError::Save)?;
            sync.mark_updated()
                .await
                .map_err(|source| PublishError::Bump { source, lock_ttl })
        }
        .await;
        // A failed unlock is harmless: the lock lapses on its own.
        if let Err(e) = writers.lock.unlock(token).await {
            tracing::warn!(key = %sync.key(), "gensync could not release the writers' lock: {e}");
        }
        result
    }

    async fn lock_for_writing(&self, lock: &dyn WriterLock) -> Result<Generation, PublishError> {
        let shared = self.shared();
        let config = &shared.config;
        let token = Generation::fresh();
        for attempt in 0..config.lock_tries {
            if lock
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
            key: shared.sync.key().to_string(),
            tries: config.lock_tries,
            lock_ttl: config.lock_ttl,
        })
    }
}
