//! A throwaway Redis Cluster per test: three primaries and three replicas
//! on free loopback ports, so a test can kill the primary of one shard and
//! watch its replica take over while the other shards keep answering.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use super::poll::{self, ask};
use super::redis_server::{Tool, NO_SYNC_DELAY};
use super::tls::Transport;
use super::RedisServer;
use view::{view_of, Shard, View};

mod view;

/// Three shards, a primary and a replica each.
const NODES: usize = 6;
/// How long a node may be silent before the others think it failing; a
/// replica then takes over within about two of these. Short for a fast
/// failover, long enough that a busy machine does not fail over a node
/// that is only slow.
const NODE_TIMEOUT: Duration = Duration::from_millis(1000);
/// How long the nodes may take to agree after `redis-cli --cluster create`.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The slots of a cluster.
const SLOTS: u32 = 16384;

/// A six-node Redis Cluster (three shards, a primary and a replica each),
/// each node its own `redis-server` process on a free loopback port, all
/// killed when dropped.
///
/// The nodes run with `cluster-require-full-coverage no`: while one shard
/// has no primary the others keep answering, as the tests of a client
/// want to see (with the default, every shard refuses with `CLUSTERDOWN`
/// until the failover ends).
///
/// [`start`](Self::start) returns once every node reports
/// `cluster_state:ok`, every slot is served, all nodes agree on who serves
/// which slots and who replicates whom, and every replica's link to its
/// primary is up, so a test may kill a primary at once.
///
/// `redis-server` and `redis-cli` are found on `PATH`, or at
/// `$REDIS_SERVER` and `$REDIS_CLI`.
///
/// ```no_run
/// use std::time::Duration;
/// use gensync::testing::RedisCluster;
///
/// let mut cluster = RedisCluster::start().expect("redis-server and redis-cli on PATH");
/// let url = cluster.url(); // redis+cluster://127.0.0.1:<p1>,...,127.0.0.1:<p6>
/// let replica = cluster.replica_of(cluster.primary_for("some:key").unwrap()).unwrap();
/// let old = cluster.kill_primary_for("some:key").unwrap();
/// let new = cluster.wait_for_failover("some:key", old, Duration::from_secs(30)).unwrap();
/// assert_eq!(new, replica);
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Plain TCP, or TLS only for every node, the cluster bus included.
    transport: Transport,
}

impl RedisCluster {
    /// Starts six nodes, makes them a cluster with `redis-cli --cluster
    /// create`, and waits until they agree.
    pub fn start() -> io::Result<Self> {
        Self::launch(Transport::Plain, Vec::new())
    }

    /// Starts a cluster whose six nodes also get extra command-line
    /// arguments, such as `["--enable-debug-command", "yes"]`, after the
    /// cluster's own. The arguments stay with each node, so a node
    /// restarted by [`restart_node`](Self::restart_node) has them too: a
    /// `--user` rule given here survives restarts.
    ///
    /// ```no_run
    /// use gensync::testing::RedisCluster;
    ///
    /// let cluster = RedisCluster::start_with_args(["--enable-debug-command", "yes"])
    ///     .expect("redis-server and redis-cli on PATH");
    /// let node = &cluster.nodes()[0]; // answers DEBUG SLEEP
    /// # let _ = node;
    /// ```
    pub fn start_with_args<I, S>(args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::launch(Transport::Plain, args.into_iter().map(Into::into).collect())
    }

    /// Starts a cluster that speaks only TLS (`port 0`), with `certs`'
    /// server certificate and private CA: clients, replication and the
    /// cluster bus (`tls-replication yes`, `tls-cluster yes`), so the
    /// nodes announce their TLS ports. Every node requires a client
    /// certificate signed by the CA when `require_client_cert`
    /// (`tls-auth-clients yes`); the nodes and `redis-cli` present
    /// [`client_cert`](super::TlsCerts::client_cert).
    ///
    /// [`url`](Self::url) is then `rediss+cluster://...`, and the nodes'
    /// [`url`](RedisServer::url)s are `rediss://`.
    ///
    /// ```no_run
    /// use gensync::testing::{RedisCluster, TlsCerts};
    ///
    /// let certs = TlsCerts::generate().expect("openssl on PATH");
    /// let cluster = RedisCluster::start_tls(&certs, true).expect("redis-server on PATH");
    /// let url = cluster.url(); // rediss+cluster://127.0.0.1:<p1>,...,127.0.0.1:<p6>
    /// # let _ = url;
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn start_tls(certs: &super::TlsCerts, require_client_cert: bool) -> io::Result<Self> {
        Self::launch(certs.transport(require_client_cert)?, Vec::new())
    }

    /// Starts the cluster; `extra` are every node's extra arguments.
    fn launch(transport: Transport, extra: Vec<String>) -> io::Result<Self> {
        let args = || {
            vec![
                "--cluster-node-timeout".into(),
                NODE_TIMEOUT.as_millis().to_string(),
                "--cluster-require-full-coverage".into(),
                "no".into(),
            ]
            .into_iter()
            .chain(NO_SYNC_DELAY.map(String::from))
            .chain(extra.iter().cloned())
            .collect()
        };
        let nodes = (0..NODES)
            .map(|_| RedisServer::start_cluster_node(args(), &transport))
            .collect::<io::Result<Vec<_>>>()?;
        let cluster = RedisCluster { nodes, transport };
        cluster.create()?;
        poll::until(SETTLE_TIMEOUT, "the cluster settling", || cluster.whole())?;
        Ok(cluster)
    }

    /// Whether the cluster is whole: every node runs and says
    /// `cluster_state:ok`, all agree, three shards serve every slot, each
    /// with one replica whose link to its primary is up.
    fn whole(&self) -> Result<(), String> {
        if let Some(down) = self.nodes.iter().find(|node| !node.is_running()) {
            return Err(format!("node {} is down", down.port()));
        }
        let view = self.agreed_view()?;
        let served: u32 = view.shards.values().map(Shard::slot_count).sum();
        if view.shards.len() != NODES / 2 || served != SLOTS {
            return Err(format!("{served} slots served: {view:?}"));
        }
        for (port, shard) in &view.shards {
            if shard.replicas.len() != 1 {
                return Err(format!("{port} has replicas {:?}", shard.replicas));
            }
            for replica in &shard.replicas {
                self.link_up(*replica)?;
            }
        }
        Ok(())
    }

    fn create(&self) -> io::Result<()> {
        let tool = Tool::CLI;
        let mut child = tool
            .command()
            .args(self.transport.cli_args())
            .arg("--cluster")
            .arg("create")
            .args(
                self.nodes
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port())),
            )
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| tool.not_run(e))?;
        // redis-cli waits for the nodes to join with no bound of its own.
        // Its output (a few kilobytes) fits the pipes until it is read.
        let exited = poll::until(SETTLE_TIMEOUT, "redis-cli --cluster create", || match child
            .try_wait()
        {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err("still running".to_owned()),
            Err(e) => Err(e.to_string()),
        });
        if let Err(e) = exited {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        let output = child.wait_with_output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )))
        }
    }

    /// `redis+cluster://127.0.0.1:<p1>,...,127.0.0.1:<p6>`: all six nodes,
    /// so the seeds outlive any node a test kills; `rediss+cluster://`
    /// for a cluster started with [`start_tls`](Self::start_tls).
    pub fn url(&self) -> String {
        let hosts = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect::<Vec<_>>()
            .join(",");
        format!("{}+cluster://{hosts}", self.transport.scheme())
    }

    /// Every node's `redis://127.0.0.1:<port>` URL (`rediss://` over TLS).
    pub fn seeds(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The six nodes, primaries and replicas alike.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node on `port`.
    pub fn node(&self, port: u16) -> Option<&RedisServer> {
        self.nodes.iter().find(|node| node.port() == port)
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, asked of a running node).
    pub fn slot(&self, key: &str) -> io::Result<u16> {
        self.first_answer(|node| ask(node, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key)))
    }

    /// The port of the primary serving `key`'s slot now, as the first
    /// running node that answers sees it.
    pub fn primary_for(&self, key: &str) -> io::Result<u16> {
        let slot = self.slot(key)?;
        let view = self.first_answer(view_of)?;
        view.primary_of(slot)
            .ok_or_else(|| io::Error::other(format!("no primary serves slot {slot}: {view:?}")))
    }

    /// The port of a replica of the primary on `port`, as the first running
    /// node that answers sees it.
    pub fn replica_of(&self, port: u16) -> io::Result<u16> {
        let view = self.first_answer(view_of)?;
        view.shards
            .get(&port)
            .and_then(|shard| shard.replicas.first().copied())
            .ok_or_else(|| io::Error::other(format!("{port} has no replica: {view:?}")))
    }

    /// Kills the primary serving `key`'s slot (SIGKILL) and returns its
    /// port.
    pub fn kill_primary_for(&mut self, key: &str) -> io::Result<u16> {
        let port = self.primary_for(key)?;
        self.kill_node(port)?;
        Ok(port)
    }

    /// Kills the node on `port` (SIGKILL), primary or replica; its
    /// directory (`nodes.conf`, any `dump.rdb`) stays for
    /// [`restart_node`](Self::restart_node).
    pub fn kill_node(&mut self, port: u16) -> io::Result<()> {
        self.node_mut(port)?.kill();
        Ok(())
    }

    /// Starts again the node on `port` (killed by
    /// [`kill_node`](Self::kill_node) or
    /// [`kill_primary_for`](Self::kill_primary_for); a running one is
    /// killed first), on the same ports and with the same arguments; then
    /// [`wait_until_whole`](Self::wait_until_whole) says when the cluster
    /// has taken it back.
    ///
    /// The node keeps its `nodes.conf`, so it rejoins with its node id:
    /// as the primary of its slots if no replica took them over while it
    /// was down, else as a replica of the one that did. It loads the
    /// `dump.rdb` in its [`dir`](RedisServer::dir) if there is one:
    /// remove that file first for a node restarted empty, or copy an
    /// older snapshot over it for a node restarted from that snapshot.
    /// (The nodes save nothing on their own: `--save ""`.)
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use gensync::testing::RedisCluster;
    ///
    /// let mut cluster = RedisCluster::start().unwrap();
    /// let port = cluster.primary_for("some:key").unwrap();
    /// cluster.kill_node(port).unwrap();
    /// let dump = cluster.node(port).unwrap().dir().join("dump.rdb");
    /// let _ = std::fs::remove_file(dump); // restarted empty
    /// cluster.restart_node(port).unwrap();
    /// cluster.wait_until_whole(Duration::from_secs(30)).unwrap();
    /// ```
    pub fn restart_node(&mut self, port: u16) -> io::Result<()> {
        self.node_mut(port)?.restart()
    }

    /// Waits up to `timeout` until the cluster is whole, as
    /// [`start`](Self::start) leaves it: every node runs, says
    /// `cluster_state:ok` and sees what the others see; three shards
    /// serve all 16384 slots, each with one replica linked to its
    /// primary. Which node is whose primary may have changed. A zero
    /// `timeout` asks once.
    pub fn wait_until_whole(&self, timeout: Duration) -> io::Result<()> {
        poll::until(timeout, "the cluster whole", || self.whole())
    }

    fn node_mut(&mut self, port: u16) -> io::Result<&mut RedisServer> {
        self.nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .ok_or_else(|| io::Error::other(format!("no node on port {port}")))
    }

    /// Waits until every running node reports `cluster_state:ok` and names
    /// the same primary for `key`'s slot, other than `old_port`, and that
    /// node says `role:master`; returns its port.
    pub fn wait_for_failover(
        &self,
        key: &str,
        old_port: u16,
        timeout: Duration,
    ) -> io::Result<u16> {
        let slot = self.slot(key)?;
        poll::until(timeout, "a failover", || {
            let view = self.agreed_view()?;
            match view.primary_of(slot) {
                Some(port) if port != old_port => {
                    poll::is_master(self.known(port)?)?;
                    Ok(port)
                }
                other => Err(format!("slot {slot} served by {other:?}")),
            }
        })
    }

    /// The ports of the primaries, as the first running node that answers
    /// sees them.
    pub fn primaries(&self) -> io::Result<Vec<u16>> {
        Ok(self.first_answer(view_of)?.shards.keys().copied().collect())
    }

    /// Moves `key`'s slot, with its keys, to the primary on `to` (a
    /// resharding, as `redis-cli --cluster reshard` does it: `IMPORTING`,
    /// `MIGRATING`, `MIGRATE` of every key, then `SETSLOT NODE` on every
    /// primary), and waits until every node agrees. A cluster of plain
    /// nodes only: `MIGRATE` here speaks no TLS.
    pub fn move_slot(&self, key: &str, to: u16) -> io::Result<()> {
        let slot = self.slot(key)?;
        let from = self.primary_for(key)?;
        let node = |port: u16| {
            self.node(port)
                .ok_or_else(|| format!("no node on port {port}"))
        };
        let id = |server: &RedisServer| -> Result<String, String> {
            ask(server, redis::cmd("CLUSTER").arg("MYID"))
        };
        let setslot = |server: &RedisServer, state: &str, id: &str| -> Result<(), String> {
            ask(
                server,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg(state)
                    .arg(id),
            )
        };
        let moved = || -> Result<(), String> {
            let (source, target) = (node(from)?, node(to)?);
            let (source_id, target_id) = (id(source)?, id(target)?);
            setslot(target, "IMPORTING", &source_id)?;
            setslot(source, "MIGRATING", &target_id)?;
            loop {
                let keys: Vec<String> = ask(
                    source,
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(slot)
                        .arg(100),
                )?;
                if keys.is_empty() {
                    break;
                }
                let mut migrate = redis::cmd("MIGRATE");
                migrate.arg("127.0.0.1").arg(to).arg("").arg(0).arg(5000);
                migrate.arg("KEYS").arg(&keys);
                ask::<()>(source, &migrate)?;
            }
            for port in self.primaries().map_err(|e| e.to_string())? {
                setslot(node(port)?, "NODE", &target_id)?;
            }
            Ok(())
        };
        moved().map_err(io::Error::other)?;
        poll::until(SETTLE_TIMEOUT, "the slot's move", || {
            match self.agreed_view()?.primary_of(slot) {
                Some(port) if port == to => Ok(()),
                other => Err(format!("slot {slot} served by {other:?}")),
            }
        })
    }

    /// The view all running nodes share, each with `cluster_state:ok`.
    fn agreed_view(&self) -> Result<View, String> {
        let mut agreed: Option<View> = None;
        for node in self.running() {
            let url = node.url();
            let info: String = ask(node, redis::cmd("CLUSTER").arg("INFO"))?;
            if !info.lines().any(|line| line.trim() == "cluster_state:ok") {
                return Err(format!("{url}: {info}"));
            }
            let view = view_of(node)?;
            match &agreed {
                Some(seen) if *seen != view => {
                    return Err(format!("{url} sees {view:?}, another {seen:?}"))
                }
                _ => agreed = Some(view),
            }
        }
        agreed.ok_or_else(|| "no node runs".to_owned())
    }

    /// Whether the replica on `port` has its link to its primary up.
    fn link_up(&self, port: u16) -> Result<(), String> {
        let node = self.known(port)?;
        let info: String = ask(node, redis::cmd("INFO").arg("replication"))?;
        if info
            .lines()
            .any(|line| line.trim() == "master_link_status:up")
        {
            Ok(())
        } else {
            Err(format!("{}: {info}", node.url()))
        }
    }

    /// The node on `port`, which a node named.
    fn known(&self, port: u16) -> Result<&RedisServer, String> {
        self.node(port)
            .ok_or_else(|| format!("a node names port {port}, which is no node's"))
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|node| node.is_running())
    }

    /// The answer of the first running node that gives one.
    fn first_answer<T>(
        &self,
        question: impl Fn(&RedisServer) -> Result<T, String>,
    ) -> io::Result<T> {
        let mut seen = Vec::new();
        for node in self.running() {
            match question(node) {
                Ok(answer) => return Ok(answer),
                Err(e) => seen.push(e),
            }
        }
        Err(io::Error::other(format!("no node answered: {seen:?}")))
    }
}
