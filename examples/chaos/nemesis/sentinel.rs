//! The Sentinel faults: `SENTINEL FAILOVER`, and the primary killed, then
//! restarted as a replica once failed over.

use std::time::Duration;

use crate::nemesis::ctx::{locked, wait_for, Ctx};
use crate::nemesis::restart::restart;
use crate::topology::Deployment;

/// How long a Sentinel failover may take.
pub(super) const FAILOVER_TIMEOUT: Duration = Duration::from_secs(20);

/// `SENTINEL FAILOVER` on the first sentinel that takes it, waited until
/// the sentinels name another primary.
pub(super) async fn sentinel_failover(ctx: &Ctx) -> Result<String, String> {
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
pub(super) async fn sentinel_kill_primary(ctx: &Ctx, lasts: Duration) -> Result<String, String> {
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
