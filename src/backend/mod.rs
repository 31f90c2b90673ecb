//! The small storage trait a synchronizer runs on, and its implementations.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::Key;

mod clock;
mod memory;
#[cfg(feature = "redis")]
mod redact;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "redis")]
mod scheme;
mod seen;
mod seqlock;
mod track;
mod track_set;

pub use self::memory::MemoryBackend;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use self::memory::SavePoint;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redact::RedactedUrl;
#[cfg(all(feature = "redis", any(test, feature = "testing")))]
pub(crate) use self::redis::identity_from_info;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::{BlockingRedisBackend, RedisBackend, RedisConfig, RedisUrl};
pub use self::track::{Ticket, Tracker};
pub use self::track_set::TrackerSet;
pub use crate::error::BackendErrorKind;
pub use crate::fence::Fence;

/// What a key holds, as a backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stored {
    /// A valid generation.
    Value(Generation),
    /// No such key (never set, deleted, expired or evicted).
    Missing,
    /// Something that is not a generation: text that is not a positive
    /// integer, or a value of another type.
    Corrupt,
}

/// The operations a synchronizer needs from a shared store: four for the
/// generation itself, and four for writers (their lease and their intents).
///
/// Every call must be bounded in time: an implementation returns an error
/// rather than wait for an unresponsive server. Implementations only store
/// and report; the rules (what counts as expired, how a corrupt key is
/// repaired, how a writer renews its lease) live in
/// [`Synchronizer`](crate::Synchronizer), once. Bookkeeping lives at the
/// key's [companions](Key::companion): `lock` (the lease), `released` (the
/// last release, for a release sent twice), `fence` (the last fencing
/// token) and `intents` (pending writers' intents).
///
/// **Intents.** A writer records its intent before it saves, so that if it
/// dies before its bump every process still reloads: while an intent is
/// pending, the generation lives no longer than the intent's lapse, whatever
/// else happens to it (other bumps, a re-creation). Every operation that
/// sets the generation's time to live therefore gives it `ttl`, or less
/// when a pending intent lapses sooner.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Reads the key.
    async fn get(&self, key: &Key) -> Result<Stored, BackendError>;

    /// Stores `generation` only if the key is absent, to live `ttl` (or
    /// until the earliest pending intent lapses). Returns whether it was
    /// stored.
    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// [`add`](Self::add) for a bump that found the key missing: the key
    /// it creates tells every process to reload, so a backend that waits
    /// for replicas before it answers a bump
    /// ([`RedisConfig::wait_for_replicas`](crate::RedisConfig::wait_for_replicas))
    /// waits for them here too, and fails with
    /// a [`NotReplicated`](crate::backend::BackendErrorKind::NotReplicated) error when too few acknowledged it. By
    /// default, `add`.
    async fn add_replicated(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.add(key, generation, ttl).await
    }

    /// Atomically adds `step` to a valid stored generation. Then drops the
    /// intent of `finished` (the writer whose bump this is), if any, and
    /// gives the key `ttl` to live (or until the earliest intent still
    /// pending lapses). A missing key is left alone and reported as
    /// [`Stored::Missing`]; a corrupt one, or one the step would carry past
    /// `i64::MAX`, as [`Stored::Corrupt`]: incrementing a missing key would
    /// create a small, guessable value.
    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError>;

    /// Removes the key (not its intents). Removing a missing key is not an
    /// error.
    async fn delete(&self, key: &Key) -> Result<(), BackendError>;

    /// Takes the writers' lease beside the key for `ttl` from now, owned by
    /// `token`, if it is free or already `token`'s. Returns the lease's fencing
    /// token, greater than any handed out before on this key, or `None`
    /// while another writer holds the lease.
    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError>;

    /// Extends `token`'s lease to `ttl` from now, and its intent, if one is
    /// pending, to the same lapse (the key's time to live following, up to
    /// `key_ttl`). Returns `false`, extending nothing, when the lease is no
    /// longer `token`'s.
    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Releases the lease if `token` still holds it, in one atomic step.
    /// Returns whether it did; a release repeated within a minute (a call
    /// sent twice) answers `true` again.
    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError>;

    /// Records `token`'s intent to bump within `ttl`, and cuts the key's
    /// time to live to that lapse if it is sooner (up to `key_ttl`
    /// otherwise). The intent ends with the bump that names it
    /// ([`incr`](Self::incr)'s `finished`) or when it lapses.
    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError>;

    /// Which server answered: a number that changes when the backend has
    /// reconnected to a different or restarted server, which may hold an
    /// older copy of the data (a restart from a snapshot, a failover to a
    /// replica that missed a write). Constant for a store that cannot go
    /// back in time, as process memory.
    fn epoch(&self) -> u64 {
        0
    }

    /// The [epoch](Self::epoch), and the identity of the server holding
    /// `key` in it, read together. The identity is a number every process
    /// reads alike for one run of one server (for Redis, a hash of the
    /// `run_id` of the server, or in a Cluster of the key's slot owner),
    /// and which a restarted or different server changes. Synchronizers
    /// mix it into the generations they observe and show
    /// ([`GenerationSynchronizer::check`](crate::GenerationSynchronizer::check)),
    /// so every process shows one number for one shared state, and an
    /// older copy brought back on another server shows a number never
    /// shown before. 0 shows stored values as they are. Where no identity
    /// can be learnt, any number unique to this epoch in this process
    /// (per process, but still never matching a value recorded before);
    /// the default is the epoch itself. `None` while the identity is being
    /// learnt and comes with the next answer (a Cluster slot that just
    /// moved): read again.
    fn identity(&self, key: &Key) -> (u64, Option<u64>) {
        let _ = key;
        let epoch = self.epoch();
        (epoch, Some(epoch))
    }

    /// Reads `key` and `parent` (its set's parent generation, on the same
    /// Redis Cluster slot) in one round trip. The default sends both reads
    /// at once; a backend with a command for both overrides it.
    async fn get_with_parent(
        &self,
        key: &Key,
        parent: &Key,
    ) -> Result<(Stored, Stored), BackendError> {
        let (own, parent) = tokio::join!(self.get(key), self.get(parent));
        Ok((own?, parent?))
    }

    /// Reads every key of `keys` (a key may come more than once), in as
    /// few round trips as this backend can: the stored values in the
    /// order of `keys`. One error fails the whole read. The default reads
    /// them one at a time; Redis sends one bounded read-only script per
    /// Cluster slot (one command on a single server or Sentinel primary).
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Stored>, BackendError> {
        let mut stored = Vec::with_capacity(keys.len());
        for key in keys {
            stored.push(self.get(key).await?);
        }
        Ok(stored)
    }

    /// Starts pushing the changes of `key` into `tracker`, if this backend
    /// can, on a task of the current tokio runtime that ends once the
    /// tracker is dropped. Returns whether it started. The default cannot:
    /// readers then read the key for every check their mode asks for.
    fn track(&self, key: &Key, tracker: &std::sync::Arc<Tracker>) -> bool {
        let _ = (key, tracker);
        false
    }

    /// Starts pushing the changes of every member of `set` into it, over
    /// one tracking session for the whole set, if this backend can, on a
    /// task of the current tokio runtime that ends once the set is
    /// dropped. Returns whether it started. The session does not read the
    /// members: their readers do, and feed what they read to the member's
    /// tracker with this backend's [`epoch`](Self::epoch). The default
    /// cannot: readers then read every key for every check.
    fn track_set(&self, set: &std::sync::Arc<TrackerSet>) -> bool {
        let _ = set;
        false
    }
}

/// A [`Backend`] whose futures finish without waiting on an async runtime,
/// so [`BlockingSynchronizer`](crate::BlockingSynchronizer) can drive them
/// from plain threads.
pub trait BlockingBackend: Backend {}

#[async_trait]
impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        (**self).get(key).await
    }
    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        (**self).add(key, generation, ttl).await
    }
    async fn add_replicated(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        (**self).add_replicated(key, generation, ttl).await
    }
    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        (**self).incr(key, step, ttl, finished).await
    }
    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        (**self).delete(key).await
    }
    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        (**self).lock(key, token, ttl).await
    }
    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        (**self).renew(key, token, ttl, key_ttl).await
    }
    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        (**self).unlock(key, token).await
    }
    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        (**self).intend(key, token, ttl, key_ttl).await
    }
    fn epoch(&self) -> u64 {
        (**self).epoch()
    }
    fn identity(&self, key: &Key) -> (u64, Option<u64>) {
        (**self).identity(key)
    }
    async fn get_with_parent(
        &self,
        key: &Key,
        parent: &Key,
    ) -> Result<(Stored, Stored), BackendError> {
        (**self).get_with_parent(key, parent).await
    }
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Stored>, BackendError> {
        (**self).get_many(keys).await
    }
    fn track(&self, key: &Key, tracker: &std::sync::Arc<Tracker>) -> bool {
        (**self).track(key, tracker)
    }
    fn track_set(&self, set: &std::sync::Arc<TrackerSet>) -> bool {
        (**self).track_set(set)
    }
}

impl<B: BlockingBackend + ?Sized> BlockingBackend for std::sync::Arc<B> {}
