//! The Redis deployment the soak runs over: one server behind a TCP proxy,
//! a Sentinel group, or a Cluster; its fleet user (least privilege, as
//! SECURITY.md lists it, for every role the fleet plays); and the admin
//! access the nemesis needs to break and heal it.

use std::collections::HashSet;
use std::time::Duration;

use gensync::testing::{RedisCluster, RedisServer, SentinelGroup};
use gensync::RedisUrl;

use crate::proxy::Proxy;

/// The fleet's Redis user, created on every data node.
pub const USER: &str = "chaos";
/// Its password.
pub const PASSWORD: &str = "chaos-soak-pw";

/// The commands every role of the fleet needs (SECURITY.md's writer line
/// plus push's `client|tracking`); each topology adds its own.
const COMMON: &[&str] = &[
    "+eval",
    "+getrange",
    "+get",
    "+exists",
    "+set",
    "+incrby",
    "+pttl",
    "+time",
    "+type",
    "+del",
    "+zadd",
    "+zrem",
    "+zscore",
    "+zrange",
    "+zremrangebyscore",
    "+pexpire",
    "+pexpireat",
    "+info",
    "+client|tracking",
];

/// Admin connections' timeouts: a paused or sleeping server makes an
/// admin call fail (a skipped fault), never hang the nemesis.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Which deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One `redis-server`, reached through the proxy.
    Single,
    /// A primary, a replica and three sentinels.
    Sentinel,
    /// Three primaries with a replica each.
    Cluster,
}

impl std::str::FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        match s {
            "single" => Ok(Kind::Single),
            "sentinel" => Ok(Kind::Sentinel),
            "cluster" => Ok(Kind::Cluster),
            other => Err(format!(
                "unknown topology {other:?}: expected single, sentinel or cluster"
            )),
        }
    }
}

impl Kind {
    /// The name `FromStr` takes.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Single => "single",
            Kind::Sentinel => "sentinel",
            Kind::Cluster => "cluster",
        }
    }

    /// The fleet user's ACL rules (after the user's name): on and its
    /// password, gensync's keys, and the union of SECURITY.md's lines for
    /// this topology.
    pub fn user_rules(self) -> Vec<String> {
        let mut rules: Vec<String> = ["on", &format!(">{PASSWORD}"), "resetkeys"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        rules.extend(["~gensync:*", "~{gensync:*", "-@all"].map(String::from));
        rules.extend(COMMON.iter().map(|s| s.to_string()));
        match self {
            Kind::Single => {}
            // And `wait`: the writers wait for a replica (see `replicated`).
            Kind::Sentinel => rules.extend(["+role", "+wait"].map(String::from)),
            Kind::Cluster => {
                rules.extend(["+cluster|myid", "+cluster|slots", "+wait"].map(String::from))
            }
        }
        rules
    }
}

impl Kind {
    /// Whether the deployment has replicas: its writers then wait for
    /// one (`RedisConfig::wait_for_replicas`), as DEPLOYMENT.md says a
    /// writer must for no "ok" to be lost in a failover.
    pub fn replicated(self) -> bool {
        self != Kind::Single
    }

    /// Every data node's extra arguments: `DEBUG` enabled (for the
    /// `DEBUG SLEEP` fault) and the fleet user with its rules.
    pub fn node_args(self) -> Vec<String> {
        let mut args: Vec<String> = ["--enable-debug-command", "yes", "--user", USER]
            .map(String::from)
            .into();
        args.extend(self.user_rules());
        args
    }
}

/// The running deployment.
pub enum Deployment {
    /// One server; the fleet reaches it through the proxy.
    Single(RedisServer),
    /// The group; the fleet reaches the primary the sentinels name.
    Sentinel(SentinelGroup),
    /// The cluster; the fleet reaches every primary.
    Cluster(RedisCluster),
}

/// A deployment, its proxy (Single) and what the nemesis keeps about it.
pub struct Topology {
    kind: Kind,
    deployment: Deployment,
    proxy: Option<Proxy>,
    /// Process ids the nemesis stopped (SIGSTOP), to continue at heal
    /// whatever happened since.
    pub paused: HashSet<u32>,
    /// A Sentinel or Cluster data node the nemesis killed and has not
    /// restarted yet (one at a time).
    pub down: Option<u16>,
}

impl Topology {
    /// Starts the deployment and, on Single, a TCP proxy in front of the
    /// server (spawned on the current tokio runtime). Every data node
    /// runs with `DEBUG` enabled and the fleet user from its command line
    /// ([`node_args`](Kind::node_args)), so the user survives restarts;
    /// [`apply_user`](Self::apply_user) sets it again at heal, which also
    /// undoes an ACL fault.
    pub async fn start(kind: Kind) -> std::io::Result<Topology> {
        let deployment = tokio::task::spawn_blocking(move || -> std::io::Result<Deployment> {
            let args = kind.node_args();
            Ok(match kind {
                Kind::Single => Deployment::Single(RedisServer::start_with_args(args)?),
                Kind::Sentinel => Deployment::Sentinel(SentinelGroup::start_with_args(args)?),
                Kind::Cluster => Deployment::Cluster(RedisCluster::start_with_args(args)?),
            })
        })
        .await
        .map_err(std::io::Error::other)??;
        let proxy = match &deployment {
            Deployment::Single(server) => {
                Some(Proxy::start(([127, 0, 0, 1], server.port()).into()).await?)
            }
            _ => None,
        };
        let topology = Topology {
            kind,
            deployment,
            proxy,
            paused: HashSet::new(),
            down: None,
        };
        let topology =
            tokio::task::spawn_blocking(move || topology.apply_user().map(|()| topology))
                .await
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
        Ok(topology)
    }

    #[cfg(test)]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The URL the fleet's clients use, as the fleet user: on Single
    /// through the proxy; on Sentinel the group's URL (the user is for
    /// the data nodes), on Cluster the cluster's.
    pub fn url(&self) -> String {
        match &self.deployment {
            Deployment::Single(_) => {
                let proxy = self.proxy.as_ref().expect("Single has a proxy");
                format!("redis://{USER}:{PASSWORD}@{}", proxy.addr())
            }
            Deployment::Sentinel(group) => as_fleet(RedisUrl::sentinel(
                group
                    .sentinel_addrs()
                    .into_iter()
                    .map(|(host, port)| format!("{host}:{port}")),
                group.master_name(),
            )),
            Deployment::Cluster(cluster) => as_fleet(RedisUrl::cluster(
                cluster
                    .nodes()
                    .iter()
                    .map(|node| format!("127.0.0.1:{}", node.port())),
            )),
        }
    }

    /// The deployment, for the nemesis.
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The deployment, for the nemesis to kill and restart.
    pub fn deployment_mut(&mut self) -> &mut Deployment {
        &mut self.deployment
    }

    /// The proxy (Single only).
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// The data nodes reachable now: on Sentinel those the sentinels name
    /// (none while no sentinel answers).
    pub fn data_nodes(&self) -> Vec<&RedisServer> {
        match &self.deployment {
            Deployment::Single(server) => vec![server],
            Deployment::Sentinel(group) => {
                group.primary().into_iter().chain(group.replica()).collect()
            }
            Deployment::Cluster(cluster) => cluster.nodes().iter().collect(),
        }
    }

    /// The primary that holds `key`: the server, the group's primary, or
    /// the cluster's primary for the key's slot.
    pub fn primary_for(&self, key: &str) -> Result<&RedisServer, String> {
        match &self.deployment {
            Deployment::Single(server) => Ok(server),
            Deployment::Sentinel(group) => group.primary().map_err(|e| e.to_string()),
            Deployment::Cluster(cluster) => {
                let port = cluster.primary_for(key).map_err(|e| e.to_string())?;
                cluster
                    .node(port)
                    .ok_or_else(|| format!("no node on port {port}"))
            }
        }
    }

    /// (Re)sets the fleet user, with all its rules, on every running data
    /// node: at start and at heal, which undoes an ACL fault (a restarted
    /// node has the user from its command line).
    pub fn apply_user(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for node in self.data_nodes().into_iter().filter(|n| n.is_running()) {
            let mut setuser = redis::cmd("ACL");
            setuser.arg("SETUSER").arg(USER).arg("reset");
            setuser.arg(self.kind.user_rules());
            if let Err(e) = admin_query::<()>(node, &setuser) {
                errors.push(format!("{}: {e}", node.port()));
            }
        }
        match errors.is_empty() {
            true => Ok(()),
            false => Err(errors.join("; ")),
        }
    }

    /// Whether the deployment answers the fleet normally: a `GET` of
    /// each of `keys` as the fleet user, on the node holding it (on
    /// Single through the proxy); on Sentinel, a replica linked to the
    /// primary too; on Cluster, every node's `cluster_state:ok`.
    pub fn healthy(&self, keys: &[String]) -> Result<(), String> {
        for key in keys {
            let url = match &self.deployment {
                Deployment::Single(_) => self.url(),
                _ => user_url(self.primary_for(key)?),
            };
            let mut conn = connect(&url)?;
            redis::cmd("GET")
                .arg(key)
                .query::<Option<Vec<u8>>>(&mut conn)
                .map_err(|e| format!("GET {key} as {USER}: {e}"))?;
        }
        match &self.deployment {
            Deployment::Single(_) => Ok(()),
            Deployment::Sentinel(group) => {
                let primary = group.primary().map_err(|e| e.to_string())?;
                let info: String = admin_query(primary, redis::cmd("INFO").arg("replication"))?;
                match info.contains("slave0:") && info.contains("state=online") {
                    true => Ok(()),
                    false => Err(format!("the primary has no replica online: {info}")),
                }
            }
            Deployment::Cluster(cluster) => {
                for node in cluster.nodes() {
                    if !node.is_running() {
                        return Err(format!("node {} is down", node.port()));
                    }
                    let info: String = admin_query(node, redis::cmd("CLUSTER").arg("INFO"))?;
                    if !info.contains("cluster_state:ok") {
                        return Err(format!("node {}: {info}", node.port()));
                    }
                }
                Ok(())
            }
        }
    }
}

/// `url` as the fleet user.
fn as_fleet(url: RedisUrl) -> String {
    url.user(USER).password(PASSWORD).to_url()
}

/// The fleet user's URL of one node.
pub fn user_url(node: &RedisServer) -> String {
    format!("redis://{USER}:{PASSWORD}@127.0.0.1:{}", node.port())
}

/// A connection with the admin timeouts.
pub fn connect(url: &str) -> Result<redis::Connection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let conn = client
        .get_connection_with_timeout(ADMIN_TIMEOUT)
        .map_err(|e| format!("connecting: {e}"))?;
    conn.set_read_timeout(Some(ADMIN_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(ADMIN_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// An admin connection to `node`, as the default user.
pub fn admin(node: &RedisServer) -> Result<redis::Connection, String> {
    connect(&node.url()).map_err(|e| format!("{}: {e}", node.port()))
}

/// One admin command on `node`.
pub fn admin_query<T: redis::FromRedisValue>(
    node: &RedisServer,
    cmd: &redis::Cmd,
) -> Result<T, String> {
    cmd.query(&mut admin(node)?)
        .map_err(|e| format!("{}: {e}", node.port()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_kinds_parse_and_a_wrong_one_names_the_three() {
        for kind in [Kind::Single, Kind::Sentinel, Kind::Cluster] {
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
        }
        let e = "clusterr".parse::<Kind>().unwrap_err();
        for name in ["single", "sentinel", "cluster", "clusterr"] {
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn topology_urls_carry_the_fleet_user() {
        assert_eq!(
            as_fleet(RedisUrl::sentinel(
                ["127.0.0.1:1", "127.0.0.1:2"],
                "gensync"
            )),
            format!("redis+sentinel://{USER}:{PASSWORD}@127.0.0.1:1,127.0.0.1:2/gensync")
        );
    }

    /// The fleet user on a single server: allowed its keys and commands,
    /// refused others' keys and admin commands; still there after a
    /// restart (it comes from the command line).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn topology_single_user_is_least_privilege_and_survives_a_restart() {
        let mut topology = Topology::start(Kind::Single).await.unwrap();
        let url = topology.url();
        let keys = vec!["gensync:chaos".to_owned()];
        tokio::task::spawn_blocking(move || {
            let mut conn = connect(&url).unwrap();
            let set: redis::RedisResult<()> = redis::cmd("SET")
                .arg("gensync:chaos")
                .arg(1)
                .query(&mut conn);
            set.unwrap();
            let other: redis::RedisResult<()> =
                redis::cmd("SET").arg("other").arg(1).query(&mut conn);
            assert!(other.is_err(), "a key outside gensync's was written");
            let flush: redis::RedisResult<()> = redis::cmd("FLUSHALL").query(&mut conn);
            assert!(flush.is_err(), "the fleet user may FLUSHALL");
            if let Deployment::Single(server) = topology.deployment_mut() {
                server.restart().unwrap();
            }
            topology.healthy(&keys).unwrap();
        })
        .await
        .unwrap();
    }
}
