//! The fleet: three "processes" (each its own Redis client, synchronizer,
//! reloader and layered service) over a Redis the row controls (one
//! redis-server, a Sentinel group or a cluster), sharing one in-memory
//! versioned database that their loaders read.

use std::future::{ready, Ready};
use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use gensync::backend::Fence;
use gensync::reload::{
    fenced, BoxError, CheckMode, ReloadMetrics, Reloader, SettingsLoader, SettingsReload,
    SettingsReloadLayer, SettingsSaver, Snapshot, StaleFence,
};
use gensync::testing::{
    Faults, FaultyBackend, FencedStore, RedisCluster, RedisServer, SentinelGroup,
};
use gensync::{Generation, RedisBackend, RedisConfig, Synchronizer};
use tokio::sync::oneshot;
use tower::{Service, ServiceBuilder};

use crate::harness::{ensure, key, InjectedPanic, INITIAL, INSTANCES, MARGIN};
use gensync::testing::fast_config;

/// Push mode's heartbeat in every fleet: short, so a push row's promise
/// (settings at least as new as every bump that completed before the last
/// answered heartbeat was sent, so at most two heartbeats before a request)
/// is judged with a tight window, and a lost connection shows quickly.
pub const HEARTBEAT: Duration = Duration::from_millis(50);

/// The instances' Redis configuration: the tests' fast timeouts, and the
/// fleet's heartbeat (only push mode sends heartbeats).
pub fn config() -> RedisConfig {
    fast_config().heartbeat(HEARTBEAT)
}

/// The fleet's database: one versioned settings value every loader reads,
/// fenced as a careful store is: it keeps the greatest fencing token it
/// accepted beside the version, and refuses a save with a smaller one.
pub struct Db {
    /// The version, beside the greatest token accepted.
    versions: FencedStore<u64>,
    /// What the next publish's save runs into, if anything.
    next_save: Mutex<Option<SaveFault>>,
}

/// A fault for one save, taken by the first save after it is armed.
enum SaveFault {
    /// The save blocks its thread before it stores, until the row resumes
    /// it: a writer paused by GC or SIGSTOP, renewals included, since they
    /// run on the same task.
    Stall {
        started: oneshot::Sender<()>,
        resume: mpsc::Receiver<()>,
    },
    /// The save is handed to the row, which lands it when it likes, and
    /// never returns: a writer that dies with its save in flight.
    Hold {
        handed: oneshot::Sender<(u64, Fence)>,
    },
}

/// The most a stalled save waits to be resumed: longer than any wait of the
/// row's own, so the row's message is the one that reports a hang.
const STALL_LIMIT: Duration = Duration::from_secs(30);

impl Db {
    fn new() -> Db {
        Db {
            versions: FencedStore::new(1),
            next_save: Mutex::new(None),
        }
    }

    pub fn version(&self) -> u64 {
        self.versions.value()
    }

    /// Saves by hand, as a writer that bumps by hand does: with no token,
    /// so the greatest accepted one stays.
    pub fn save(&self, version: u64) {
        self.versions.set(version);
    }

    /// Stores `version` unless a greater token was accepted already.
    pub fn store(&self, version: u64, fence: Fence) -> Result<(), StaleFence> {
        self.versions.save(version, fence)
    }

    /// The saves refused for a stale token.
    pub fn refused(&self) -> Vec<StaleFence> {
        self.versions.refused()
    }

    /// The next save blocks its thread until `resume` sends (or is
    /// dropped); the receiver hears when it started blocking.
    pub fn stall_next_save(&self) -> (oneshot::Receiver<()>, mpsc::Sender<()>) {
        let (started, started_rx) = oneshot::channel();
        let (resume_tx, resume) = mpsc::channel();
        *self.next_save.lock().unwrap() = Some(SaveFault::Stall { started, resume });
        (started_rx, resume_tx)
    }

    /// The next save is handed over through the receiver, and never returns.
    pub fn hold_next_save(&self) -> oneshot::Receiver<(u64, Fence)> {
        let (handed, rx) = oneshot::channel();
        *self.next_save.lock().unwrap() = Some(SaveFault::Hold { handed });
        rx
    }

    fn take_fault(&self) -> Option<SaveFault> {
        self.next_save.lock().unwrap().take()
    }
}

/// What one instance's loader is told to do, and when it failed.
#[derive(Default)]
pub struct LoaderFaults {
    fail_next: AtomicU32,
    panic_next: AtomicU32,
    failures: Mutex<Vec<Instant>>,
}

impl LoaderFaults {
    pub fn fail_next(&self, n: u32) {
        self.fail_next.fetch_add(n, SeqCst);
    }

    pub fn panic_next(&self, n: u32) {
        self.panic_next.fetch_add(n, SeqCst);
    }

    /// Injected failures not used up yet.
    pub fn pending(&self) -> u32 {
        self.fail_next.load(SeqCst) + self.panic_next.load(SeqCst)
    }

    /// When each injected failure happened.
    pub fn failures(&self) -> Vec<Instant> {
        self.failures.lock().unwrap().clone()
    }

    fn take(&self, counter: &AtomicU32) -> bool {
        let hit = counter
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if hit {
            self.failures.lock().unwrap().push(Instant::now());
        }
        hit
    }
}

fn loader(db: Arc<Db>, faults: Arc<LoaderFaults>) -> impl SettingsLoader<u64> {
    move || {
        let (db, faults) = (Arc::clone(&db), Arc::clone(&faults));
        async move {
            // Let other tasks run mid-load, so bumps can land during it.
            tokio::task::yield_now().await;
            if faults.take(&faults.panic_next) {
                std::panic::panic_any(InjectedPanic);
            }
            if faults.take(&faults.fail_next) {
                return Err(std::io::Error::other(
                    "injected: the settings database is unavailable",
                ));
            }
            Ok(db.version())
        }
    }
}

fn saver(db: Arc<Db>) -> impl SettingsSaver<u64> {
    fenced(move |settings: &u64, fence: Fence| {
        let (db, settings) = (Arc::clone(&db), *settings);
        async move {
            match db.take_fault() {
                Some(SaveFault::Stall { started, resume }) => {
                    let _ = started.send(());
                    // Blocks the worker thread, not just this task: nothing
                    // of this writer runs until the row resumes it.
                    if let Err(RecvTimeoutError::Timeout) = resume.recv_timeout(STALL_LIMIT) {
                        return Err(format!(
                            "the stalled save was not resumed within {STALL_LIMIT:?}"
                        )
                        .into());
                    }
                }
                Some(SaveFault::Hold { handed }) => {
                    let _ = handed.send((settings, fence));
                    std::future::pending::<()>().await;
                }
                None => {}
            }
            db.store(settings, fence).map_err(BoxError::from)
        }
    })
}

/// The inner service: answers with the settings version the middleware
/// handed it, and fails when it handed none.
#[derive(Clone, Copy)]
pub struct Echo;

impl Service<http::Request<()>> for Echo {
    type Response = u64;
    type Error = &'static str;
    type Future = Ready<Result<u64, &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        ready(
            request
                .extensions()
                .get::<Snapshot<u64>>()
                .map(|snapshot| **snapshot)
                .ok_or("no Snapshot in the request's extensions"),
        )
    }
}

pub type Svc = SettingsReload<Echo, u64>;

/// One "process": its own Redis client, synchronizer, reloader and service.
pub struct Instance {
    pub reloader: Reloader<u64>,
    pub backend: RedisBackend,
    /// Counts the synchronizer's backend calls (it injects nothing): what
    /// the instance's checks and writes cost the backend, outside the
    /// tracking connection, which is push mode's own.
    pub calls: Faults,
    pub loader: Arc<LoaderFaults>,
    pub service: Svc,
}

/// Whether a check by `reloader` now would be answered without a read:
/// push tracking vouches for the shared generation, and it is the one the
/// reloader loaded at.
pub fn vouching(reloader: &Reloader<u64>) -> bool {
    let sync = reloader.synchronizer();
    matches!(sync.vouched(), Some(gensync::backend::Stored::Value(g)) if sync.sync_gen() == Some(g))
}

/// How a row's fleet is built and judged.
#[derive(Clone)]
pub struct Options {
    /// The URL the instances use, on a single server (a Sentinel group or
    /// a cluster has its own).
    pub url: fn(&RedisServer) -> String,
    pub max_wait: Duration,
    pub backoff: (Duration, Duration),
    /// Short, so a dead writer's intent lapses quickly.
    pub lock_ttl: Duration,
    /// The most a request may take; by default one backend call plus the
    /// reload wait.
    pub latency_bound: Option<Duration>,
    /// Strings that must never appear in the logs.
    pub secrets: &'static [&'static str],
    pub debug_logs: bool,
    /// How the instances' reloaders check the shared generation.
    pub mode: CheckMode,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: RedisServer::url,
            max_wait: Duration::from_secs(1),
            backoff: (Duration::from_millis(50), Duration::from_millis(400)),
            lock_ttl: Duration::from_secs(1),
            latency_bound: None,
            secrets: &[],
            debug_logs: false,
            mode: CheckMode::Strict,
        }
    }
}

impl Options {
    /// The defaults, with the instances checking in `mode`.
    pub fn in_mode(mode: CheckMode) -> Options {
        Options {
            mode,
            ..Options::default()
        }
    }

    /// How long after an update's publish (or bump) returned a request may
    /// still be served older settings, uncounted: what the mode promises
    /// (none in strict mode; in push mode, the heartbeat bound: the last
    /// answered heartbeat may have been sent up to two heartbeats before
    /// the request).
    pub fn freshness_grace(&self) -> Duration {
        self.mode.lag(HEARTBEAT)
    }

    pub fn latency_bound(&self) -> Duration {
        self.latency_bound
            .unwrap_or(fast_config().call_bound() + self.max_wait + MARGIN)
    }

    /// The most loads one instance may run in `lasted` of outage: one at
    /// the start, then one per backoff window (doubling up to its cap), and
    /// one more for a load straddling either end. Far fewer than checks:
    /// no reload storm.
    pub fn loads_allowed(&self, lasted: Duration) -> u64 {
        let (mut elapsed, mut pause, mut loads) = (Duration::ZERO, self.backoff.0, 2);
        while elapsed + pause <= lasted {
            elapsed += pause;
            loads += 1;
            pause = (pause * 2).min(self.backoff.1);
        }
        loads
    }
}

/// Where the fleet's Redis is: one server, a primary and a replica behind
/// three sentinels, or a cluster of three shards with a replica each.
pub enum Deployment {
    Single(RedisServer),
    Sentinel(SentinelGroup),
    Cluster(RedisCluster),
}

impl Deployment {
    /// The URL clients are given: `opts.url` on a single server, else the
    /// Sentinel group's or the cluster's own.
    pub fn url(&self, opts: &Options) -> String {
        match self {
            Deployment::Single(server) => (opts.url)(server),
            Deployment::Sentinel(group) => group.url(),
            Deployment::Cluster(cluster) => cluster.url(),
        }
    }

    /// The server that holds the fleet's key for writing now: the single
    /// server, the primary the sentinels name, or the primary of the key's
    /// shard.
    pub fn primary(&self) -> Result<&RedisServer, String> {
        let key = key();
        match self {
            Deployment::Single(server) => Ok(server),
            Deployment::Sentinel(group) => group
                .primary()
                .map_err(|e| format!("the sentinels' primary: {e}")),
            Deployment::Cluster(cluster) => {
                let port = cluster
                    .primary_for(key.as_str())
                    .map_err(|e| format!("the key's shard: {e}"))?;
                cluster
                    .node(port)
                    .ok_or_else(|| format!("no cluster node on port {port}"))
            }
        }
    }

    /// The replica of the primary that holds the fleet's key (the one a
    /// failover promotes), as the sentinels or the cluster see it now.
    pub fn replica(&self) -> Result<&RedisServer, String> {
        let replica = match self {
            Deployment::Single(_) => return Err("a single server has no replica".to_owned()),
            Deployment::Sentinel(group) => group.replica(),
            Deployment::Cluster(cluster) => {
                let primary = self.primary()?.port();
                cluster.replica_of(primary).and_then(|port| {
                    cluster
                        .node(port)
                        .ok_or_else(|| std::io::Error::other(format!("no node on port {port}")))
                })
            }
        };
        replica.map_err(|e| format!("the primary's replica: {e}"))
    }

    /// The fleet's key as the node on `port` holds it (a replica too: on a
    /// cluster node, after `READONLY`).
    pub fn stored_on(&self, port: u16) -> Result<Option<Generation>, String> {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .and_then(|client| client.get_connection())
            .map_err(|e| format!("connecting to port {port}: {e}"))?;
        if let Deployment::Cluster(_) = self {
            redis::cmd("READONLY")
                .query::<()>(&mut conn)
                .map_err(|e| format!("READONLY: {e}"))?;
        }
        let raw: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key().as_str())
            .query(&mut conn)
            .map_err(|e| format!("GET on port {port}: {e}"))?;
        Ok(raw.and_then(|raw| Generation::parse_stored(&raw)))
    }

    /// Kills (SIGKILL) the primary that holds the fleet's key, and returns
    /// its port. Only a Sentinel group or a cluster fails over.
    pub fn kill_primary(&mut self) -> Result<u16, String> {
        let killed = match self {
            Deployment::Single(_) => return Err("a single server has no failover".to_owned()),
            Deployment::Sentinel(group) => group.kill_primary(),
            Deployment::Cluster(cluster) => cluster.kill_primary_for(key().as_str()),
        };
        killed.map_err(|e| format!("killing the primary: {e}"))
    }

    /// Waits until a replica was promoted in place of the primary on
    /// `old` (every sentinel, or every cluster node, names it, and it says
    /// `role:master`), and returns its port. Blocks the row's own thread.
    pub fn wait_for_failover(&self, old: u16, within: Duration) -> Result<u16, String> {
        let promoted = match self {
            Deployment::Single(_) => return Err("a single server has no failover".to_owned()),
            Deployment::Sentinel(group) => group.wait_for_failover(old, within),
            Deployment::Cluster(cluster) => cluster.wait_for_failover(key().as_str(), old, within),
        };
        promoted.map_err(|e| format!("no replica was promoted in place of port {old}: {e}"))
    }
}

/// The instances, their database and their Redis.
pub struct Fleet {
    pub redis: Deployment,
    pub db: Arc<Db>,
    pub instances: Vec<Instance>,
    url: String,
}

impl Fleet {
    pub fn new(redis: Deployment, opts: &Options) -> Result<Fleet, String> {
        let db = Arc::new(Db::new());
        let url = redis.url(opts);
        let instances = (0..INSTANCES)
            .map(|_| {
                let backend = RedisBackend::with_config(&url, config())
                    .map_err(|e| format!("backend: {e}"))?;
                let faults = Arc::new(LoaderFaults::default());
                let counted = FaultyBackend::new(backend.clone());
                let calls = counted.faults();
                let sync = Synchronizer::new(counted, key());
                let reloader =
                    Reloader::builder(sync, loader(Arc::clone(&db), Arc::clone(&faults)))
                        .saver(saver(Arc::clone(&db)))
                        .max_wait(opts.max_wait)
                        .load_timeout(Duration::from_secs(2))
                        .backoff(opts.backoff.0, opts.backoff.1)
                        .write_lock(opts.lock_ttl, 40)
                        .mode(opts.mode)
                        .build(INITIAL)
                        .map_err(|e| format!("reloader: {e}"))?;
                let service = ServiceBuilder::new()
                    .layer(SettingsReloadLayer::new(reloader.clone()))
                    .service(Echo);
                Ok(Instance {
                    reloader,
                    backend,
                    calls,
                    loader: faults,
                    service,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Fleet {
            redis,
            db,
            instances,
            url,
        })
    }

    /// The single server of the rows that run on one.
    pub fn server(&self) -> &RedisServer {
        match &self.redis {
            Deployment::Single(server) => server,
            _ => panic!("this row's fleet runs on a Sentinel group or a cluster, not one server"),
        }
    }

    /// The single server, to stop, kill or restart it.
    pub fn server_mut(&mut self) -> &mut RedisServer {
        match &mut self.redis {
            Deployment::Single(server) => server,
            _ => panic!("this row's fleet runs on a Sentinel group or a cluster, not one server"),
        }
    }

    /// A writer process of its own beside the instances, over a backend the
    /// row can cut off, as it would be by the process dying: its renewals
    /// then stop reaching Redis, and its lease and intent lapse. (Aborting
    /// a publish does not kill its write, which runs on a task of its own.)
    /// A write it cannot finish is abandoned after `write_timeout`.
    pub fn writer(
        &self,
        opts: &Options,
        config: RedisConfig,
        write_timeout: Duration,
    ) -> Result<(Reloader<u64>, Faults), String> {
        let backend = FaultyBackend::new(
            RedisBackend::with_config(&self.url, config).map_err(|e| format!("backend: {e}"))?,
        );
        let faults = backend.faults();
        let reloader = Reloader::builder(
            Synchronizer::new(backend, key()),
            loader(Arc::clone(&self.db), Arc::new(LoaderFaults::default())),
        )
        .saver(saver(Arc::clone(&self.db)))
        .write_lock(opts.lock_ttl, 40)
        .write_timeout(write_timeout)
        .build(INITIAL)
        .map_err(|e| format!("writer: {e}"))?;
        Ok((reloader, faults))
    }

    /// A new admin connection. Admin calls block, but only the row's own
    /// thread (the runtime's `block_on`), not the workers serving requests.
    /// On a Sentinel group or a cluster, a connection to the key's primary.
    pub fn admin(&self) -> Result<redis::Connection, String> {
        admin(self.redis.primary()?)
    }

    /// Runs one command on a new admin connection.
    pub fn raw<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        cmd.query(&mut self.admin()?)
            .map_err(|e| format!("admin command failed: {e}"))
    }

    /// Connections the server accepted and refused so far (`INFO stats`).
    pub fn connections(&self, admin: &mut redis::Connection) -> Result<(u64, u64), String> {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query(admin)
            .map_err(|e| format!("INFO: {e}"))?;
        let stat = |name: &str| -> u64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok((
            stat("total_connections_received"),
            stat("rejected_connections"),
        ))
    }

    /// A handle on each instance's reloader.
    pub fn reloaders(&self) -> Vec<Reloader<u64>> {
        self.instances.iter().map(|i| i.reloader.clone()).collect()
    }

    /// The instances' backend calls so far, summed.
    pub fn backend_calls(&self) -> u64 {
        self.instances.iter().map(|i| i.calls.counts().calls).sum()
    }

    /// Commands the server ran so far: see [`commands`]. On a Sentinel
    /// group or a cluster, the key's primary (the one the fleet talks to).
    pub fn commands(&self) -> Result<u64, String> {
        commands(self.redis.primary()?)
    }

    pub fn metrics(&self) -> Vec<ReloadMetrics> {
        self.instances
            .iter()
            .map(|i| i.reloader.metrics())
            .collect()
    }

    /// The generations the instances recorded.
    pub fn recorded(&self) -> Vec<Generation> {
        self.instances
            .iter()
            .filter_map(|i| i.reloader.synchronizer().sync_gen())
            .collect()
    }

    /// The shared generation as stored, if it is one.
    pub fn stored(&self) -> Result<Option<Generation>, String> {
        let raw: Option<Vec<u8>> = self.raw(redis::cmd("GET").arg(key().as_str()))?;
        Ok(raw.and_then(|raw| Generation::parse_stored(&raw)))
    }

    /// The key holds a valid generation that lives about a year, not a
    /// writer's intent or a lock's lifetime.
    pub fn key_is_repaired(&self) -> Result<(), String> {
        let kind: String = self.raw(redis::cmd("TYPE").arg(key().as_str()))?;
        ensure(kind == "string", || {
            format!("the key was not repaired: it holds a {kind}")
        })?;
        let stored = self.stored()?;
        ensure(
            stored.is_some_and(|g| g.get() > u64::from(u32::MAX)),
            || format!("the key was not repaired: it holds {stored:?}"),
        )?;
        let pttl = self.pttl()?;
        ensure(pttl > 86_400_000, || {
            format!("the repaired key lives only {pttl} ms, not a year")
        })
    }

    /// The key's time to live in milliseconds (negative: none, or no key).
    pub fn pttl(&self) -> Result<i64, String> {
        self.raw(redis::cmd("PTTL").arg(key().as_str()))
    }
}

pub fn admin(server: &RedisServer) -> Result<redis::Connection, String> {
    server
        .connection()
        .map_err(|e| format!("admin connection: {e}"))
}

/// Commands `server` ran so far (`INFO commandstats`), but the `INFO` that
/// asks: over a window where the row sends nothing else, what the fleet
/// sent.
pub fn commands(server: &RedisServer) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut admin(server)?)
        .map_err(|e| format!("admin command failed: {e}"))?;
    let mut total = 0;
    for line in info.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if name == "info" {
            continue;
        }
        let calls = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls=")?.parse::<u64>().ok());
        total += calls.ok_or_else(|| format!("INFO commandstats: no calls in {line:?}"))?;
    }
    Ok(total)
}
