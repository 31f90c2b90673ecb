//! Everything undone at the end of the run, whatever the faults left
//! applied, then waited for until the deployment answers normally.

use std::time::Duration;

use crate::nemesis::commands::restore_memory;
use crate::nemesis::ctx::{locked, wait_for};
use crate::nemesis::restart::{restart, signal_continue};
use crate::nemesis::Shared;
use crate::topology::{admin_query, Deployment};

/// How long heal waits for the deployment to answer normally.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);

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
