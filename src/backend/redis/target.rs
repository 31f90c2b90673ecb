//! What both paths share: the deployment they talk to, and how its errors
//! become a [`BackendError`] that says what to check.

use std::time::Duration;

use redis::{Cmd, ErrorKind, IntoConnectionInfo, RedisError, ServerErrorKind, Value};

use super::config::{check_url, RedisConfig, Replicas};
use super::deployment::{self, invalid, Deployment};
use super::identity::Identity;
use super::tls::{certificate_failure, uses_tls, Tls};
use crate::backend::redact::{scrub, secrets, RedactedUrl};
use crate::backend::scheme::{self, URL_FORMS};
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
    /// The URL as given, and its secrets: scrubbed out of the client
    /// library's text.
    url: String,
    secrets: Vec<String>,
    pub(super) config: RedisConfig,
    /// Which servers answered, and how many times that changed.
    pub(super) identity: Identity,
}

impl Target {
    pub(super) fn open(url: &str, config: RedisConfig) -> Result<Self, BackendError> {
        config.validate()?;
        let redacted = RedactedUrl::new(url);
        check_url(url, &redacted)?;
        let secrets = secrets(url);
        let multi_host = scheme::of(url).is_some_and(|s| s.multi_host());
        let (deployment, tls) = if multi_host {
            let parts = deployment::split(url).map_err(|p| invalid(&redacted, &p))?;
            let tls = Tls::load(&config.tls, parts.tls)?;
            let deployment = parts.deployment(&tls).map_err(|p| invalid(&redacted, &p))?;
            if let Deployment::Cluster(cluster) = &deployment {
                // Built now, so a bad seed is an error at open.
                cluster
                    .client(&config, None)
                    .map_err(|e| invalid(&redacted, &scrub(&e.to_string(), url, &secrets)))?;
            }
            (deployment, tls)
        } else {
            let invalid = |e: RedisError| {
                let error = BackendError::config(format!(
                    "invalid Redis URL {redacted}: {}; expected {URL_FORMS}",
                    scrub(&e.to_string(), url, &secrets)
                ));
                with_cause(error, &e, url, &secrets)
            };
            let info = url.into_connection_info().map_err(invalid)?;
            let tls = Tls::load(&config.tls, uses_tls(&info))?;
            let client = tls.client(info).map_err(invalid)?;
            (Deployment::Single(client), tls)
        };
        let cluster = matches!(deployment, Deployment::Cluster(_));
        Ok(Target {
            deployment,
            tls,
            name: format!("Redis at {redacted}"),
            url: url.to_owned(),
            secrets,
            config,
            identity: Identity::new(cluster),
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

    /// Turns a failed attempt into a message that says what to check.
    pub(super) fn failure(&self, failure: &Failure) -> BackendError {
        match failure {
            Failure::Redis(e) => self.error(e),
            Failure::NotReplicated { acked, wanted } => {
                BackendError::not_replicated(&self.name, *acked, wanted.count, wanted.timeout)
            }
        }
    }

    /// Turns a client error into a message that says what to check, with
    /// the client error as its source (scrubbed, if its text holds a
    /// secret).
    pub(super) fn error(&self, e: &RedisError) -> BackendError {
        use crate::error::BackendErrorKind as K;
        let target = &self.name;
        // Words only: a password is printed as a word of its own, and a
        // short one (`e`) must not turn the message into asterisks.
        let reason = scrub(&e.to_string(), &self.url, &self.secrets);
        let code = e.code().unwrap_or_default();
        let error = if e.is_timeout() {
            BackendError::timeout(target, self.config.response_timeout)
        } else if let Some(check) = certificate_failure(e) {
            BackendError::new(K::Tls, target, format!("{reason}; {check}"))
        } else if let Some((denied, rule)) = denial(e, code, &reason) {
            BackendError::denied(target, denied, rule)
        } else if e.kind() == ErrorKind::AuthenticationFailed
            || matches!(code, "NOAUTH" | "WRONGPASS")
        {
            BackendError::new(K::Auth, target, reason)
        } else if e.is_connection_refusal() || self.cluster_unreachable(e) {
            BackendError::new(K::Unreachable, target, reason)
        } else if e.is_connection_dropped() {
            // Also how Redis turns clients away at `maxclients`: it closes
            // the connection, and the client sees a reset or an EOF.
            BackendError::new(K::Disconnected, target, reason)
        } else if e.is_io_error() {
            BackendError::new(K::Unreachable, target, reason)
        } else if e.kind() == ErrorKind::InvalidClientConfig {
            BackendError::config(format!("{target}: {reason}"))
        } else if moving(e) {
            BackendError::new(
                K::Server,
                target,
                format!(
                    "the key's slot is moving, or its primary failing over ({reason}); \
                     try again shortly"
                ),
            )
        } else {
            BackendError::new(K::Server, target, reason)
        };
        with_cause(error, e, &self.url, &self.secrets)
    }
}

/// `error` with `cause` as its source, or, when any text in `cause`'s
/// chain holds a secret of the URL, with a scrubbed copy of its text: a
/// program may print the whole chain.
fn with_cause(
    error: BackendError,
    cause: &RedisError,
    url: &str,
    secrets: &[String],
) -> BackendError {
    match Scrubbed::of(cause, url, secrets) {
        None => error.with_source(cause.clone()),
        Some(scrubbed) => error.with_source(scrubbed),
    }
}

/// A client error's text with the secrets scrubbed out, standing in as the
/// source of an error whose cause's text held one.
#[derive(Debug)]
struct Scrubbed(String);

impl Scrubbed {
    /// `None` if no text in `e`'s chain (`Display` or `Debug`) holds the
    /// URL or any of its `secrets` anywhere, even inside a word; else the
    /// scrubbed text of `e`.
    fn of(e: &(dyn std::error::Error + 'static), url: &str, secrets: &[String]) -> Option<Self> {
        let mut link = Some(e);
        while let Some(e) = link {
            if leaks(&e.to_string(), url, secrets) || leaks(&format!("{e:?}"), url, secrets) {
                return Some(Scrubbed(scrubbed(&e.to_string(), url, secrets)));
            }
            link = e.source();
        }
        None
    }
}

/// Whether `text` holds the URL or any of its `secrets`, even inside a word.
fn leaks(text: &str, url: &str, secrets: &[String]) -> bool {
    (!url.is_empty() && text.contains(url)) || secrets.iter().any(|s| text.contains(s))
}

/// `text` (a client error's) scrubbed of the URL and its secrets; hidden
/// whole when a secret glued to other text survives the scrubber, which
/// replaces whole words only.
fn scrubbed(text: &str, url: &str, secrets: &[String]) -> String {
    let text = scrub(text, url, secrets);
    if leaks(&text, url, secrets) {
        "the client library's error, hidden: it quoted a secret".to_owned()
    } else {
        text
    }
}

impl std::fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Scrubbed {}

/// What an ACL denial refused, and the rule that allows it: Redis names
/// the command (`NOPERM ... run the 'getrange' command`; the scripts name
/// one they were refused the same way), or says a key or channel was out
/// of the user's patterns.
fn denial(e: &RedisError, code: &str, reason: &str) -> Option<(String, String)> {
    if code != "NOPERM" && e.kind() != ErrorKind::Server(ServerErrorKind::NoPerm) {
        return None;
    }
    let command = reason
        .split_once("run the '")
        .and_then(|(_, rest)| rest.split_once('\''))
        .map(|(command, _)| command);
    Some(match command {
        Some(command) => (format!("the command '{command}'"), format!("+{command}")),
        None if reason.contains("channel") => (
            "a channel".to_owned(),
            "&__redis__:invalidate (or allchannels)".to_owned(),
        ),
        None => (
            "access to gensync's keys".to_owned(),
            "~gensync:* ~{gensync:*".to_owned(),
        ),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::redis::RedisBackend;
    use crate::error::BackendErrorKind;

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
            assert_eq!(err.kind(), BackendErrorKind::Config, "{url}: {err:?}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");
        }
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

    /// Every text in the chain a program can print: the error's own, and
    /// each source's `Display` and `Debug`.
    fn chain(err: &BackendError) -> String {
        let mut text = format!("{err}\n{err:?}\n");
        let mut link = std::error::Error::source(err);
        while let Some(e) = link {
            text.push_str(&format!("{e}\n{e:?}\n"));
            link = e.source();
        }
        text
    }

    #[test]
    fn a_client_error_quoting_the_password_is_kept_only_scrubbed() {
        let url = "redis://app:s3cret-pw@127.0.0.1:1";
        let target = Target::open(url, RedisConfig::default()).unwrap();
        let quoting = |detail: &str| {
            RedisError::from((ErrorKind::Io, "could not connect", detail.to_owned()))
        };
        for detail in [format!("to {url}"), "with password s3cret-pw".to_owned()] {
            let err = target.error(&quoting(&detail));
            let text = chain(&err);
            assert!(!text.contains("s3cret"), "{text}");
            let source = std::error::Error::source(&err).expect("a source");
            assert!(source.downcast_ref::<Scrubbed>().is_some(), "{source:?}");
        }
        // Glued to other text, where the word scrubber of the message does
        // not reach (a password is never printed so), the source is hidden
        // whole.
        let err = target.error(&quoting("auth=s3cret-pwx"));
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<Scrubbed>().is_some(), "{source:?}");
        assert!(
            !format!("{source} {source:?}").contains("s3cret"),
            "{source:?}"
        );
        // One that quotes nothing secret is kept as it is.
        let err = target.error(&quoting("to 127.0.0.1:1"));
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<RedisError>().is_some(), "{source:?}");
        assert!(chain(&err).contains("could not connect"));
    }

    #[test]
    fn a_url_the_client_library_refuses_keeps_its_error() {
        let err = RedisBackend::open("redis://:s3cret-pw@0.0.0.0:6379").unwrap_err();
        assert_eq!(err.kind(), BackendErrorKind::Config, "{err:?}");
        let source = std::error::Error::source(&err).expect("a source");
        assert!(source.downcast_ref::<RedisError>().is_some(), "{source:?}");
        assert!(!chain(&err).contains("s3cret"), "{}", chain(&err));
    }

    #[test]
    fn io_errors_advise_by_what_the_socket_did() {
        use std::io::ErrorKind::{ConnectionRefused, ConnectionReset, UnexpectedEof};
        let target =
            Target::open("redis://:s3cret-pw@127.0.0.1:1", RedisConfig::default()).unwrap();
        let error = |kind| target.error(&RedisError::from(std::io::Error::from(kind)));
        let refused = error(ConnectionRefused);
        assert!(
            refused.kind() == BackendErrorKind::Unreachable,
            "{refused:?}"
        );
        assert!(
            refused.to_string().ends_with("is the server running?"),
            "{refused}"
        );
        for kind in [ConnectionReset, UnexpectedEof] {
            let dropped = error(kind);
            assert!(
                dropped.kind() == BackendErrorKind::Disconnected,
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
