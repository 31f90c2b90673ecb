//! A backend in process memory, for single-process services and tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Backend, BlockingBackend, Stored};
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::Key;

/// A store in process memory, shared by every clone.
///
/// Every synchronizer holding a clone of one `MemoryBackend` sees the
/// others' bumps, as processes sharing a Redis server would. Times to live
/// are honoured (on `tokio`'s clock, so tests can pause and advance it).
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
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

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
    pub fn insert_raw(&self, key: &Key, value: impl Into<String>) {
        self.lock().insert(
            key.as_str().to_owned(),
            Entry {
                value: value.into(),
                expires_at: None,
            },
        );
    }

    /// Removes a key as an eviction would, returning whether it was there.
    #[cfg(any(test, feature = "testing"))]
    pub fn evict(&self, key: &Key) -> bool {
        let now = Instant::now();
        self.lock()
            .remove(key.as_str())
            .is_some_and(|e| e.is_live(now))
    }

    /// The time left before a key expires: `None` when the key is missing or
    /// has no time to live.
    pub fn ttl(&self, key: &Key) -> Option<Duration> {
        let now = Instant::now();
        let entries = self.lock();
        let entry = entries.get(key.as_str()).filter(|e| e.is_live(now))?;
        entry.expires_at.map(|at| at - now)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic elsewhere while holding the lock cannot leave a map entry
        // half-written, so the data is still good.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry at a key, dropping it if it has expired.
    fn live<'a>(entries: &'a mut HashMap<String, Entry>, key: &Key) -> Option<&'a mut Entry> {
        let now = Instant::now();
        if entries.get(key.as_str()).is_some_and(|e| !e.is_live(now)) {
            entries.remove(key.as_str());
        }
        entries.get_mut(key.as_str())
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
        let mut entries = self.lock();
        Ok(match Self::live(&mut entries, key) {
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
        let mut entries = self.lock();
        if Self::live(&mut entries, key).is_some() {
            return Ok(false);
        }
        entries.insert(
            key.as_str().to_owned(),
            Entry {
                value: generation.to_string(),
                expires_at: Some(Instant::now() + ttl),
            },
        );
        Ok(true)
    }

    async fn incr(&self, key: &Key, ttl: Duration) -> Result<Stored, BackendError> {
        let mut entries = self.lock();
        let Some(entry) = Self::live(&mut entries, key) else {
            return Ok(Stored::Missing);
        };
        let bumped = match classify(&entry.value) {
            // Redis refuses to increment past i64::MAX; so does this.
            Stored::Value(g) if g.get() < i64::MAX as u64 => Generation::new(g.get() + 1),
            _ => None,
        };
        let Some(bumped) = bumped else {
            return Ok(Stored::Corrupt);
        };
        entry.value = bumped.to_string();
        entry.expires_at = Some(Instant::now() + ttl);
        Ok(Stored::Value(bumped))
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.lock().remove(key.as_str());
        Ok(())
    }

    async fn expire(&self, key: &Key, ttl: Duration) -> Result<bool, BackendError> {
        let mut entries = self.lock();
        Ok(match Self::live(&mut entries, key) {
            Some(entry) => {
                entry.expires_at = Some(Instant::now() + ttl);
                true
            }
            None => false,
        })
    }

    async fn delete_if(&self, key: &Key, expected: Generation) -> Result<bool, BackendError> {
        let mut entries = self.lock();
        let holds = Self::live(&mut entries, key)
            .is_some_and(|e| classify(&e.value) == Stored::Value(expected));
        if holds {
            entries.remove(key.as_str());
        }
        Ok(holds)
    }
}

impl BlockingBackend for MemoryBackend {}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(["memory", "test"]).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn honours_time_to_live() {
        let backend = MemoryBackend::new();
        let g = Generation::fresh();
        assert!(backend
            .add(&key(), g, Duration::from_secs(10))
            .await
            .unwrap());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Value(g));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
        // An expired key is absent for add, too.
        assert!(backend
            .add(&key(), g, Duration::from_secs(10))
            .await
            .unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn incr_resets_the_time_to_live() {
        let backend = MemoryBackend::new();
        let g = Generation::fresh();
        backend
            .add(&key(), g, Duration::from_secs(10))
            .await
            .unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        let bumped = backend.incr(&key(), Duration::from_secs(10)).await.unwrap();
        assert_eq!(bumped, Stored::Value(Generation::new(g.get() + 1).unwrap()));
        assert_eq!(backend.ttl(&key()), Some(Duration::from_secs(10)));
    }

    #[tokio::test]
    async fn incr_leaves_missing_and_corrupt_keys_alone() {
        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(10);
        assert_eq!(backend.incr(&key(), ttl).await.unwrap(), Stored::Missing);
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
        for raw in ["garbage", "9223372036854775807"] {
            backend.insert_raw(&key(), raw);
            assert_eq!(
                backend.incr(&key(), ttl).await.unwrap(),
                Stored::Corrupt,
                "{raw}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expire_sets_the_time_to_live_of_existing_keys_only() {
        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(5);
        assert!(!backend.expire(&key(), ttl).await.unwrap());
        backend
            .add(&key(), Generation::fresh(), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(backend.expire(&key(), ttl).await.unwrap());
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
    }

    #[tokio::test]
    async fn delete_if_removes_only_the_expected_value() {
        let backend = MemoryBackend::new();
        let mine = Generation::fresh();
        let theirs = Generation::fresh();
        backend
            .add(&key(), theirs, Duration::from_secs(60))
            .await
            .unwrap();
        assert!(!backend.delete_if(&key(), mine).await.unwrap());
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Value(theirs));
        assert!(backend.delete_if(&key(), theirs).await.unwrap());
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
    }

    #[tokio::test]
    async fn clones_share_one_store() {
        let a = MemoryBackend::new();
        let b = a.clone();
        let g = Generation::fresh();
        a.add(&key(), g, Duration::from_secs(10)).await.unwrap();
        assert_eq!(b.get(&key()).await.unwrap(), Stored::Value(g));
        assert!(b.evict(&key()));
        assert_eq!(a.get(&key()).await.unwrap(), Stored::Missing);
    }
}
