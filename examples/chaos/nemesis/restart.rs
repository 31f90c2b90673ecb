//! Processes killed and restarted: `kill -9` and the restart, empty or
//! from an older RDB snapshot, the snapshots taken while the run goes, and
//! SIGCONT for a stopped process.

use std::time::Duration;

use crate::nemesis::ctx::{locked, target, Ctx};
use crate::nemesis::{FaultKind, Planned, Shared};
use crate::topology::{admin_query, Deployment, Topology};

/// How long a Cluster may take to be whole again after a node's restart
/// (a failover of the killed primary, then its rejoining as a replica).
const WHOLE_TIMEOUT: Duration = Duration::from_secs(30);
/// RDB snapshots kept per node, oldest dropped first.
const SNAPSHOTS_KEPT: usize = 5;
/// How often the nodes are snapshotted (`SAVE`, the file copied aside).
const SNAPSHOT_EVERY: Duration = Duration::from_secs(2);

/// Sends SIGCONT to `pid` (harmless if it runs or is gone).
pub(super) fn signal_continue(pid: u32) {
    let _ = std::process::Command::new("kill")
        .arg("-CONT")
        .arg(pid.to_string())
        .status();
}

/// `kill -9`, down for `lasts`, restarted empty or from an older
/// snapshot. On Sentinel the primary is killed and restarted as a
/// replica; on Cluster the primary holding a fleet key, or one time in
/// four any node, restarted in place (its node id kept), then waited for
/// until the cluster is whole again. One node down at a time.
pub(super) async fn kill_restart(ctx: &Ctx, planned: &Planned) -> Result<String, String> {
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
pub(super) fn restart(
    t: &mut Topology,
    port: u16,
    older: bool,
    pick: u64,
) -> Result<String, String> {
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
            // Fails only the wait, if the group is not whole within 5 s;
            // the node runs either way.
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

pub(super) async fn snapshot_loop(topology: Shared) {
    for serial in 0.. {
        let _ = locked(&topology, move |t| {
            snapshot(t, serial);
            Ok(())
        })
        .await;
        tokio::time::sleep(SNAPSHOT_EVERY).await;
    }
}
