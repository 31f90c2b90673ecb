//! The blocking path: an `r2d2` pool of plain connections, for code with no
//! async runtime. How the pool makes its connections (when to dial, what a
//! failed dial leaves for the next caller) is `dialer.rs`. Long for the
//! same reason as `aio.rs`: one call's whole course, on a pooled
//! connection (a Cluster's write and its `WAIT` sent packed), and the
//! `Backend` methods that are each one such call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{RedisError, Value};

use super::commands::Op;
use super::config::{RedisConfig, Replicas};
use super::conn::BlockingConn;
use super::dialer::{Conn, Dialer, Manager};
use super::target::{found_dead, read_replicated, wait_cmd, Caller, Failure, Target};
use crate::backend::{Backend, BlockingBackend, Stored};
use crate::error::BackendError;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

/// A Redis backend for code with no async runtime (scripts, CLIs, plain
/// threads), on an `r2d2` pool. Use it through
/// [`BlockingSynchronizer`](crate::BlockingSynchronizer); inside async code
/// use [`RedisBackend`](crate::RedisBackend), which does not block the
/// runtime's threads.
///
/// Waiting for a pooled connection is bounded by the connect timeout (for
/// a Sentinel deployment, by [`RedisConfig::call_bound`]: a lookup may
/// pass over a sentinel that does not answer before it asks the next) and
/// every reply by the response timeout. With no idle connection, a read is
/// answered the last connect error until the reconnect delay has passed, as
/// on the async path; a write dials. A call that finds its pooled
/// connection already dead (the server closed it while it sat idle) is made
/// once more on a new connection, which then takes the dead one's place in
/// the pool.
///
/// ```no_run
/// use gensync::{BlockingRedisBackend, BlockingSynchronizer, Key};
///
/// # fn main() -> Result<(), gensync::Error> {
/// let backend = BlockingRedisBackend::open("redis://127.0.0.1:6379")?;
/// let sync = BlockingSynchronizer::new(backend, Key::parse("site:settings")?);
/// if sync.is_expired() {
///     // reload, then record what the check saw
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct BlockingRedisBackend {
    target: Arc<Target>,
    pool: r2d2::Pool<Manager>,
    dialer: Arc<Dialer>,
}

impl BlockingRedisBackend {
    /// A blocking backend for `url` with the default [`RedisConfig`].
    /// Makes no connection yet; a bad URL is an error now. `url` is one
    /// server (`redis://`, `rediss://`, `redis+unix://`, or the same with
    /// `valkey` for `redis`), the primary of a
    /// Sentinel deployment (`redis+sentinel://`) or a Cluster
    /// (`redis+cluster://`): see [`RedisUrl`](crate::RedisUrl).
    pub fn open(url: &str) -> Result<Self, BackendError> {
        Self::with_config(url, RedisConfig::default())
    }

    /// A blocking backend for `url` with the given timeouts and pool size.
    pub fn with_config(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        let target = Arc::new(Target::open(url, config)?);
        let dialer = Arc::new(Dialer::new(Arc::clone(&target)));
        let pool = r2d2::Pool::builder()
            .max_size(target.config.pool_size)
            .min_idle(Some(0))
            .connection_timeout(target.checkout_wait())
            // A checkout costs no extra round trip; a dead connection shows
            // itself on first use and is dropped then.
            .test_on_check_out(false)
            // We report failures ourselves, redacted and with advice.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager(Arc::clone(&dialer)));
        Ok(BlockingRedisBackend {
            target,
            pool,
            dialer,
        })
    }

    /// Connects (if needed) and sends `PING`.
    pub fn ping(&self) -> Result<(), BackendError> {
        self.run(Op::ping())
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
    pub fn break_lock(&self, key: &Key) -> Result<bool, BackendError> {
        self.write(Op::break_lock(key))
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

    /// Whether the URL names a Redis Cluster, whose nodes are not asked
    /// for their `run_id` ([`server_id`](Self::server_id) is then `None`):
    /// for tools that say why they cannot tell which server answered.
    pub fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }

    /// Sends a read: with no idle connection, answered the last connect
    /// error while the reconnect delay runs.
    pub(super) fn run<T>(&self, op: Op<T>) -> Result<T, BackendError> {
        self.call(op, Caller::Reader, None)
    }

    /// Sends a write: never answered a cached connect error.
    pub(super) fn write<T>(&self, op: Op<T>) -> Result<T, BackendError> {
        self.call(op, Caller::Writer, None)
    }

    /// Sends a write, then waits for the replicas
    /// [`RedisConfig::wait_for_replicas`] asks for: an error if fewer
    /// acknowledged it in time. Without that setting, [`write`](Self::write).
    pub(super) fn write_replicated<T>(&self, op: Op<T>) -> Result<T, BackendError> {
        self.call(op, Caller::Writer, self.target.config.replicas)
    }

    fn call<T>(
        &self,
        op: Op<T>,
        caller: Caller,
        replicas: Option<Replicas>,
    ) -> Result<T, BackendError> {
        let asked = Instant::now();
        let config = &self.target.config;
        let mut conn = self.checkout(caller, asked)?;
        let result = match attempt(&self.target, &op, &mut conn, replicas) {
            // As on the async path (see `RedisBackend::call`): a connection
            // that sat in the pool was dead when used; here redis-rs 1.8
            // reports "unexpected end of file" (the server had closed it)
            // or a reset. One more try on a new connection, which replaces
            // the dead one in the pool. Safe to repeat: reads change
            // nothing and every write can be repeated.
            Err(Failure::Redis(e))
                if found_dead(&e)
                    && conn.made < asked
                    && config.retry_fits(asked.elapsed(), replicas) =>
            {
                tracing::debug!(
                    server = %self.target.name,
                    error = %self.target.error(&e),
                    "gensync connection found closed; trying once more on a new one"
                );
                *conn = self
                    .dialer
                    .dial_for_retry(caller)
                    .map_err(|e| self.target.error(&e))?;
                attempt(&self.target, &op, &mut conn, replicas)
            }
            done => done,
        };
        result.map_err(|f| self.target.failure(&f))
    }

    /// An idle pooled connection, or a new one. With none idle, a reader is
    /// answered the last connect error while the reconnect delay runs,
    /// without a wait on the pool.
    fn checkout(
        &self,
        caller: Caller,
        asked: Instant,
    ) -> Result<r2d2::PooledConnection<Manager>, BackendError> {
        // A pooled connection made before another one found a different
        // server may still reach the old one (a switch that did not close
        // it): retire it, and take the next, at most once per pool slot.
        for _ in 0..self.target.config.pool_size {
            let mut conn = self.checkout_any(caller, asked)?;
            // A Cluster client follows its nodes itself.
            if conn.epoch == self.target.identity.epoch() || self.target.is_cluster() {
                return Ok(conn);
            }
            conn.broken = true;
        }
        self.checkout_any(caller, asked)
    }

    fn checkout_any(
        &self,
        caller: Caller,
        asked: Instant,
    ) -> Result<r2d2::PooledConnection<Manager>, BackendError> {
        if let Some(conn) = self.pool.try_get() {
            return Ok(conn);
        }
        if caller == Caller::Reader {
            if let Some(e) = self.dialer.recent_failure() {
                return Err(self.target.error(&e));
            }
        }
        let _waiting = self.dialer.wait(caller, asked);
        self.pool.get().map_err(|_| self.pool_error(asked))
    }

    /// Why no connection came for a checkout that began at `asked`.
    fn pool_error(&self, asked: Instant) -> BackendError {
        let state = self.pool.state();
        let config = &self.target.config;
        let waited = self.target.checkout_wait();
        if state.connections >= config.pool_size && state.idle_connections == 0 {
            return BackendError::pool_exhausted(&self.target.name, waited);
        }
        let (last, oldest_running) = self.dialer.last_error_and_oldest_running();
        // r2d2 retries a failed connect every half connect timeout. A
        // failure during this checkout is the server's latest word. Else an
        // attempt that has run half the timeout is hanging (a paused or
        // firewalled server): a timeout, whatever an earlier attempt said.
        // One that just began tells nothing yet, so the last failure stands.
        let hanging = oldest_running.is_some_and(|t| t.elapsed() >= waited / 2);
        match last {
            Some((e, at)) if at >= asked || !hanging => self.target.error(&e),
            _ => BackendError::timeout(&self.target.name, waited),
        }
    }
}

/// Sends `op` on `conn`, marking the connection for the pool to drop if
/// the failure says it is dead.
fn attempt<T>(
    target: &Target,
    op: &Op<T>,
    conn: &mut Conn,
    replicas: Option<Replicas>,
) -> Result<T, Failure> {
    let config = &target.config;
    let sent = target.identity.outgoing(&op.cmd);
    let Some(wanted) = replicas else {
        let reply = sent.cmd.query::<Value>(&mut conn.conn);
        if reply.as_ref().is_err_and(found_dead) {
            conn.broken = true;
        }
        return (op.read)(target.identity.incoming(&sent, reply)).map_err(Failure::from);
    };
    let mut pipe = redis::pipe();
    pipe.add_command(sent.cmd.clone().into_owned())
        .add_command(wait_cmd(wanted));
    let node = match &mut conn.conn {
        BlockingConn::Node(node) => node,
        BlockingConn::Cluster(cluster) => {
            // Sent packed: the blocking Cluster client takes no pipeline
            // query, but routes packed commands by the first, the write,
            // to its key's primary, where the WAIT must run. Its reply
            // timeout already holds the wait for replicas.
            let replies = redis::ConnectionLike::req_packed_commands(
                &mut **cluster,
                &pipe.get_packed_pipeline(),
                0,
                2,
            );
            if replies.as_ref().is_err_and(found_dead) {
                conn.broken = true;
            }
            let Ok([write, wait]) = <[Value; 2]>::try_from(replies?) else {
                return Err(Failure::Redis(RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "a write and its WAIT did not get two replies",
                ))));
            };
            let write = target.identity.incoming(&sent, write.extract_error());
            return read_replicated(op.read, write, wait.extract_error(), wanted);
        }
    };
    // The write and its WAIT sent together, as on the async path, and
    // their replies read by hand against one deadline: a pipeline query
    // would wait the full read timeout for each reply.
    let deadline = Instant::now() + config.reply_timeout(replicas);
    let replies = node
        .send_packed_command(&pipe.get_packed_pipeline())
        .and_then(|()| Ok((recv_by(node, deadline)?, recv_by(node, deadline)?)));
    let (write, wait) = match replies {
        Ok(replies) => replies,
        Err(e) => {
            // Up to two replies may still be owed, and redis-rs skips at
            // most one late reply: the connection cannot be trusted.
            conn.broken = true;
            return Err(Failure::Redis(e));
        }
    };
    if node
        .set_read_timeout(Some(config.response_timeout))
        .is_err()
    {
        conn.broken = true;
    }
    let write = target.identity.incoming(&sent, write.extract_error());
    read_replicated(op.read, write, wait.extract_error(), wanted)
}

/// The next reply on `node`, waiting until `deadline` at most.
fn recv_by(node: &mut redis::Connection, deadline: Instant) -> Result<Value, RedisError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into());
    }
    node.set_read_timeout(Some(left))?;
    node.recv_response()
}

impl std::fmt::Debug for BlockingRedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingRedisBackend")
            .field("target", &self.target.name)
            .field("config", &self.target.config)
            .finish()
    }
}

// Each future below finishes without awaiting anything, which is what lets
// `BlockingSynchronizer` poll it to completion on the calling thread.
#[async_trait]
impl Backend for BlockingRedisBackend {
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        self.run(Op::get(key))
    }

    async fn get_with_parent(
        &self,
        key: &Key,
        parent: &Key,
    ) -> Result<(Stored, Stored), BackendError> {
        self.run(Op::get_with_parent(key, parent))
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.write(Op::add(key, generation, ttl))
    }

    /// Waits for the replicas [`RedisConfig::wait_for_replicas`] asks for,
    /// as a bump does.
    async fn add_replicated(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.write_replicated(Op::add(key, generation, ttl))
    }

    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        self.write_replicated(Op::incr(key, step, ttl, finished))
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.write(Op::delete(key))
    }

    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        Ok(self.write(Op::lock(key, token, ttl))?.fence(key))
    }

    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.write(Op::renew(key, token, ttl, key_ttl))
    }

    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        self.write(Op::unlock(key, token))
    }

    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        self.write(Op::intend(key, token, ttl, key_ttl)).map(drop)
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

    /// On an async RESP3 connection of its own, run by the current tokio
    /// runtime (a [`BlockingReloader`](crate::reload::BlockingReloader)'s
    /// own): nothing to track with on plain threads.
    fn track(&self, key: &Key, tracker: &Arc<crate::backend::Tracker>) -> bool {
        super::track::spawn(Arc::clone(&self.target), key.clone(), tracker)
    }
}

impl BlockingBackend for BlockingRedisBackend {}
