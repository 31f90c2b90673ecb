//! The async path: one multiplexed tokio connection, shared by every clone
//! of a [`RedisBackend`]. Long because it holds one call's whole course
//! (a connection, the retry on one found dead, the bound, the wait for
//! replicas) and the `Backend` methods that are each one such call.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use redis::{AsyncConnectionConfig, RedisError, Value};
use tokio::time::Instant;

use super::commands::Op;
use super::config::{RedisConfig, Replicas};
use super::conn::{connect_async, AsyncConn};
use super::identity::{identity_cmd, read_run_id};
use super::many;
use super::slot::{Current, Slot};
use super::target::{
    breaks_connection, found_dead, read_replicated, wait_cmd, Caller, Failure, Target,
};
use crate::backend::{Backend, Stored, Tracker, TrackerSet};
use crate::error::BackendError;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

/// A Redis backend for async code, on one multiplexed tokio connection
/// shared by every clone (and a second one for bumps, only while
/// [`RedisConfig::wait_for_replicas`] is on).
///
/// The connection is made on first use (so a service starts while Redis is
/// down) and remade after it breaks (so a restarted server is picked up
/// without restarting the client). A call that finds the connection already
/// dead (the server closed it while it sat idle) is made once more on a new
/// one. Every call is bounded by [`RedisConfig::call_bound`]; a paused or
/// unreachable server costs a caller at most that, then an error.
///
/// ```no_run
/// use gensync::{GenerationSynchronizer, Key, RedisBackend, Synchronizer};
///
/// # #[tokio::main] async fn main() -> Result<(), gensync::Error> {
/// let backend = RedisBackend::open("redis://127.0.0.1:6379")?;
/// let sync = Synchronizer::new(backend, Key::new(["site", "settings"])?);
/// sync.refresh().await?;
/// assert!(!sync.is_expired().await);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    target: Arc<Target>,
    conn: Arc<Slot>,
    /// The connection of writes that wait for replicas: `WAIT` holds its
    /// connection until they answer, and the shared one must not queue
    /// every other caller behind it. Made only when such a write comes.
    waiting: Arc<Slot>,
}

impl RedisBackend {
    /// A backend for `url` with the default [`RedisConfig`]. Makes no
    /// connection yet; a bad URL is an error now. `url` is one server
    /// (`redis://`, `rediss://`, `redis+unix://`, or the same with
    /// `valkey` for `redis`), the primary of a
    /// Sentinel deployment (`redis+sentinel://`) or a Cluster
    /// (`redis+cluster://`): see [`RedisUrl`](crate::RedisUrl).
    pub fn open(url: &str) -> Result<Self, BackendError> {
        Self::with_config(url, RedisConfig::default())
    }

    /// A backend for `url` with the given timeouts.
    pub fn with_config(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        Ok(RedisBackend {
            target: Arc::new(Target::open(url, config)?),
            conn: Arc::new(Slot::default()),
            waiting: Arc::new(Slot::default()),
        })
    }

    /// Connects (if needed) and sends `PING`: a start-up check that turns a
    /// wrong address or password into a clear error at once.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.run(Op::ping()).await
    }

    /// The server's name for messages: `Redis at <url>`, password redacted.
    pub fn describe(&self) -> &str {
        &self.target.name
    }

    /// Deletes the writers' lease beside `key`, whoever holds it, and says
    /// whether there was one: for an operator breaking a lease a stuck or
    /// foreign client holds (`gensync break-lock`). A writer still holding
    /// it finds out at its next renewal, and its write fails as one whose
    /// lease lapsed.
    pub async fn break_lock(&self, key: &Key) -> Result<bool, BackendError> {
        self.write(Op::break_lock(key)).await
    }

    /// Which server the latest new connection reached: its `run_id` and
    /// replication id (`<run_id>:<master_replid>`), which a restart or a
    /// failover (a promotion) changes. `None` before the first connection,
    /// or when the server would not say (`INFO` denied by an ACL). For
    /// tools that keep a generation across runs, as `gensync sync` does:
    /// a value read from another server says nothing about the old one.
    pub fn server_id(&self) -> Option<String> {
        self.target.identity.run_id()
    }

    /// The current connection, or a new one. A reader is answered the last
    /// connect error instead while the reconnect delay runs; a writer
    /// dials, after any connect under way (one at a time), whatever the
    /// last one said. The failed dial of a call's second try (`retry`) is
    /// reported but starts no delay: it comes once per connection found
    /// dead, not once per call, so it needs no brake, and the server that
    /// just closed the connection may be back for the next call.
    async fn connection(
        &self,
        slot: &Slot,
        caller: Caller,
        retry: bool,
        replicas: Option<Replicas>,
    ) -> Result<Current, RedisError> {
        let reader = caller == Caller::Reader;
        if let Some(found) = slot.get() {
            // A Cluster client follows its nodes itself; the epoch it
            // learns from answers says nothing against it.
            if found.epoch == self.target.identity.epoch() || self.target.is_cluster() {
                return Ok(found);
            }
            // Made before another connection found a different server: it
            // may still reach the old one (a switch that did not close it).
            slot.drop_if(found.id);
        }
        if reader {
            slot.recent_failure()?;
        }
        let _turn = slot.connecting.lock().await;
        if let Some(found) = slot.get() {
            return Ok(found);
        }
        // The connect this caller waited for may just have failed: a
        // reader takes its word, a writer asks the server itself.
        if reader {
            slot.recent_failure()?;
        }
        let connected = self.connect(replicas).await;
        if !retry || connected.is_ok() {
            slot.record_failure(connected.as_ref().err().cloned(), &self.target.config);
        }
        Ok(slot.set(connected?))
    }

    /// Sends a read: answered the last connect error while the reconnect
    /// delay runs.
    pub(super) async fn run<T>(&self, op: Op<T>) -> Result<T, BackendError> {
        self.call(op, Caller::Reader, None).await
    }

    /// Sends a write: never answered a cached connect error.
    pub(super) async fn write<T>(&self, op: Op<T>) -> Result<T, BackendError> {
        self.call(op, Caller::Writer, None).await
    }

    /// Sends a write, then waits for the replicas
    /// [`RedisConfig::wait_for_replicas`] asks for: an error if fewer
    /// acknowledged it in time. Without that setting, [`write`](Self::write).
    pub(super) async fn write_replicated<T>(&self, op: Op<T>) -> Result<T, BackendError> {
        let replicas = self.target.config.replicas;
        self.call(op, Caller::Writer, replicas).await
    }

    async fn call<T>(
        &self,
        op: Op<T>,
        caller: Caller,
        replicas: Option<Replicas>,
    ) -> Result<T, BackendError> {
        let config = &self.target.config;
        let bound = config.bound(replicas);
        let slot = match replicas {
            Some(_) => &*self.waiting,
            None => &*self.conn,
        };
        let call = async {
            let began = Instant::now();
            let current = self.connection(slot, caller, false, replicas).await?;
            match self.attempt(slot, &op, current.clone(), replicas).await {
                // The connection was made before this call and was dead
                // when it was used: after an idle `timeout`, a `CLIENT
                // KILL` or a proxy's cut, redis-rs 1.8 answers "broken
                // pipe" (its driver saw the close and the command never
                // left), so the first call after it would fail on a healthy
                // server. One more try, on a new connection. If the close
                // raced the send, the command may have run before it; that
                // is safe because a read changes nothing and every write is
                // one that can be repeated. A connection made for this call
                // is not retried: its failure is the server's answer.
                Err(Failure::Redis(e))
                    if found_dead(&e)
                        && current.made < began
                        && config.retry_fits(began.elapsed(), replicas) =>
                {
                    tracing::debug!(
                        server = %self.target.name,
                        error = %self.target.error(&e),
                        "gensync connection found closed; trying once more on a new one"
                    );
                    let current = self.connection(slot, caller, true, replicas).await?;
                    self.attempt(slot, &op, current, replicas).await
                }
                done => done,
            }
        };
        match tokio::time::timeout(bound, call).await {
            Ok(result) => result.map_err(|f| self.target.failure(&f)),
            // The client's own timeouts should fire first; this is the
            // backstop that makes the bound hold whatever the client does.
            Err(_) => Err(BackendError::timeout(&self.target.name, bound)),
        }
    }
}

impl RedisBackend {
    /// Makes a connection and learns which server it reached, all within
    /// the connect timeout; a Cluster client's replies also wait for
    /// `replicas`, if any.
    async fn connect(&self, replicas: Option<Replicas>) -> Result<(AsyncConn, u64), RedisError> {
        let began = Instant::now();
        let timeouts = &self.target.config;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeouts.connect_timeout))
            .set_response_timeout(Some(timeouts.response_timeout));
        let conn = connect_async(&self.target, &config, replicas).await?;
        let AsyncConn::Node(node) = &conn else {
            // A Cluster's nodes are known by their answers (`Target::incoming`).
            return Ok((conn, self.target.identity.epoch()));
        };
        let began = if self.target.probe_budget_restarts() {
            Instant::now()
        } else {
            began
        };
        // The identity gets what is left of the connect timeout, so a new
        // connection still costs at most that; failing to learn it leaves
        // the identity unknown and the connection in use.
        let left = timeouts.connect_timeout.saturating_sub(began.elapsed());
        let run_id = if left.is_zero() {
            None
        } else {
            let mut probe = node.clone();
            probe.set_response_timeout(left);
            read_run_id(identity_cmd().query_async::<Value>(&mut probe).await)
        };
        Ok((conn, self.target.identity.met(run_id)))
    }

    /// Sends `op` on `current`, followed by a `WAIT` for `replicas` if
    /// any, dropping the connection from `slot` if a failure says it is
    /// broken.
    async fn attempt<T>(
        &self,
        slot: &Slot,
        op: &Op<T>,
        mut current: Current,
        replicas: Option<Replicas>,
    ) -> Result<T, Failure> {
        let sent = self.target.identity.outgoing(&op.cmd);
        let Some(wanted) = replicas else {
            let reply = sent.cmd.query_async::<Value>(&mut current.conn).await;
            drop_if_broken(slot, &reply, &current);
            return (op.read)(self.target.identity.incoming(&sent, reply)).map_err(Failure::from);
        };
        // One pipeline, so the WAIT follows the write on its connection
        // (it covers every earlier write there, whoever sent it), and the
        // reply may take the wait too. Errors stay in their places, each
        // read as its own.
        let mut pipe = redis::pipe();
        pipe.ignore_errors()
            .add_command(sent.cmd.clone().into_owned())
            .add_command(wait_cmd(wanted));
        let reply_timeout = self.target.config.reply_timeout(replicas);
        current.conn.set_response_timeout(reply_timeout);
        let replies = pipe.query_async::<Vec<Value>>(&mut current.conn).await;
        drop_if_broken(slot, &replies, &current);
        let Ok([write, wait]) = <[Value; 2]>::try_from(replies?) else {
            return Err(Failure::Redis(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "a write and its WAIT did not get two replies",
            ))));
        };
        let write = self.target.identity.incoming(&sent, write.extract_error());
        read_replicated(op.read, write, wait.extract_error(), wanted)
    }
}

/// Drops a node connection a failure says is broken. Not a Cluster
/// client's: it reconnects its nodes itself, and a new client per failed
/// call would dial every node of the Cluster each time (five connections
/// per read of a key whose shard is down, from every process), while the
/// other shards' keys lose nothing by keeping it.
fn drop_if_broken<R>(slot: &Slot, reply: &Result<R, RedisError>, current: &Current) {
    if matches!(current.conn, AsyncConn::Node(_)) && reply.as_ref().is_err_and(breaks_connection) {
        slot.drop_if(current.id);
    }
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("target", &self.target.name)
            .field("config", &self.target.config)
            .finish()
    }
}

#[async_trait]
impl Backend for RedisBackend {
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        self.run(Op::get(key)).await
    }

    async fn get_with_parent(
        &self,
        key: &Key,
        parent: &Key,
    ) -> Result<(Stored, Stored), BackendError> {
        self.run(Op::get_with_parent(key, parent)).await
    }

    /// One bounded read script per Cluster slot (`many.rs`), sent at once;
    /// any one failing fails the read.
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Stored>, BackendError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let reads = many::groups(keys, self.target.is_cluster())
            .into_iter()
            .map(|(keys, places)| async move {
                let stored = self.run(Op::get_many(&keys)).await?;
                Ok::<_, BackendError>((places, stored))
            });
        Ok(many::merge(keys.len(), try_join_all(reads).await?))
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.write(Op::add(key, generation, ttl)).await
    }

    /// Waits for the replicas [`RedisConfig::wait_for_replicas`] asks for,
    /// as a bump does.
    async fn add_replicated(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.write_replicated(Op::add(key, generation, ttl)).await
    }

    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        self.write_replicated(Op::incr(key, step, ttl, finished))
            .await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.write(Op::delete(key)).await
    }

    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        Ok(self.write(Op::lock(key, token, ttl)).await?.fence(key))
    }

    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.write(Op::renew(key, token, ttl, key_ttl)).await
    }

    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        self.write(Op::unlock(key, token)).await
    }

    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        self.write(Op::intend(key, token, ttl, key_ttl))
            .await
            .map(drop)
    }

    /// Moves when a new connection finds a different server than the one
    /// before (its `run_id` changed: a restart, a failover).
    fn epoch(&self) -> u64 {
        self.target.identity.epoch()
    }

    /// A hash of the `run_id` of the server holding `key`, alike in every
    /// process (see `identity.rs` for when it is this process's own).
    fn identity(&self, key: &Key) -> (u64, Option<u64>) {
        self.target.identity.shown(key.as_str().as_bytes())
    }

    /// On a RESP3 connection of its own (see [`RedisConfig::heartbeat`]).
    fn track(&self, key: &Key, tracker: &Arc<Tracker>) -> bool {
        super::track::spawn(Arc::clone(&self.target), key.clone(), tracker)
    }

    /// One RESP3 connection for the whole set, subscribed by prefix.
    fn track_set(&self, set: &Arc<TrackerSet>) -> bool {
        super::track::spawn_set(Arc::clone(&self.target), set)
    }
}
