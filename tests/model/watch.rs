//! A backend wrapper for the writers' processes that notes when each lease
//! is let go, and how far the store's fencing tokens had gone by then: a
//! write runs on a task of its own, so its caller may hear `Ok` after the
//! next writer already took the lease and saved, and only the release
//! tells what the write itself saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gensync::backend::{Backend, Fence, Stored};
use gensync::{BackendError, Generation, Key};

use super::world::World;

/// Per lease (by its fencing token): the greatest token the store had
/// accepted when the lease was released.
#[derive(Default)]
pub struct Releases {
    tokens: Mutex<HashMap<Generation, Fence>>,
    at_release: Mutex<HashMap<Fence, Fence>>,
}

impl Releases {
    /// The greatest accepted token when the lease with `fence` was let go,
    /// if its release got through.
    pub fn top_at_release(&self, fence: Fence) -> Option<Fence> {
        self.at_release.lock().unwrap().get(&fence).copied()
    }
}

/// Delegates every call, noting leases taken and released in the world's
/// [`Releases`].
#[derive(Clone)]
pub struct Watched<B> {
    pub inner: B,
    pub world: Arc<World>,
}

#[async_trait]
impl<B: Backend> Backend for Watched<B> {
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        self.inner.get(key).await
    }
    async fn add(&self, key: &Key, g: Generation, ttl: Duration) -> Result<bool, BackendError> {
        self.inner.add(key, g, ttl).await
    }
    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        self.inner.incr(key, step, ttl, finished).await
    }
    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        let taken = self.inner.lock(key, token, ttl).await?;
        if let Some(fence) = taken {
            self.world
                .releases
                .tokens
                .lock()
                .unwrap()
                .insert(token, fence);
        }
        Ok(taken)
    }
    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.renew(key, token, ttl, key_ttl).await
    }
    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        let released = self.inner.unlock(key, token).await?;
        let fence = self
            .world
            .releases
            .tokens
            .lock()
            .unwrap()
            .get(&token)
            .copied();
        if let Some(fence) = fence {
            let top = self.world.top_fence();
            self.world
                .releases
                .at_release
                .lock()
                .unwrap()
                .insert(fence, top);
        }
        Ok(released)
    }
    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        self.inner.intend(key, token, ttl, key_ttl).await
    }
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
}
