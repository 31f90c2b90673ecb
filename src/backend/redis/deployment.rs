//! Where the servers are: one server, a primary found through Sentinel, or
//! a Cluster, read from the URL forms `redis+sentinel://` and
//! `redis+cluster://` (and their `rediss+` TLS twins) beside the plain
//! ones, and the connections each makes.
//!
//! Sentinel: the primary is asked of the sentinels on every new connection,
//! in the order given, each within the connect timeout, and the server
//! named must say it is the primary (`ROLE`) before it is used. The redis
//! crate's own Sentinel client is not used: its lookups wait a fixed half
//! second for a sentinel (forever on the blocking path), so one paused
//! sentinel would hold every lookup past gensync's call bound.
//!
//! Cluster: the redis crate's cluster client routes each command to the
//! node that owns its keys, and follows failovers and resharding itself.
//! Since it reconnects without telling, which server answered is learnt
//! from the answer: in a Cluster every script also returns the node's id
//! (see [`identified`]).

use redis::cluster::ClusterClient;
use redis::{Client, Cmd, IntoConnectionInfo, RedisError, RedisResult, Value};

use super::config::{RedisConfig, Replicas};
use super::tls::Tls;
use crate::backend::scheme::{self, URL_FORMS};
use crate::error::BackendError;

/// Where the servers are.
pub(super) enum Deployment {
    /// One server, at a fixed address.
    Single(Client),
    /// A primary that the sentinels name.
    Sentinel(Sentinels),
    /// A Redis Cluster, from its seed nodes.
    Cluster(Cluster),
}

/// The sentinels to ask, for which primary, and how to reach the data
/// nodes they name.
pub(super) struct Sentinels {
    /// One client per sentinel, asked in the order given, from the one
    /// that answered last.
    pub(super) sentinels: Vec<Client>,
    /// The index of the sentinel that answered last: asked first, so one
    /// that is down costs a lookup once, not every time.
    pub(super) answered: std::sync::atomic::AtomicUsize,
    /// The name the sentinels monitor the primary under.
    pub(super) master: String,
    /// How to reach a data node, given its address.
    pub(super) node: NodeUrl,
}

/// A Cluster's seeds, and how to reach one of its nodes directly (push
/// mode tracks a key on the node that owns it).
pub(super) struct Cluster {
    pub(super) seeds: Vec<String>,
    pub(super) node: NodeUrl,
}

/// A data node's URL with the address left out: scheme, credentials and
/// database, as the deployment's URL gave them.
pub(super) struct NodeUrl {
    tls: bool,
    /// The CA and client certificate every node's client is built with.
    material: Tls,
    /// The userinfo as written, with its `@`, or empty.
    userinfo: String,
    /// `/db`, or empty.
    db: String,
}

impl NodeUrl {
    /// A client for the node at `host:port`.
    pub(super) fn client(&self, host: &str, port: u16) -> RedisResult<Client> {
        self.material
            .client(self.url(host, port).into_connection_info()?)
    }

    fn url(&self, host: &str, port: u16) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        // A sentinel may name an IPv6 address, which a URL brackets.
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("{scheme}://{}{host}:{port}{}", self.userinfo, self.db)
    }
}

/// A multi-host deployment's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Sentinel,
    Cluster,
}

/// A multi-host URL taken apart: `scheme://[userinfo@]host:port,...[/path][?query]`.
pub(super) struct Parts<'a> {
    pub(super) kind: Kind,
    pub(super) tls: bool,
    pub(super) userinfo: &'a str,
    pub(super) hosts: Vec<&'a str>,
    pub(super) path: Vec<&'a str>,
    pub(super) query: &'a str,
}

/// Takes a multi-host URL apart, or says what is wrong with it (the caller
/// adds the redacted URL; nothing here quotes the URL's text).
pub(super) fn split(url: &str) -> Result<Parts<'_>, String> {
    let (_, rest) = url.split_once("://").ok_or("no `://`")?;
    let scheme = scheme::of(url).ok_or("not a multi-host scheme")?;
    let kind = match scheme.kind {
        scheme::Kind::Sentinel => Kind::Sentinel,
        scheme::Kind::Cluster => Kind::Cluster,
        _ => return Err("not a multi-host scheme".into()),
    };
    let tls = scheme.tls;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    if rest.contains('#') {
        return Err("a `#` fragment, which this form does not take".into());
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let hosts: Vec<&str> = hosts.split(',').map(str::trim).collect();
    if hosts.iter().any(|h| h.is_empty()) {
        return Err("an empty host in its list; give host:port pairs separated by commas".into());
    }
    for host in &hosts {
        let port = host.rsplit_once(':').map(|(_, p)| p);
        if port.is_none_or(|p| p.parse::<u16>().is_err()) || host.ends_with(']') {
            return Err(format!(
                "`{host}` has no port, or one past 65535; give every host as host:port \
                 (sentinels usually listen on 26379)"
            ));
        }
    }
    let path = path.split('/').filter(|s| !s.is_empty()).collect();
    Ok(Parts {
        kind,
        tls,
        userinfo,
        hosts,
        path,
        query,
    })
}

impl Parts<'_> {
    /// The deployment this URL names.
    pub(super) fn deployment(&self, tls: &Tls) -> Result<Deployment, String> {
        let mut db = String::new();
        match self.kind {
            Kind::Sentinel => {
                let Some((&master, rest)) = self.path.split_first() else {
                    return Err("no master name; write it as the path: .../mymaster".into());
                };
                match rest {
                    [] => {}
                    [n] if n.parse::<u32>().is_ok() => db = format!("/{n}"),
                    _ => {
                        return Err(
                            "a path other than /master-name or /master-name/db-number".into()
                        )
                    }
                }
                let sentinel_password = self.param("sentinel_password")?;
                let scheme = if self.tls { "rediss" } else { "redis" };
                let auth = sentinel_password
                    .map(|pw| format!(":{pw}@"))
                    .unwrap_or_default();
                let sentinel = |host: &&str| {
                    let info = format!("{scheme}://{auth}{host}").into_connection_info()?;
                    // No `CLIENT SETINFO` on connect: the blocking client
                    // waits its whole timeout for each of its two replies,
                    // so a paused sentinel would cost twice the connect
                    // timeout before the next is asked.
                    let settings = info.redis_settings().clone().set_skip_set_lib_name();
                    tls.client(info.set_redis_settings(settings))
                };
                let sentinels = self
                    .hosts
                    .iter()
                    .map(sentinel)
                    .collect::<RedisResult<Vec<_>>>()
                    .map_err(|e| e.to_string())?;
                let master = percent_encoding::percent_decode_str(master)
                    .decode_utf8()
                    .map_err(|_| "a master name that is not UTF-8 once decoded")?;
                Ok(Deployment::Sentinel(Sentinels {
                    sentinels,
                    answered: Default::default(),
                    master: master.into_owned(),
                    node: self.node(db, tls),
                }))
            }
            Kind::Cluster => {
                if !self.path.is_empty() {
                    return Err("a path: a Cluster has only database 0, so give none".into());
                }
                self.param("sentinel_password")?
                    .map_or(Ok(()), |_| Err("sentinel_password, which is for Sentinel"))?;
                let node = self.node(db, tls);
                let seeds = self
                    .hosts
                    .iter()
                    .map(|h| {
                        let (host, port) = h.rsplit_once(':').expect("checked in split");
                        node.url(
                            host.trim_matches(['[', ']']),
                            port.parse().expect("checked"),
                        )
                    })
                    .collect();
                Ok(Deployment::Cluster(Cluster { seeds, node }))
            }
        }
    }

    fn node(&self, db: String, material: &Tls) -> NodeUrl {
        NodeUrl {
            tls: self.tls,
            material: material.clone(),
            userinfo: self.userinfo.to_owned(),
            db,
        }
    }

    /// The one query parameter these forms take, percent-encoded as
    /// written; any other is an error.
    fn param(&self, name: &str) -> Result<Option<&str>, String> {
        let mut found = None;
        for pair in self.query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some((k, v)) if k == name => found = Some(v),
                Some((k, _)) => {
                    return Err(format!("the query parameter `{k}`, which it does not take"))
                }
                None => return Err("a query parameter without `=`".into()),
            }
        }
        Ok(found)
    }
}

impl Cluster {
    /// A client for the cluster with `config`'s timeouts, its replies
    /// waiting for `replicas` too if any.
    pub(super) fn client(
        &self,
        config: &RedisConfig,
        replicas: Option<Replicas>,
    ) -> RedisResult<ClusterClient> {
        let builder = ClusterClient::builder(self.seeds.iter().map(String::as_str));
        #[cfg(feature = "tls")]
        let builder = match self.node.material.certificates() {
            Some(certificates) => builder.certs(certificates),
            None => builder,
        };
        builder
            .connection_timeout(config.connect_timeout)
            .response_timeout(config.reply_timeout(replicas))
            // A failover takes seconds, and a caller's bound is shorter:
            // one retry after a redirection or a node that went away, with
            // no wait of seconds before it (the crate's default is 16
            // retries from 1.28 s each, and the blocking path has no
            // backstop of its own to cut them).
            .retries(1)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
    }
}

/// The Cluster slot of `key`: CRC16 of its hash tag (the text between its
/// first `{` and the next `}`, if not empty) or of the whole key, modulo
/// 16384.
pub(super) fn slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16384
}

/// The address of the primary a sentinel's `SENTINEL
/// get-master-addr-by-name <master>` reply names.
pub(super) fn read_master_addr(reply: Value, master: &str) -> RedisResult<(String, u16)> {
    let pair: Option<(String, u16)> = redis::from_redis_value(reply)?;
    pair.ok_or_else(|| {
        RedisError::from((
            redis::ErrorKind::MasterNameNotFoundBySentinel,
            "unknown master",
            format!(
                "the sentinels know no master named `{master}`: check the name at the end of \
                 the URL against `sentinel monitor <name>` in sentinel.conf"
            ),
        ))
    })
}

/// Whether a `ROLE` reply says primary.
pub(super) fn is_primary(reply: Value) -> bool {
    matches!(
        redis::from_redis_value::<redis::Role>(reply),
        Ok(redis::Role::Primary { .. })
    )
}

/// `SENTINEL get-master-addr-by-name <master>`.
pub(super) fn master_addr_cmd(master: &str) -> Cmd {
    let mut cmd = redis::cmd("SENTINEL");
    cmd.arg("get-master-addr-by-name").arg(master);
    cmd
}

/// The error a lookup that no sentinel answered gives, when none gave one.
pub(super) fn no_sentinel() -> RedisError {
    RedisError::from((
        redis::ErrorKind::MasterNameNotFoundBySentinel,
        "no sentinel named a primary that says it is one",
    ))
}

/// Turns a URL problem into the error that says what to fix.
pub(super) fn invalid(redacted: &impl std::fmt::Display, problem: &str) -> BackendError {
    BackendError::config(format!(
        "invalid Redis URL {redacted}: {problem}; expected {URL_FORMS}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_the_database() {
        let parts = split("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2").unwrap();
        assert_eq!(parts.kind, Kind::Sentinel);
        assert_eq!(parts.hosts, ["10.0.0.1:26379", "10.0.0.2:26379"]);
        let Deployment::Sentinel(s) = parts.deployment(&Tls::default()).unwrap() else {
            panic!("not a sentinel deployment")
        };
        assert_eq!(s.master, "mymaster");
        assert_eq!(s.sentinels.len(), 2);
        assert_eq!(s.node.url("10.0.0.9", 6379), "redis://:pw@10.0.0.9:6379/2");
        assert_eq!(s.node.url("::1", 6379), "redis://:pw@[::1]:6379/2");
    }

    #[test]
    fn cluster_urls_name_the_seeds() {
        let parts = split("rediss+cluster://u:p@a:7000,b:7001").unwrap();
        assert!(parts.tls);
        let Deployment::Cluster(c) = parts.deployment(&Tls::default()).unwrap() else {
            panic!("not a cluster deployment")
        };
        assert_eq!(c.seeds, ["rediss://u:p@a:7000", "rediss://u:p@b:7001"]);
    }

    #[test]
    fn malformed_multi_host_urls_say_what_to_fix() {
        for (url, says) in [
            ("redis+sentinel://a:26379,b:26379", "no master name"),
            ("redis+sentinel://a:26379,,b:1/m", "empty host"),
            ("redis+sentinel://a,b:1/m", "no port"),
            ("redis+sentinel://a:1/m/x", "a path other than"),
            ("redis+sentinel://a:1/m?db=1", "`db`"),
            ("redis+cluster://a:1/0", "only database 0"),
            ("redis+cluster://a:1?sentinel_password=x", "for Sentinel"),
        ] {
            let err = match split(url).and_then(|p| p.deployment(&Tls::default()).map(drop)) {
                Err(e) => e,
                Ok(()) => panic!("{url} was accepted"),
            };
            assert!(err.contains(says), "{url}: {err}");
        }
    }

    #[test]
    fn slots_are_those_redis_computes() {
        // CLUSTER KEYSLOT's answers, from redis-server 7.0.
        assert_eq!(
            slot(b"gensync:site:settings"),
            slot(b"{gensync:site:settings}:%lock")
        );
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{}x"), slot(b"{}x"));
        assert_ne!(slot(b"{}x"), slot(b""));
    }
}
