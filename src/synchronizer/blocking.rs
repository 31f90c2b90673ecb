//! The synchronizer for code with no async runtime.

use std::time::Duration;

use super::{Check, GenerationSynchronizer, Synchronizer};
use crate::backend::{BlockingBackend, Stored};
use crate::error::Error;
use crate::generation::Generation;
use crate::key::Key;

/// A [`Synchronizer`] for code with no async runtime that only reads,
/// bumps or clears a generation: scripts, CLIs. (To keep settings current
/// from plain threads, use
/// [`BlockingReloader`](crate::reload::BlockingReloader).) Each call runs to
/// completion on the calling thread, bounded by
/// the backend's timeouts.
///
/// It runs the same logic as the async synchronizer, so the two agree on
/// every rule. It takes a [`BlockingBackend`]: a
/// [`BlockingRedisBackend`](crate::BlockingRedisBackend) or a
/// [`MemoryBackend`](crate::MemoryBackend).
///
/// ```
/// use gensync::{BlockingSynchronizer, Key, MemoryBackend};
///
/// # fn main() -> Result<(), gensync::Error> {
/// let backend = MemoryBackend::new();
/// let reader = BlockingSynchronizer::new(backend.clone(), Key::parse("site:settings")?);
/// let writer = BlockingSynchronizer::new(backend, Key::parse("site:settings")?);
/// reader.refresh()?;
/// writer.mark_updated()?;
/// assert!(reader.is_expired());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct BlockingSynchronizer<B> {
    inner: Synchronizer<B>,
}

impl<B: BlockingBackend> BlockingSynchronizer<B> {
    /// A blocking synchronizer for `key` with the [`DEFAULT_TTL`](super::DEFAULT_TTL).
    pub fn new(backend: B, key: Key) -> Self {
        BlockingSynchronizer {
            inner: Synchronizer::new(backend, key),
        }
    }

    /// Sets how long the key lives without a bump. At least a millisecond.
    pub fn with_ttl(self, ttl: Duration) -> Result<Self, Error> {
        Ok(BlockingSynchronizer {
            inner: self.inner.with_ttl(ttl)?,
        })
    }

    /// Reads `parent` with the key and folds it in, as
    /// [`Synchronizer::with_parent`] does: what a keyed reloader's member
    /// shows.
    pub fn with_parent(self, parent: Key) -> Self {
        BlockingSynchronizer {
            inner: self.inner.with_parent(parent),
        }
    }

    /// The async synchronizer underneath.
    pub fn get_ref(&self) -> &Synchronizer<B> {
        &self.inner
    }

    /// See [`GenerationSynchronizer::key`].
    pub fn key(&self) -> &Key {
        self.inner.key()
    }

    /// See [`GenerationSynchronizer::sync_gen`].
    pub fn sync_gen(&self) -> Option<Generation> {
        self.inner.sync_gen()
    }

    /// See [`GenerationSynchronizer::record`].
    pub fn record(&self, generation: Generation) {
        self.inner.record(generation)
    }

    /// See [`GenerationSynchronizer::check`].
    pub fn check(&self) -> Check {
        block_on(self.inner.check())
    }

    /// See [`GenerationSynchronizer::read`].
    pub fn read(&self) -> Result<Stored, Error> {
        block_on(self.inner.read())
    }

    /// See [`GenerationSynchronizer::is_expired`].
    pub fn is_expired(&self) -> bool {
        block_on(self.inner.is_expired())
    }

    /// See [`GenerationSynchronizer::fetch_or_create`].
    pub fn fetch_or_create(&self) -> Result<Generation, Error> {
        block_on(self.inner.fetch_or_create())
    }

    /// See [`GenerationSynchronizer::refresh`].
    pub fn refresh(&self) -> Result<Generation, Error> {
        block_on(self.inner.refresh())
    }

    /// See [`GenerationSynchronizer::mark_updated`].
    pub fn mark_updated(&self) -> Result<Generation, Error> {
        block_on(self.inner.mark_updated())
    }

    /// See [`GenerationSynchronizer::clear`].
    pub fn clear(&self) -> Result<(), Error> {
        block_on(self.inner.clear())
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    // A BlockingBackend's futures never wait on a runtime, so this polls
    // them straight through on the calling thread.
    futures_executor::block_on(future)
}
