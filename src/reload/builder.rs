//! How a [`Reloader`] is configured: its synchronizer, loader, optional
//! saver, and the bounds it keeps.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::flight::Flight;
use super::listeners::Listeners;
use super::metrics::Counters;
use super::mode::CheckMode;
use super::publish::Writers;
use super::reads::Reads;
use super::reloader::{Reloader, Shared};
use super::snapshot::Snapshot;
use super::source::{SettingsLoader, SettingsSaver};
use crate::error::Error;
use crate::generation::Generation;
use crate::synchronizer::{GenerationSynchronizer, WriterLock};

/// Bounds and pacing of a [`Reloader`], set through [`ReloaderBuilder`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) max_wait: Duration,
    pub(crate) load_timeout: Duration,
    pub(crate) backoff_initial: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) lock_ttl: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) lock_tries: u32,
    pub(crate) mode: CheckMode,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_wait: Duration::from_secs(1),
            load_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            lock_ttl: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            lock_tries: 40,
            mode: CheckMode::Strict,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let positive = [
            ("max_wait", self.max_wait),
            ("load_timeout", self.load_timeout),
            ("backoff initial", self.backoff_initial),
            ("write_lock ttl", self.lock_ttl),
            ("write_timeout", self.write_timeout),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(Error::Config(format!("{name} must be greater than zero")));
        }
        if self.mode == CheckMode::Interval(Duration::ZERO) {
            return Err(Error::Config(
                "the check interval must be greater than zero".into(),
            ));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(Error::Config(format!(
                "the backoff maximum ({:?}) is below its initial pause ({:?})",
                self.backoff_max, self.backoff_initial
            )));
        }
        if self.lock_ttl < Duration::from_millis(1) || self.lock_tries == 0 {
            return Err(Error::Config(
                "write_lock needs a ttl of at least 1 ms and at least one try".into(),
            ));
        }
        Ok(())
    }
}

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
    writers: Option<Writers<S>>,
    config: Config,
    /// Counters shared with other reloaders (a keyed reloader's keys), or
    /// this reloader's own.
    counters: Option<Arc<Counters>>,
}

impl<S, G: GenerationSynchronizer> fmt::Debug for ReloaderBuilder<S, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloaderBuilder")
            .field("key", self.sync.key())
            .field("saver", &self.writers.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S, G> ReloaderBuilder<S, G>
where
    S: Send + Sync + 'static,
    G: GenerationSynchronizer + 'static,
{
    pub(super) fn new(sync: G, loader: impl SettingsLoader<S>) -> Self {
        ReloaderBuilder {
            sync: Arc::new(sync),
            loader: Arc::new(loader),
            writers: None,
            config: Config::default(),
            counters: None,
        }
    }

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

    /// How long one load may take before it counts as failed. Default 10 s.
    pub fn load_timeout(mut self, bound: Duration) -> Self {
        self.config.load_timeout = bound;
        self
    }

    /// The pause after a first failed load, doubled after each further one
    /// up to `max`. Defaults 100 ms and 30 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial;
        self.config.backoff_max = max;
        self
    }

    /// The writers' lock: how long a holder keeps it at most (also how long
    /// a dead writer's intent takes to lapse), and how many times a writer
    /// tries to take it. Defaults 5 s and 40 tries (about 7 s).
    pub fn write_lock(mut self, ttl: Duration, tries: u32) -> Self {
        self.config.lock_ttl = ttl;
        self.config.lock_tries = tries;
        self
    }

    /// How long a write ([`Reloader::publish`], [`Reloader::update`]) may
    /// hold the writers' lease, which it renews while it works. Past this
    /// the write is abandoned and the lease lapses, so a saver that hangs
    /// cannot keep every other writer out. Default 30 s.
    pub fn write_timeout(mut self, bound: Duration) -> Self {
        self.config.write_timeout = bound;
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
        Ok(Reloader::from_shared(Shared {
            counters: self
                .counters
                .unwrap_or_else(|| Arc::new(Counters::new(sync.key()))),
            flight: Flight::new(self.config.backoff_initial),
            listeners: Listeners::new(first.clone()),
            sync,
            loader: self.loader,
            writers: self.writers,
            config: self.config,
            current: arc_swap::ArcSwap::new(Arc::clone(first.as_arc())),
            reads: Arc::new(Reads::new()),
            tracking: std::sync::OnceLock::new(),
        }))
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
        self.writers = Some(Writers::new(Arc::new(saver), lock));
        self
    }
}
