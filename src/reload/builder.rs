//! How a [`Reloader`] is configured: its synchronizer, loader, optional
//! saver, and the bounds it keeps.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::config::Config;
use super::core::{Core, Writes};
use super::metrics::Counters;
use super::mode::CheckMode;
use super::reloader::Reloader;
use super::snapshot::Snapshot;
use super::source::{SettingsLoader, SettingsSaver};
use crate::error::Error;
use crate::generation::Generation;
use crate::synchronizer::{GenerationSynchronizer, Writer, WriterLock};

/// Builds a [`Reloader`]: the synchronizer and loader it needs, a saver if
/// it publishes, and its bounds.
///
/// `G` is the synchronizer's type. A saver can be added only when it also
/// holds the writers' lock ([`WriterLock`]), as
/// [`Synchronizer`](crate::Synchronizer) does; a reader-only synchronizer (a
/// mock, say) builds a reloader that reads.
pub struct ReloaderBuilder<S, G> {
    sync: Arc<G>,
    loader: Arc<dyn SettingsLoader<S>>,
    saver: Option<Saving<S>>,
    config: Config,
    /// Counters shared with other reloaders (a keyed reloader's keys), or
    /// this reloader's own.
    counters: Option<Arc<Counters>>,
}

/// A saver, and the writers' lock it writes under (the synchronizer's).
struct Saving<S> {
    saver: Arc<dyn SettingsSaver<S>>,
    lock: Arc<dyn WriterLock>,
}

impl<S, G: GenerationSynchronizer> fmt::Debug for ReloaderBuilder<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloaderBuilder")
            .field("key", self.sync.key())
            .field("saver", &self.saver.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S: Send + Sync + 'static> Reloader<S> {
    /// Starts building a reloader over a synchronizer and a loader.
    pub fn builder<G: GenerationSynchronizer + 'static>(
        sync: G,
        loader: impl SettingsLoader<S>,
    ) -> ReloaderBuilder<S, G> {
        ReloaderBuilder {
            sync: Arc::new(sync),
            loader: Arc::new(loader),
            saver: None,
            config: Config::default(),
            counters: None,
        }
    }
}

impl<S, G> ReloaderBuilder<S, G>
where
    S: Send + Sync + 'static,
    G: GenerationSynchronizer + 'static,
{
    /// Takes every bound and the mode from `config`, and counts into
    /// `counters`: for the reloaders of a keyed reloader's keys.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    pub(crate) fn shared(mut self, config: Config, counters: Arc<Counters>) -> Self {
        self.config = config;
        self.counters = Some(counters);
        self
    }

    /// How long a request waits for a reload before it is served the last
    /// good settings (counted as `stale_served`). Default 1 s.
    pub fn max_wait(mut self, bound: Duration) -> Self {
        self.config.max_wait = bound;
        self
    }

    /// How checks learn that the shared generation moved, and so how fresh
    /// their answer is and what they cost the backend. Default
    /// [`CheckMode::Strict`].
    pub fn mode(mut self, mode: CheckMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// Spreads the loads a change causes over `window`, so a fleet that
    /// hears of a change at once does not load from the source at once.
    /// Off (zero) by default. Needs [`CheckMode::Push`] or
    /// [`CheckMode::Interval`]: with [`CheckMode::Strict`],
    /// [`build`](Self::build) refuses it.
    ///
    /// When a check (push mode's own, on a pushed change, or a request's)
    /// finds the shared generation moved from the one in service to
    /// another, this instance draws a delay uniformly in `[0, window)`,
    /// once per change, and loads when it ends. Until then checks are
    /// answered at once with the settings in service, labelled
    /// [`Freshness::Deferred`](super::Freshness::Deferred), and the
    /// snapshot says when it is due to be replaced
    /// ([`Snapshot::deferred_until`]); changes heard meanwhile join the same
    /// load. From the end of the delay, checks wait for the load as without
    /// spread. So settings served are at most `window` plus the mode's
    /// [`lag`](CheckMode::lag) behind a completed bump, and no answer is
    /// labelled current unless it keeps the mode's promise.
    ///
    /// Not deferred: the first load, a load while the key is missing or
    /// the backend unreadable, and this reloader's own
    /// [`publish`](Reloader::publish) or [`update`](Reloader::update),
    /// which it loads at once so a writer reads its own write.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gensync::reload::{CheckMode, Reloader};
    /// use gensync::{Key, MemoryBackend, Synchronizer};
    ///
    /// let loader = || async { Ok::<_, std::io::Error>(7) };
    /// let sync = || Ok::<_, gensync::Error>(Synchronizer::new(MemoryBackend::new(), Key::new(["site"])?));
    /// let fleet_member = Reloader::builder(sync()?, loader)
    ///     .mode(CheckMode::Push)
    ///     .spread_loads(Duration::from_secs(5))
    ///     .build(0)?;
    /// # drop(fleet_member);
    /// // Strict mode never serves settings older than a completed bump.
    /// let strict = Reloader::builder(sync()?, loader).spread_loads(Duration::from_secs(5));
    /// assert!(strict.build(0).is_err());
    /// # Ok::<(), gensync::Error>(())
    /// ```
    pub fn spread_loads(mut self, window: Duration) -> Self {
        self.config.spread = window;
        self
    }

    /// How long one load may take before it counts as failed. Default 10 s.
    pub fn load_timeout(mut self, bound: Duration) -> Self {
        self.config.load_timeout = bound;
        self
    }

    /// The pause after a first failed load, doubled after each further one
    /// up to `max`. Defaults 100 ms and 30 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        (self.config.backoff_initial, self.config.backoff_max) = (initial, max);
        self
    }

    /// The writers' lock: how long a holder keeps it at most (also how long
    /// a dead writer's intent takes to lapse), and how many times a writer
    /// tries to take it. Defaults 5 s and 40 tries (about 7 s).
    pub fn write_lock(mut self, ttl: Duration, tries: u32) -> Self {
        (self.config.write.lock_ttl, self.config.write.lock_tries) = (ttl, tries);
        self
    }

    /// How long a write ([`Reloader::publish`], [`Reloader::update`]) may
    /// hold the writers' lease, which it renews while it works. Past this
    /// the write is abandoned and the lease lapses, so a saver that hangs
    /// cannot keep every other writer out. Default 30 s.
    pub fn write_timeout(mut self, bound: Duration) -> Self {
        self.config.write.write_timeout = bound;
        self
    }

    /// The reloader, serving `initial` until the first load succeeds.
    ///
    /// Build it anywhere; use it inside a tokio runtime, which runs its
    /// loads. With the `metrics` feature, install the metrics recorder
    /// before this: the reloader registers its metrics here.
    pub fn build(self, initial: S) -> Result<Reloader<S>, Error> {
        self.build_at(initial, None)
    }

    /// The reloader, serving `initial`, loaded at `generation` (which the
    /// caller recorded in the synchronizer).
    pub(crate) fn build_at(
        self,
        initial: S,
        generation: Option<Generation>,
    ) -> Result<Reloader<S>, Error> {
        self.config.validate()?;
        let first = Snapshot::new(initial, generation);
        let sync: Arc<dyn GenerationSynchronizer> = self.sync;
        let writes = self.saver.map(|Saving { saver, lock }| Writes {
            writer: Arc::new(Writer::new(lock, sync.key().clone(), self.config.write)),
            saver,
        });
        let counters = self
            .counters
            .unwrap_or_else(|| Arc::new(Counters::new(sync.key())));
        let core = Core::new(sync, self.loader, writes, self.config, counters, first);
        Ok(Reloader::from_core(core))
    }
}

impl<S, G> ReloaderBuilder<S, G>
where
    S: Send + Sync + 'static,
    G: GenerationSynchronizer + WriterLock + 'static,
{
    /// The saver [`Reloader::publish`] and [`Reloader::update`] write with,
    /// under the synchronizer's writers' lock.
    pub fn saver(mut self, saver: impl SettingsSaver<S>) -> Self {
        let lock: Arc<dyn WriterLock> = self.sync.clone();
        self.saver = Some(Saving {
            saver: Arc::new(saver),
            lock,
        });
        self
    }
}
