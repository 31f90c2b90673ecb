//! The reloader handle: what a service holds to read its settings, check
//! them, and hear of reloads.

use std::fmt;
use std::sync::Arc;

use tokio::sync::watch;

use super::checking::{AnswerFuture, CheckFuture};
use super::core::Core;
use super::listeners::ListenerId;
use super::metrics::ReloadMetrics;
use super::snapshot::Snapshot;
use crate::synchronizer::GenerationSynchronizer;

/// Keeps one process's settings current.
///
/// [`check`](Self::check) runs before each request (the
/// [`SettingsReloadLayer`](super::SettingsReloadLayer) calls it): when the
/// shared generation moved, it reloads the settings, once per process
/// however many requests find them expired at once, and waits for that load
/// up to a bound. The generation recorded after a load is the one the check
/// observed before loading (the reload fence), and only after the load
/// succeeded. A failed load keeps the last good settings, is logged once per
/// failure episode and is retried with capped exponential backoff. While
/// the shared generation cannot be read, loads still read the source (at
/// most once per backoff window, the backoff starting afresh at each
/// outage), serving what it holds with no generation known to match
/// ([`Snapshot::generation`] `None`).
///
/// Checks, reloads and writes must run inside a tokio runtime: a load runs
/// on a task of its own, so a request that stops waiting for it cancels
/// nothing, and a panicking loader is caught there. (Code with no runtime
/// uses [`BlockingReloader`](super::BlockingReloader), which brings one.)
///
/// Cloning is cheap; clones share everything.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use gensync::reload::Reloader;
/// use gensync::{Key, MemoryBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = Arc::new(Mutex::new(String::from("theme=light")));
/// let (read, write) = (db.clone(), db.clone());
/// let reloader = Reloader::builder(
///     Synchronizer::new(MemoryBackend::new(), Key::new(["site", "settings"])?),
///     move || {
///         let db = read.clone();
///         async move { Ok::<_, std::io::Error>(db.lock().unwrap().clone()) }
///     },
/// )
/// .saver(move |s: &String| {
///     *write.lock().unwrap() = s.clone();
///     async { Ok::<_, std::io::Error>(()) }
/// })
/// .build(String::new())?;
///
/// assert_eq!(*reloader.check().await, "theme=light");
/// reloader.publish(String::from("theme=dark")).await?;
/// assert_eq!(*reloader.check().await, "theme=dark");
/// # Ok(()) }
/// ```
pub struct Reloader<S> {
    core: Arc<Core<S>>,
}

impl<S> Clone for Reloader<S> {
    fn clone(&self) -> Self {
        Reloader {
            core: Arc::clone(&self.core),
        }
    }
}

impl<S> fmt::Debug for Reloader<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = &*self.core;
        f.debug_struct("Reloader")
            .field("key", core.sync.key())
            .field("recorded", &core.sync.sync_gen())
            .field("serving", &self.current().generation())
            .field("saver", &core.writes.is_some())
            .field("config", &core.config)
            .field("metrics", &core.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl<S> Reloader<S> {
    pub(super) fn from_core(core: Core<S>) -> Self {
        Reloader {
            core: Arc::new(core),
        }
    }

    pub(super) fn core(&self) -> &Arc<Core<S>> {
        &self.core
    }

    /// The settings in service now, without checking anything.
    pub fn current(&self) -> Snapshot<S> {
        self.core.current()
    }

    /// The synchronizer underneath, for writers that bump by hand.
    pub fn synchronizer(&self) -> &dyn GenerationSynchronizer {
        &*self.core.sync
    }

    /// What this reloader has done so far.
    pub fn metrics(&self) -> ReloadMetrics {
        self.core.counters.snapshot()
    }

    /// A receiver that always holds the newest settings.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot<S>> {
        self.core.listeners.subscribe()
    }

    /// Calls `listener(old, new)` after each reload, on the task that
    /// loaded. A panicking listener is caught and logged. A listener may
    /// itself add or remove listeners; that takes effect from the next
    /// reload.
    pub fn on_reload(
        &self,
        listener: impl Fn(&Snapshot<S>, &Snapshot<S>) + Send + Sync + 'static,
    ) -> ListenerId {
        self.core.listeners.add(Arc::new(listener))
    }

    /// Stops calling a listener given to [`on_reload`](Self::on_reload).
    /// Returns whether it was still registered.
    pub fn remove_listener(&self, id: ListenerId) -> bool {
        self.core.listeners.remove(id)
    }
}

impl<S: Send + Sync + 'static> Reloader<S> {
    /// Checks the shared generation and returns settings as fresh as the
    /// reloader's [`CheckMode`](super::CheckMode) promises (by default, at least as new as
    /// every update whose bump completed before this call), reloading if
    /// needed. Never fails: when the backend or the loader misbehaves, or
    /// the reload outlasts the wait bound, it returns the last good
    /// settings and counts that in [`ReloadMetrics::stale_served`].
    pub fn check(&self) -> CheckFuture<S> {
        CheckFuture::new(self.answer())
    }

    /// A [`check`](Self::check) that also says how fresh its answer is:
    /// read for this check, vouched for without a read, or stale (the
    /// last good settings, counted in
    /// [`ReloadMetrics::stale_served`]). Costs what a check costs.
    pub fn answer(&self) -> AnswerFuture<S> {
        self.core.answer()
    }

    /// Loads the settings now, whatever the generation says and whatever
    /// the backoff, and waits for that load (bounded by the load timeout).
    /// For start-up and tests.
    pub async fn reload_now(&self) -> Result<Snapshot<S>, Snapshot<S>> {
        let began = self.core.flight.began();
        let check = self.core.sync.check().await;
        self.core.catch_up(check, began, true).await
    }
}
