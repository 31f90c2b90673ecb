//! The faults made of admin commands on a data node: `CLIENT KILL` of data
//! and tracking connections, `ACL SETUSER`, and `maxmemory` beside a filler.

use std::time::Duration;

use gensync::testing::RedisServer;

use crate::nemesis::ctx::{locked, node, target, undo_note, Ctx};
use crate::nemesis::Planned;
use crate::topology::{admin, admin_query, USER};

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

/// `CLIENT KILL` of data connections: every normal one (`TYPE normal`),
/// or one of the fleet user's, by the id `pick` chooses in `CLIENT LIST`.
pub(super) async fn client_kill_data(ctx: &Ctx, pick: u64) -> Result<String, String> {
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
pub(super) async fn client_kill_tracking(ctx: &Ctx, pick: u64) -> Result<String, String> {
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
pub(super) fn client_list(
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
pub(super) async fn set_acl(ctx: &Ctx, rule: String) -> Result<(), String> {
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
pub(super) async fn maxmemory(ctx: &Ctx, planned: &Planned) -> Result<String, String> {
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
pub(super) fn restore_memory() -> redis::Cmd {
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
