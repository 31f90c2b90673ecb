//! The keyed reloader's handle: one [`Reloader`] per key in use, made on
//! first use and kept in a bounded cache.

use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::source::{KeyLoader, KeySaver, KeyedLoader, KeyedSaver};
use crate::backend::{Backend, TrackerSet};
use crate::generation::Generation;
use crate::key::Key;
use crate::reload::{
    load_within, Answer, Backoff, Config, Counters, Freshness, PublishError, ReloadMetrics,
    Reloader, Snapshot,
};
use crate::synchronizer::{GenerationSynchronizer, Observed, Synchronizer};

/// Why a key's settings could not be had.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KeyedError {
    /// The user's key function gave an id no [`Key`] can be made of (an
    /// empty one).
    #[error("no key can be made of {id:?}: {reason}")]
    InvalidKey {
        /// The id the key function gave.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key's settings never loaded: its first load failed (or is in
    /// the backoff after a failure). Keys that loaded once keep serving
    /// their last good settings instead.
    #[error(
        "the settings of {key} could not be loaded: {reason}; \
         the next load is tried in {retry_in:?} at the latest"
    )]
    Unavailable {
        /// The key, as stored.
        key: String,
        /// The loader's error.
        reason: String,
        /// How long until a request tries the load again.
        retry_in: Duration,
    },
    /// A write failed (see [`PublishError`]).
    #[error(transparent)]
    Publish(Arc<PublishError>),
}

/// A key whose first load failed: requests before `until` are told so at
/// once rather than each running the loader.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) attempts: u32,
    /// The pause the next failure waits.
    pub(super) backoff: Backoff,
    pub(super) until: Instant,
    pub(super) error: KeyedError,
}

/// Keeps many settings current at once, one [`Reloader`] per key: a
/// tenant's, a site's, a customer's flag set. See the [module
/// docs](super).
pub struct KeyedReloader<K, S> {
    pub(super) inner: Arc<Inner<K, S>>,
}

pub(super) struct Inner<K, S> {
    pub(super) backend: Arc<dyn Backend>,
    /// The set's key: every member key is under it, and it is the parent
    /// generation that expires every member at once.
    pub(super) set: Key,
    pub(super) id: Box<dyn Fn(&K) -> String + Send + Sync>,
    pub(super) loader: Arc<dyn KeyedLoader<K, S>>,
    pub(super) saver: Option<Arc<dyn KeyedSaver<K, S>>>,
    pub(super) config: Config,
    pub(super) ttl: Option<Duration>,
    pub(super) counters: Arc<Counters>,
    pub(super) entries: moka::future::Cache<K, Reloader<S>>,
    pub(super) failures: moka::sync::Cache<K, Failure>,
    /// Push mode's tracking of every member, once started: `None` inside
    /// when the backend cannot (keys are then checked as in strict mode).
    pub(super) tracking: OnceLock<Option<Arc<TrackerSet>>>,
}

impl<K, S> Clone for KeyedReloader<K, S> {
    fn clone(&self) -> Self {
        KeyedReloader {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, S> fmt::Debug for KeyedReloader<K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedReloader")
            .field("set", &self.inner.set)
            .field("mode", &self.inner.config.mode)
            .field("keys", &self.inner.entries.entry_count())
            .finish_non_exhaustive()
    }
}

impl<K, S> KeyedReloader<K, S>
where
    K: Clone + Hash + Eq + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    /// The settings `key`'s requests should use now: its reloader's
    /// [`check`](Reloader::check), after loading it on first use.
    ///
    /// Concurrent first requests for a key share one load. An error only
    /// for a key whose settings never loaded (or whose id makes no key): a
    /// key that loaded once keeps its last good settings through any later
    /// failure, as a [`Reloader`] does.
    pub async fn check(&self, key: &K) -> Result<Snapshot<S>, KeyedError> {
        self.answer(key).await.map(|answer| answer.snapshot)
    }

    /// A [`check`](Self::check) that also says how fresh its answer is
    /// (see [`Reloader::answer`]): a key's first load is a
    /// [`Read`](Freshness::Read).
    pub async fn answer(&self, key: &K) -> Result<Answer<S>, KeyedError> {
        let (reloader, loaded_here) = self.entry(key).await?;
        if loaded_here {
            // Read the generation and loaded after this call began: as
            // fresh as any check could make them.
            self.inner.counters.checks.add();
            return Ok(Answer::new(reloader.current(), Freshness::Read));
        }
        Ok(reloader.answer().await)
    }

    /// The reloader of `key`, loading its settings first if no reloader is
    /// cached for it.
    pub async fn reloader(&self, key: &K) -> Result<Reloader<S>, KeyedError> {
        self.entry(key).await.map(|(reloader, _)| reloader)
    }

    /// The reloader of `key`, and whether this call made its first load.
    async fn entry(&self, key: &K) -> Result<(Reloader<S>, bool), KeyedError> {
        let inner = &self.inner;
        if let Some(reloader) = inner.entries.get(key).await {
            return Ok((reloader, false));
        }
        if let Some(failure) = inner.failures.get(key) {
            let now = Instant::now();
            if now < failure.until {
                return Err(failure.error.clone());
            }
        }
        let this = self.clone();
        let first = key.clone();
        let entry = inner
            .entries
            .entry(key.clone())
            .or_try_insert_with(async move { this.first_load(first).await })
            .await
            .map_err(|e| (*e).clone())?;
        let fresh = entry.is_fresh();
        Ok((entry.into_value(), fresh))
    }

    /// Saves `settings` as `key`'s and tells every process, under that
    /// key's writers' lease (see [`Reloader::publish`]). A key never
    /// loaded (a new tenant) needs no load first, and stays unloaded: its
    /// next check loads what the source holds, so a write that failed
    /// (the settings never saved) is never served, here or elsewhere.
    pub async fn publish(&self, key: &K, settings: S) -> Result<Generation, KeyedError>
    where
        S: Clone,
    {
        let reloader = match self.inner.entries.get(key).await {
            Some(reloader) => reloader,
            // A writer only, never cached: the settings it is built with
            // are not saved yet (and may never be), so no check may serve
            // them; its `current` is never read.
            None => self.build(key, settings.clone())?,
        };
        reloader
            .publish(settings)
            .await
            .map_err(|e| KeyedError::Publish(Arc::new(e)))
    }

    /// Loads `key`'s settings from the source, applies `change`, saves and
    /// tells every process, under that key's writers' lease (see
    /// [`Reloader::update`]).
    pub async fn update(
        &self,
        key: &K,
        change: impl FnOnce(&S) -> S + Send + 'static,
    ) -> Result<Generation, KeyedError> {
        let reloader = self.reloader(key).await?;
        reloader
            .update(change)
            .await
            .map_err(|e| KeyedError::Publish(Arc::new(e)))
    }

    /// Drops `key`'s reloader and settings here (a deleted tenant, say):
    /// its next use loads it again. Other processes are not told; bump the
    /// key for that.
    pub async fn forget(&self, key: &K) {
        self.inner.entries.invalidate(key).await;
        self.inner.failures.invalidate(key);
    }

    /// The key a member's generation is stored under.
    pub fn key_of(&self, key: &K) -> Result<Key, KeyedError> {
        let id = (self.inner.id)(key);
        self.inner
            .set
            .member(&id)
            .map_err(|e| KeyedError::InvalidKey {
                id,
                reason: e.to_string(),
            })
    }

    /// The set's key: the parent generation every member's check reads
    /// too; bumping it (`Synchronizer::mark_updated` on it, or `gensync
    /// bump`) reloads every key on its next use.
    pub fn parent(&self) -> &Key {
        &self.inner.set
    }

    /// Counters over every key: checks, reloads, failures.
    pub fn metrics(&self) -> ReloadMetrics {
        self.inner.counters.snapshot()
    }

    /// How many keys have a reloader cached now (moka's estimate).
    pub fn cached_keys(&self) -> u64 {
        self.inner.entries.entry_count()
    }

    /// Loads a key's settings for the first time: the generation observed
    /// before the load is recorded only once it succeeded, as a
    /// [`Reloader`] does.
    async fn first_load(&self, key: K) -> Result<Reloader<S>, KeyedError> {
        let inner = &self.inner;
        let sync = self.synchronizer(&key)?;
        let name = sync.key().to_string();
        inner.counters.loader_runs.add();
        // Read first: the key usually exists (another instance made it, or
        // this one before the key was evicted here). With no generation to
        // read, load all the same: the settings then carry none until a
        // check finds the key unchanged.
        let observed = match sync.check().await.shared {
            Observed::Value(g) => Some(g),
            // Unreachable: one timeout is enough to know it.
            Observed::Unavailable => None,
            Observed::Missing | Observed::Corrupt => sync.fetch_or_create().await.ok(),
        };
        // On a task of its own: a panicking loader fails this load only, a
        // request that stops waiting cancels nothing, and a loader that
        // outlasts its bound is aborted.
        let loader = Arc::clone(&inner.loader);
        let loading = key.clone();
        let loaded = load_within(inner.config.load_timeout, async move {
            loader.load(loading).await
        })
        .await;
        let settings = match loaded {
            Ok(settings) => settings,
            Err(problem) => {
                return Err(self.failed(key, name, problem.into_cause().to_string()));
            }
        };
        if let Some(g) = observed {
            sync.record(g);
        }
        inner.counters.reloads.add();
        inner.failures.invalidate(&key);
        self.build_with(key, sync, settings, observed)
    }

    /// Remembers a failed first load, so requests wait out a backoff that
    /// doubles with each failure rather than each running the loader.
    fn failed(&self, key: K, name: String, reason: String) -> KeyedError {
        let inner = &self.inner;
        inner.counters.reload_failures.add();
        let (attempts, mut backoff) = match inner.failures.get(&key) {
            Some(last) => (last.attempts + 1, last.backoff),
            None => (1, inner.config.backoff()),
        };
        let pause = backoff.grow(inner.config.backoff_max);
        let error = KeyedError::Unavailable {
            key: name.clone(),
            reason: reason.clone(),
            retry_in: pause,
        };
        if attempts == 1 {
            tracing::error!(key = %name, error = %reason, "gensync could not load a key's settings; it is tried again on a later request");
        } else {
            tracing::debug!(key = %name, error = %reason, attempts, "gensync could not load a key's settings again");
        }
        inner.failures.insert(
            key,
            Failure {
                attempts,
                backoff,
                until: Instant::now() + pause,
                error: error.clone(),
            },
        );
        error
    }

    /// A reloader for `key` serving `settings`, nothing recorded.
    fn build(&self, key: &K, settings: S) -> Result<Reloader<S>, KeyedError> {
        let sync = self.synchronizer(key)?;
        self.build_with(key.clone(), sync, settings, None)
    }

    fn build_with(
        &self,
        key: K,
        sync: Synchronizer<Arc<dyn Backend>>,
        settings: S,
        loaded_at: Option<Generation>,
    ) -> Result<Reloader<S>, KeyedError> {
        let inner = &self.inner;
        let mut config = inner.config.clone();
        if config.mode.pushes() && self.tracking().is_none() {
            // Logged once for the set, not once per key.
            config.mode = config.mode.without_push();
        }
        let loader = KeyLoader {
            loader: Arc::clone(&inner.loader),
            key: key.clone(),
        };
        let builder = Reloader::builder(sync, loader).shared(config, Arc::clone(&inner.counters));
        let builder = match &inner.saver {
            Some(saver) => builder.saver(KeySaver {
                saver: Arc::clone(saver),
                key,
            }),
            None => builder,
        };
        // The configuration was checked when the keyed reloader was built.
        builder
            .build_at(settings, loaded_at)
            .map_err(|e| KeyedError::Unavailable {
                key: inner.set.to_string(),
                reason: e.to_string(),
                retry_in: Duration::ZERO,
            })
    }

    /// The synchronizer of `key`: its member key, read with the set's
    /// parent generation, fed to the set's tracking in push mode.
    fn synchronizer(&self, key: &K) -> Result<Synchronizer<Arc<dyn Backend>>, KeyedError> {
        let inner = &self.inner;
        let member = self.key_of(key)?;
        let mut sync = Synchronizer::new(Arc::clone(&inner.backend), member.clone())
            .with_parent(inner.set.clone());
        if let Some(ttl) = inner.ttl {
            sync = sync.with_ttl(ttl).map_err(|e| KeyedError::InvalidKey {
                id: member.to_string(),
                reason: e.to_string(),
            })?;
        }
        if inner.config.mode.pushes() {
            if let Some(set) = self.tracking() {
                sync = sync.fed_tracker(set.member(&member));
            }
        }
        Ok(sync)
    }

    /// Push mode's tracking of the whole set: one subscription for every
    /// member and the parent, started on first use inside a runtime.
    fn tracking(&self) -> Option<&Arc<TrackerSet>> {
        let inner = &self.inner;
        if tokio::runtime::Handle::try_current().is_err() {
            return inner.tracking.get().and_then(Option::as_ref);
        }
        inner
            .tracking
            .get_or_init(|| {
                let set = TrackerSet::new(
                    vec![inner.set.member_prefix(), inner.set.as_str().to_owned()],
                    vec![inner.set.as_str().to_owned()],
                );
                if inner.backend.track_set(&set) {
                    Some(set)
                } else {
                    tracing::info!(key = %inner.set, "gensync push mode: this backend cannot push changes to a set of keys; checking each key on every request (strict)");
                    None
                }
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tokio::sync::Notify;

    use super::*;
    use crate::backend::MemoryBackend;

    /// Tells when the loader's future is dropped: it ran to its end, or
    /// its task was aborted.
    struct Dropped(Arc<Notify>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.notify_one();
        }
    }

    #[tokio::test]
    async fn a_first_load_that_timed_out_is_aborted() {
        let dropped = Arc::new(Notify::new());
        let seen = Arc::clone(&dropped);
        let keyed = KeyedReloader::builder(
            MemoryBackend::new(),
            Key::new(["tenants"]).unwrap(),
            |tenant: &u32| tenant.to_string(),
            move |_tenant: u32| {
                let guard = Dropped(Arc::clone(&seen));
                async move {
                    let _guard = guard;
                    std::future::pending::<Result<u32, Infallible>>().await
                }
            },
        )
        .load_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
        let err = keyed.check(&1).await.unwrap_err();
        assert!(
            matches!(&err, KeyedError::Unavailable { reason, .. } if reason.contains("did not finish within")),
            "{err}"
        );
        // A hung loader left running would hold its connection (and its
        // task) for ever; aborted, its future is dropped. The bound only
        // ends a failing run.
        tokio::time::timeout(Duration::from_secs(5), dropped.notified())
            .await
            .expect("the loader that timed out was left running, not aborted");
    }
}
