//! A backend in process memory, for single-process services and tests;
//! how it pushes changes to trackers is in `track.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Backend, BlockingBackend, Stored, Tracker};
use crate::error::BackendError;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;
use crate::unpoisoned::lock;

mod track;

use self::track::{Held, Locked};

/// A store in process memory, shared by every clone.
///
/// Every synchronizer holding a clone of one `MemoryBackend` sees the
/// others' bumps, as processes sharing a Redis server would. Times to live
/// are honoured (on `tokio`'s clock, so tests can pause and advance it).
///
/// It can push ([`Backend::track`]): every change of a tracked key reaches
/// its trackers before the call that made it returns, and a read is
/// vouched for exactly until the key lapses.
///
/// ```
/// use gensync::{GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), gensync::Error> {
/// let backend = MemoryBackend::new();
/// let key = Key::new(["site", "settings"])?;
/// let a = Synchronizer::new(backend.clone(), key.clone());
/// let b = Synchronizer::new(backend, key);
/// a.refresh().await?;
/// b.refresh().await?;
/// b.mark_updated().await?;
/// assert!(a.is_expired().await);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Default)]
pub struct MemoryBackend {
    store: Arc<Mutex<Locked>>,
    /// Restores so far: each is a restart of a server that went back in
    /// time. Apart from the store, so a check reads it without the lock.
    epoch: Arc<AtomicU64>,
}

/// Everything the backend stores, so each operation is atomic as a Redis
/// script is.
#[derive(Clone, Debug, Default)]
struct Store {
    /// Generations, leases and fencing tokens, by rendered key.
    entries: HashMap<String, Entry>,
    /// Pending writers' intents (token, lapse), by generation key.
    intents: HashMap<String, Vec<(Generation, Instant)>>,
}

/// Everything a [`MemoryBackend`] stored at one moment, to go back to with
/// [`MemoryBackend::restore`], as a Redis server restarted from an older
/// snapshot does.
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
#[derive(Clone, Debug)]
pub struct SavePoint(Store);

#[derive(Clone, Debug)]
struct Entry {
    value: String,
    expires_at: Option<Instant>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores raw text at a key, with no time to live: for tests that need
    /// a corrupt value.
    #[cfg(any(test, feature = "testing"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn insert_raw(&self, key: &Key, value: impl Into<String>) {
        self.state().entries.insert(
            key.as_str().to_owned(),
            Entry {
                value: value.into(),
                expires_at: None,
            },
        );
    }

    /// Removes a key as an eviction would, returning whether it was there.
    #[cfg(any(test, feature = "testing"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn evict(&self, key: &Key) -> bool {
        let now = Instant::now();
        self.state()
            .entries
            .remove(key.as_str())
            .is_some_and(|e| e.is_live(now))
    }

    /// A copy of everything stored now.
    #[cfg(any(test, feature = "testing"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn save_point(&self) -> SavePoint {
        SavePoint(self.state().clone())
    }

    /// Goes back to `point`, as a server restarted from that snapshot: what
    /// was stored since is gone, and the [epoch](Backend::epoch) moves, as
    /// every client's connection would have been to a new server.
    #[cfg(any(test, feature = "testing"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
    pub fn restore(&self, point: &SavePoint) {
        let mut store = self.state();
        *store = point.0.clone();
        // Moved under the lock, so the push as it is let go tells the
        // trackers of the new epoch.
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// The time left before a key expires: `None` when the key is missing or
    /// has no time to live.
    pub fn ttl(&self, key: &Key) -> Option<Duration> {
        let now = Instant::now();
        let store = self.state();
        let entry = store.entries.get(key.as_str()).filter(|e| e.is_live(now))?;
        entry.expires_at.map(|at| at - now)
    }

    /// The store, locked. Every change made through it reaches the
    /// trackers as it is let go, so each operation tells them before it
    /// returns, whichever operation it is.
    fn state(&self) -> Held<'_> {
        // A panic elsewhere while holding the lock cannot leave a map entry
        // half-written, so the data is still good.
        Held::new(lock(&self.store), &self.epoch)
    }
}

impl Store {
    /// The live entry at a key, dropping it if it has expired.
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.entries.get(key).is_some_and(|e| !e.is_live(now)) {
            self.entries.remove(key);
        }
        self.entries.get_mut(key)
    }

    /// Gives the generation `ttl` to live, or less while an intent is
    /// pending: until the earliest one lapses.
    fn settle(&mut self, key: &Key, now: Instant, ttl: Duration) {
        let mut lapse = now + ttl;
        if let Some(pending) = self.intents.get_mut(key.as_str()) {
            pending.retain(|(_, at)| *at > now);
            if let Some(first) = pending.iter().map(|(_, at)| *at).min() {
                lapse = lapse.min(first);
            }
            if pending.is_empty() {
                self.intents.remove(key.as_str());
            }
        }
        if let Some(entry) = self.live(key.as_str(), now) {
            entry.expires_at = Some(lapse);
        }
    }

    fn drop_intent(&mut self, key: &Key, token: Generation) {
        if let Some(pending) = self.intents.get_mut(key.as_str()) {
            pending.retain(|(t, _)| *t != token);
        }
    }

    /// The next fencing token: past every earlier one, and past the clock in
    /// microseconds, as the Redis script does.
    fn next_fence(&mut self, key: &Key) -> Fence {
        let fence_key = key.companion("fence");
        let last = self
            .entries
            .get(fence_key.as_str())
            .and_then(|e| e.value.parse::<u64>().ok())
            .unwrap_or(0);
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let next = last.saturating_add(1).max(micros);
        self.entries.insert(
            fence_key.as_str().to_owned(),
            Entry {
                value: next.to_string(),
                expires_at: None,
            },
        );
        Fence::new(next)
    }
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

fn classify(value: &str) -> Stored {
    match Generation::parse_stored(value.as_bytes()) {
        Some(g) => Stored::Value(g),
        None => Stored::Corrupt,
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        let now = Instant::now();
        Ok(match self.state().live(key.as_str(), now) {
            Some(entry) => classify(&entry.value),
            None => Stored::Missing,
        })
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let mut store = self.state();
        if store.live(key.as_str(), now).is_some() {
            return Ok(false);
        }
        store.entries.insert(
            key.as_str().to_owned(),
            Entry {
                value: generation.to_string(),
                expires_at: None,
            },
        );
        store.settle(key, now, ttl);
        Ok(true)
    }

    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        let now = Instant::now();
        let mut store = self.state();
        // Ended whatever follows: a repair of the key is the writer's bump.
        if let Some(token) = finished {
            store.drop_intent(key, token);
        }
        let Some(entry) = store.live(key.as_str(), now) else {
            return Ok(Stored::Missing);
        };
        // Redis refuses to go past i64::MAX; so does this.
        let bumped = match classify(&entry.value) {
            Stored::Value(g) => g
                .get()
                .checked_add(step)
                .filter(|v| *v <= i64::MAX as u64)
                .and_then(Generation::new),
            _ => None,
        };
        let Some(bumped) = bumped else {
            return Ok(Stored::Corrupt);
        };
        entry.value = bumped.to_string();
        store.settle(key, now, ttl);
        Ok(Stored::Value(bumped))
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.state().entries.remove(key.as_str());
        Ok(())
    }

    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        let now = Instant::now();
        let lock_key = key.companion("lock");
        let mut store = self.state();
        if store
            .live(lock_key.as_str(), now)
            .is_some_and(|holder| holder.value != token.to_string())
        {
            return Ok(None);
        }
        // Free, or already this writer's (a call sent twice): taken anew.
        store.entries.insert(
            lock_key.as_str().to_owned(),
            Entry {
                value: token.to_string(),
                expires_at: Some(now + ttl),
            },
        );
        Ok(Some(store.next_fence(key)))
    }

    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        let now = Instant::now();
        let lock_key = key.companion("lock");
        let mut store = self.state();
        match store.live(lock_key.as_str(), now) {
            Some(holder) if holder.value == token.to_string() => {
                holder.expires_at = Some(now + ttl);
            }
            _ => return Ok(false),
        }
        let intent = store
            .intents
            .get_mut(key.as_str())
            .and_then(|pending| pending.iter_mut().find(|(t, _)| *t == token));
        if let Some(intent) = intent {
            intent.1 = now + ttl;
            store.settle(key, now, key_ttl);
        }
        Ok(true)
    }

    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        let now = Instant::now();
        let lock_key = key.companion("lock");
        let mut store = self.state();
        let released = key.companion("released");
        let holds = store
            .live(lock_key.as_str(), now)
            .is_some_and(|e| e.value == token.to_string());
        if holds {
            store.entries.remove(lock_key.as_str());
            // As the Redis script: a release sent twice answers the same.
            store.entries.insert(
                released.as_str().to_owned(),
                Entry {
                    value: token.to_string(),
                    expires_at: Some(now + Duration::from_secs(60)),
                },
            );
            return Ok(true);
        }
        Ok(store
            .live(released.as_str(), now)
            .is_some_and(|e| e.value == token.to_string()))
    }

    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        let now = Instant::now();
        let mut store = self.state();
        store.drop_intent(key, token);
        store
            .intents
            .entry(key.as_str().to_owned())
            .or_default()
            .push((token, now + ttl));
        store.settle(key, now, key_ttl);
        Ok(())
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Always starts, with no task: every operation pushes its change to
    /// the key's trackers before it returns, and a read is vouched for
    /// until the key lapses (a key with no lapse, until it changes).
    fn track(&self, key: &Key, tracker: &Arc<Tracker>) -> bool {
        self.state().track(key, tracker);
        true
    }
}

impl BlockingBackend for MemoryBackend {}

#[cfg(test)]
mod tests;
