//! The small storage trait a synchronizer runs on, and its implementations.

use std::time::Duration;

use async_trait::async_trait;

use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::Key;

mod memory;
mod redact;
mod redis;

pub use self::memory::MemoryBackend;
pub use self::redact::RedactedUrl;
pub use self::redis::{BlockingRedisBackend, RedisBackend, RedisConfig};

/// What a key holds, as a backend reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
/// generation itself, and two more for writers' lock and intent.
///
/// Every call must be bounded in time: an implementation returns an error
/// rather than wait for an unresponsive server. Implementations only store
/// and report; the rules (what counts as expired, how a corrupt key is
/// repaired) live in [`Synchronizer`](crate::Synchronizer), once.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Reads the key.
    async fn get(&self, key: &Key) -> Result<Stored, BackendError>;

    /// Stores `generation` with a time to live, only if the key is absent.
    /// Returns whether it was stored.
    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError>;

    /// Atomically adds one to a valid stored generation and resets its
    /// time to live to `ttl`. A missing or corrupt key is left as it is and
    /// reported as [`Stored::Missing`] or [`Stored::Corrupt`]: incrementing
    /// it would create a small, guessable value.
    async fn incr(&self, key: &Key, ttl: Duration) -> Result<Stored, BackendError>;

    /// Removes the key. Removing a missing key is not an error.
    async fn delete(&self, key: &Key) -> Result<(), BackendError>;

    /// Sets the time to live of an existing key. Returns whether the key
    /// existed.
    async fn expire(&self, key: &Key, ttl: Duration) -> Result<bool, BackendError>;

    /// Removes the key only if it holds `expected`, in one atomic step.
    /// Returns whether it was removed.
    async fn delete_if(&self, key: &Key, expected: Generation) -> Result<bool, BackendError>;
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
    async fn incr(&self, key: &Key, ttl: Duration) -> Result<Stored, BackendError> {
        (**self).incr(key, ttl).await
    }
    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        (**self).delete(key).await
    }
    async fn expire(&self, key: &Key, ttl: Duration) -> Result<bool, BackendError> {
        (**self).expire(key, ttl).await
    }
    async fn delete_if(&self, key: &Key, expected: Generation) -> Result<bool, BackendError> {
        (**self).delete_if(key, expected).await
    }
}

impl<B: BlockingBackend + ?Sized> BlockingBackend for std::sync::Arc<B> {}
