//! The nemesis: a fault schedule drawn from the seed alone ([`plan`]), and
//! its execution over the deployment and the fleet ([`run`]), each fault
//! recorded in the history with its start, end and what it hit; then
//! everything healed, so the run ends on a healthy Redis.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::testing::RedisServer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::history::{Event, Fault, Recorder};
use crate::topology::{admin, admin_query, Deployment, Kind, Topology, USER};

/// What the fleet lets the nemesis do to its own parts (fleet.rs
/// implements it).
pub trait FleetFaults: Send + Sync + 'static {
    /// How many fleet instances (reloaders) there are.
    fn instances(&self) -> usize;
    /// Instance `i`'s next `loads` loads fail.
    fn loader_fail(&self, i: usize, loads: u32);
    /// Instance `i`'s next `loads` loads hang past the load timeout.
    fn loader_hang(&self, i: usize, loads: u32);
    /// Instance `i`'s next `loads` loads panic.
    fn loader_panic(&self, i: usize, loads: u32);
    /// How many writers there are.
    fn writers(&self) -> usize;
    /// Writer `w`'s next save stalls `stall` (past its lease) before it
    /// stores.
    fn writer_stall(&self, w: usize, stall: Duration);
    /// Writer `w`'s next write dies between its save and its bump (the
    /// writer is killed; the fleet restarts it).
    fn writer_die(&self, w: usize);
}

/// The topology, shared by the nemesis's faults; locked only inside
/// blocking tasks, for one admin step at a time.
pub type Shared = Arc<Mutex<Topology>>;

/// No fault starts in the run's first this long: the fleet settles.
const QUIET_START: Duration = Duration::from_secs(3);
/// Nor in its last this long: the last writes and reads see a healed
/// Redis.
const QUIET_END: Duration = Duration::from_secs(5);
/// The gap between two faults' starts, in milliseconds: 1.5 s on
/// average, at most 2.5 s, so a 60 s run has room for every kind.
const GAP_MS: std::ops::Range<u64> = 500..2500;
/// How long a fault lasts, in milliseconds.
const LASTS_MS: std::ops::Range<u64> = 100..3000;
/// How long heal waits for the deployment to answer normally.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a Cluster may take to be whole again after a node's restart
/// (a failover of the killed primary, then its rejoining as a replica).
const WHOLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a Sentinel failover may take.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);
/// RDB snapshots kept per node, oldest dropped first.
const SNAPSHOTS_KEPT: usize = 5;
/// How often the nodes are snapshotted (`SAVE`, the file copied aside).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);
/// The commands an ACL fault may take from the fleet user.
const DENIABLE: &[&str] = &[
    "getrange",
    "eval",
    "client|tracking",
    "info",
    "set",
    "incrby",
];
/// The eviction policies a maxmemory fault may set.
const POLICIES: &[&str] = &[
    "allkeys-lru",
    "volatile-lru",
    "volatile-ttl",
    "allkeys-random",
];
/// The filler a maxmemory fault writes: this many keys of this many bytes.
const FILLER_KEYS: usize = 2000;
const FILLER_BYTES: usize = 4096;

/// One fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// `kill -9`, down for `lasts`, restarted empty.
    KillEmpty,
    /// `kill -9`, restarted from an older RDB snapshot.
    KillOlder,
    /// SIGSTOP, SIGCONT after `lasts`.
    Pause,
    FlushAll,
    FlushDb,
    /// `SWAPDB 0 1` (not on Cluster).
    SwapDb,
    /// `CLIENT KILL` of data connections (every normal one, or one by id).
    ClientKillData,
    /// `CLIENT KILL` of tracking connections and their redirect targets.
    ClientKillTracking,
    ClientPauseWrite,
    ClientPauseAll,
    /// `DEBUG SLEEP` 0.1 to 1 s.
    DebugSleep,
    /// A command the fleet needs denied to its user for `lasts`.
    AclDeny,
    /// `maxmemory` low beside a filler of TTL keys, for `lasts`.
    MaxMemory,
    WriterStall,
    WriterDie,
    LoaderFail,
    LoaderHang,
    LoaderPanic,
    /// `SENTINEL FAILOVER`.
    SentinelFailover,
    /// The primary killed, restarted as a replica once failed over.
    SentinelKillPrimary,
    /// A fleet key's slot moved to another primary.
    SlotMove,
    /// `CLUSTER FAILOVER` on a replica.
    ClusterFailover,
    /// Proxy latency 5 to 200 ms for `lasts`.
    ProxyLatency,
    /// Every proxied connection cut, new ones refused for `lasts`.
    ProxyCut,
}

impl FaultKind {
    /// The kind's name: the summary table's row, stable across runs.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::KillEmpty => "kill -9, restart empty",
            FaultKind::KillOlder => "kill -9, restart from older RDB",
            FaultKind::Pause => "SIGSTOP/SIGCONT",
            FaultKind::FlushAll => "FLUSHALL",
            FaultKind::FlushDb => "FLUSHDB",
            FaultKind::SwapDb => "SWAPDB 0 1",
            FaultKind::ClientKillData => "CLIENT KILL data",
            FaultKind::ClientKillTracking => "CLIENT KILL tracking",
            FaultKind::ClientPauseWrite => "CLIENT PAUSE WRITE",
            FaultKind::ClientPauseAll => "CLIENT PAUSE ALL",
            FaultKind::DebugSleep => "DEBUG SLEEP",
            FaultKind::AclDeny => "ACL deny, then allow",
            FaultKind::MaxMemory => "maxmemory evictions",
            FaultKind::WriterStall => "writer stalls past lease",
            FaultKind::WriterDie => "writer dies between save and bump",
            FaultKind::LoaderFail => "loader fails",
            FaultKind::LoaderHang => "loader hangs",
            FaultKind::LoaderPanic => "loader panics",
            FaultKind::SentinelFailover => "SENTINEL FAILOVER",
            FaultKind::SentinelKillPrimary => "kill primary, restart as replica",
            FaultKind::SlotMove => "slot move",
            FaultKind::ClusterFailover => "CLUSTER FAILOVER",
            FaultKind::ProxyLatency => "proxy latency",
            FaultKind::ProxyCut => "proxy cut, refuse",
        }
    }

    /// The kinds that make sense on `topology`.
    pub fn all(topology: Kind) -> Vec<FaultKind> {
        use FaultKind::*;
        let mut kinds = vec![
            KillEmpty,
            KillOlder,
            Pause,
            FlushAll,
            FlushDb,
            ClientKillData,
            ClientKillTracking,
            ClientPauseWrite,
            ClientPauseAll,
            DebugSleep,
            AclDeny,
            MaxMemory,
            WriterStall,
            WriterDie,
            LoaderFail,
            LoaderHang,
            LoaderPanic,
        ];
        match topology {
            Kind::Single => kinds.extend([SwapDb, ProxyLatency, ProxyCut]),
            Kind::Sentinel => kinds.extend([SwapDb, SentinelFailover, SentinelKillPrimary]),
            Kind::Cluster => kinds.extend([SlotMove, ClusterFailover]),
        }
        kinds
    }
}

/// One fault of the schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Planned {
    /// When it starts, since the run began.
    pub at: Duration,
    pub kind: FaultKind,
    /// How long it lasts (a pause, a denial, a latency...).
    pub lasts: Duration,
    /// A seeded number the fault uses to choose its node, command, etc.
    pub pick: u64,
}

/// The whole schedule, from the seed alone: the same seed, duration and
/// topology give the same list. Kinds are dealt from shuffled decks, so
/// every kind comes once before any comes twice: a 60 s run has them all.
pub fn plan(seed: u64, duration: Duration, kind: Kind) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let kinds = FaultKind::all(kind);
    let mut deck: Vec<FaultKind> = Vec::new();
    let mut planned = Vec::new();
    let mut at = QUIET_START;
    let end = duration.saturating_sub(QUIET_END);
    while at < end {
        if deck.is_empty() {
            deck = kinds.clone();
            deck.shuffle(&mut rng);
        }
        let fault = deck.pop().expect("refilled above");
        let lasts = Duration::from_millis(rng.random_range(LASTS_MS));
        planned.push(Planned {
            at,
            kind: fault,
            // Ends before the quiet end, so heal starts on time.
            lasts: lasts.min(end - at),
            pick: rng.random(),
        });
        at += Duration::from_millis(rng.random_range(GAP_MS));
    }
    planned
}

/// Runs the schedule: each fault at its time (on the recorder's clock),
/// overlapping ones concurrently, blocking admin calls on the blocking
/// pool; records an `Event::Fault` for each (a fault that cannot be
/// applied now is recorded as skipped, with why); meanwhile snapshots the
/// data nodes for the restores. Then heals everything and waits until
/// the deployment answers normally. `keys` are the fleet's keys, whose
/// nodes the server faults hit. Never panics on a nemesis error.
pub async fn run(
    plan: Vec<Planned>,
    topology: Shared,
    fleet: Arc<dyn FleetFaults>,
    keys: Vec<String>,
    recorder: Recorder,
) {
    let keys = Arc::new(keys);
    let snapshots = tokio::spawn(snapshot_loop(topology.clone()));
    let mut faults = Vec::new();
    for planned in plan {
        tokio::time::sleep(planned.at.saturating_sub(recorder.elapsed())).await;
        let ctx = Ctx {
            topology: topology.clone(),
            fleet: fleet.clone(),
            keys: keys.clone(),
        };
        let recorder = recorder.clone();
        faults.push(tokio::spawn(async move {
            inject(&ctx, &planned, &recorder).await;
        }));
    }
    for fault in faults {
        let _ = fault.await;
    }
    snapshots.abort();
    heal(&topology, &keys).await;
}

/// What a fault acts on.
#[derive(Clone)]
pub struct Ctx {
    /// The deployment.
    pub topology: Shared,
    /// The fleet's own parts.
    pub fleet: Arc<dyn FleetFaults>,
    /// The fleet's keys: the server faults hit the nodes holding them.
    pub keys: Arc<Vec<String>>,
}

/// Applies one fault, undoes it after `lasts`, and records it.
pub async fn inject(ctx: &Ctx, planned: &Planned, recorder: &Recorder) {
    let start = recorder.now();
    let outcome = apply(ctx, planned).await;
    let end = recorder.now();
    let (kind, detail) = match outcome {
        Ok(detail) => (planned.kind.name().to_owned(), detail),
        Err(why) => (
            format!("{}, skipped", planned.kind.name()),
            format!("skipped: {why}"),
        ),
    };
    recorder.record(Event::Fault(Fault {
        kind,
        start,
        end,
        detail,
    }));
}

/// Runs `step` on the topology, locked, on the blocking pool.
async fn locked<T: Send + 'static>(
    topology: &Shared,
    step: impl FnOnce(&mut Topology) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let topology = topology.clone();
    tokio::task::spawn_blocking(move || {
        let mut topology = topology.lock().unwrap_or_else(|e| e.into_inner());
        step(&mut topology)
    })
    .await
    .map_err(|e| format!("the step panicked: {e}"))?
}

/// The fleet key a fault aims at.
fn key_of(keys: &[String], pick: u64) -> String {
    match keys.len() {
        0 => "gensync:chaos".to_owned(),
        n => keys[(pick % n as u64) as usize].clone(),
    }
}

/// The node a server fault hits: the primary holding a fleet key, or,
/// one time in four when `any` (a fault a replica takes too), any running
/// data node; also any running one, when `any`, while that primary is
/// down (killed, not failed over yet), so the fault still lands.
fn target(topology: &Topology, keys: &[String], pick: u64, any: bool) -> Result<u16, String> {
    let running: Vec<&RedisServer> = topology
        .data_nodes()
        .into_iter()
        .filter(|n| n.is_running())
        .collect();
    let some_running = || running[((pick / 4) % running.len() as u64) as usize].port();
    if any && pick.is_multiple_of(4) && !running.is_empty() {
        return Ok(some_running());
    }
    let primary = topology.primary_for(&key_of(keys, pick >> 8))?;
    match any && !primary.is_running() && !running.is_empty() {
        true => Ok(some_running()),
        false => Ok(primary.port()),
    }
}

/// The running data node on `port`.
fn node(topology: &Topology, port: u16) -> Result<&RedisServer, String> {
    topology
        .data_nodes()
        .into_iter()
        .find(|n| n.port() == port && n.is_running())
        .ok_or_else(|| format!("node {port} is not running"))
}

/// One admin command on the fault's target; returns the target's port.
async fn on_target<T: redis::FromRedisValue + Send + 'static>(
    ctx: &Ctx,
    pick: u64,
    any: bool,
    cmd: redis::Cmd,
) -> Result<(u16, T), String> {
    let keys = ctx.keys.clone();
    locked(&ctx.topology, move |t| {
        let port = target(t, &keys, pick, any)?;
        Ok((port, admin_query(node(t, port)?, &cmd)?))
    })
    .await
}

/// Applies `planned`, waits out its `lasts`, undoes it; the detail for the
/// history, or why it could not be applied.
async fn apply(ctx: &Ctx, planned: &Planned) -> Result<String, String> {
    let (pick, lasts) = (planned.pick, planned.lasts);
    let ms = lasts.as_millis() as u64;
    match planned.kind {
        FaultKind::KillEmpty | FaultKind::KillOlder => kill_restart(ctx, planned).await,
        FaultKind::Pause => {
            let keys = ctx.keys.clone();
            let (port, pid) = locked(&ctx.topology, move |t| {
                let port = target(t, &keys, pick, true)?;
                let server = node(t, port)?;
                let pid = server.pid().ok_or("no pid")?;
                server.pause().map_err(|e| e.to_string())?;
                t.paused.insert(pid);
                Ok((port, pid))
            })
            .await?;
            tokio::time::sleep(lasts).await;
            locked(&ctx.topology, move |t| {
                t.paused.remove(&pid);
                signal_continue(pid);
                Ok(())
            })
            .await?;
            Ok(format!("node {port} (pid {pid}) stopped {ms} ms"))
        }
        FaultKind::FlushAll => {
            let (port, ()) = on_target(ctx, pick, false, redis::cmd("FLUSHALL")).await?;
            Ok(format!("node {port}"))
        }
        FaultKind::FlushDb => {
            let (port, ()) = on_target(ctx, pick, false, redis::cmd("FLUSHDB")).await?;
            Ok(format!("node {port}"))
        }
        FaultKind::SwapDb => {
            let mut swap = redis::cmd("SWAPDB");
            swap.arg(0).arg(1);
            let (port, ()) = on_target(ctx, pick, false, swap).await?;
            Ok(format!("node {port}"))
        }
        FaultKind::ClientKillData => client_kill_data(ctx, pick).await,
        FaultKind::ClientKillTracking => client_kill_tracking(ctx, pick).await,
        FaultKind::ClientPauseWrite | FaultKind::ClientPauseAll => {
            let mode = match planned.kind {
                FaultKind::ClientPauseWrite => "WRITE",
                _ => "ALL",
            };
            let mut pause = redis::cmd("CLIENT");
            pause.arg("PAUSE").arg(ms.max(1)).arg(mode);
            let (port, ()) = on_target(ctx, pick, true, pause).await?;
            // The pause ends by itself; waited so the record spans it.
            tokio::time::sleep(lasts).await;
            Ok(format!("node {port}, {ms} ms"))
        }
        FaultKind::DebugSleep => {
            let secs = 0.1 + (pick % 10) as f64 / 10.0;
            let mut sleep = redis::cmd("DEBUG");
            sleep.arg("SLEEP").arg(format!("{secs:.1}"));
            let (port, ()) = on_target(ctx, pick, true, sleep).await?;
            Ok(format!("node {port}, {secs:.1} s"))
        }
        FaultKind::AclDeny => {
            let command = DENIABLE[(pick % DENIABLE.len() as u64) as usize];
            set_acl(ctx, format!("-{command}")).await?;
            tokio::time::sleep(lasts).await;
            // Applied either way: an allow that fails (a node paused) is
            // said, and heal allows it.
            let undone = undo_note(set_acl(ctx, format!("+{command}")).await);
            Ok(format!("{command} denied to {USER} for {ms} ms{undone}"))
        }
        FaultKind::MaxMemory => maxmemory(ctx, planned).await,
        FaultKind::WriterStall | FaultKind::WriterDie => {
            let writers = ctx.fleet.writers();
            if writers == 0 {
                return Err("no writers".into());
            }
            let w = (pick % writers as u64) as usize;
            if planned.kind == FaultKind::WriterStall {
                ctx.fleet.writer_stall(w, lasts);
                Ok(format!("writer {w}'s next save stalls {ms} ms"))
            } else {
                ctx.fleet.writer_die(w);
                Ok(format!("writer {w}'s next write dies"))
            }
        }
        FaultKind::LoaderFail | FaultKind::LoaderHang | FaultKind::LoaderPanic => {
            let instances = ctx.fleet.instances();
            if instances == 0 {
                return Err("no instances".into());
            }
            let i = (pick % instances as u64) as usize;
            let loads = 1 + ((pick >> 16) % 3) as u32;
            match planned.kind {
                FaultKind::LoaderFail => ctx.fleet.loader_fail(i, loads),
                FaultKind::LoaderHang => ctx.fleet.loader_hang(i, loads),
                _ => ctx.fleet.loader_panic(i, loads),
            }
            Ok(format!("instance {i}'s next {loads} loads"))
        }
        FaultKind::SentinelFailover => sentinel_failover(ctx).await,
        FaultKind::SentinelKillPrimary => sentinel_kill_primary(ctx, lasts).await,
        FaultKind::SlotMove => {
            let key = key_of(&ctx.keys, pick);
            locked(&ctx.topology, move |t| {
                let Deployment::Cluster(cluster) = t.deployment() else {
                    return Err("not a cluster".into());
                };
                let from = cluster.primary_for(&key).map_err(|e| e.to_string())?;
                let others: Vec<u16> = cluster
                    .primaries()
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .filter(|p| *p != from)
                    .collect();
                if others.is_empty() {
                    return Err("no other primary".into());
                }
                let to = others[((pick >> 8) % others.len() as u64) as usize];
                cluster.move_slot(&key, to).map_err(|e| e.to_string())?;
                Ok(format!("{key}'s slot from {from} to {to}"))
            })
            .await
        }
        FaultKind::ClusterFailover => {
            let key = key_of(&ctx.keys, pick);
            let (replica, old) = locked(&ctx.topology, move |t| {
                let Deployment::Cluster(cluster) = t.deployment() else {
                    return Err("not a cluster".into());
                };
                let primary = cluster.primary_for(&key).map_err(|e| e.to_string())?;
                let replica = cluster.replica_of(primary).map_err(|e| e.to_string())?;
                let node = cluster.node(replica).ok_or("no replica node")?;
                admin_query::<()>(node, redis::cmd("CLUSTER").arg("FAILOVER"))?;
                Ok((replica, primary))
            })
            .await?;
            // Waited so the record spans the handover.
            let promoted = wait_for(FAILOVER_TIMEOUT, || {
                let topology = ctx.topology.clone();
                async move {
                    locked(&topology, move |t| {
                        let Deployment::Cluster(cluster) = t.deployment() else {
                            return Ok(false);
                        };
                        let node = cluster.node(replica).ok_or("no replica node")?;
                        let info: String =
                            admin_query(node, redis::cmd("INFO").arg("replication"))?;
                        Ok(info.contains("role:master"))
                    })
                    .await
                    .unwrap_or(false)
                }
            })
            .await;
            Ok(format!(
                "replica {replica} of {old}{}",
                if promoted {
                    " took over"
                } else {
                    ", not promoted in time"
                }
            ))
        }
        FaultKind::ProxyLatency => {
            let latency = Duration::from_millis(5 + pick % 196);
            with_proxy(ctx, move |p| p.set_latency(latency)).await?;
            tokio::time::sleep(lasts).await;
            with_proxy(ctx, |p| p.set_latency(Duration::ZERO)).await?;
            Ok(format!("{} ms each way for {ms} ms", latency.as_millis()))
        }
        FaultKind::ProxyCut => {
            with_proxy(ctx, |p| {
                p.refuse(true);
                p.cut();
            })
            .await?;
            tokio::time::sleep(lasts).await;
            with_proxy(ctx, |p| p.refuse(false)).await?;
            Ok(format!("cut, refused {ms} ms"))
        }
    }
}

/// What a fault's record says of its undoing: nothing when it worked,
/// else why it failed (heal undoes it at the end).
fn undo_note(undone: Result<(), String>) -> String {
    match undone {
        Ok(()) => String::new(),
        Err(e) => format!("; undo failed, left to heal: {e}"),
    }
}

/// Runs `control` on the proxy (Single only).
async fn with_proxy(
    ctx: &Ctx,
    control: impl FnOnce(&crate::proxy::Proxy) + Send + 'static,
) -> Result<(), String> {
    locked(&ctx.topology, move |t| {
        control(t.proxy().ok_or("no proxy on this topology")?);
        Ok(())
    })
    .await
}

/// Sends SIGCONT to `pid` (harmless if it runs or is gone).
fn signal_continue(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-CONT")
        .arg(pid.to_string())
        .status();
}

/// Polls `ready` every 100 ms until it says true or `timeout` passes.
async fn wait_for<F, Fut>(timeout: Duration, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if ready().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kill -9`, down for `lasts`, restarted empty or from an older
/// snapshot. On Sentinel the primary is killed and restarted as a
/// replica; on Cluster the primary holding a fleet key, or one time in
/// four any node, restarted in place (its node id kept), then waited for
/// until the cluster is whole again. One node down at a time.
async fn kill_restart(ctx: &Ctx, planned: &Planned) -> Result<String, String> {
    let older = planned.kind == FaultKind::KillOlder;
    let (pick, lasts) = (planned.pick, planned.lasts);
    let keys = ctx.keys.clone();
    let port = locked(&ctx.topology, move |t| {
        if t.down.is_some() {
            return Err("a data node is down already".into());
        }
        let port = match t.deployment() {
            Deployment::Single(server) if server.is_running() => server.port(),
            Deployment::Single(_) => return Err("the server is down".into()),
            Deployment::Sentinel(group) => group.primary().map_err(|e| e.to_string())?.port(),
            Deployment::Cluster(_) => target(t, &keys, pick, true)?,
        };
        match t.deployment_mut() {
            Deployment::Single(server) => server.kill(),
            Deployment::Sentinel(group) => {
                group.kill_primary().map_err(|e| e.to_string())?;
                t.down = Some(port);
            }
            Deployment::Cluster(cluster) => {
                cluster.kill_node(port).map_err(|e| e.to_string())?;
                t.down = Some(port);
            }
        }
        Ok(port)
    })
    .await?;
    tokio::time::sleep(lasts).await;
    // Killed either way: a restart that fails is said, and heal restarts.
    let restarted = match locked(&ctx.topology, move |t| restart(t, port, older, pick)).await {
        Ok(from) => format!("restarted {from}{}", cluster_whole(ctx).await),
        Err(e) => format!("not restarted, left to heal: {e}"),
    };
    Ok(format!(
        "node {port} down {} ms, {restarted}",
        lasts.as_millis()
    ))
}

/// On Cluster, waits (up to [`WHOLE_TIMEOUT`]) until the cluster is whole
/// again, asking in short locked steps so other faults go on meanwhile;
/// what the record says of it. Nothing on the other topologies.
async fn cluster_whole(ctx: &Ctx) -> String {
    let began = tokio::time::Instant::now();
    loop {
        let asked = locked(&ctx.topology, |t| match t.deployment() {
            Deployment::Cluster(cluster) => cluster
                .wait_until_whole(Duration::ZERO)
                .map(|()| true)
                .map_err(|e| e.to_string()),
            _ => Ok(false),
        })
        .await;
        match asked {
            Ok(true) => {
                return format!(
                    ", the cluster whole after {} ms",
                    began.elapsed().as_millis()
                )
            }
            // Not a Cluster.
            Ok(false) => return String::new(),
            Err(e) if began.elapsed() >= WHOLE_TIMEOUT => {
                return format!(", the cluster not whole in {WHOLE_TIMEOUT:?}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Restarts the killed node on `port`: its `dump.rdb` removed (empty) or
/// replaced by one of its older snapshots. The fleet user comes back with
/// it: it is on every data node's command line.
fn restart(t: &mut Topology, port: u16, older: bool, pick: u64) -> Result<String, String> {
    let from = {
        let dir = match t.deployment() {
            Deployment::Single(server) => server.dir().to_path_buf(),
            Deployment::Sentinel(group) => {
                // The sentinels may not have failed over yet: the killed
                // node is the one they still name, or the other.
                let named = group.primary().map_err(|e| e.to_string())?;
                match named.port() == port {
                    true => named.dir().to_path_buf(),
                    false => group
                        .replica()
                        .map_err(|e| e.to_string())?
                        .dir()
                        .to_path_buf(),
                }
            }
            Deployment::Cluster(cluster) => cluster
                .node(port)
                .ok_or_else(|| format!("no node on port {port}"))?
                .dir()
                .to_path_buf(),
        };
        prepare_rdb(&dir, older, pick)?
    };
    match t.deployment_mut() {
        Deployment::Single(server) => server.restart().map_err(|e| e.to_string())?,
        Deployment::Sentinel(group) => {
            // Fails only the wait if the sentinels kept it the primary
            // (back before they agreed it was down); it runs either way.
            let _ = group.restart_as_replica(port, Duration::from_secs(5));
            t.down = None;
        }
        Deployment::Cluster(cluster) => {
            cluster.restart_node(port).map_err(|e| e.to_string())?;
            t.down = None;
        }
    }
    Ok(from)
}

/// Puts the RDB the restart loads in `dir`: none (empty), or the snapshot
/// `pick` chooses among those kept; says which.
fn prepare_rdb(dir: &std::path::Path, older: bool, pick: u64) -> Result<String, String> {
    let dump = dir.join("dump.rdb");
    let _ = std::fs::remove_file(&dump);
    if !older {
        return Ok("empty".into());
    }
    let snaps = snapshots(dir);
    if snaps.is_empty() {
        return Ok("empty (no snapshot yet)".into());
    }
    let snap = &snaps[(pick % snaps.len() as u64) as usize];
    std::fs::copy(snap, &dump).map_err(|e| format!("restoring {}: {e}", snap.display()))?;
    Ok(format!(
        "from {}",
        snap.file_name().unwrap_or_default().to_string_lossy()
    ))
}

/// The snapshots kept in `dir`, oldest first.
fn snapshots(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut snaps: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("snap-") && n.ends_with(".rdb"))
        })
        .collect();
    snaps.sort();
    snaps
}

/// Every data node running: `SAVE`, and its `dump.rdb` moved aside as a
/// numbered snapshot (so a restart "empty" finds none), the oldest
/// dropped past [`SNAPSHOTS_KEPT`]. Errors (a paused node) are ignored.
pub fn snapshot(t: &Topology, serial: u64) {
    for node in t.data_nodes().into_iter().filter(|n| n.is_running()) {
        if admin_query::<()>(node, &redis::cmd("SAVE")).is_err() {
            continue;
        }
        let dir = node.dir();
        let _ = std::fs::rename(
            dir.join("dump.rdb"),
            dir.join(format!("snap-{serial:08}.rdb")),
        );
        let snaps = snapshots(dir);
        for old in snaps
            .iter()
            .take(snaps.len().saturating_sub(SNAPSHOTS_KEPT))
        {
            let _ = std::fs::remove_file(old);
        }
    }
}

async fn snapshot_loop(topology: Shared) {
    for serial in 0.. {
        let _ = locked(&topology, move |t| {
            snapshot(t, serial);
            Ok(())
        })
        .await;
        tokio::time::sleep(SNAPSHOT_EVERY).await;
    }
}

/// `CLIENT KILL` of data connections: every normal one (`TYPE normal`),
/// or one of the fleet user's, by the id `pick` chooses in `CLIENT LIST`.
async fn client_kill_data(ctx: &Ctx, pick: u64) -> Result<String, String> {
    let keys = ctx.keys.clone();
    locked(&ctx.topology, move |t| {
        let port = target(t, &keys, pick, true)?;
        let node = node(t, port)?;
        let mut conn = admin(node)?;
        if pick.is_multiple_of(2) {
            let killed: u64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("normal")
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            return Ok(format!("node {port}: {killed} normal connections"));
        }
        let clients = client_list(&mut conn)?;
        let ids: Vec<&String> = clients
            .iter()
            .filter(|c| c.get("user").map(String::as_str) == Some(USER))
            .filter_map(|c| c.get("id"))
            .collect();
        if ids.is_empty() {
            return Err(format!("node {port}: no connection of {USER}"));
        }
        let id = ids[((pick >> 8) % ids.len() as u64) as usize];
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        Ok(format!("node {port}: connection {id} ({killed} killed)"))
    })
    .await
}

/// `CLIENT KILL` of tracking connections (flag `t`) and the connections
/// their invalidations are redirected to, on the primary holding a fleet
/// key (where push mode tracks), or else on the first other running data
/// node that has some (a Sentinel primary just failed over, a Cluster
/// slot just moved). Skipped only when no node has one at that instant.
async fn client_kill_tracking(ctx: &Ctx, pick: u64) -> Result<String, String> {
    let keys = ctx.keys.clone();
    locked(&ctx.topology, move |t| {
        let first = target(t, &keys, pick, false)?;
        let others = t
            .data_nodes()
            .into_iter()
            .filter(|n| n.is_running() && n.port() != first)
            .map(|n| n.port());
        let mut seen = Vec::new();
        for port in std::iter::once(first).chain(others) {
            match node(t, port).and_then(kill_tracking_on) {
                Ok(ids) => return Ok(format!("node {port}: connections {}", ids.join(","))),
                Err(e) => seen.push(e),
            }
        }
        Err(seen.join("; "))
    })
    .await
}

/// Kills `node`'s tracking connections and their redirect targets; their
/// ids, or why none was killed.
fn kill_tracking_on(node: &RedisServer) -> Result<Vec<String>, String> {
    let port = node.port();
    let mut conn = admin(node)?;
    let clients = client_list(&mut conn)?;
    let mut ids: Vec<String> = Vec::new();
    for client in &clients {
        if client.get("flags").is_some_and(|f| f.contains('t')) {
            ids.extend(client.get("id").cloned());
            if let Some(redir) = client.get("redir").filter(|r| r.as_str() != "-1") {
                ids.push(redir.clone());
            }
        }
    }
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Err(format!("node {port}: no tracking connection"));
    }
    for id in &ids {
        let _: redis::RedisResult<u64> = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query(&mut conn);
    }
    Ok(ids)
}

/// `CLIENT LIST`, each client's fields by name.
fn client_list(
    conn: &mut redis::Connection,
) -> Result<Vec<std::collections::HashMap<String, String>>, String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .map_err(|e| e.to_string())?;
    Ok(list
        .lines()
        .map(|line| {
            line.split(' ')
                .filter_map(|f| f.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .collect())
}

/// `ACL SETUSER <fleet user> <rule>` on every running data node.
async fn set_acl(ctx: &Ctx, rule: String) -> Result<(), String> {
    locked(&ctx.topology, move |t| {
        let mut errors = Vec::new();
        for node in t.data_nodes().into_iter().filter(|n| n.is_running()) {
            let mut setuser = redis::cmd("ACL");
            setuser.arg("SETUSER").arg(USER).arg(&rule);
            if let Err(e) = admin_query::<()>(node, &setuser) {
                errors.push(e);
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    })
    .await
}

/// Fills the target with TTL keys, sets `maxmemory` just above what it
/// used before with a picked policy, waits `lasts`, then restores
/// `maxmemory 0` (the filler expires on its own).
async fn maxmemory(ctx: &Ctx, planned: &Planned) -> Result<String, String> {
    let (pick, lasts) = (planned.pick, planned.lasts);
    let policy = POLICIES[(pick % POLICIES.len() as u64) as usize];
    let keys = ctx.keys.clone();
    let ttl = lasts + Duration::from_secs(2);
    let port = locked(&ctx.topology, move |t| {
        let port = target(t, &keys, pick >> 4, false)?;
        let node = node(t, port)?;
        let mut conn = admin(node)?;
        let used = used_memory(&mut conn)?;
        // In a Cluster a node takes only its own slots' keys: a hash tag
        // it accepts is found by trying.
        let tag = (0..256)
            .map(|n| format!("{{chaos-fill-{n}}}"))
            .find(|tag| {
                redis::cmd("SET")
                    .arg(format!("{tag}probe"))
                    .arg(1)
                    .arg("PX")
                    .arg(ttl.as_millis() as u64)
                    .query::<()>(&mut conn)
                    .is_ok()
            })
            .ok_or("no filler key the node takes")?;
        let value = vec![b'x'; FILLER_BYTES];
        let mut pipe = redis::pipe();
        for i in 0..FILLER_KEYS {
            pipe.cmd("SET")
                .arg(format!("{tag}{i}"))
                .arg(&value)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .ignore();
        }
        pipe.query::<()>(&mut conn).map_err(|e| e.to_string())?;
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(policy)
            .arg("maxmemory")
            .arg(used + (1 << 20))
            .query::<()>(&mut conn)
            .map_err(|e| e.to_string())?;
        Ok(port)
    })
    .await?;
    tokio::time::sleep(lasts).await;
    let undone = undo_note(
        locked(&ctx.topology, move |t| {
            let node = node(t, port)?;
            admin_query::<()>(node, &restore_memory())
        })
        .await,
    );
    Ok(format!(
        "node {port}: {FILLER_KEYS} x {FILLER_BYTES} B filler, {policy}, {} ms{undone}",
        lasts.as_millis()
    ))
}

/// `CONFIG SET maxmemory 0 maxmemory-policy noeviction`: the test
/// servers' defaults.
fn restore_memory() -> redis::Cmd {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET")
        .arg("maxmemory")
        .arg(0)
        .arg("maxmemory-policy")
        .arg("noeviction");
    cmd
}

/// `used_memory` from `INFO memory`.
fn used_memory(conn: &mut redis::Connection) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(conn)
        .map_err(|e| e.to_string())?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no used_memory in INFO".to_owned())
}

/// `SENTINEL FAILOVER` on the first sentinel that takes it, waited until
/// the sentinels name another primary.
async fn sentinel_failover(ctx: &Ctx) -> Result<String, String> {
    let old = locked(&ctx.topology, |t| {
        let Deployment::Sentinel(group) = t.deployment() else {
            return Err("not a Sentinel group".into());
        };
        let old = group.primary_port().map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        for (host, port) in group.sentinel_addrs() {
            let asked =
                crate::topology::connect(&format!("redis://{host}:{port}")).and_then(|mut conn| {
                    redis::cmd("SENTINEL")
                        .arg("FAILOVER")
                        .arg(group.master_name())
                        .query::<()>(&mut conn)
                        .map_err(|e| e.to_string())
                });
            match asked {
                Ok(()) => return Ok(old),
                Err(e) => errors.push(e),
            }
        }
        Err(format!("no sentinel took it: {}", errors.join("; ")))
    })
    .await?;
    let moved = wait_for(FAILOVER_TIMEOUT, || primary_moved(ctx, old)).await;
    Ok(format!(
        "from {old}{}",
        if moved { "" } else { ", not done in time" }
    ))
}

/// Whether the sentinels name a primary other than `old`.
async fn primary_moved(ctx: &Ctx, old: u16) -> bool {
    locked(&ctx.topology, move |t| match t.deployment() {
        Deployment::Sentinel(group) => Ok(group.primary_port().is_ok_and(|p| p != old)),
        _ => Ok(false),
    })
    .await
    .unwrap_or(false)
}

/// Kills the primary, waits for the failover (at least `lasts`), restarts
/// it empty as a replica.
async fn sentinel_kill_primary(ctx: &Ctx, lasts: Duration) -> Result<String, String> {
    let old = locked(&ctx.topology, |t| {
        if t.down.is_some() {
            return Err("a data node is down already".into());
        }
        let Deployment::Sentinel(group) = t.deployment_mut() else {
            return Err("not a Sentinel group".into());
        };
        let port = group.kill_primary().map_err(|e| e.to_string())?;
        t.down = Some(port);
        Ok(port)
    })
    .await?;
    tokio::time::sleep(lasts).await;
    let moved = wait_for(FAILOVER_TIMEOUT, || primary_moved(ctx, old)).await;
    let restarted = match locked(&ctx.topology, move |t| restart(t, old, false, 0)).await {
        Ok(_) => "restarted as a replica".to_owned(),
        Err(e) => format!("not restarted, left to heal: {e}"),
    };
    Ok(format!(
        "primary {old} killed{}, {restarted}",
        if moved {
            ", failed over"
        } else {
            ", no failover in time"
        }
    ))
}

/// Heals everything: proxy latency 0 and accepting, stopped processes
/// continued, a killed node restarted, on every data node `CLIENT
/// UNPAUSE`, `maxmemory 0` and the fleet user's full rules; then waits
/// until the deployment answers the fleet normally (up to a minute).
pub async fn heal(topology: &Shared, keys: &[String]) {
    let _ = locked(topology, |t| {
        if let Some(proxy) = t.proxy() {
            proxy.set_latency(Duration::ZERO);
            proxy.refuse(false);
        }
        for pid in t.paused.drain() {
            signal_continue(pid);
        }
        match t.deployment_mut() {
            Deployment::Single(server) if !server.is_running() => {
                let _ = server.restart();
            }
            Deployment::Sentinel(_) | Deployment::Cluster(_) => {
                if let Some(port) = t.down {
                    let _ = restart(t, port, false, 0);
                }
            }
            _ => {}
        }
        for node in t.data_nodes().into_iter().filter(|n| n.is_running()) {
            let _ = admin_query::<()>(node, redis::cmd("CLIENT").arg("UNPAUSE"));
            let _ = admin_query::<()>(node, &restore_memory());
        }
        let _ = t.apply_user();
        Ok(())
    })
    .await;
    let keys = keys.to_vec();
    let topology = topology.clone();
    wait_for(HEAL_TIMEOUT, || {
        let keys = keys.clone();
        let topology = topology.clone();
        async move {
            // An ACL fault undone late (a node paused in the first pass)
            // is undone here.
            locked(&topology, move |t| {
                let _ = t.apply_user();
                t.healthy(&keys)
            })
            .await
            .is_ok()
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{connect, user_url};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

    const KINDS: [Kind; 3] = [Kind::Single, Kind::Sentinel, Kind::Cluster];

    #[test]
    fn nemesis_plan_is_the_seeds_alone() {
        for kind in KINDS {
            let a = plan(42, Duration::from_secs(60), kind);
            assert_eq!(a, plan(42, Duration::from_secs(60), kind));
            assert_ne!(a, plan(43, Duration::from_secs(60), kind));
        }
    }

    #[test]
    fn nemesis_plan_has_every_kind_in_60s_and_quiet_ends() {
        for kind in KINDS {
            let all: HashSet<FaultKind> = FaultKind::all(kind).into_iter().collect();
            for seed in 0..200 {
                let planned = plan(seed, Duration::from_secs(60), kind);
                let seen: HashSet<FaultKind> = planned.iter().map(|p| p.kind).collect();
                let missing: Vec<_> = all.difference(&seen).collect();
                assert!(
                    missing.is_empty(),
                    "{kind:?} seed {seed}: {missing:?} missing"
                );
                for p in &planned {
                    assert!(p.at >= QUIET_START, "{p:?}");
                    assert!(p.at + p.lasts <= Duration::from_secs(55), "{p:?}");
                }
                // Faults overlap: some start before the previous ends.
                assert!(
                    planned.windows(2).any(|w| w[1].at < w[0].at + w[0].lasts),
                    "{kind:?} seed {seed}: no overlap"
                );
            }
        }
    }

    #[test]
    fn nemesis_kind_names_are_distinct() {
        for kind in KINDS {
            let kinds = FaultKind::all(kind);
            let names: HashSet<&str> = kinds.iter().map(FaultKind::name).collect();
            assert_eq!(names.len(), kinds.len());
        }
    }

    /// A fleet that counts what it was asked.
    #[derive(Default)]
    struct Stub {
        asked: AtomicU32,
    }

    impl FleetFaults for Stub {
        fn instances(&self) -> usize {
            3
        }
        fn loader_fail(&self, _: usize, _: u32) {
            self.asked.fetch_add(1, SeqCst);
        }
        fn loader_hang(&self, _: usize, _: u32) {
            self.asked.fetch_add(1, SeqCst);
        }
        fn loader_panic(&self, _: usize, _: u32) {
            self.asked.fetch_add(1, SeqCst);
        }
        fn writers(&self) -> usize {
            2
        }
        fn writer_stall(&self, _: usize, _: Duration) {
            self.asked.fetch_add(1, SeqCst);
        }
        fn writer_die(&self, _: usize) {
            self.asked.fetch_add(1, SeqCst);
        }
    }

    /// Two connections as the fleet user on the primary of `key`: one
    /// plain, one tracking with its invalidations redirected to the
    /// first, as push mode's are.
    fn tracking_pair(topology: &Topology, key: &str) -> Vec<redis::Connection> {
        let url = match topology.kind() {
            Kind::Single => topology.url(),
            _ => user_url(topology.primary_for(key).unwrap()),
        };
        let a = connect(&url).unwrap();
        // The fleet user may not ask its own id: the newest of its
        // connections, as the default user sees them, is `a`.
        let mut admin = admin(topology.primary_for(key).unwrap()).unwrap();
        let id = client_list(&mut admin)
            .unwrap()
            .iter()
            .filter(|c| c.get("user").map(String::as_str) == Some(USER))
            .filter_map(|c| c.get("id")?.parse::<u64>().ok())
            .max()
            .unwrap();
        let mut b = connect(&url).unwrap();
        redis::cmd("CLIENT")
            .arg("TRACKING")
            .arg("ON")
            .arg("REDIRECT")
            .arg(id)
            .query::<()>(&mut b)
            .unwrap();
        vec![a, b]
    }

    /// Applies every kind of `kind`'s schedule once through `inject`,
    /// heals, and checks: the kinds skipped are exactly `skippable`, the
    /// fleet was asked its faults, and the fleet user reads its key on a
    /// healthy deployment.
    async fn smoke(kind: Kind, skippable: &[FaultKind]) {
        let topology = Arc::new(Mutex::new(Topology::start(kind).await.unwrap()));
        let keys = vec![
            "gensync:chaos".to_owned(),
            "{gensync:chaos-keyed}parent".to_owned(),
        ];
        let fleet = Arc::new(Stub::default());
        let ctx = Ctx {
            topology: topology.clone(),
            fleet: fleet.clone(),
            keys: Arc::new(keys.clone()),
        };
        let recorder = Recorder::new();
        let kinds = FaultKind::all(kind);
        let (mut tracking, mut data) = (Vec::new(), Vec::new());
        for (i, fault) in kinds.iter().enumerate() {
            if *fault == FaultKind::ClientKillTracking || *fault == FaultKind::ClientKillData {
                let t = topology.clone();
                let key = keys[0].clone();
                let pair =
                    tokio::task::spawn_blocking(move || tracking_pair(&t.lock().unwrap(), &key))
                        .await
                        .unwrap();
                // Held open until its fault: a connection to kill.
                match *fault == FaultKind::ClientKillTracking {
                    true => tracking = pair,
                    false => data = pair,
                }
            }
            let planned = Planned {
                at: Duration::ZERO,
                kind: *fault,
                lasts: Duration::from_millis(300),
                // Not 0 mod 4: the primary holding the first key.
                pick: 1 + 16 * i as u64,
            };
            inject(&ctx, &planned, &recorder).await;
        }
        heal(&topology, &keys).await;
        drop(data);

        let faults: Vec<Fault> = recorder
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Fault(f) => Some(f),
                _ => None,
            })
            .collect();
        assert_eq!(faults.len(), kinds.len());
        let skipped: HashSet<String> = faults
            .iter()
            .filter(|f| f.detail.starts_with("skipped"))
            .map(|f| f.kind.clone())
            .collect();
        let expected: HashSet<String> = skippable
            .iter()
            .map(|k| format!("{}, skipped", k.name()))
            .collect();
        assert_eq!(skipped, expected, "{faults:#?}");
        // A killed node came back, and on Cluster the cluster was whole
        // again within the fault.
        for f in faults.iter().filter(|f| f.kind.starts_with("kill -9")) {
            assert!(f.detail.contains(", restarted "), "{f:?}");
            if kind == Kind::Cluster {
                assert!(f.detail.contains("the cluster whole after"), "{f:?}");
            }
        }
        assert_eq!(fleet.asked.load(SeqCst), 5);
        // gensync itself reads through the fleet's URL, as the fleet user.
        let url = topology.lock().unwrap().url();
        let backend = gensync::RedisBackend::open(&url).unwrap();
        let key: gensync::Key = "gensync:chaos".parse().unwrap();
        gensync::backend::Backend::get(&backend, &key)
            .await
            .unwrap();
        // Both pairs' tracking connections and their redirect targets
        // (the data fault's pair is still open then).
        let killed = faults
            .iter()
            .find(|f| f.kind == FaultKind::ClientKillTracking.name())
            .unwrap();
        assert_eq!(killed.detail.matches(',').count(), 3, "{killed:?}");
        tokio::task::spawn_blocking(move || {
            let t = topology.lock().unwrap();
            t.healthy(&keys).unwrap();
            // The killed tracking connection and its redirect target
            // are gone.
            for mut conn in tracking {
                let ping: redis::RedisResult<()> = redis::cmd("GET").arg("x").query(&mut conn);
                assert!(ping.is_err(), "a killed connection still answers");
            }
        })
        .await
        .unwrap();
    }

    /// `run` snapshots the server while it goes; a kill restarting from an
    /// older snapshot brings back the value that snapshot held, and the
    /// record says which; the run ends healed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_run_restarts_from_an_older_snapshot() {
        restarts_from_an_older_snapshot(Kind::Single).await;
    }

    /// The same on Cluster: the key's primary, restarted in place from its
    /// oldest snapshot, serves that snapshot's value in a whole cluster.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_run_restarts_a_cluster_node_from_an_older_snapshot() {
        restarts_from_an_older_snapshot(Kind::Cluster).await;
    }

    async fn restarts_from_an_older_snapshot(kind: Kind) {
        let topology = Arc::new(Mutex::new(Topology::start(kind).await.unwrap()));
        let (dir, admin_url) = {
            let t = topology.lock().unwrap();
            let server = t.primary_for("gensync:chaos").unwrap();
            (server.dir().to_path_buf(), server.url())
        };
        let set = move |value: u64| {
            let url = admin_url.clone();
            async move {
                tokio::task::spawn_blocking(move || {
                    redis::cmd("SET")
                        .arg("gensync:chaos")
                        .arg(value)
                        .query::<()>(&mut connect(&url).unwrap())
                        .unwrap()
                })
                .await
                .unwrap()
            }
        };
        set(1).await;
        let recorder = Recorder::new();
        let planned = vec![Planned {
            at: Duration::from_millis(2500),
            kind: FaultKind::KillOlder,
            lasts: Duration::from_millis(200),
            // The key's primary (not 0 mod 4), the oldest of the one or
            // two snapshots taken by then.
            pick: 2,
        }];
        let keys = vec!["gensync:chaos".to_owned()];
        let running = tokio::spawn(run(
            planned,
            topology.clone(),
            Arc::new(Stub::default()),
            keys.clone(),
            recorder.clone(),
        ));
        // The first snapshot (taken at once) holds 1; what follows 2.
        let first = dir.join("snap-00000000.rdb");
        assert!(
            wait_for(Duration::from_secs(5), || {
                let exists = first.exists();
                async move { exists }
            })
            .await
        );
        set(2).await;
        running.await.unwrap();

        let fault = recorder
            .events()
            .into_iter()
            .find_map(|e| match e {
                Event::Fault(f) => Some(f),
                _ => None,
            })
            .unwrap();
        assert_eq!(fault.kind, FaultKind::KillOlder.name());
        assert!(fault.detail.contains("from snap-00000000.rdb"), "{fault:?}");
        assert!(fault.start >= 2_500_000, "{fault:?}");
        if kind == Kind::Cluster {
            assert!(
                fault.detail.contains("the cluster whole after"),
                "{fault:?}"
            );
        }
        tokio::task::spawn_blocking(move || {
            let t = topology.lock().unwrap();
            t.healthy(&keys).unwrap();
            let url = match kind {
                Kind::Single => t.url(),
                _ => user_url(t.primary_for("gensync:chaos").unwrap()),
            };
            let value: Option<u64> = redis::cmd("GET")
                .arg("gensync:chaos")
                .query(&mut connect(&url).unwrap())
                .unwrap();
            assert_eq!(value, Some(1));
        })
        .await
        .unwrap();
    }

    /// A whole schedule, overlapping faults and all, runs on a single
    /// server without aborting: every fault recorded, the deployment
    /// healthy at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_run_of_a_schedule_records_every_fault_and_heals() {
        let topology = Arc::new(Mutex::new(Topology::start(Kind::Single).await.unwrap()));
        let planned = plan(7, Duration::from_secs(14), Kind::Single);
        let keys = vec!["gensync:chaos".to_owned()];
        let recorder = Recorder::new();
        run(
            planned.clone(),
            topology.clone(),
            Arc::new(Stub::default()),
            keys.clone(),
            recorder.clone(),
        )
        .await;
        let faults = recorder
            .events()
            .iter()
            .filter(|e| matches!(e, Event::Fault(_)))
            .count();
        assert_eq!(faults, planned.len());
        tokio::task::spawn_blocking(move || topology.lock().unwrap().healthy(&keys))
            .await
            .unwrap()
            .unwrap();
    }

    /// Faults left half done (as when the run ends mid-fault) are all
    /// undone by `heal`: a command denied, a low maxmemory, a client
    /// pause of writes, a stopped server, a slow and refusing proxy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_heal_undoes_faults_left_applied() {
        let topology = Arc::new(Mutex::new(Topology::start(Kind::Single).await.unwrap()));
        let ctx = Ctx {
            topology: topology.clone(),
            fleet: Arc::new(Stub::default()),
            keys: Arc::new(vec!["gensync:chaos".to_owned()]),
        };
        set_acl(&ctx, "-getrange".into()).await.unwrap();
        locked(&topology, |t| {
            let server = t.primary_for("gensync:chaos")?;
            let mut low = redis::cmd("CONFIG");
            low.arg("SET").arg("maxmemory").arg(1 << 20);
            admin_query::<()>(server, &low)?;
            let mut pause = redis::cmd("CLIENT");
            // WRITE: a pause of ALL blocks `CLIENT UNPAUSE` too (Redis
            // 7.0), so the nemesis only ever pauses ALL for `lasts`.
            pause.arg("PAUSE").arg(600_000).arg("WRITE");
            admin_query::<()>(server, &pause)?;
            let pid = server.pid().unwrap();
            server.pause().map_err(|e| e.to_string())?;
            t.paused.insert(pid);
            let proxy = t.proxy().unwrap();
            proxy.set_latency(Duration::from_secs(2));
            proxy.refuse(true);
            Ok(())
        })
        .await
        .unwrap();

        heal(&topology, &ctx.keys).await;
        tokio::task::spawn_blocking(move || {
            let t = topology.lock().unwrap();
            let mut conn = connect(&t.url()).unwrap();
            let began = std::time::Instant::now();
            let read: redis::RedisResult<String> = redis::cmd("GETRANGE")
                .arg("gensync:chaos")
                .arg(0)
                .arg(19)
                .query(&mut conn);
            read.unwrap();
            redis::cmd("SET")
                .arg("gensync:chaos")
                .arg(1)
                .query::<()>(&mut conn)
                .unwrap();
            assert!(began.elapsed() < Duration::from_secs(1), "still slow");
            let server = t.primary_for("gensync:chaos").unwrap();
            let (_, maxmemory): (String, u64) =
                admin_query(server, redis::cmd("CONFIG").arg("GET").arg("maxmemory")).unwrap();
            assert_eq!(maxmemory, 0);
        })
        .await
        .unwrap();
    }

    /// While the Sentinel primary is killed and not failed over yet, a
    /// pause (a fault a replica takes too) lands on the running replica
    /// instead of being skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_pause_lands_on_the_replica_while_the_primary_is_down() {
        let topology = Arc::new(Mutex::new(Topology::start(Kind::Sentinel).await.unwrap()));
        let replica = locked(&topology, |t| {
            let Deployment::Sentinel(group) = t.deployment_mut() else {
                return Err("not a Sentinel group".into());
            };
            let replica = group.replica().map_err(|e| e.to_string())?.port();
            let old = group.kill_primary().map_err(|e| e.to_string())?;
            t.down = Some(old);
            Ok(replica)
        })
        .await
        .unwrap();
        let keys = vec!["gensync:chaos".to_owned()];
        let ctx = Ctx {
            topology: topology.clone(),
            fleet: Arc::new(Stub::default()),
            keys: Arc::new(keys.clone()),
        };
        let recorder = Recorder::new();
        let planned = Planned {
            at: Duration::ZERO,
            kind: FaultKind::Pause,
            lasts: Duration::from_millis(100),
            // Not 0 mod 4: the primary holding the key, which is down.
            pick: 1,
        };
        inject(&ctx, &planned, &recorder).await;
        let fault = recorder
            .events()
            .into_iter()
            .find_map(|e| match e {
                Event::Fault(f) => Some(f),
                _ => None,
            })
            .unwrap();
        assert_eq!(fault.kind, FaultKind::Pause.name(), "{fault:?}");
        assert!(
            fault.detail.starts_with(&format!("node {replica} ")),
            "{fault:?}"
        );
        heal(&topology, &keys).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_smoke_single() {
        smoke(Kind::Single, &[]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_smoke_sentinel() {
        smoke(Kind::Sentinel, &[]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nemesis_smoke_cluster() {
        smoke(Kind::Cluster, &[]).await;
    }
}
