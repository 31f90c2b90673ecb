//! The writers' side of a shared generation: a lock so that writers take
//! turns, and an intent so that a writer dying between its save and its
//! bump still reaches every process.
//!
//! A trait of its own, apart from
//! [`GenerationSynchronizer`](super::GenerationSynchronizer), so code (and
//! mocks) that only read never deal with locks.

use std::time::Duration;

use async_trait::async_trait;

use super::{Synchronizer, TRIES};
use crate::backend::Backend;
use crate::error::Error;
use crate::generation::Generation;

/// The writers' lock and intent beside a shared generation, as
/// [`Reloader::publish`](crate::reload::Reloader::publish) uses them.
///
/// ```
/// use std::time::Duration;
/// use gensync::{Generation, Key, MemoryBackend, Synchronizer, WriterLock};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), gensync::Error> {
/// let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["flags"])?);
/// let token = Generation::fresh();
/// assert!(sync.try_lock(token, Duration::from_secs(5)).await?);
/// assert!(!sync.try_lock(Generation::fresh(), Duration::from_secs(5)).await?);
/// assert!(sync.unlock(token).await?);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait WriterLock: Send + Sync {
    /// Takes the writers' lock beside the key if it is free, for `ttl` at
    /// most, owned by `token` (use [`Generation::fresh`]). Returns whether it
    /// was taken. The expiry means a dead holder cannot stall other writers.
    async fn try_lock(&self, token: Generation, ttl: Duration) -> Result<bool, Error>;

    /// Releases the writers' lock if `token` still holds it. Returns whether
    /// it did; `false` means the lock had expired (and maybe been taken).
    async fn unlock(&self, token: Generation) -> Result<bool, Error>;

    /// Records a writer's intent before it saves: the shared generation's
    /// time to live is cut to `ttl` (the key is created if missing). If the
    /// writer dies before its bump, the key lapses and every process
    /// reloads; the bump in [`mark_updated`](crate::GenerationSynchronizer::mark_updated) restores
    /// the full time to live.
    async fn mark_intent(&self, ttl: Duration) -> Result<(), Error>;
}

#[async_trait]
impl<B: Backend> WriterLock for Synchronizer<B> {
    async fn try_lock(&self, token: Generation, ttl: Duration) -> Result<bool, Error> {
        self.reply("lock", self.backend.add(&self.lock_key, token, ttl).await)
    }

    async fn unlock(&self, token: Generation) -> Result<bool, Error> {
        self.reply(
            "unlock",
            self.backend.delete_if(&self.lock_key, token).await,
        )
    }

    async fn mark_intent(&self, ttl: Duration) -> Result<(), Error> {
        for _ in 0..TRIES {
            if self.reply("expire", self.backend.expire(&self.key, ttl).await)? {
                return Ok(());
            }
            // Missing: create it short-lived, or a reader could create it
            // for a year, load the old state and never hear of this write.
            let fresh = Generation::fresh();
            if self.reply("add", self.backend.add(&self.key, fresh, ttl).await)? {
                return Ok(());
            }
        }
        Err(self.contended())
    }
}
