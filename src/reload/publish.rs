//! A reloader's writes: [`Reloader::publish`] and [`Reloader::update`],
//! through the key's writer (the writers' protocol lives beside the
//! writers' lock, in the synchronizer).

use std::sync::Arc;

use super::load::load_within;
use super::reloader::Reloader;
use crate::generation::Generation;
use crate::synchronizer::PublishError;

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
        self.write(|| async { Ok(settings) }).await
    }

    /// Loads the current settings from the source, applies `change`, saves
    /// and tells every process, all under the writers' lease (as
    /// [`publish`](Self::publish)), so concurrent updates from several
    /// processes are not lost.
    pub async fn update(
        &self,
        change: impl FnOnce(&S) -> S + Send + 'static,
    ) -> Result<Generation, PublishError> {
        let loader = Arc::clone(&self.core().loader);
        let timeout = self.core().config.load_timeout;
        self.write(move || async move {
            let current = load_within(timeout, async move { loader.load().await })
                .await
                .map_err(|failure| PublishError::Load(failure.into_cause()))?;
            Ok(change(&current))
        })
        .await
    }

    /// Writes what `produce` makes (once the lease is held) with the saver.
    async fn write<F, Fut>(&self, produce: F) -> Result<Generation, PublishError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<S, PublishError>> + Send + 'static,
    {
        let writes = self.core().writes.as_ref().ok_or(PublishError::NoSaver)?;
        let saver = Arc::clone(&writes.saver);
        let written = writes
            .writer
            .spawn(produce, move |settings, fence| async move {
                saver.save(&settings, fence).await
            })
            .await?;
        // With spread loads, this reloader still loads its own write at
        // once: a writer reads what it wrote.
        self.core().spread.wrote(written);
        Ok(written)
    }
}
