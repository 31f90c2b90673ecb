//! The synchronizer: the rules for checking, creating, bumping and clearing
//! a shared generation, written once over any [`Backend`].
//!
//! - `check.rs`: what one check saw and the expiry rule;
//! - this file: the [`GenerationSynchronizer`] trait and [`Synchronizer`]
//!   (long because the trait's contract is documented method by method,
//!   beside the one implementation that keeps it);
//! - `parent.rs`: a parent generation read with the key, and the tracker
//!   a set member's reads feed;
//! - `writers.rs`: the writers' lock and intent ([`WriterLock`]);
//! - `lease.rs`: a lease as the writer holding it sees it;
//! - `writer.rs`: the writers' protocol over that lock, which every
//!   reloader writes through; `publish_error.rs`: what a failed write says;
//! - `blocking.rs`: [`BlockingSynchronizer`], for code with no runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::{Backend, Stored, Tracker};
use crate::error::{BackendError, BackendErrorKind, Error};
use crate::generation::{identity_of, Generation};
use crate::key::Key;

mod blocking;
mod check;
mod lease;
mod parent;
mod publish_error;
mod writer;
mod writers;

pub use self::blocking::BlockingSynchronizer;
pub use self::check::{Check, Observed};
pub use self::publish_error::{BoxError, PublishError, StaleFence};
pub(crate) use self::writer::{WriteSettings, Writer};
pub use self::writers::WriterLock;

/// How long a generation key lives without a bump: one year. When it
/// lapses every process reloads once, which bounds how long a key nobody
/// bumps occupies the server.
pub const DEFAULT_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How many times creating or repairing a key is tried when other processes
/// keep deleting it in between.
const TRIES: u32 = 3;

/// The largest step of a bump: 2^40, as much room as a fresh generation
/// leaves below `i64::MAX`.
const STEP_MAX: u64 = 1 << 40;

/// Keeps one process's view of a shared generation.
///
/// Readers call [`check`](Self::check) (or [`is_expired`](Self::is_expired))
/// before using their copy of the shared state, reload when it is expired,
/// and [`record`](Self::record) the generation the check observed. Writers
/// save the new state, then call [`mark_updated`](Self::mark_updated).
///
/// Readers never get an error: anything wrong reads as expired. Writers do,
/// because a writer must know its change did not propagate.
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait GenerationSynchronizer: Send + Sync {
    /// The key the generation lives at.
    fn key(&self) -> &Key;

    /// The generation this process recorded last, if any.
    fn sync_gen(&self) -> Option<Generation>;

    /// Records a generation as the one this process's state matches. Call it
    /// after a successful reload, with the generation the check that started
    /// the reload observed.
    fn record(&self, generation: Generation);

    /// Reads the shared generation and compares it with the local one.
    ///
    /// The generations a check observes (and every other method returns)
    /// are the stored values mixed with the identity of the server that
    /// holds them ([`Backend::identity`]) and with the parent's, if any:
    /// one number for one shared state in every process that reads it,
    /// however long each has run, and one never shown before for a
    /// different state, even when a server restored from an older
    /// snapshot holds an equal stored value. Nothing recorded before a
    /// change of server reads as current. Record what a check observed,
    /// and compare it with nothing else.
    async fn check(&self) -> Check;

    /// Reads the shared generation as [`check`](Self::check) observes it,
    /// with the backend's error when the read failed: for tools that must
    /// tell an operator why (a reader wants `check`, which never fails).
    async fn read(&self) -> Result<Stored, Error>;

    /// Whether the local state is out of date. Backend errors, missing and
    /// corrupt keys count as expired; this never fails.
    async fn is_expired(&self) -> bool {
        self.check().await.is_expired()
    }

    /// Fetches the shared generation, creating it with a fresh value when
    /// missing (and replacing a corrupt one). Records nothing locally.
    async fn fetch_or_create(&self) -> Result<Generation, Error>;

    /// Fetch-or-create, then record the result locally. On error a fresh
    /// value is recorded anyway, so the process reads as expired until the
    /// server agrees, and the error is returned.
    async fn refresh(&self) -> Result<Generation, Error>;

    /// Tells every process the shared state changed: atomically adds a
    /// random step to the shared generation (so a bump after the server
    /// went back in time never hands out a value a process recorded
    /// before), repairing a missing or corrupt key with a fresh value.
    /// Returns the new shared generation. Does not record it locally: this
    /// process reloads on its next check like every other one.
    async fn mark_updated(&self) -> Result<Generation, Error>;

    /// Deletes the shared generation, expiring every process.
    async fn clear(&self) -> Result<(), Error>;

    /// Starts push tracking of the key (once; later calls return the same
    /// tracker), if the backend can push its changes
    /// ([`Backend::track`]). Call it inside a tokio runtime, which runs the
    /// tracking; outside one it starts nothing and returns the tracker
    /// only if one was started before. `None` when the backend cannot:
    /// readers then read.
    fn track(&self) -> Option<Arc<Tracker>> {
        None
    }

    /// What the key holds as push tracking vouches for it now, a
    /// generation mixed with the epoch as [`check`](Self::check) would
    /// observe it: `None` unless tracking is armed, nothing changed since
    /// its last read, its heartbeat is current, and that read came from
    /// the server the backend talks to now.
    fn vouched(&self) -> Option<Stored> {
        None
    }
}

/// The [`GenerationSynchronizer`], generic over its [`Backend`].
///
/// ```
/// use gensync::{GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), gensync::Error> {
/// let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["flags"])?);
/// let check = sync.check().await;
/// assert!(check.is_expired()); // nothing loaded yet
/// let generation = sync.fetch_or_create().await?;
/// // ... load the state ...
/// sync.record(generation);
/// assert!(!sync.is_expired().await);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Synchronizer<B> {
    backend: B,
    key: Key,
    ttl: Duration,
    /// The recorded generation; 0 means none (0 is never a generation).
    local: AtomicU64,
    /// Backend failures since the last answer, for episode logging.
    failures: AtomicU64,
    /// Push tracking, once started: `None` inside when the backend cannot.
    tracker: OnceLock<Option<Arc<Tracker>>>,
    /// The parent generation read with the key, if any.
    parent: Option<Key>,
    /// Whether this synchronizer's own reads feed its tracker (a member of
    /// a tracked set, whose session reads no key itself).
    feeds_tracker: bool,
}

impl<B: Backend> Synchronizer<B> {
    /// A synchronizer for `key` with the [`DEFAULT_TTL`]. Makes no call to
    /// the backend: the first check reads as expired.
    pub fn new(backend: B, key: Key) -> Self {
        Synchronizer {
            backend,
            key,
            ttl: DEFAULT_TTL,
            local: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            tracker: OnceLock::new(),
            parent: None,
            feeds_tracker: false,
        }
    }

    /// Sets how long the key lives without a bump. At least a millisecond.
    pub fn with_ttl(mut self, ttl: Duration) -> Result<Self, Error> {
        if ttl < Duration::from_millis(1) {
            return Err(Error::Config(format!(
                "the key's time to live must be at least 1 ms, not {ttl:?}"
            )));
        }
        self.ttl = ttl;
        Ok(self)
    }

    /// The backend this synchronizer runs on.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The time to live given to the key on each create and bump.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Logs a failed backend call: an error for the first failure of an
    /// episode, debug events for the rest, so an outage under load is one
    /// error line rather than one per request.
    fn failed(&self, op: &'static str, e: BackendError) -> Error {
        let before = self.failures.fetch_add(1, Ordering::Relaxed);
        if before == 0 {
            tracing::error!(key = %self.key, op, error = %e, "gensync backend call failed; reading as expired until it answers");
        } else {
            tracing::debug!(key = %self.key, op, error = %e, failures = before + 1, "gensync backend call failed again");
        }
        Error::Backend(e)
    }

    /// Every backend reply passes here: an error is logged as part of its
    /// failure episode, and an answer to any operation ends the episode.
    fn reply<T>(&self, op: &'static str, reply: Result<T, BackendError>) -> Result<T, Error> {
        match reply {
            Ok(value) => {
                self.answered();
                Ok(value)
            }
            Err(e) => Err(self.failed(op, e)),
        }
    }

    /// Ends a failure episode, if one was running.
    fn answered(&self) {
        // A plain load first: the hot path stays read-only.
        if self.failures.load(Ordering::Relaxed) != 0 {
            let failures = self.failures.swap(0, Ordering::Relaxed);
            if failures > 0 {
                tracing::info!(key = %self.key, failures, "gensync backend answering again");
            }
        }
    }

    /// Reads the key as readers see it: a stored generation is mixed with
    /// the [identity](Backend::identity) of the server that answered, so
    /// every process shows one number for it, and after the backend moved
    /// to a different or restarted server (which may hold an older copy)
    /// nothing recorded before reads as current, whatever the value.
    /// Read again if the epoch moved during the read, which may then have
    /// been answered by either server, or if the server's identity comes
    /// with the next answer (a Cluster slot that just moved); three reads
    /// at most.
    async fn observe(&self) -> Result<Stored, Error> {
        for _ in 0..3 {
            let epoch = self.backend.epoch();
            // Taken before the read: a change after it ends what the read
            // vouches for.
            let fed = self
                .tracker
                .get()
                .and_then(Option::as_ref)
                .filter(|_| self.feeds_tracker)
                .map(|t| (t, t.ticket()));
            let stored = self.read_with_parent().await?;
            // The identity with the epoch it belongs to, read together.
            let (now, server) = self.backend.identity(&self.key);
            if let Some(server) = server.filter(|_| now == epoch) {
                if let Some((tracker, ticket)) = fed {
                    tracker.saw(ticket, stored, epoch);
                }
                return Ok(shown(stored, server));
            }
        }
        Err(Error::Backend(BackendError::new(
            BackendErrorKind::Server,
            self.key.to_string(),
            "the backend kept changing servers during the read",
        )))
    }

    /// A value this process stored, as [`observe`](Self::observe) would
    /// read it back (without the parent: see [`shown_written`](Self::shown_written)).
    async fn as_seen(&self, stored: Generation) -> Generation {
        for _ in 0..2 {
            if let (_, Some(server)) = self.backend.identity(&self.key) {
                return stored.on_server(server);
            }
            // The server's identity comes with its next answer: ask one.
            let _ = self.backend.get(&self.key).await;
        }
        // Never learnt (the slot keeps moving): a number of this process's
        // own, which matches nothing recorded before.
        stored.on_server(identity_of(self.backend.epoch(), b"gensync-unsettled"))
    }

    /// A value this process wrote, as [`observe`](Self::observe) would
    /// read it back: with the parent folded in, read again for it (and
    /// created if missing: until it exists, readers read the key as
    /// missing). If the parent cannot be read or created now, the value
    /// as readers see it with no parent: the write succeeded, and only the
    /// number shown for it may be off until the next read.
    async fn shown_written(&self, stored: Generation) -> Generation {
        let folded = match self.parent_or_create().await {
            Ok(Some(p)) => stored.with_parent(p),
            Ok(None) => stored,
            Err(e) => {
                tracing::warn!(key = %self.key, error = %e, "gensync could not read the parent generation to show the new one");
                stored
            }
        };
        self.as_seen(folded).await
    }

    /// A random step for a bump: a writer that bumps after the server went
    /// back in time (to a snapshot, or a replica that missed a bump) cannot
    /// hand out the value a process recorded before, except with odds of
    /// one in 2^40.
    fn step() -> u64 {
        rand::random_range(1..=STEP_MAX)
    }

    /// Bumps the generation, ending `finished`'s intent if given; repairs
    /// a missing or corrupt key with a fresh value. Returns the new
    /// generation as readers will observe it.
    pub(super) async fn bump(&self, finished: Option<Generation>) -> Result<Generation, Error> {
        let stored = self.bump_stored(finished).await?;
        Ok(self.shown_written(stored).await)
    }

    /// [`bump`](Self::bump), returning the value stored.
    async fn bump_stored(&self, finished: Option<Generation>) -> Result<Generation, Error> {
        for _ in 0..TRIES {
            let reply = self
                .backend
                .incr(&self.key, Self::step(), self.ttl, finished)
                .await;
            let repair = match self.reply("incr", reply)? {
                Stored::Value(g) => return Ok(g),
                Stored::Missing => false,
                Stored::Corrupt => true,
            };
            if repair {
                self.remove_corrupt().await?;
            }
            // Created by a bump: waited for like one (a reader's create in
            // `fetch_or_create` is not).
            let fresh = Generation::fresh();
            let added = self
                .backend
                .add_replicated(&self.key, fresh, self.ttl)
                .await;
            if self.reply("add", added)? {
                return Ok(fresh);
            }
            // Another process created it meanwhile; bump that one.
        }
        Err(self.contended())
    }

    /// Deletes a corrupt value so a fresh one can be added in its place.
    async fn remove_corrupt(&self) -> Result<(), Error> {
        tracing::warn!(key = %self.key, "gensync replacing a corrupt generation");
        self.reply("delete", self.backend.delete(&self.key).await)
    }

    fn contended(&self) -> Error {
        let e = Error::Contended {
            key: self.key.to_string(),
            tries: TRIES,
        };
        tracing::error!(key = %self.key, error = %e, "gensync gave up creating the key");
        e
    }

    /// Fetch-or-create that always has a generation to offer: the stored one,
    /// or the fresh candidate it tried to store, with the error if any.
    async fn fetch_or_create_with_candidate(&self) -> (Generation, Option<Error>) {
        let candidate = Generation::fresh();
        for _ in 0..TRIES {
            // A missing parent reads as a missing key: create it first.
            if let Err(e) = self.parent_or_create().await {
                return (candidate, Some(e));
            }
            match self.reply(
                "add",
                self.backend.add(&self.key, candidate, self.ttl).await,
            ) {
                // With a parent, what a reader sees needs the parent too:
                // read both back below.
                Ok(true) if self.parent.is_none() => return (self.as_seen(candidate).await, None),
                Ok(true) => {}
                Ok(false) => {}
                Err(e) => return (candidate, Some(e)),
            }
            match self.observe().await {
                Ok(Stored::Value(g)) => return (g, None),
                // Deleted between our add and get (the key, or its
                // parent): try again.
                Ok(Stored::Missing) => {}
                // Nobody can ever match garbage; replacing it only costs
                // every process one reload, which it would do anyway.
                Ok(Stored::Corrupt) => {
                    if let Err(e) = self.remove_corrupt().await {
                        return (candidate, Some(e));
                    }
                }
                Err(e) => return (candidate, Some(e)),
            }
        }
        (candidate, Some(self.contended()))
    }
}

#[async_trait]
impl<B: Backend> GenerationSynchronizer for Synchronizer<B> {
    fn key(&self) -> &Key {
        &self.key
    }

    fn sync_gen(&self) -> Option<Generation> {
        Generation::new(self.local.load(Ordering::Acquire))
    }

    fn record(&self, generation: Generation) {
        self.local.store(generation.get(), Ordering::Release);
    }

    async fn check(&self) -> Check {
        let local = self.sync_gen();
        let shared = self
            .observe()
            .await
            .map_or(Observed::Unavailable, Observed::from);
        let check = Check { local, shared };
        tracing::debug!(
            key = %self.key,
            local = ?check.local,
            shared = ?check.shared,
            expired = check.is_expired(),
            "gensync check"
        );
        check
    }

    async fn read(&self) -> Result<Stored, Error> {
        self.observe().await
    }

    async fn fetch_or_create(&self) -> Result<Generation, Error> {
        match self.fetch_or_create_with_candidate().await {
            (g, None) => Ok(g),
            (_, Some(e)) => Err(e),
        }
    }

    async fn refresh(&self) -> Result<Generation, Error> {
        let (generation, error) = self.fetch_or_create_with_candidate().await;
        self.record(generation);
        match error {
            None => Ok(generation),
            Some(e) => Err(e),
        }
    }

    async fn mark_updated(&self) -> Result<Generation, Error> {
        self.bump(None).await
    }

    async fn clear(&self) -> Result<(), Error> {
        self.reply("delete", self.backend.delete(&self.key).await)
    }

    fn track(&self) -> Option<Arc<Tracker>> {
        if self.parent.is_some() && !self.feeds_tracker {
            // A tracker of the key alone would miss the parent's changes.
            return None;
        }
        if tokio::runtime::Handle::try_current().is_err() {
            // Nothing could run the tracking here: not an answer to keep.
            return self.tracker.get().cloned().flatten();
        }
        self.tracker
            .get_or_init(|| {
                let tracker = Tracker::new();
                self.backend.track(&self.key, &tracker).then_some(tracker)
            })
            .clone()
    }

    fn vouched(&self) -> Option<Stored> {
        let (stored, epoch) = self.tracker.get()?.as_ref()?.vouched()?;
        let (now, server) = self.backend.identity(&self.key);
        // Read on a server the backend has since left: it vouches nothing.
        Some(shown(stored, server.filter(|_| epoch == now)?))
    }
}

/// `stored` as shown when read from the server known as `server`.
fn shown(stored: Stored, server: u64) -> Stored {
    match stored {
        Stored::Value(g) => Stored::Value(g.on_server(server)),
        other => other,
    }
}

#[cfg(test)]
mod tests;
