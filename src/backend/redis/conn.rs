//! The connections each deployment makes, on both paths: one server's, a
//! primary's found through the sentinels, or a Cluster client's; and, for
//! push mode, a connection to the one node that owns a key.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    Value,
};

use super::config::Replicas;
use super::deployment::{
    is_primary, master_addr_cmd, no_sentinel, read_master_addr, Cluster, Deployment, Sentinels,
};
use super::target::{io_error, Target};

/// An async connection: to one server, or a Cluster client's.
#[derive(Clone)]
pub(super) enum AsyncConn {
    Node(MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl AsyncConn {
    /// Sets how long a reply may take. A Cluster client's is set when it
    /// is made (see [`connect_async`]).
    pub(super) fn set_response_timeout(&mut self, timeout: Duration) {
        if let AsyncConn::Node(conn) = self {
            conn.set_response_timeout(timeout);
        }
    }
}

impl redis::aio::ConnectionLike for AsyncConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AsyncConn::Node(c) => c.req_packed_command(cmd),
            AsyncConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AsyncConn::Node(c) => c.req_packed_commands(cmd, offset, count),
            AsyncConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AsyncConn::Node(c) => c.get_db(),
            AsyncConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A new async connection to the deployment, with `config`'s timeouts
/// (a Cluster's replies also wait for `replicas`). For one server or a
/// Sentinel primary, a node connection; for a Cluster, its client's.
pub(super) async fn connect_async(
    target: &Target,
    config: &AsyncConnectionConfig,
    replicas: Option<Replicas>,
) -> Result<AsyncConn, RedisError> {
    match &target.deployment {
        Deployment::Cluster(cluster) => {
            let client = cluster.client(&target.config, replicas)?;
            Ok(AsyncConn::Cluster(client.get_async_connection().await?))
        }
        _ => Ok(AsyncConn::Node(node_async(target, config, false).await?)),
    }
}

/// A new async connection to the server that takes the writes: the one
/// server, or the primary the sentinels name now (asked again every time,
/// since the redis crate does not follow a failover). Not for a Cluster,
/// whose writes go to many nodes: see [`owner_async`].
pub(super) async fn node_async(
    target: &Target,
    config: &AsyncConnectionConfig,
    resp3: bool,
) -> Result<MultiplexedConnection, RedisError> {
    match &target.deployment {
        Deployment::Single(client) => {
            protocol(target, client, resp3)?
                .get_multiplexed_async_connection_with_config(config)
                .await
        }
        Deployment::Sentinel(sentinels) => primary_async(target, sentinels, config, resp3).await,
        Deployment::Cluster(_) => Err(not_one_node()),
    }
}

/// Asks each sentinel in turn for the primary, connects to the server it
/// names, and keeps the connection if that server says it is the primary.
async fn primary_async(
    target: &Target,
    sentinels: &Sentinels,
    config: &AsyncConnectionConfig,
    resp3: bool,
) -> Result<MultiplexedConnection, RedisError> {
    let start = sentinels.answered.load(Ordering::Relaxed);
    let (answered, node) = first_answer(
        &sentinels.sentinels,
        start,
        no_sentinel,
        |sentinel| async move {
            let asked = async {
                let mut conn = sentinel
                    .get_multiplexed_async_connection_with_config(&asking(target))
                    .await?;
                master_addr_cmd(&sentinels.master)
                    .query_async::<Value>(&mut conn)
                    .await
            };
            let reply = asked.await.map_err(|e| at_sentinel(sentinel, e))?;
            let (host, port) = read_master_addr(reply, &sentinels.master)?;
            let client = protocol(target, &sentinels.node.client(&host, port)?, resp3)?;
            let mut node = client
                .get_multiplexed_async_connection_with_config(config)
                .await?;
            let role = redis::cmd("ROLE").query_async::<Value>(&mut node).await?;
            if is_primary(role) {
                Ok(node)
            } else {
                Err(not_primary(&sentinels.master))
            }
        },
    )
    .await?;
    sentinels.answered.store(answered, Ordering::Relaxed);
    Ok(node)
}

/// The first of `items` for which `attempt` succeeds, tried in order from
/// `start` round to it again, with its index; else the last failure, or
/// `none()` when there was nothing to try.
async fn first_answer<'a, I, T, F, Fut>(
    items: &'a [I],
    start: usize,
    none: fn() -> RedisError,
    attempt: F,
) -> Result<(usize, T), RedisError>
where
    F: Fn(&'a I) -> Fut,
    Fut: std::future::Future<Output = Result<T, RedisError>>,
{
    let mut last = None;
    for i in round_from(items.len(), start) {
        match attempt(&items[i]).await {
            Ok(found) => return Ok((i, found)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(none))
}

/// The indexes of `len` items, from `start` round to it again.
fn round_from(len: usize, start: usize) -> impl Iterator<Item = usize> {
    (0..len).map(move |i| (start + i) % len.max(1))
}

/// The timeouts of a lookup's own connections (to a sentinel, to a seed).
fn asking(target: &Target) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(target.config.connect_timeout))
        .set_response_timeout(Some(target.config.response_timeout))
}

/// A new async connection, with `config`, to the Cluster node that owns
/// `slot` now, asked of the seeds in turn (`CLUSTER SHARDS` would do, but
/// `CLUSTER SLOTS` is answered by every Redis since 3.0).
pub(super) async fn owner_async(
    target: &Target,
    cluster: &Cluster,
    slot: u16,
    config: &AsyncConnectionConfig,
) -> Result<MultiplexedConnection, RedisError> {
    let (_, conn) = first_answer(&cluster.seeds, 0, no_seed, |seed| async move {
        let mut conn = target
            .tls
            .client(seed.as_str().into_connection_info()?)?
            .get_multiplexed_async_connection_with_config(&asking(target))
            .await?;
        let slots = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async::<Value>(&mut conn)
            .await?;
        let (host, port) = owner_of(slots, slot)?;
        protocol(target, &cluster.node.client(&host, port)?, true)?
            .get_multiplexed_async_connection_with_config(config)
            .await
    })
    .await?;
    Ok(conn)
}

fn no_seed() -> RedisError {
    RedisError::from((redis::ErrorKind::Io, "no Cluster seed answered"))
}

/// The primary serving `slot` in a `CLUSTER SLOTS` reply.
fn owner_of(reply: Value, slot: u16) -> Result<(String, u16), RedisError> {
    let ranges: Vec<Vec<Value>> = redis::from_redis_value(reply)?;
    for range in ranges {
        let mut fields = range.into_iter();
        let (Some(start), Some(end), Some(primary)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (start, end): (u16, u16) = (
            redis::from_redis_value(start)?,
            redis::from_redis_value(end)?,
        );
        if (start..=end).contains(&slot) {
            let node: Vec<Value> = redis::from_redis_value(primary)?;
            let mut node = node.into_iter();
            if let (Some(host), Some(port)) = (node.next(), node.next()) {
                return Ok((
                    redis::from_redis_value(host)?,
                    redis::from_redis_value(port)?,
                ));
            }
        }
    }
    Err(RedisError::from((
        redis::ErrorKind::ClusterConnectionNotFound,
        "no node serves the key's slot",
    )))
}

/// A blocking connection: to one server, or a Cluster client's.
pub(super) enum BlockingConn {
    Node(redis::Connection),
    // Boxed: it is five times a node connection's size.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl redis::ConnectionLike for BlockingConn {
    fn req_packed_command(&mut self, cmd: &[u8]) -> redis::RedisResult<Value> {
        match self {
            BlockingConn::Node(c) => c.req_packed_command(cmd),
            BlockingConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> redis::RedisResult<Vec<Value>> {
        match self {
            BlockingConn::Node(c) => c.req_packed_commands(cmd, offset, count),
            BlockingConn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            BlockingConn::Node(c) => c.get_db(),
            BlockingConn::Cluster(c) => c.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            BlockingConn::Node(c) => c.check_connection(),
            BlockingConn::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            BlockingConn::Node(c) => c.is_open(),
            // False while any one node's connection is down, which would
            // have the pool drop every Cluster connection while one shard
            // fails over; the client reconnects its nodes itself.
            BlockingConn::Cluster(_) => true,
        }
    }
}

/// A new blocking connection to the deployment within the connect timeout:
/// the one server, the primary the sentinels name now, or a Cluster
/// client's (whose replies may also wait for the replicas the config asks
/// for: the pool's connections serve every call).
pub(super) fn connect_blocking(target: &Target) -> Result<BlockingConn, RedisError> {
    let config = &target.config;
    match &target.deployment {
        Deployment::Single(client) => Ok(BlockingConn::Node(
            client.get_connection_with_timeout(config.connect_timeout)?,
        )),
        Deployment::Sentinel(sentinels) => {
            Ok(BlockingConn::Node(primary_blocking(target, sentinels)?))
        }
        Deployment::Cluster(cluster) => {
            let client = cluster.client(config, config.replicas)?;
            let timeouts = redis::cluster::ClusterConfig::new()
                .set_connection_timeout(config.connect_timeout)
                .set_response_timeout(config.reply_timeout(config.replicas));
            Ok(BlockingConn::Cluster(Box::new(
                client.get_connection_with_config(timeouts)?,
            )))
        }
    }
}

/// [`primary_async`] on the blocking path: each sentinel, and the server
/// it names, within the connect timeout.
fn primary_blocking(
    target: &Target,
    sentinels: &Sentinels,
) -> Result<redis::Connection, RedisError> {
    let config = &target.config;
    let attempt = |sentinel: &Client| {
        let asked = || {
            let mut conn = sentinel.get_connection_with_timeout(config.connect_timeout)?;
            conn.set_read_timeout(Some(config.response_timeout))?;
            master_addr_cmd(&sentinels.master).query::<Value>(&mut conn)
        };
        let reply = asked().map_err(|e| at_sentinel(sentinel, e))?;
        let (host, port) = read_master_addr(reply, &sentinels.master)?;
        let mut node = sentinels
            .node
            .client(&host, port)?
            .get_connection_with_timeout(config.connect_timeout)?;
        node.set_read_timeout(Some(config.response_timeout))?;
        node.set_write_timeout(Some(config.response_timeout))?;
        if is_primary(redis::cmd("ROLE").query::<Value>(&mut node)?) {
            Ok(node)
        } else {
            Err(not_primary(&sentinels.master))
        }
    };
    let start = sentinels.answered.load(Ordering::Relaxed);
    let mut last = None;
    for i in round_from(sentinels.sentinels.len(), start) {
        match attempt(&sentinels.sentinels[i]) {
            Ok(node) => {
                sentinels.answered.store(i, Ordering::Relaxed);
                return Ok(node);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(no_sentinel))
}

/// `client`, speaking RESP3 if asked (push mode needs it), through the
/// target's TLS material.
fn protocol(target: &Target, client: &Client, resp3: bool) -> Result<Client, RedisError> {
    if !resp3 {
        return Ok(client.clone());
    }
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    target.tls.client(info.set_redis_settings(settings))
}

/// A sentinel's own failure, saying which sentinel: the deployment's name
/// lists them all, and "is the server running?" must be read of this one.
/// An I/O error stays one, so it is still told apart from a refusal.
fn at_sentinel(sentinel: &Client, e: RedisError) -> RedisError {
    let addr = sentinel.get_connection_info().addr().to_string();
    match io_error(&e) {
        Some(io) => RedisError::from(std::io::Error::new(
            io.kind(),
            format!("sentinel {addr}: {io}"),
        )),
        None if e.is_timeout() => e,
        None => RedisError::from((e.kind(), "sentinel", format!("{addr}: {e}"))),
    }
}

fn not_primary(master: &str) -> RedisError {
    RedisError::from((
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
        "the server the sentinels named is not the primary (a failover under way?)",
        format!("master name {master}"),
    ))
}

fn not_one_node() -> RedisError {
    RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "a Cluster has no one server to connect to",
    ))
}
