//! A throwaway Sentinel setup per test: a primary, its replica and three
//! sentinels on free loopback ports, so a test can kill the primary and
//! watch the sentinels promote the replica.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use super::poll::{self, ask};
use super::redis_server::NO_SYNC_DELAY;
use super::tls::Transport;
use super::RedisServer;

/// The name the sentinels monitor the primary under.
const MASTER_NAME: &str = "gensync";
/// How long the primary may be silent before a sentinel thinks it down.
/// Short for a fast failover, long enough that a busy machine does not
/// fail over a primary that is only slow: 500 ms measured only 0.3 s
/// faster (2.1 s a failover against 2.3 s), the rest being the sentinels'
/// agreeing and electing a leader.
const DOWN_AFTER: Duration = Duration::from_millis(1000);
/// Bounds each failover step, and a sentinel waits twice this before it
/// tries again after a failed election: short, so a split vote costs
/// seconds, not minutes (the default is three minutes).
const FAILOVER_TIMEOUT: Duration = Duration::from_millis(3000);
/// How long the sentinels may take to find the replica and each other.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How many sentinels watch, and how many must agree the primary is down.
const SENTINELS: usize = 3;
const QUORUM: usize = 2;

/// A primary, one replica and three sentinels, each its own `redis-server`
/// process on a free loopback port, all killed when dropped.
///
/// [`start`](Self::start) returns once every sentinel knows the primary,
/// the replica and the other two sentinels, and the replica has
/// acknowledged a write, so a test may kill the primary at once.
///
/// ```no_run
/// use std::time::Duration;
/// use gensync::testing::SentinelGroup;
///
/// let mut group = SentinelGroup::start().expect("redis-server on PATH");
/// let url = group.url(); // redis+sentinel://127.0.0.1:<p1>,...,127.0.0.1:<p3>/gensync
/// let old = group.kill_primary().unwrap();
/// let new = group.wait_for_failover(old, Duration::from_secs(30)).unwrap();
/// assert_eq!(group.primary().unwrap().port(), new);
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct SentinelGroup {
    /// First, so they are killed first on drop: killing the data nodes
    /// under running sentinels would start a failover.
    sentinels: Vec<RedisServer>,
    /// The two data nodes; which is the primary is the sentinels' call.
    data: [RedisServer; 2],
    password: Option<String>,
    /// Plain TCP, or TLS only for every data node and sentinel.
    transport: Transport,
}

impl SentinelGroup {
    /// Starts a group whose data nodes need no password.
    pub fn start() -> io::Result<Self> {
        Self::launch(None, Transport::Plain, Vec::new())
    }

    /// Starts a group whose two data nodes also get extra command-line
    /// arguments, such as `["--enable-debug-command", "yes"]` (the
    /// sentinels get none). The arguments stay with each node, so a node
    /// restarted by [`restart_as_replica`](Self::restart_as_replica) has
    /// them too: a `--user` rule given here survives restarts.
    ///
    /// ```no_run
    /// use gensync::testing::SentinelGroup;
    ///
    /// let group = SentinelGroup::start_with_args(["--enable-debug-command", "yes"])
    ///     .expect("redis-server on PATH");
    /// let primary = group.primary().unwrap(); // answers DEBUG SLEEP
    /// # let _ = primary;
    /// ```
    pub fn start_with_args<I, S>(args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = args.into_iter().map(Into::into).collect();
        Self::launch(None, Transport::Plain, args)
    }

    /// Starts a group whose data nodes require `password` (the sentinels
    /// are told it with `sentinel auth-pass`; they need none themselves).
    pub fn start_with_password(password: &str) -> io::Result<Self> {
        Self::launch(Some(password), Transport::Plain, Vec::new())
    }

    /// Starts a group that speaks only TLS (`port 0`), with `certs`' server
    /// certificate and private CA: clients, replication and the sentinels'
    /// connections to the data nodes and to each other (`tls-replication
    /// yes`; the sentinels announce their TLS ports). Every server requires
    /// a client certificate signed by the CA when `require_client_cert`
    /// (`tls-auth-clients yes`); the servers present
    /// [`client_cert`](super::TlsCerts::client_cert) to each other.
    ///
    /// [`url`](Self::url) is then `rediss+sentinel://...`, and the
    /// servers' [`url`](RedisServer::url)s are `rediss://`.
    ///
    /// ```no_run
    /// use gensync::testing::{SentinelGroup, TlsCerts};
    ///
    /// let certs = TlsCerts::generate().expect("openssl on PATH");
    /// let group = SentinelGroup::start_tls(&certs, false).expect("redis-server on PATH");
    /// let url = group.url(); // rediss+sentinel://127.0.0.1:<p1>,...,127.0.0.1:<p3>/gensync
    /// # let _ = url;
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn start_tls(certs: &super::TlsCerts, require_client_cert: bool) -> io::Result<Self> {
        Self::launch(None, certs.transport(require_client_cert)?, Vec::new())
    }

    /// Starts the group; `extra` are every data node's extra arguments.
    fn launch(
        password: Option<&str>,
        transport: Transport,
        extra: Vec<String>,
    ) -> io::Result<Self> {
        let primary = data_node(password, extra.clone(), &transport)?;
        let port = primary.port().to_string();
        let mut replica_args = extra;
        replica_args.extend(["--replicaof".into(), "127.0.0.1".into(), port]);
        let replica = data_node(password, replica_args, &transport)?;
        // Before the sentinels start: a sentinel asks the primary for its
        // replicas at once, then only every ten seconds.
        poll::until(SETTLE_TIMEOUT, "the replica acknowledging a write", || {
            poll::replica_acked(&primary)
        })?;
        let mut config = format!(
            "sentinel resolve-hostnames no\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {} {QUORUM}\n\
             sentinel down-after-milliseconds {MASTER_NAME} {}\n\
             sentinel failover-timeout {MASTER_NAME} {}\n",
            primary.port(),
            DOWN_AFTER.as_millis(),
            FAILOVER_TIMEOUT.as_millis(),
        );
        if let Some(password) = password {
            config.push_str(&format!("sentinel auth-pass {MASTER_NAME} {password}\n"));
        }
        let sentinels = (0..SENTINELS)
            .map(|_| RedisServer::start_sentinel(&config, &transport))
            .collect::<io::Result<Vec<_>>>()?;
        let group = SentinelGroup {
            data: [primary, replica],
            sentinels,
            password: password.map(str::to_owned),
            transport,
        };
        poll::until(
            SETTLE_TIMEOUT,
            "the sentinels knowing the replica and each other",
            || group.settled(),
        )?;
        Ok(group)
    }

    /// Whether every sentinel sees the primary up, the replica linked to
    /// it, and the other sentinels: what a failover needs.
    fn settled(&self) -> Result<(), String> {
        for sentinel in &self.sentinels {
            let url = sentinel.url();
            let master = fields(ask(
                sentinel,
                redis::cmd("SENTINEL").arg("MASTER").arg(MASTER_NAME),
            )?);
            let replicas: Vec<Vec<String>> = ask(
                sentinel,
                redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME),
            )?;
            let replica = replicas.into_iter().next().map(fields).unwrap_or_default();
            let ready = master.get("flags").map(String::as_str) == Some("master")
                && master.get("num-slaves").map(String::as_str) == Some("1")
                && master.get("num-other-sentinels") == Some(&(SENTINELS - 1).to_string())
                && replica.get("flags").map(String::as_str) == Some("slave")
                && replica.get("master-link-status").map(String::as_str) == Some("ok");
            if !ready {
                return Err(format!("{url}: master {master:?}, replica {replica:?}"));
            }
        }
        Ok(())
    }

    /// The name the sentinels know the primary by: `"gensync"`.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// `redis+sentinel://[:password@]127.0.0.1:<p1>,127.0.0.1:<p2>,127.0.0.1:<p3>/gensync`:
    /// the sentinels' addresses and the master name, with the data nodes'
    /// password when there is one; `rediss+sentinel://` for a group
    /// started with [`start_tls`](Self::start_tls).
    pub fn url(&self) -> String {
        let hosts = self
            .sentinel_addrs()
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let auth = match &self.password {
            Some(password) => format!(":{password}@"),
            None => String::new(),
        };
        let scheme = self.transport.scheme();
        format!("{scheme}+sentinel://{auth}{hosts}/{MASTER_NAME}")
    }

    /// The sentinels' host and port.
    pub fn sentinel_addrs(&self) -> Vec<(String, u16)> {
        self.sentinels
            .iter()
            .map(|sentinel| ("127.0.0.1".to_owned(), sentinel.port()))
            .collect()
    }

    /// The sentinels, to pause or kill one.
    pub fn sentinels_mut(&mut self) -> &mut [RedisServer] {
        &mut self.sentinels
    }

    /// The primary's port, as the first sentinel that answers names it
    /// now (`SENTINEL get-master-addr-by-name`).
    pub fn primary_port(&self) -> io::Result<u16> {
        let mut seen = Vec::new();
        for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
            match self.named_by(sentinel) {
                Ok(port) => return Ok(port),
                Err(e) => seen.push(e),
            }
        }
        Err(io::Error::other(format!(
            "no sentinel named the primary: {seen:?}"
        )))
    }

    fn named_by(&self, sentinel: &RedisServer) -> Result<u16, String> {
        let (_host, port): (String, u16) = ask(
            sentinel,
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME),
        )?;
        Ok(port)
    }

    /// The data node the sentinels name the primary now.
    pub fn primary(&self) -> io::Result<&RedisServer> {
        let port = self.primary_port()?;
        self.data_node(|node| node.port() == port)
    }

    /// The other data node: the replica, or after a failover the old
    /// primary (killed, unless the test restarted it).
    pub fn replica(&self) -> io::Result<&RedisServer> {
        let port = self.primary_port()?;
        self.data_node(|node| node.port() != port)
    }

    fn data_node(&self, pick: impl Fn(&RedisServer) -> bool) -> io::Result<&RedisServer> {
        Ok(&self.data[self.data_index(pick)?])
    }

    fn data_index(&self, pick: impl Fn(&RedisServer) -> bool) -> io::Result<usize> {
        self.data
            .iter()
            .position(pick)
            .ok_or_else(|| io::Error::other("the sentinels name a port that is not a data node"))
    }

    /// Kills the current primary (SIGKILL) and returns its port.
    pub fn kill_primary(&mut self) -> io::Result<u16> {
        let port = self.primary_port()?;
        let index = self.data_index(|node| node.port() == port)?;
        self.data[index].kill();
        Ok(port)
    }

    /// Starts again the data node on `port` (killed by
    /// [`kill_primary`](Self::kill_primary)), empty, and waits until the
    /// group is whole: the sentinels name a primary and its replica has
    /// acknowledged a write, so the group can fail over again. Returns the
    /// primary's port.
    ///
    /// The restarted node normally comes back as the replica. On a loaded
    /// machine the primary may stall past the sentinels' down-after time
    /// while it syncs the newcomer, and the sentinels then fail over to the
    /// restarted node: the group is whole that way too, with the roles the
    /// other way round, so read the primary from the returned port rather
    /// than assume it.
    pub fn restart_as_replica(&mut self, port: u16, timeout: Duration) -> io::Result<u16> {
        let index = self.data_index(|node| node.port() == port)?;
        self.data[index].restart()?;
        poll::until(timeout, "the group whole again", || {
            let primary = self.primary().map_err(|e| e.to_string())?;
            poll::is_master(primary)?;
            poll::replica_acked(primary)?;
            Ok(primary.port())
        })
    }

    /// Waits until every running sentinel names a primary other than
    /// `old_port` (the same one), and that server says `role:master`;
    /// returns its port.
    pub fn wait_for_failover(&self, old_port: u16, timeout: Duration) -> io::Result<u16> {
        poll::until(timeout, "a failover", || {
            let mut named = Vec::new();
            for sentinel in self.sentinels.iter().filter(|s| s.is_running()) {
                named.push(self.named_by(sentinel)?);
            }
            let port = match named.as_slice() {
                [first, rest @ ..] if *first != old_port && rest.iter().all(|p| p == first) => {
                    *first
                }
                _ => return Err(format!("the sentinels name {named:?}")),
            };
            let node = self
                .data_node(|node| node.port() == port)
                .map_err(|e| e.to_string())?;
            poll::is_master(node)?;
            Ok(port)
        })
    }
}

/// Starts a data node, with the password both to serve and, should a
/// sentinel make it a replica, to reach its primary.
fn data_node(
    password: Option<&str>,
    mut args: Vec<String>,
    transport: &Transport,
) -> io::Result<RedisServer> {
    args.extend(NO_SYNC_DELAY.map(String::from));
    if let Some(password) = password {
        args.extend(["--masterauth".into(), password.into()]);
    }
    RedisServer::start_data_node(args, password, transport)
}

/// A `SENTINEL MASTER`/`REPLICAS` entry: a flat list of names and values.
fn fields(flat: Vec<String>) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut flat = flat.into_iter();
    while let (Some(name), Some(value)) = (flat.next(), flat.next()) {
        fields.insert(name, value);
    }
    fields
}
