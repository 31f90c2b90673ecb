//! What a [`FaultyBackend`](crate::testing::FaultyBackend) shows an
//! [`Observer`]: each call with its arguments, and its answer, before the
//! caller sees it.

use std::time::Duration;

use async_trait::async_trait;

use crate::backend::Stored;
use crate::error::BackendError;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

/// One call to a [`Backend`](crate::backend::Backend), with its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call<'a> {
    /// [`Backend::get`](crate::backend::Backend::get).
    Get {
        /// The key read.
        key: &'a Key,
    },
    /// [`Backend::get_with_parent`](crate::backend::Backend::get_with_parent).
    GetWithParent {
        /// The key read.
        key: &'a Key,
        /// Its parent, read with it.
        parent: &'a Key,
    },
    /// [`Backend::add`](crate::backend::Backend::add).
    Add {
        /// The key created.
        key: &'a Key,
        /// The value offered.
        generation: Generation,
        /// Its time to live.
        ttl: Duration,
    },
    /// [`Backend::add_replicated`](crate::backend::Backend::add_replicated).
    AddReplicated {
        /// The key created.
        key: &'a Key,
        /// The value offered.
        generation: Generation,
        /// Its time to live.
        ttl: Duration,
    },
    /// [`Backend::incr`](crate::backend::Backend::incr).
    Incr {
        /// The key bumped.
        key: &'a Key,
        /// By how much.
        step: u64,
        /// Its time to live.
        ttl: Duration,
        /// The writer's token whose intent the bump ends, if any.
        finished: Option<Generation>,
    },
    /// [`Backend::delete`](crate::backend::Backend::delete).
    Delete {
        /// The key deleted.
        key: &'a Key,
    },
    /// [`Backend::lock`](crate::backend::Backend::lock).
    Lock {
        /// The key whose writers' lease is taken.
        key: &'a Key,
        /// The writer's token.
        token: Generation,
        /// The lease's length.
        ttl: Duration,
    },
    /// [`Backend::renew`](crate::backend::Backend::renew).
    Renew {
        /// The key whose lease is renewed.
        key: &'a Key,
        /// The writer's token.
        token: Generation,
        /// The lease's new length.
        ttl: Duration,
        /// The key's time to live.
        key_ttl: Duration,
    },
    /// [`Backend::unlock`](crate::backend::Backend::unlock).
    Unlock {
        /// The key whose lease is released.
        key: &'a Key,
        /// The writer's token.
        token: Generation,
    },
    /// [`Backend::intend`](crate::backend::Backend::intend).
    Intend {
        /// The key the writer means to bump.
        key: &'a Key,
        /// The writer's token.
        token: Generation,
        /// How long the intent lasts.
        ttl: Duration,
        /// The key's time to live.
        key_ttl: Duration,
    },
}

/// What a call answered, as its caller will see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// A read's, or a bump's, value ([`Call::Get`], [`Call::Incr`]).
    Stored(Stored),
    /// The key's and its parent's ([`Call::GetWithParent`]).
    WithParent(Stored, Stored),
    /// Whether it took effect ([`Call::Add`], [`Call::AddReplicated`],
    /// [`Call::Renew`], [`Call::Unlock`]).
    Done(bool),
    /// The lease's fence, `None` if another writer holds it
    /// ([`Call::Lock`]).
    Lease(Option<Fence>),
    /// Nothing to tell ([`Call::Delete`], [`Call::Intend`]).
    Unit,
}

/// Sees each call a [`FaultyBackend`](crate::testing::FaultyBackend) makes,
/// with its answer, before the caller does: to note what happened (which
/// lease was taken, when it was let go), or to hold an answer back until
/// the test says (a read that began before a bump and answers after it).
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
///
/// use gensync::testing::{Answer, Call, FaultyBackend, Observer};
/// use gensync::{BackendError, GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
///
/// /// Counts the reads that found a value.
/// #[derive(Default)]
/// struct Hits(AtomicU64);
///
/// #[async_trait::async_trait]
/// impl Observer for Hits {
///     async fn answered(&self, call: Call<'_>, answer: Result<&Answer, &BackendError>) {
///         if let (Call::Get { .. }, Ok(Answer::Stored(gensync::backend::Stored::Value(_)))) = (call, answer) {
///             self.0.fetch_add(1, Ordering::Relaxed);
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), gensync::Error> {
/// let hits = Arc::new(Hits::default());
/// let backend = FaultyBackend::new(MemoryBackend::new()).observed(hits.clone());
/// let sync = Synchronizer::new(backend, Key::new(["flags"])?);
/// sync.refresh().await?;
/// assert!(!sync.is_expired().await);
/// assert_eq!(hits.0.load(Ordering::Relaxed), 1);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait Observer: Send + Sync + 'static {
    /// Called once per call, after the wrapped backend and any fault
    /// answered it, with what its caller is about to see: an injected
    /// fault's error too. The caller waits until this returns.
    async fn answered(&self, call: Call<'_>, answer: Result<&Answer, &BackendError>);
}

#[async_trait]
impl<O: Observer + ?Sized> Observer for std::sync::Arc<O> {
    async fn answered(&self, call: Call<'_>, answer: Result<&Answer, &BackendError>) {
        (**self).answered(call, answer).await;
    }
}
