//! The reloader for programs with no async runtime.

use std::fmt;

use super::answer::Answer;
use super::builder::ReloaderBuilder;
use super::metrics::ReloadMetrics;
use super::reloader::Reloader;
use super::snapshot::Snapshot;
use crate::error::Error;
use crate::generation::Generation;
use crate::synchronizer::GenerationSynchronizer;
use crate::synchronizer::PublishError;

/// A [`Reloader`] driven from plain threads.
///
/// It runs the same reloader on a private one-thread tokio runtime, so
/// loads, single flight, backoff and the reload fence behave exactly as in
/// async code; that runtime drives the synchronizer, so give it the async
/// [`RedisBackend`](crate::RedisBackend), as async code would. Pair it with
/// [`blocking_loader`](super::blocking_loader) for a loader written as
/// plain blocking code, and [`blocking_saver`](super::blocking_saver) for
/// such a saver. Do not create or drop it inside an async runtime. (Code
/// that only reads or bumps a generation, with no settings to hold, uses
/// [`BlockingSynchronizer`](crate::BlockingSynchronizer) instead.)
///
/// ```
/// use gensync::reload::{blocking_loader, BlockingReloader, Reloader};
/// use gensync::{Key, MemoryBackend, Synchronizer};
///
/// # fn main() -> Result<(), gensync::Error> {
/// let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["job", "config"])?);
/// let loader = blocking_loader(|| Ok::<_, std::io::Error>(String::from("batch=100")));
/// let reloader = BlockingReloader::new(Reloader::builder(sync, loader), String::new())?;
/// assert_eq!(*reloader.check(), "batch=100");
/// # Ok(()) }
/// ```
pub struct BlockingReloader<S> {
    reloader: Reloader<S>,
    runtime: tokio::runtime::Runtime,
}

impl<S> fmt::Debug for BlockingReloader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingReloader")
            .field("reloader", &self.reloader)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> BlockingReloader<S> {
    /// Builds the reloader, serving `initial` until the first load succeeds.
    pub fn new<G: GenerationSynchronizer + 'static>(
        builder: ReloaderBuilder<S, G>,
        initial: S,
    ) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gensync-reloader")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("could not start the reloader's runtime: {e}")))?;
        Ok(BlockingReloader {
            reloader: builder.build(initial)?,
            runtime,
        })
    }

    /// See [`Reloader::check`].
    pub fn check(&self) -> Snapshot<S> {
        // Called inside the runtime: push mode starts its tracking there.
        self.runtime.block_on(async { self.reloader.check().await })
    }

    /// See [`Reloader::answer`].
    pub fn answer(&self) -> Answer<S> {
        self.runtime
            .block_on(async { self.reloader.answer().await })
    }

    /// See [`Reloader::current`].
    pub fn current(&self) -> Snapshot<S> {
        self.reloader.current()
    }

    /// See [`Reloader::reload_now`].
    pub fn reload_now(&self) -> Result<Snapshot<S>, Snapshot<S>> {
        self.runtime.block_on(self.reloader.reload_now())
    }

    /// See [`Reloader::publish`].
    pub fn publish(&self, settings: S) -> Result<Generation, PublishError> {
        self.runtime.block_on(self.reloader.publish(settings))
    }

    /// See [`Reloader::update`].
    pub fn update(
        &self,
        change: impl FnOnce(&S) -> S + Send + 'static,
    ) -> Result<Generation, PublishError> {
        self.runtime.block_on(self.reloader.update(change))
    }

    /// See [`Reloader::metrics`].
    pub fn metrics(&self) -> ReloadMetrics {
        self.reloader.metrics()
    }

    /// The async reloader underneath.
    pub fn reloader(&self) -> &Reloader<S> {
        &self.reloader
    }
}
