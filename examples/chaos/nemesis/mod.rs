//! The nemesis: a fault schedule drawn from the seed alone ([`plan`]), and
//! its execution over the deployment and the fleet ([`run`]), each fault
//! recorded in the history with its start, end and what it hit; then
//! everything healed, so the run ends on a healthy Redis.
//!
//! This file holds the schedule and its running; the faults themselves are
//! in the submodules: [`ctx`] (what a fault acts on, and how it reaches its
//! node), [`apply`] (each kind applied and undone), [`commands`] (the admin
//! command faults), [`restart`] (kill, restart and the RDB snapshots),
//! [`sentinel`] (the Sentinel failovers) and [`heal`] (everything undone).

mod apply;
mod commands;
mod ctx;
mod heal;
mod restart;
mod sentinel;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::history::Recorder;
use crate::nemesis::apply::inject;
use crate::nemesis::ctx::Ctx;
use crate::nemesis::heal::heal;
use crate::nemesis::restart::snapshot_loop;
use crate::topology::{Kind, Topology};

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
