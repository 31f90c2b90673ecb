//! What both paths share: the deployment they talk to, and how its errors
//! become a [`BackendError`] that says what to check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{Cmd, ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind, Value};

use super::config::{check_url, RedisConfig, Replicas, URL_FORMS};
use super::deployment::{self, invalid, Deployment, Ran};
use super::tls::{certificate_failure, uses_tls, Tls};
use crate::backend::redact::{secrets, RedactedUrl};
use crate::error::BackendError;

/// What both paths share: where the servers are, the redacted name of the
/// deployment for messages, the secrets to scrub out of the client
/// library's text, and which server the connections have reached.
pub(super) struct Target {
    pub(super) deployment: Deployment,
    /// The TLS material the clients are built with, for clients built
    /// later (a Sentinel's primary, a Cluster's node, push mode's).
    pub(super) tls: Tls,
    pub(super) name: String,
    secrets: Vec<String>,
    pub(super) config: RedisConfig,
    /// The server the last new connection reached.
    server: Mutex<Identity>,
    /// In a Cluster: the node that last answered for each slot.
    owners: Mutex<HashMap<u16, Owner>>,
    /// How many times a new connection reached a different server.
    epoch: AtomicU64,
}

/// How often a Cluster slot's answers also say the node's `run_id`, which
/// a restart in place changes (its node id stays): a restart is noticed
/// within this of the next read of the slot after it.
const RUN_ID_EVERY: Duration = Duration::from_millis(250);

/// The node that answers for a Cluster slot, as far as it has told.
struct Owner {
    node: String,
    run_id: Option<String>,
    /// When its `run_id` was last asked for (or when it is next due).
    asked: Instant,
}

/// Which server the last new connection reached, as far as it could tell.
#[derive(Default)]
struct Identity {
    /// Whether any connection has been made yet.
    met: bool,
    /// Its `run_id`, or `None` when `INFO` was refused or failed.
    run_id: Option<String>,
}

impl Target {
    pub(super) fn open(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let redacted = RedactedUrl::new(url);
        check_url(url, &redacted)?;
        let secrets = secrets(url);
        let scrubbed = |e: RedisError| scrub(&e.to_string(), &secrets);
        let scheme = url.split("://").next().unwrap_or_default();
        let (deployment, tls) = if deployment::multi_host(scheme).is_some() {
            let parts = deployment::split(url).map_err(|p| invalid(&redacted, &p))?;
            let tls = Tls::load(&config.tls, parts.tls)?;
            let deployment = parts.deployment(&tls).map_err(|p| invalid(&redacted, &p))?;
            if let Deployment::Cluster(cluster) = &deployment {
                // Built now, so a bad seed is an error at open.
                cluster
                    .client(&config, None)
                    .map_err(|e| invalid(&redacted, &scrubbed(e)))?;
            }
            (deployment, tls)
        } else {
            let invalid = |e: RedisError| {
                BackendError::Config(format!(
                    "invalid Redis URL {redacted}: {}; expected {URL_FORMS}",
                    scrubbed(e)
                ))
            };
            let info = url.into_connection_info().map_err(invalid)?;
            let tls = Tls::load(&config.tls, uses_tls(&info))?;
            let client = tls.client(info).map_err(invalid)?;
            (Deployment::Single(client), tls)
        };
        Ok(Target {
            deployment,
            tls,
            name: format!("Redis at {redacted}"),
            secrets,
            config,
            server: Mutex::default(),
            owners: Mutex::default(),
            epoch: AtomicU64::new(0),
        })
    }

    /// Whether the identity probe of a new connection starts its budget
    /// (what is left of the connect timeout) once connected rather than
    /// when the connect began: for a Sentinel primary, whose lookup time is
    /// the sentinels'. A lookup that went past a paused sentinel would
    /// leave the probe nothing: an unknown identity, a new epoch, a reload
    /// of every process, on every new connection.
    pub(super) fn probe_budget_restarts(&self) -> bool {
        matches!(self.deployment, Deployment::Sentinel(_))
    }

    /// How long the blocking path waits for a new connection: the connect
    /// timeout, or for a Sentinel primary the call bound, which holds a
    /// lookup that passed over a sentinel that did not answer.
    pub(super) fn checkout_wait(&self) -> Duration {
        match self.deployment {
            Deployment::Sentinel(_) => self.config.call_bound(),
            _ => self.config.connect_timeout,
        }
    }

    /// Whether `e` is a Cluster client's own report that it reached no
    /// node it needed (an I/O error of its making, with no socket's error
    /// behind it), which reads as a server closing the connection
    /// otherwise.
    fn cluster_unreachable(&self, e: &RedisError) -> bool {
        self.is_cluster() && e.kind() == ErrorKind::Io && io_error(e).is_none()
    }

    /// Whether this is a Cluster, whose client reconnects by itself and
    /// whose identity is learnt from each answer instead.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.deployment, Deployment::Cluster(_))
    }

    /// What to send for `cmd`: in a Cluster, a script made to report the
    /// node that ran it ([`deployment::identified`]).
    pub(super) fn outgoing<'a>(&self, cmd: &'a Cmd) -> Outgoing<'a> {
        match self
            .is_cluster()
            .then(|| deployment::identified(cmd, self.run_id_due(cmd)))
            .flatten()
        {
            Some((cmd, slot)) => Outgoing {
                cmd: std::borrow::Cow::Owned(cmd),
                slot: Some(slot),
            },
            None => Outgoing {
                cmd: std::borrow::Cow::Borrowed(cmd),
                slot: None,
            },
        }
    }

    /// The reply to `sent` as the command's own: in a Cluster, with the
    /// node's id taken off and recorded as the slot's owner.
    pub(super) fn incoming(
        &self,
        sent: &Outgoing<'_>,
        reply: Result<Value, RedisError>,
    ) -> Result<Value, RedisError> {
        let Some(slot) = sent.slot else {
            return reply;
        };
        let (ran, reply) = deployment::unwrap_identified(reply);
        if let Some(ran) = ran {
            self.answered(slot, ran);
        }
        reply
    }

    /// Whether the script `cmd` should also ask its node's `run_id`: when
    /// its slot's was last asked [`RUN_ID_EVERY`] ago or more (or never).
    /// Marked asked now, so calls at once do not all ask.
    fn run_id_due(&self, cmd: &Cmd) -> bool {
        let Some(slot) = deployment::identified_slot(cmd) else {
            return false;
        };
        let mut owners = lock(&self.owners);
        match owners.get_mut(&slot) {
            Some(owner) if owner.asked.elapsed() < RUN_ID_EVERY => false,
            Some(owner) => {
                owner.asked = Instant::now();
                true
            }
            None => true,
        }
    }

    /// Records that the node `ran` answered for `slot`. A slot that moves
    /// to another node (a failover, a resharding) or whose node restarted
    /// (its `run_id` changed) may have gone back in time, so a change
    /// starts a new epoch; the first answer for a slot does not.
    pub(super) fn answered(&self, slot: u16, ran: Ran) {
        let mut owners = lock(&self.owners);
        let moved = match owners.get_mut(&slot) {
            None => false,
            Some(owner) if owner.node != ran.node => true,
            Some(owner) => {
                let restarted =
                    matches!((&owner.run_id, &ran.run_id), (Some(a), Some(b)) if a != b);
                if ran.run_id.is_some() {
                    owner.run_id = ran.run_id.clone();
                }
                if !restarted {
                    return;
                }
                true
            }
        };
        if moved {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        // A new owner's `run_id` is asked for at its next answer.
        let asked = match ran.run_id {
            Some(_) => Instant::now(),
            None => Instant::now() - RUN_ID_EVERY,
        };
        owners.insert(
            slot,
            Owner {
                node: ran.node,
                run_id: ran.run_id,
                asked,
            },
        );
    }

    /// Records the server a new connection reached: its `run_id`, or
    /// `None` when it could not tell. Redis can go back in time (a restart
    /// from an older snapshot, a promoted replica that missed a write), and
    /// a restarted or different server has a new `run_id`, so a change
    /// starts a new epoch. An unknown identity cannot vouch for sameness,
    /// so after the first connection it starts a new epoch too.
    pub(super) fn met(&self, run_id: Option<String>) -> u64 {
        let mut server = lock(&self.server);
        if server.met && (run_id.is_none() || run_id != server.run_id) {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        server.met = true;
        server.run_id = run_id;
        self.epoch()
    }

    /// The `run_id` of the server the latest new connection reached, if it
    /// told.
    pub(super) fn run_id(&self) -> Option<String> {
        lock(&self.server).run_id.clone()
    }

    /// How many times a new connection reached a different server than the
    /// one before it (or one that could not tell): 0 until the first change.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Turns a failed attempt into a message that says what to check.
    pub(super) fn failure(&self, failure: &Failure) -> BackendError {
        match failure {
            Failure::Redis(e) => self.error(e),
            Failure::NotReplicated { acked, wanted } => BackendError::NotReplicated {
                target: self.name.clone(),
                acked: *acked,
                wanted: wanted.count,
                after: wanted.timeout,
            },
        }
    }

    /// Turns a client error into a message that says what to check.
    pub(super) fn error(&self, e: &RedisError) -> BackendError {
        let target = self.name.clone();
        let reason = scrub(&e.to_string(), &self.secrets);
        let code = e.code().unwrap_or_default();
        if e.is_timeout() {
            BackendError::Timeout {
                target,
                after: self.config.response_timeout,
            }
        } else if let Some(check) = certificate_failure(e) {
            BackendError::Tls {
                target,
                reason,
                check,
            }
        } else if e.kind() == ErrorKind::AuthenticationFailed
            || e.kind() == ErrorKind::Server(ServerErrorKind::NoPerm)
            || matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
        {
            BackendError::Auth { target, reason }
        } else if e.is_connection_refusal() || self.cluster_unreachable(e) {
            BackendError::Unreachable { target, reason }
        } else if e.is_connection_dropped() {
            // Also how Redis turns clients away at `maxclients`: it closes
            // the connection, and the client sees a reset or an EOF.
            BackendError::Disconnected { target, reason }
        } else if e.is_io_error() {
            BackendError::Unreachable { target, reason }
        } else if e.kind() == ErrorKind::InvalidClientConfig {
            BackendError::Config(format!("{target}: {reason}"))
        } else if moving(e) {
            BackendError::Server {
                target,
                reason: format!(
                    "the key's slot is moving, or its primary failing over ({reason}); \
                     try again shortly"
                ),
            }
        } else {
            BackendError::Server { target, reason }
        }
    }
}

/// A command as sent, and the Cluster slot whose owner its reply names.
pub(super) struct Outgoing<'a> {
    pub(super) cmd: std::borrow::Cow<'a, Cmd>,
    slot: Option<u16>,
}

/// Why one attempt of a call failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// The client library's error: the connection's, or the server's
    /// error reply.
    Redis(RedisError),
    /// The write was made, but fewer replicas than wanted acknowledged it.
    NotReplicated { acked: u32, wanted: Replicas },
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        Failure::Redis(e)
    }
}

/// `WAIT count timeout`, sent right after a write on the same connection:
/// it waits until `count` replicas have acknowledged every write that
/// connection made before it, ours included, or the timeout passes.
pub(super) fn wait_cmd(replicas: Replicas) -> Cmd {
    let mut cmd = redis::cmd("WAIT");
    // WAIT takes milliseconds, and 0 would wait forever.
    let millis = u64::try_from(replicas.timeout.as_millis()).unwrap_or(u64::MAX);
    cmd.arg(replicas.count).arg(millis.max(1));
    cmd
}

/// Reads the replies to a write and the `WAIT` after it: the write's own
/// result first (its error is the call's), then whether enough replicas
/// acknowledged it.
pub(super) fn read_replicated<T>(
    read: fn(Result<Value, RedisError>) -> Result<T, RedisError>,
    write: Result<Value, RedisError>,
    wait: Result<Value, RedisError>,
    wanted: Replicas,
) -> Result<T, Failure> {
    let written = read(write)?;
    let acked = match wait? {
        Value::Int(n) => u32::try_from(n.max(0)).unwrap_or(u32::MAX),
        other => {
            return Err(Failure::Redis(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "WAIT did not reply with a number",
                format!("{other:?}"),
            ))))
        }
    };
    if acked < wanted.count {
        return Err(Failure::NotReplicated { acked, wanted });
    }
    Ok(written)
}

/// `INFO server`, sent on every new connection for the server's `run_id`.
pub(super) fn identity_cmd() -> Cmd {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server");
    cmd
}

/// The `run_id` in a reply to [`identity_cmd`]; `None` for an error (an
/// ACL that denies `INFO`, a timeout) or a reply without one.
pub(super) fn read_run_id(reply: Result<Value, RedisError>) -> Option<String> {
    let text: String = redis::from_redis_value(reply.ok()?).ok()?;
    let run_id = text.lines().find_map(|l| l.strip_prefix("run_id:"))?.trim();
    (!run_id.is_empty()).then(|| run_id.to_owned())
}

/// Whether the server said the key's slot or primary is changing hands:
/// a Cluster redirection the client did not follow to the end (its node
/// just died), or a replica promoted but not yet serving.
fn moving(e: &RedisError) -> bool {
    use ServerErrorKind::{Ask, ClusterDown, MasterDown, Moved, TryAgain};
    matches!(
        e.kind(),
        ErrorKind::Server(Moved | Ask | TryAgain | ClusterDown | MasterDown)
    )
}

/// The socket's error behind a client error, if there is one (redis keeps
/// its own accessor private).
pub(super) fn io_error(e: &RedisError) -> Option<&std::io::Error> {
    type Inner = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let source = std::error::Error::source(e)?;
    source
        .downcast_ref::<Inner>()
        .and_then(|inner| inner.downcast_ref::<std::io::Error>())
        .or_else(|| source.downcast_ref::<std::io::Error>())
}

/// Whether a connection that produced this error should be dropped and
/// a new one made: anything but a clean error reply from the server.
pub(super) fn breaks_connection(e: &RedisError) -> bool {
    !matches!(e.kind(), ErrorKind::Server(_)) || e.is_connection_dropped()
}

/// Whom a call is for, which decides whether the last connect error may
/// stand in for a dial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Caller {
    /// May be answered the last connect error until the reconnect delay
    /// has passed: a reader's failure only reads as expired, and a server
    /// refusing every connection is spared one per check.
    Reader,
    /// Never answered a cached error: a writer is told its write failed,
    /// so the reason has to be true when it is reported.
    Writer,
}

/// Whether a call failed because the connection it was sent on was
/// already dead: closed or reset, the kind of failure a new connection
/// cures. Not a timeout (the server may be stuck: a new connection would
/// wait as long again) and not an error reply (the server answered).
pub(super) fn found_dead(e: &RedisError) -> bool {
    e.is_io_error() && !e.is_timeout()
}

/// Locks a mutex whose holders never leave its data half-changed, so a
/// panic elsewhere that poisoned it leaves nothing to distrust.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn scrub(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_owned(), |acc, s| acc.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::redis::RedisBackend;

    #[test]
    fn bad_urls_are_refused_with_advice_and_no_secret() {
        for url in [
            "http://user:s3cret-pw@host:6379",
            "127.0.0.1:6379",
            "redis://user:s3cret-pw@[bad",
            "",
        ] {
            let err = RedisBackend::open(url).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, BackendError::Config(_)), "{url}: {err:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
        }
    }

    #[test]
    fn the_epoch_counts_changes_of_server_after_the_first() {
        let target = Target::open("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        let id = |s: &str| Some(s.to_owned());
        target.met(id("a"));
        target.met(id("a"));
        assert_eq!(target.epoch(), 0);
        target.met(id("b"));
        target.met(id("b"));
        assert_eq!(target.epoch(), 1);
        target.met(None);
        target.met(None);
        assert_eq!(target.epoch(), 3);
        target.met(id("b"));
        assert_eq!(target.epoch(), 4);

        let unknown = Target::open("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        unknown.met(None);
        assert_eq!(unknown.epoch(), 0, "the first connection is no change");
    }

    #[test]
    fn a_slot_changing_hands_says_so() {
        let target = Target::open("redis+cluster://127.0.0.1:1", RedisConfig::default()).unwrap();
        let moved = RedisError::from((
            ErrorKind::Server(ServerErrorKind::Moved),
            "Moved",
            "13239 127.0.0.1:1".to_owned(),
        ));
        let text = target.error(&moved).to_string();
        assert!(text.contains("the key's slot is moving"), "{text}");
        assert!(text.contains("13239 127.0.0.1:1"), "{text}");
    }

    #[test]
    fn a_cluster_slot_moves_the_epoch_when_its_node_or_the_node_s_run_changes() {
        let target = Target::open("redis+cluster://127.0.0.1:1", RedisConfig::default()).unwrap();
        let ran = |node: &str, run: Option<&str>| Ran {
            node: node.to_owned(),
            run_id: run.map(str::to_owned),
        };
        target.answered(7, ran("a", Some("r1")));
        target.answered(8, ran("b", Some("r9")));
        target.answered(7, ran("a", None));
        target.answered(7, ran("a", Some("r1")));
        assert_eq!(target.epoch(), 0, "first answers, then the same node");
        target.answered(7, ran("a", Some("r2")));
        assert_eq!(target.epoch(), 1, "restarted in place: same node id");
        target.answered(7, ran("c", None));
        assert_eq!(target.epoch(), 2, "another node");
        target.answered(7, ran("c", Some("r3")));
        target.answered(8, ran("b", None));
        assert_eq!(target.epoch(), 2, "a first run_id for a node is no change");
    }

    #[test]
    fn a_write_is_answered_only_once_enough_replicas_acknowledged_it() {
        let wanted = Replicas {
            count: 2,
            timeout: std::time::Duration::from_millis(300),
        };
        let read = |reply: Result<Value, RedisError>| reply.map(|_| "written");
        let ok = || Ok(Value::Okay);
        assert_eq!(
            read_replicated(read, ok(), Ok(Value::Int(2)), wanted).unwrap(),
            "written"
        );
        assert!(matches!(
            read_replicated(read, ok(), Ok(Value::Int(1)), wanted),
            Err(Failure::NotReplicated { acked: 1, .. })
        ));
        // The write's own error comes first; a WAIT that failed is an error.
        let refused = || Err(RedisError::from((ErrorKind::Client, "refused")));
        assert!(matches!(
            read_replicated(read, refused(), Ok(Value::Int(0)), wanted),
            Err(Failure::Redis(e)) if e.to_string().contains("refused")
        ));
        assert!(matches!(
            read_replicated(read, ok(), refused(), wanted),
            Err(Failure::Redis(_))
        ));
        let target =
            Target::open("redis://:s3cret-pw@127.0.0.1:1", RedisConfig::default()).unwrap();
        let text = target
            .failure(&Failure::NotReplicated { acked: 1, wanted })
            .to_string();
        assert!(
            text.starts_with("Redis at redis://:***@127.0.0.1:1 took the write, but only 1 of 2"),
            "{text}"
        );
    }

    #[test]
    fn the_run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c\r\ntcp_port:6379\r\n";
        let reply = Ok(Value::BulkString(info.as_bytes().to_vec()));
        assert_eq!(read_run_id(reply).as_deref(), Some("4f1c"));
        let denied = RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "denied"));
        assert_eq!(read_run_id(Err(denied)), None);
        assert_eq!(
            read_run_id(Ok(Value::BulkString(b"# Server".to_vec()))),
            None
        );
    }

    #[test]
    fn io_errors_advise_by_what_the_socket_did() {
        use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, UnexpectedEof};
        let target =
            Target::open("redis://:s3cret-pw@127.0.0.1:1", RedisConfig::default()).unwrap();
        let error = |kind| target.error(&RedisError::from(std::io::Error::from(kind)));
        let refused = error(ConnectionRefused);
        assert!(
            matches!(refused, BackendError::Unreachable { .. }),
            "{refused:?}"
        );
        assert!(
            refused.to_string().ends_with("is the server running?"),
            "{refused}"
        );
        for kind in [ConnectionReset, UnexpectedEof] {
            let dropped = error(kind);
            assert!(
                matches!(dropped, BackendError::Disconnected { .. }),
                "{dropped:?}"
            );
            let text = dropped.to_string();
            assert!(
                text.starts_with("Redis at redis://:***@127.0.0.1:1 closed the connection: "),
                "{text}"
            );
            assert!(text.ends_with("maxclients limit?"), "{text}");
        }
    }
}
