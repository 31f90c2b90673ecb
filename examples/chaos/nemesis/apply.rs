//! Each fault kind applied, waited out and undone ([`apply`]), and its
//! record in the history ([`inject`]); the kinds with a longer story call
//! into `commands`, `restart` and `sentinel`.

use std::time::Duration;

use crate::history::{Event, Fault, Recorder};
use crate::nemesis::commands::{client_kill_data, client_kill_tracking, maxmemory, set_acl};
use crate::nemesis::ctx::{key_of, locked, node, on_target, target, undo_note, wait_for, Ctx};
use crate::nemesis::restart::{kill_restart, signal_continue};
use crate::nemesis::sentinel::{sentinel_failover, sentinel_kill_primary, FAILOVER_TIMEOUT};
use crate::nemesis::{FaultKind, Planned};
use crate::topology::{admin_query, Deployment, USER};

/// The commands an ACL fault may take from the fleet user.
const DENIABLE: &[&str] = &[
    "getrange",
    "eval",
    "client|tracking",
    "info",
    "set",
    "incrby",
];

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
