//! The Redis backend: an async path on one multiplexed tokio connection, and
//! a blocking path on an `r2d2` pool. Both send the commands built here.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionLike, ErrorKind, RedisError, ServerErrorKind, Value,
};

use super::redact::{secrets, RedactedUrl};
use super::{Backend, BlockingBackend, Stored};
use crate::error::BackendError;
use crate::generation::Generation;
use crate::key::Key;

/// Bumps a valid generation and resets its time to live, in one atomic step.
/// Replies -1 for a missing key and -2 for a corrupt one (wrong type, not a
/// positive integer, or at the top of the range), leaving both alone. The
/// new value is read back as a string: Lua numbers are doubles and would
/// round a 63-bit generation.
const INCR_SCRIPT: &str = r"
local v = redis.pcall('GET', KEYS[1])
if v == false then return -1 end
if type(v) ~= 'string' or not string.match(v, '^[1-9]%d*$') then return -2 end
local n = redis.pcall('INCR', KEYS[1])
if type(n) ~= 'number' then return -2 end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
";

/// Deletes a key only while it holds the caller's token.
const DELETE_IF_SCRIPT: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// The URL forms accepted, for error messages.
const URL_FORMS: &str = "redis://[user:password@]host[:port][/db], \
     rediss://... (with the `tls` feature) or redis+unix:///path/to/socket[?db=N&pass=...]";

/// Timeouts and pool size for a Redis backend.
///
/// Defaults: 250 ms to connect (TCP, TLS and the `AUTH`/`SELECT`
/// handshake), 250 ms for a reply, 8 pooled connections for the blocking
/// path, and 100 ms before the async path dials again after a failed
/// connect. A local Redis answers in well under a millisecond, so these only
/// matter when something is wrong, and then they bound what a caller pays.
///
/// ```
/// use std::time::Duration;
/// use gensync::RedisConfig;
///
/// let config = RedisConfig::default()
///     .connect_timeout(Duration::from_millis(100))
///     .response_timeout(Duration::from_millis(50));
/// assert_eq!(config.call_bound(), Duration::from_millis(150));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    connect_timeout: Duration,
    response_timeout: Duration,
    pool_size: u32,
    reconnect_delay: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(250),
            pool_size: 8,
            reconnect_delay: Duration::from_millis(100),
        }
    }
}

impl RedisConfig {
    /// How long making a connection may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its reply.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many connections the blocking path may hold.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// How long the async path answers with the last connect error before
    /// it dials again. Without it, a server that refuses every connection
    /// (a wrong password, `maxclients` reached) would be sent a new
    /// connection per check, thousands a second. Zero dials every time.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// The most one backend call can take: a connection, then a reply.
    pub fn call_bound(&self) -> Duration {
        self.connect_timeout + self.response_timeout
    }

    fn validate(&self) -> Result<(), BackendError> {
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(BackendError::Config(
                "Redis timeouts must be greater than zero".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(BackendError::Config(
                "the Redis pool size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// What both paths share: the client, the redacted name of the server for
/// messages, and the secrets to scrub out of the client library's text.
struct Target {
    client: redis::Client,
    name: String,
    secrets: Vec<String>,
    config: RedisConfig,
}

impl Target {
    fn open(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let redacted = RedactedUrl::new(url);
        let scheme = url.split("://").next().unwrap_or_default();
        if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") || !url.contains("://") {
            return Err(BackendError::Config(format!(
                "unsupported Redis URL {redacted}: expected {URL_FORMS}"
            )));
        }
        if scheme == "rediss" && !cfg!(feature = "tls") {
            return Err(BackendError::Config(format!(
                "{redacted} asks for TLS, but gensync was built without its `tls` feature; \
                 enable it or use redis://"
            )));
        }
        let secrets = secrets(url);
        let client = redis::Client::open(url).map_err(|e| {
            BackendError::Config(format!(
                "invalid Redis URL {redacted}: {}; expected {URL_FORMS}",
                scrub(&e.to_string(), &secrets)
            ))
        })?;
        Ok(Target {
            client,
            name: format!("Redis at {redacted}"),
            secrets,
            config,
        })
    }

    /// Turns a client error into a message that says what to check.
    fn error(&self, e: &RedisError) -> BackendError {
        let target = self.name.clone();
        let reason = scrub(&e.to_string(), &self.secrets);
        let code = e.code().unwrap_or_default();
        if e.is_timeout() {
            BackendError::Timeout {
                target,
                after: self.config.response_timeout,
            }
        } else if e.kind() == ErrorKind::AuthenticationFailed
            || e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
            || matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
        {
            BackendError::Auth { target, reason }
        } else if e.is_connection_refusal() {
            BackendError::Unreachable { target, reason }
        } else if e.is_connection_dropped() {
            // Also how Redis turns clients away at `maxclients`: it closes
            // the connection, and the client sees a reset or an EOF.
            BackendError::Disconnected { target, reason }
        } else if e.is_io_error() {
            BackendError::Unreachable { target, reason }
        } else if e.kind() == ErrorKind::InvalidClientConfig {
            BackendError::Config(format!("{target}: {reason}"))
        } else {
            BackendError::Server { target, reason }
        }
    }
}

/// Whether a connection that produced this error should be dropped and
/// a new one made: anything but a clean error reply from the server.
fn breaks_connection(e: &RedisError) -> bool {
    !matches!(e.kind(), ErrorKind::Server(_)) || e.is_connection_dropped()
}

/// Locks a mutex whose holders never leave its data half-changed, so a
/// panic elsewhere that poisoned it leaves nothing to distrust.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |acc, s| acc.replace(s.as_str(), "***"))
}

// The four operations, built once and read back once for both paths.

fn get_cmd(key: &Key) -> Cmd {
    let mut cmd = redis::cmd("GET");
    cmd.arg(key.as_str());
    cmd
}

fn add_cmd(key: &Key, generation: Generation, ttl: Duration) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key.as_str())
        .arg(generation.get())
        .arg("NX")
        .arg("PX")
        .arg(ttl_millis(ttl));
    cmd
}

fn incr_cmd(key: &Key, ttl: Duration) -> Cmd {
    eval_cmd(INCR_SCRIPT, key, ttl_millis(ttl))
}

fn delete_cmd(key: &Key) -> Cmd {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(key.as_str());
    cmd
}

fn expire_cmd(key: &Key, ttl: Duration) -> Cmd {
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key.as_str()).arg(ttl_millis(ttl));
    cmd
}

fn delete_if_cmd(key: &Key, expected: Generation) -> Cmd {
    eval_cmd(DELETE_IF_SCRIPT, key, expected.get())
}

/// `EVAL script 1 key arg`: one key, one numeric argument.
fn eval_cmd(script: &str, key: &Key, arg: u64) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key.as_str()).arg(arg);
    cmd
}

fn ttl_millis(ttl: Duration) -> u64 {
    // PX 0 is an error in Redis; a sub-millisecond TTL rounds up.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn stored_from_bytes(raw: &[u8]) -> Stored {
    Generation::parse_stored(raw).map_or(Stored::Corrupt, Stored::Value)
}

fn read_get(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    match reply {
        Ok(Value::Nil) => Ok(Stored::Missing),
        Ok(Value::BulkString(raw)) => Ok(stored_from_bytes(&raw)),
        Ok(Value::SimpleString(s)) => Ok(stored_from_bytes(s.as_bytes())),
        Ok(_) => Ok(Stored::Corrupt),
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(Stored::Corrupt),
        Err(e) => Err(e),
    }
}

fn read_add(reply: Result<Value, RedisError>) -> Result<bool, RedisError> {
    Ok(!matches!(reply?, Value::Nil))
}

fn read_incr(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    Ok(match reply? {
        Value::Int(-1) => Stored::Missing,
        Value::BulkString(raw) => stored_from_bytes(&raw),
        _ => Stored::Corrupt,
    })
}

fn read_delete(reply: Result<Value, RedisError>) -> Result<(), RedisError> {
    reply.map(drop)
}

/// PEXPIRE and the delete-if script both reply 1 when they acted.
fn read_flag(reply: Result<Value, RedisError>) -> Result<bool, RedisError> {
    Ok(matches!(reply?, Value::Int(1)))
}

// The async path.

/// A Redis backend for async code, on one multiplexed tokio connection
/// shared by every clone.
///
/// The connection is made on first use (so a service starts while Redis is
/// down) and remade after it breaks (so a restarted server is picked up
/// without restarting the client). Every call is bounded by
/// [`RedisConfig::call_bound`]; a paused or unreachable server costs a
/// caller at most that, then an error.
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
}

/// The current connection, tagged so a caller that saw it fail only drops
/// that one, not a newer one another caller already made.
#[derive(Default)]
struct Slot {
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    next_id: std::sync::atomic::AtomicU64,
    // One connect at a time; the others wait for it rather than pile on.
    connecting: tokio::sync::Mutex<()>,
    /// The last failed connect, answered again until the reconnect delay
    /// has passed.
    failed: Mutex<Option<(tokio::time::Instant, RedisError)>>,
}

impl Slot {
    fn get(&self) -> Option<(u64, MultiplexedConnection)> {
        lock(&self.current).clone()
    }

    fn set(&self, conn: MultiplexedConnection) -> u64 {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *lock(&self.current) = Some((id, conn));
        id
    }

    /// The last connect error, if it is more recent than `delay`.
    fn recent_failure(&self, delay: Duration) -> Result<(), RedisError> {
        match &*lock(&self.failed) {
            Some((at, e)) if at.elapsed() < delay => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn record_failure(&self, error: Option<RedisError>) {
        *lock(&self.failed) = error.map(|e| (tokio::time::Instant::now(), e));
    }

    fn drop_if(&self, id: u64) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|(cur, _)| *cur == id) {
            *current = None;
        }
    }
}

impl RedisBackend {
    /// A backend for `url` with the default [`RedisConfig`]. Makes no
    /// connection yet; a bad URL is an error now.
    pub fn open(url: &str) -> Result<Self, BackendError> {
        Self::with_config(url, RedisConfig::default())
    }

    /// A backend for `url` with the given timeouts.
    pub fn with_config(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        Ok(RedisBackend {
            target: Arc::new(Target::open(url, config)?),
            conn: Arc::new(Slot::default()),
        })
    }

    /// Connects (if needed) and sends `PING`: a start-up check that turns a
    /// wrong address or password into a clear error at once.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.run(&redis::cmd("PING"), |r| r.map(drop)).await
    }

    /// The server's name for messages: `Redis at <url>`, password redacted.
    pub fn describe(&self) -> &str {
        &self.target.name
    }

    async fn connection(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        let delay = self.target.config.reconnect_delay;
        if let Some(found) = self.conn.get() {
            return Ok(found);
        }
        self.conn.recent_failure(delay)?;
        let _turn = self.conn.connecting.lock().await;
        if let Some(found) = self.conn.get() {
            return Ok(found);
        }
        // The connect this caller waited for may just have failed.
        self.conn.recent_failure(delay)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.target.config.connect_timeout))
            .set_response_timeout(Some(self.target.config.response_timeout));
        let connected = self
            .target
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await;
        self.conn.record_failure(connected.as_ref().err().cloned());
        let conn = connected?;
        let id = self.conn.set(conn.clone());
        Ok((id, conn))
    }

    async fn run<T>(
        &self,
        cmd: &Cmd,
        read: impl FnOnce(Result<Value, RedisError>) -> Result<T, RedisError>,
    ) -> Result<T, BackendError> {
        let bound = self.target.config.call_bound();
        let call = async {
            let (id, mut conn) = self.connection().await?;
            let reply = cmd.query_async::<Value>(&mut conn).await;
            if let Err(e) = &reply {
                if breaks_connection(e) {
                    self.conn.drop_if(id);
                }
            }
            read(reply)
        };
        match tokio::time::timeout(bound, call).await {
            Ok(result) => result.map_err(|e| self.target.error(&e)),
            // The client's own timeouts should fire first; this is the
            // backstop that makes the bound hold whatever the client does.
            Err(_) => Err(BackendError::Timeout {
                target: self.target.name.clone(),
                after: bound,
            }),
        }
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
        self.run(&get_cmd(key), read_get).await
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.run(&add_cmd(key, generation, ttl), read_add).await
    }

    async fn incr(&self, key: &Key, ttl: Duration) -> Result<Stored, BackendError> {
        self.run(&incr_cmd(key, ttl), read_incr).await
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.run(&delete_cmd(key), read_delete).await
    }

    async fn expire(&self, key: &Key, ttl: Duration) -> Result<bool, BackendError> {
        self.run(&expire_cmd(key, ttl), read_flag).await
    }

    async fn delete_if(&self, key: &Key, expected: Generation) -> Result<bool, BackendError> {
        self.run(&delete_if_cmd(key, expected), read_flag).await
    }
}

// The blocking path.

/// A Redis backend for code with no async runtime (scripts, CLIs, plain
/// threads), on an `r2d2` pool. Use it through
/// [`BlockingSynchronizer`](crate::BlockingSynchronizer); inside async code
/// use [`RedisBackend`], which does not block the runtime's threads.
///
/// Waiting for a pooled connection is bounded by the connect timeout and
/// every reply by the response timeout.
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
    connects: Arc<Mutex<Connects>>,
}

/// What the pool's connect attempts did: r2d2 reports only text, and the
/// kind of error decides the advice (wrong password versus server down).
#[derive(Default)]
struct Connects {
    /// Why the last finished attempt failed, and when; `None` after a
    /// success.
    last_error: Option<(RedisError, Instant)>,
    /// When each attempt still running began (r2d2 may run several).
    running: Vec<Instant>,
}

struct Manager {
    target: Arc<Target>,
    connects: Arc<Mutex<Connects>>,
}

impl Manager {
    fn try_connect(&self) -> Result<redis::Connection, RedisError> {
        let config = &self.target.config;
        let conn = self
            .target
            .client
            .get_connection_with_timeout(config.connect_timeout)?;
        conn.set_read_timeout(Some(config.response_timeout))?;
        conn.set_write_timeout(Some(config.response_timeout))?;
        Ok(conn)
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = redis::Connection;
    type Error = RedisError;

    fn connect(&self) -> Result<redis::Connection, RedisError> {
        let began = Instant::now();
        lock(&self.connects).running.push(began);
        let result = self.try_connect();
        let mut connects = lock(&self.connects);
        if let Some(i) = connects.running.iter().position(|t| *t == began) {
            connects.running.swap_remove(i);
        }
        connects.last_error = result.as_ref().err().map(|e| (e.clone(), Instant::now()));
        result
    }

    fn is_valid(&self, conn: &mut redis::Connection) -> Result<(), RedisError> {
        redis::cmd("PING").query::<()>(conn)
    }

    fn has_broken(&self, conn: &mut redis::Connection) -> bool {
        !conn.is_open()
    }
}

impl BlockingRedisBackend {
    /// A blocking backend for `url` with the default [`RedisConfig`].
    /// Makes no connection yet; a bad URL is an error now.
    pub fn open(url: &str) -> Result<Self, BackendError> {
        Self::with_config(url, RedisConfig::default())
    }

    /// A blocking backend for `url` with the given timeouts and pool size.
    pub fn with_config(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        let target = Arc::new(Target::open(url, config)?);
        let connects = Arc::new(Mutex::new(Connects::default()));
        let pool = r2d2::Pool::builder()
            .max_size(target.config.pool_size)
            .min_idle(Some(0))
            .connection_timeout(target.config.connect_timeout)
            // A checkout costs no extra round trip; a dead connection shows
            // itself on first use and is dropped then.
            .test_on_check_out(false)
            // We report failures ourselves, redacted and with advice.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(Manager {
                target: Arc::clone(&target),
                connects: Arc::clone(&connects),
            });
        Ok(BlockingRedisBackend {
            target,
            pool,
            connects,
        })
    }

    /// Connects (if needed) and sends `PING`.
    pub fn ping(&self) -> Result<(), BackendError> {
        self.run(&redis::cmd("PING"), |r| r.map(drop))
    }

    /// The server's name for messages: `Redis at <url>`, password redacted.
    pub fn describe(&self) -> &str {
        &self.target.name
    }

    fn run<T>(
        &self,
        cmd: &Cmd,
        read: impl FnOnce(Result<Value, RedisError>) -> Result<T, RedisError>,
    ) -> Result<T, BackendError> {
        let asked = Instant::now();
        let mut conn = self.pool.get().map_err(|_| self.pool_error(asked))?;
        read(cmd.query::<Value>(&mut *conn)).map_err(|e| self.target.error(&e))
    }

    /// Why no connection came for a checkout that began at `asked`.
    fn pool_error(&self, asked: Instant) -> BackendError {
        let state = self.pool.state();
        let config = &self.target.config;
        if state.connections >= config.pool_size && state.idle_connections == 0 {
            return BackendError::PoolExhausted {
                target: self.target.name.clone(),
                after: config.connect_timeout,
            };
        }
        let (last, oldest_running) = {
            let connects = lock(&self.connects);
            (
                connects.last_error.clone(),
                connects.running.iter().min().copied(),
            )
        };
        // r2d2 retries a failed connect every half connect timeout. A
        // failure during this checkout is the server's latest word. Else an
        // attempt that has run half the timeout is hanging (a paused or
        // firewalled server): a timeout, whatever an earlier attempt said.
        // One that just began tells nothing yet, so the last failure stands.
        let hanging = oldest_running.is_some_and(|t| t.elapsed() >= config.connect_timeout / 2);
        match last {
            Some((e, at)) if at >= asked || !hanging => self.target.error(&e),
            _ => BackendError::Timeout {
                target: self.target.name.clone(),
                after: config.connect_timeout,
            },
        }
    }
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
        self.run(&get_cmd(key), read_get)
    }

    async fn add(
        &self,
        key: &Key,
        generation: Generation,
        ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.run(&add_cmd(key, generation, ttl), read_add)
    }

    async fn incr(&self, key: &Key, ttl: Duration) -> Result<Stored, BackendError> {
        self.run(&incr_cmd(key, ttl), read_incr)
    }

    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.run(&delete_cmd(key), read_delete)
    }

    async fn expire(&self, key: &Key, ttl: Duration) -> Result<bool, BackendError> {
        self.run(&expire_cmd(key, ttl), read_flag)
    }

    async fn delete_if(&self, key: &Key, expected: Generation) -> Result<bool, BackendError> {
        self.run(&delete_if_cmd(key, expected), read_flag)
    }
}

impl BlockingBackend for BlockingRedisBackend {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused_with_advice_and_no_secret() {
        for url in [
            "http://user:s3cret-pw@host:6379",
            "127.0.0.1:6379",
            "redis://user:s3cret-pw@[bad",
            "",
        ] {
            let err = RedisBackend::open(url).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, BackendError::Config(_)), "{url}: {err:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn rediss_without_the_feature_says_so() {
        let err = RedisBackend::open("rediss://:pw@127.0.0.1:6380").unwrap_err();
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }

    #[test]
    fn zero_timeouts_and_pools_are_refused() {
        let url = "redis://127.0.0.1:1";
        for config in [
            RedisConfig::default().connect_timeout(Duration::ZERO),
            RedisConfig::default().response_timeout(Duration::ZERO),
            RedisConfig::default().pool_size(0),
        ] {
            assert!(matches!(
                BlockingRedisBackend::with_config(url, config),
                Err(BackendError::Config(_))
            ));
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let backend = RedisBackend::open("redis://:s3cret-pw@127.0.0.1:6379").unwrap();
        let blocking = BlockingRedisBackend::open("redis://:s3cret-pw@127.0.0.1:6379").unwrap();
        for text in [format!("{backend:?}"), format!("{blocking:?}")] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("127.0.0.1:6379"), "{text}");
        }
    }

    #[test]
    fn io_errors_advise_by_what_the_socket_did() {
        use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, UnexpectedEof};
        let target =
            Target::open("redis://:s3cret-pw@127.0.0.1:1", RedisConfig::default()).unwrap();
        let error = |kind| target.error(&RedisError::from(std::io::Error::from(kind)));
        let refused = error(ConnectionRefused);
        assert!(
            matches!(refused, BackendError::Unreachable { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().ends_with("is the server running?"),
            "{refused}"
        );
        for kind in [ConnectionReset, UnexpectedEof] {
            let dropped = error(kind);
            assert!(
                matches!(dropped, BackendError::Disconnected { .. }),
                "{dropped:?}"
            );
            let text = dropped.to_string();
            assert!(
                text.starts_with("Redis at redis://:***@127.0.0.1:1 closed the connection: "),
                "{text}"
            );
            assert!(text.ends_with("maxclients limit?"), "{text}");
        }
    }

    #[test]
    fn replies_are_read_the_same_way_for_both_paths() {
        assert_eq!(read_get(Ok(Value::Nil)).unwrap(), Stored::Missing);
        assert_eq!(
            read_get(Ok(Value::BulkString(b"4294967297".to_vec()))).unwrap(),
            Stored::Value(Generation::new(4294967297).unwrap())
        );
        assert_eq!(
            read_get(Ok(Value::BulkString(b"x".to_vec()))).unwrap(),
            Stored::Corrupt
        );
        assert_eq!(read_incr(Ok(Value::Int(-1))).unwrap(), Stored::Missing);
        assert_eq!(read_incr(Ok(Value::Int(-2))).unwrap(), Stored::Corrupt);
        assert!(read_add(Ok(Value::Okay)).unwrap());
        assert!(!read_add(Ok(Value::Nil)).unwrap());
    }
}
