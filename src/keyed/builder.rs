//! How a [`KeyedReloader`] is configured: the backend, the set's key, how
//! a user's key becomes a member key, the loader, an optional saver, the
//! capacity, and the bounds every key's reloader keeps.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::batch::Batched;
use super::reloader::{Inner, KeyedReloader};
use super::source::{KeyedLoader, KeyedSaver};
use crate::backend::Backend;
use crate::error::Error;
use crate::key::Key;
use crate::reload::{CheckMode, Config, Counters};

/// How many keys keep a reloader by default.
pub const DEFAULT_CAPACITY: u64 = 10_000;

/// Builds a [`KeyedReloader`]; see [`KeyedReloader::builder`].
pub struct KeyedReloaderBuilder<K, S> {
    backend: Arc<dyn Backend>,
    set: Key,
    id: Box<dyn Fn(&K) -> String + Send + Sync>,
    loader: Arc<dyn KeyedLoader<K, S>>,
    saver: Option<Arc<dyn KeyedSaver<K, S>>>,
    /// The settings every key's reloader keeps, shared with
    /// [`ReloaderBuilder`](crate::reload::ReloaderBuilder): the setters
    /// below forward to it.
    config: Config,
    ttl: Option<Duration>,
    capacity: u64,
}

impl<K, S> fmt::Debug for KeyedReloaderBuilder<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedReloaderBuilder")
            .field("set", &self.set)
            .field("capacity", &self.capacity)
            .field("saver", &self.saver.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<K, S> KeyedReloader<K, S>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// Starts building a keyed reloader over `backend` for the keys under
    /// `set`: `id` turns a user's key into the member's id (its key is
    /// [`set.member(id)`](Key::member)), `loader` loads a key's settings.
    pub fn builder(
        backend: impl Backend + 'static,
        set: Key,
        id: impl Fn(&K) -> String + Send + Sync + 'static,
        loader: impl KeyedLoader<K, S>,
    ) -> KeyedReloaderBuilder<K, S> {
        KeyedReloaderBuilder {
            backend: Arc::new(backend),
            set,
            id: Box::new(id),
            loader: Arc::new(loader),
            saver: None,
            config: Config::default(),
            ttl: None,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl<K, S> KeyedReloaderBuilder<K, S>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// How many keys keep a reloader (and their settings) at most; the
    /// least used beyond it are dropped (by `moka`) and loaded again on
    /// their next use. Default [`DEFAULT_CAPACITY`].
    pub fn capacity(mut self, keys: u64) -> Self {
        self.capacity = keys;
        self
    }

    /// The check mode of every key (see
    /// [`ReloaderBuilder::mode`](crate::reload::ReloaderBuilder::mode)). In
    /// push mode one tracking connection covers every key and the parent.
    pub fn mode(mut self, mode: CheckMode) -> Self {
        self.config.mode = mode;
        self
    }

    /// How long a request waits for its key's reload (see
    /// [`ReloaderBuilder::max_wait`](crate::reload::ReloaderBuilder::max_wait)).
    pub fn max_wait(mut self, bound: Duration) -> Self {
        self.config.max_wait = bound;
        self
    }

    /// How long a load may run, the first one included. Default 10 s.
    pub fn load_timeout(mut self, bound: Duration) -> Self {
        self.config.load_timeout = bound;
        self
    }

    /// The pause after a failed load, doubling up to `max`: for a key's
    /// first load (requests meanwhile are told it is unavailable) and for
    /// its later reloads. Default 100 ms to 30 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        (self.config.backoff_initial, self.config.backoff_max) = (initial, max);
        self
    }

    /// The writers' lease of each key (see
    /// [`ReloaderBuilder::write_lock`](crate::reload::ReloaderBuilder::write_lock)).
    pub fn write_lock(mut self, ttl: Duration, tries: u32) -> Self {
        (self.config.write.lock_ttl, self.config.write.lock_tries) = (ttl, tries);
        self
    }

    /// How long a write may run before it is abandoned. Default 30 s.
    pub fn write_timeout(mut self, bound: Duration) -> Self {
        self.config.write.write_timeout = bound;
        self
    }

    /// How long a member key lives without a bump (see
    /// [`Synchronizer::with_ttl`](crate::Synchronizer::with_ttl)).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The saver [`KeyedReloader::publish`] and [`KeyedReloader::update`]
    /// write with, under each key's writers' lease.
    pub fn saver(mut self, saver: impl KeyedSaver<K, S>) -> Self {
        self.saver = Some(Arc::new(saver));
        self
    }

    /// The keyed reloader. Use it inside a tokio runtime.
    pub fn build(self) -> Result<KeyedReloader<K, S>, Error> {
        self.config.validate()?;
        if self.capacity == 0 {
            return Err(Error::Config(
                "a keyed reloader needs a capacity of at least one key".into(),
            ));
        }
        if self.ttl.is_some_and(|ttl| ttl < Duration::from_millis(1)) {
            return Err(Error::Config(
                "the key's time to live must be at least 1 ms".into(),
            ));
        }
        let entries = moka::future::Cache::builder()
            .max_capacity(self.capacity)
            .build();
        // Kept no longer than the longest backoff: older ones say nothing.
        let failures = moka::sync::Cache::builder()
            .max_capacity(self.capacity)
            .time_to_live(self.config.backoff_max)
            .build();
        Ok(KeyedReloader {
            inner: Arc::new(Inner {
                counters: Arc::new(Counters::new(&self.set)),
                // Every key's reads go out together, in batches.
                backend: Arc::new(Batched::new(self.backend)),
                set: self.set,
                id: self.id,
                loader: self.loader,
                saver: self.saver,
                config: self.config,
                ttl: self.ttl,
                entries,
                failures,
                tracking: OnceLock::new(),
            }),
        })
    }
}
