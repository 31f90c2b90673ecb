//! The stores the suite runs on: a shared backend seen from several
//! "processes", with ways to corrupt and evict keys behind their backs.

use std::time::Duration;

use crate::backend::{Backend, MemoryBackend};
use crate::key::Key;

/// A shared store, seen from several "processes": what a backend author
/// implements to run the [conformance suite](crate::testing::conformance)
/// on a backend.
///
/// Every promise gets a fresh store and uses one key,
/// [`key`](crate::testing::conformance::key).
pub trait Store {
    /// The backend under test.
    type Backend: Backend + Clone;

    /// A backend handle as a new process would have it: for Redis, a new
    /// client with its own connection.
    fn process(&self) -> Self::Backend;
    /// Stores raw text at the key, as a stray `SET` would.
    fn write_raw(&self, key: &Key, raw: &str);
    /// Removes the key, as an eviction would.
    fn evict(&self, key: &Key);
    /// How long the key has left to live, if it exists with a lifetime.
    fn ttl(&self, key: &Key) -> Option<Duration>;
}

/// The in-memory backend as a [`Store`]: every process shares one map.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore(pub MemoryBackend);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore(MemoryBackend::new())
    }
}

impl Store for MemoryStore {
    type Backend = MemoryBackend;

    fn process(&self) -> MemoryBackend {
        self.0.clone()
    }
    fn write_raw(&self, key: &Key, raw: &str) {
        self.0.insert_raw(key, raw);
    }
    fn evict(&self, key: &Key) {
        self.0.evict(key);
    }
    fn ttl(&self, key: &Key) -> Option<Duration> {
        self.0.ttl(key)
    }
}
