//! Reads of many keys' generations sent together: every member's
//! synchronizer of one keyed reloader reads through one [`Batched`]
//! backend, whose reads (of a key with its parent, or of one key) wait for
//! the next batch.
//!
//! One batch is in flight at a time. A read that arrives while one is in
//! flight waits for the next, sent the moment the one in flight returns
//! (or at once when none is): so a read is only ever answered by a batch
//! taken after it arrived, and began after it, which keeps strict mode's
//! promise (a check is answered by a read that began after it arrived)
//! across keys as each reloader keeps it for its own. A batch reads each
//! key it needs once (the parent once for every member), at most
//! [`BATCH_KEYS`] keys; the rest wait for the next. Batches run on a task
//! of their own, so a caller that stops waiting cancels nothing the others
//! wait for.

use std::collections::HashMap;
use std::mem;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::backend::{Backend, Stored, Tracker, TrackerSet};
use crate::error::{BackendError, BackendErrorKind};
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;
use crate::unpoisoned::lock;

/// The most distinct keys one batch reads.
pub(super) const BATCH_KEYS: usize = 512;

/// What a batch answers a read: each of its keys' values, in order.
type Answer = Result<Vec<Stored>, BackendError>;

/// A read waiting for a batch: one key, or a key and its parent.
struct Waiter {
    keys: Vec<Key>,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Queue {
    /// Whether a task is sending batches (one at a time).
    running: bool,
    /// The reads that arrived since the batch in flight was taken.
    next: Vec<Waiter>,
}

/// A backend whose reads ([`get`](Backend::get),
/// [`get_with_parent`](Backend::get_with_parent)) go out in batches
/// ([`Backend::get_many`]); every other call passes through.
pub(super) struct Batched {
    inner: Arc<dyn Backend>,
    queue: Arc<Mutex<Queue>>,
}

impl Batched {
    pub(super) fn new(inner: Arc<dyn Backend>) -> Self {
        Batched {
            inner,
            queue: Arc::default(),
        }
    }

    /// Queues the read for the next batch, starting the batches' task if
    /// none runs. `None` outside a runtime: read alone then.
    fn enqueue(&self, keys: &[&Key]) -> Option<oneshot::Receiver<Answer>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (answer, answered) = oneshot::channel();
        let mut queue = lock(&self.queue);
        queue.next.push(Waiter {
            keys: keys.iter().map(|k| (*k).clone()).collect(),
            answer,
        });
        if !mem::replace(&mut queue.running, true) {
            let (inner, shared) = (Arc::clone(&self.inner), Arc::clone(&self.queue));
            runtime.spawn(send_batches(inner, shared));
        }
        Some(answered)
    }

    /// Reads `keys` in the next batch: `None` outside a runtime.
    async fn batched(&self, keys: &[&Key]) -> Option<Answer> {
        let answered = self.enqueue(keys)?;
        Some(answered.await.unwrap_or_else(|_| {
            Err(BackendError::new(
                BackendErrorKind::Server,
                keys[0].to_string(),
                "the batch that read this key ended without an answer",
            ))
        }))
    }
}

/// Sends batches, one at a time, until none waits.
async fn send_batches(backend: Arc<dyn Backend>, queue: Arc<Mutex<Queue>>) {
    let mut stop = Stop {
        queue: Arc::clone(&queue),
        armed: true,
    };
    loop {
        let batch = {
            let mut queue = lock(&queue);
            if queue.next.is_empty() {
                queue.running = false;
                stop.armed = false;
                return;
            }
            take(&mut queue.next)
        };
        send(&*backend, batch).await;
    }
}

/// The first waiters of `next` whose keys (counted once each) fit in one
/// batch; at least one.
fn take(next: &mut Vec<Waiter>) -> Vec<Waiter> {
    let mut seen = std::collections::HashSet::new();
    let mut count = 0;
    for waiter in next.iter() {
        let added = waiter.keys.iter().filter(|k| !seen.contains(*k)).count();
        if count > 0 && seen.len() + added > BATCH_KEYS {
            break;
        }
        seen.extend(waiter.keys.iter().cloned());
        count += 1;
    }
    let rest = next.split_off(count);
    mem::replace(next, rest)
}

/// Reads what `batch` needs, each key once, and answers each waiter; a
/// failure answers each the error its own read would have had.
async fn send(backend: &dyn Backend, batch: Vec<Waiter>) {
    let mut keys = Vec::new();
    let mut places = HashMap::new();
    let mut place = |key: &Key| {
        *places.entry(key.clone()).or_insert_with(|| {
            keys.push(key.clone());
            keys.len() - 1
        })
    };
    let wanted: Vec<Vec<usize>> = batch
        .iter()
        .map(|w| w.keys.iter().map(&mut place).collect())
        .collect();
    let read = backend.get_many(&keys).await.and_then(|stored| {
        if stored.len() == keys.len() {
            Ok(stored)
        } else {
            Err(BackendError::new(
                BackendErrorKind::Server,
                keys[0].to_string(),
                "a read of many keys answered for a different number of keys",
            ))
        }
    });
    for (waiter, places) in batch.into_iter().zip(wanted) {
        let answer = match &read {
            Ok(stored) => Ok(places.into_iter().map(|at| stored[at]).collect()),
            Err(e) => Err(e.clone()),
        };
        // A waiter that stopped waiting needs no answer.
        let _ = waiter.answer.send(answer);
    }
}

/// Lets the next read start the task again if this one ends early (a
/// panicking backend, a runtime shutting down): the waiters it leaves are
/// answered with an error (their senders dropped) rather than never.
struct Stop {
    queue: Arc<Mutex<Queue>>,
    armed: bool,
}

impl Drop for Stop {
    fn drop(&mut self) {
        if self.armed {
            let mut queue = lock(&self.queue);
            queue.running = false;
            queue.next.clear();
        }
    }
}

#[async_trait]
impl Backend for Batched {
    /// In the next batch (a parent read as a member is created, say).
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        match self.batched(&[key]).await {
            Some(read) => Ok(read?[0]),
            None => self.inner.get(key).await,
        }
    }

    /// In the next batch.
    async fn get_with_parent(
        &self,
        key: &Key,
        parent: &Key,
    ) -> Result<(Stored, Stored), BackendError> {
        match self.batched(&[key, parent]).await {
            Some(read) => {
                let read = read?;
                Ok((read[0], read[1]))
            }
            None => self.inner.get_with_parent(key, parent).await,
        }
    }

    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Stored>, BackendError> {
        self.inner.get_many(keys).await
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.add(key, generation, ttl).await
    }

    async fn add_replicated(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.add_replicated(key, generation, ttl).await
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
        self.inner.lock(key, token, ttl).await
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
        self.inner.unlock(key, token).await
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

    fn identity(&self, key: &Key) -> (u64, Option<u64>) {
        self.inner.identity(key)
    }

    fn track(&self, key: &Key, tracker: &Arc<Tracker>) -> bool {
        self.inner.track(key, tracker)
    }

    fn track_set(&self, set: &Arc<TrackerSet>) -> bool {
        self.inner.track_set(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::testing::FaultyBackend;
    use tokio::time::timeout;

    fn key(name: &str) -> Key {
        Key::new([name]).unwrap()
    }

    /// Every read takes 100 ms (paused time), so a batch stays in flight
    /// while the test acts.
    async fn slow() -> (Arc<Batched>, [Generation; 3]) {
        let memory = MemoryBackend::new();
        let mut stored = Vec::new();
        for name in ["one", "two", "parent"] {
            let g = Generation::fresh();
            memory
                .add(&key(name), g, Duration::from_secs(60))
                .await
                .unwrap();
            stored.push(g);
        }
        let faulty = FaultyBackend::new(memory);
        faulty.faults().latency(Duration::from_millis(100));
        let batched = Arc::new(Batched::new(Arc::new(faulty)));
        (batched, stored.try_into().unwrap())
    }

    fn read(
        batched: &Arc<Batched>,
        name: &str,
    ) -> tokio::task::JoinHandle<Result<(Stored, Stored), BackendError>> {
        let (batched, name) = (Arc::clone(batched), key(name));
        tokio::spawn(async move { batched.get_with_parent(&name, &key("parent")).await })
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_read_cancels_nothing_others_wait_for() {
        let (batched, [one, two, parent]) = slow().await;
        // The read whose call started the batches' task, and one queued
        // beside the read that stays, both dropped.
        let first = read(&batched, "one");
        tokio::task::yield_now().await;
        let dropped = read(&batched, "one");
        let kept = read(&batched, "two");
        tokio::task::yield_now().await;
        first.abort();
        dropped.abort();
        let answer = timeout(Duration::from_secs(5), kept)
            .await
            .expect("answered")
            .unwrap()
            .unwrap();
        assert_eq!(answer, (Stored::Value(two), Stored::Value(parent)));
        // And the task still serves the next read.
        let again = read(&batched, "one").await.unwrap().unwrap();
        assert_eq!(again, (Stored::Value(one), Stored::Value(parent)));
    }
}
