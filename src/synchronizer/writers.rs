//! The writers' side of a shared generation: a lease so that writers take
//! turns, a fencing token per lease, and an intent so that a writer dying
//! between its save and its bump still reaches every process.
//!
//! A trait of its own, apart from
//! [`GenerationSynchronizer`](super::GenerationSynchronizer), so code (and
//! mocks) that only read never deal with leases.

use std::time::Duration;

use async_trait::async_trait;

use super::Synchronizer;
use crate::backend::Backend;
use crate::error::Error;
use crate::fence::Fence;
use crate::generation::Generation;

/// The writers' lease, fencing tokens and intents beside a shared
/// generation, as [`Reloader::publish`](crate::reload::Reloader::publish)
/// uses them.
///
/// ```
/// use std::time::Duration;
/// use gensync::synchronizer::WriterLock;
/// use gensync::{Generation, Key, MemoryBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), gensync::Error> {
/// let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["flags"])?);
/// let (mine, theirs) = (Generation::fresh(), Generation::fresh());
/// let lease = Duration::from_secs(5);
/// let fence = sync.try_lock(mine, lease).await?.expect("the lease was free");
/// assert_eq!(sync.try_lock(theirs, lease).await?, None);
/// sync.mark_intent(mine, lease).await?;
/// // ... save, handing `fence` to the store ...
/// sync.mark_updated_by(mine).await?;
/// assert!(sync.unlock(mine).await?);
/// let next = sync.try_lock(theirs, lease).await?.unwrap();
/// assert!(next > fence);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait WriterLock: Send + Sync {
    /// Takes the writers' lease beside the key if it is free (or already
    /// `token`'s), for `ttl` unless renewed, owned by `token` (use
    /// [`Generation::fresh`]). Returns the lease's fencing token, greater
    /// than any before, or `None` while another writer holds the lease.
    async fn try_lock(&self, token: Generation, ttl: Duration) -> Result<Option<Fence>, Error>;

    /// Extends `token`'s lease, and its intent, to `ttl` from now. Returns
    /// `false` when the lease is no longer `token`'s: it lapsed, and
    /// another writer may hold it.
    async fn renew(&self, token: Generation, ttl: Duration) -> Result<bool, Error>;

    /// Releases the lease if `token` still holds it. Returns whether it
    /// did; `false` means the lease had lapsed (and maybe been taken).
    async fn unlock(&self, token: Generation) -> Result<bool, Error>;

    /// Records `token`'s intent before it saves: until its bump, or until
    /// `ttl` passes, the shared generation lives no longer than that, even
    /// across other writers' bumps. If the writer dies before its bump, the
    /// key lapses and every process reloads.
    async fn mark_intent(&self, token: Generation, ttl: Duration) -> Result<(), Error>;

    /// The bump of the writer holding `token`:
    /// [`mark_updated`](crate::GenerationSynchronizer::mark_updated) that
    /// also ends its intent, giving the key its full time to live back
    /// unless other intents are pending.
    async fn mark_updated_by(&self, token: Generation) -> Result<Generation, Error>;

    /// Which server the backend reaches (see
    /// [`Backend::epoch`](crate::backend::Backend::epoch)): a lease taken before it
    /// moved may not be held on the new one.
    fn epoch(&self) -> u64;
}

#[async_trait]
impl<B: Backend> WriterLock for Synchronizer<B> {
    async fn try_lock(&self, token: Generation, ttl: Duration) -> Result<Option<Fence>, Error> {
        self.reply("lock", self.backend.lock(&self.key, token, ttl).await)
    }

    async fn renew(&self, token: Generation, ttl: Duration) -> Result<bool, Error> {
        let reply = self.backend.renew(&self.key, token, ttl, self.ttl).await;
        self.reply("renew", reply)
    }

    async fn unlock(&self, token: Generation) -> Result<bool, Error> {
        self.reply("unlock", self.backend.unlock(&self.key, token).await)
    }

    async fn mark_intent(&self, token: Generation, ttl: Duration) -> Result<(), Error> {
        let reply = self.backend.intend(&self.key, token, ttl, self.ttl).await;
        self.reply("intend", reply)
    }

    async fn mark_updated_by(&self, token: Generation) -> Result<Generation, Error> {
        self.bump(Some(token)).await
    }

    fn epoch(&self) -> u64 {
        self.backend.epoch()
    }
}
