//! What a fault acts on ([`Ctx`]) and the helpers every fault uses to reach
//! its node: the topology locked on the blocking pool, the target node a
//! pick chooses, waiting for a condition, the undo's note.

use std::sync::Arc;
use std::time::Duration;

use gensync::testing::RedisServer;

use crate::nemesis::{FleetFaults, Shared};
use crate::topology::{admin_query, Topology};

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

/// Runs `step` on the topology, locked, on the blocking pool.
pub(super) async fn locked<T: Send + 'static>(
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
pub(super) fn key_of(keys: &[String], pick: u64) -> String {
    match keys.len() {
        0 => "gensync:chaos".to_owned(),
        n => keys[(pick % n as u64) as usize].clone(),
    }
}

/// The node a server fault hits: the primary holding a fleet key, or,
/// one time in four when `any` (a fault a replica takes too), any running
/// data node; also any running one, when `any`, while that primary is
/// down (killed, not failed over yet), so the fault still lands.
pub(super) fn target(
    topology: &Topology,
    keys: &[String],
    pick: u64,
    any: bool,
) -> Result<u16, String> {
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
pub(super) fn node(topology: &Topology, port: u16) -> Result<&RedisServer, String> {
    topology
        .data_nodes()
        .into_iter()
        .find(|n| n.port() == port && n.is_running())
        .ok_or_else(|| format!("node {port} is not running"))
}

/// One admin command on the fault's target; returns the target's port.
pub(super) async fn on_target<T: redis::FromRedisValue + Send + 'static>(
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

/// Polls `ready` every 100 ms until it says true or `timeout` passes.
pub(super) async fn wait_for<F, Fut>(timeout: Duration, mut ready: F) -> bool
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

/// What a fault's record says of its undoing: nothing when it worked,
/// else why it failed (heal undoes it at the end).
pub(super) fn undo_note(undone: Result<(), String>) -> String {
    match undone {
        Ok(()) => String::new(),
        Err(e) => format!("; undo failed, left to heal: {e}"),
    }
}
