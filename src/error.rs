//! Errors: what went wrong and what to check.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::key::KeyError;

/// What kind of failure a [`BackendError`] is: what a program matches on
/// to decide what to do (retry, alert, refuse to start).
///
/// New kinds may come in a minor release, so a `match` needs a `_` arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendErrorKind {
    /// The backend was configured wrongly (a bad URL, a disabled feature,
    /// a TLS file that cannot be used). Nothing changes until the
    /// configuration does.
    Config,
    /// No connection could be made: the server is down, or the address is
    /// wrong.
    Unreachable,
    /// A TLS handshake failed: a certificate refused by either side, or a
    /// port that does not speak TLS. The server is running.
    Tls,
    /// The server closed a connection: it went down mid-call, or it is
    /// refusing new clients (`maxclients` reached), which Redis does by
    /// closing the connection.
    Disconnected,
    /// The server did not answer within the bound
    /// ([`after`](BackendError::after) says how long that was).
    Timeout,
    /// The server refused the credentials.
    Auth,
    /// The user's ACL denies a command the backend sends, or the keys it
    /// sends it on: the password was taken, the permission is missing.
    /// [`rule`](BackendError::rule) is what to add to the user.
    Denied,
    /// Every pooled connection stayed busy for the whole wait.
    PoolExhausted,
    /// A write reached the primary, but fewer replicas than
    /// [`RedisConfig::wait_for_replicas`](crate::RedisConfig::wait_for_replicas)
    /// asks for acknowledged it in time ([`acked`](BackendError::acked),
    /// [`wanted`](BackendError::wanted)): a failover now could lose it.
    NotReplicated,
    /// The server answered with an error or something unexpected.
    Server,
}

/// A failed backend call: its [kind](Self::kind), the server it was for
/// (password redacted), a message that says what to check, and the error
/// of the client library behind it as its [`source`](std::error::Error::source).
///
/// Its text names the server and what to check, and never a password:
/// its message has the server's URL redacted and each password replaced
/// where it stands as a word (as client libraries print one; a short
/// password is not hunted inside other words, which would garble the
/// message), and a source whose text holds a secret anywhere is replaced
/// by a scrubbed copy, or hidden whole. It is cheap to
/// clone (the source is shared), and two errors are equal when all but
/// their sources are.
///
/// ```
/// use gensync::BackendError;
/// use gensync::backend::BackendErrorKind;
///
/// # fn check(err: BackendError) {
/// match err.kind() {
///     BackendErrorKind::Auth | BackendErrorKind::Denied | BackendErrorKind::Config => {
///         eprintln!("fix the configuration: {err}");
///     }
///     _ => eprintln!("try again later: {err}"),
/// }
/// # }
/// ```
///
/// # For a backend's author
///
/// A backend of another store builds its errors with [`new`](Self::new)
/// (or [`config`](Self::config), [`timeout`](Self::timeout),
/// [`pool_exhausted`](Self::pool_exhausted), [`denied`](Self::denied),
/// [`not_replicated`](Self::not_replicated) for the kinds that carry
/// data), names the server as it may be shown (with no password: for a
/// URL, [`RedactedUrl`](crate::backend::RedactedUrl) of the `redis`
/// feature redacts one), and keeps the cause with
/// [`with_source`](Self::with_source), once it is sure the cause's text
/// holds no secret:
///
/// ```
/// use gensync::BackendError;
/// use gensync::backend::BackendErrorKind;
///
/// let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
/// let err = BackendError::new(BackendErrorKind::Unreachable, "etcd at 10.0.0.5:2379", io.to_string())
///     .with_source(io);
/// assert_eq!(err.kind(), BackendErrorKind::Unreachable);
/// assert!(err.to_string().starts_with("could not reach etcd at 10.0.0.5:2379: "));
/// assert!(std::error::Error::source(&err).is_some());
/// ```
#[derive(Clone)]
pub struct BackendError(Box<Inner>);

/// Boxed, so a `Result` carrying one stays small.
#[derive(Clone)]
struct Inner {
    kind: BackendErrorKind,
    target: String,
    message: String,
    rule: Option<String>,
    replicas: Option<(u32, u32)>,
    after: Option<Duration>,
    source: Option<Arc<dyn StdError + Send + Sync + 'static>>,
}

impl BackendError {
    /// An error of `kind` for `target` (the server as it may be shown: no
    /// password), with `message` saying what failed; the text around it
    /// (what to check) comes from the kind.
    pub fn new(
        kind: BackendErrorKind,
        target: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        BackendError(Box::new(Inner {
            kind,
            target: target.into(),
            message: message.into(),
            rule: None,
            replicas: None,
            after: None,
            source: None,
        }))
    }

    /// A configuration error: `message` says what to change.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Config, "", message)
    }

    /// `target` did not answer within `after`.
    pub fn timeout(target: impl Into<String>, after: Duration) -> Self {
        Self::new(BackendErrorKind::Timeout, target, "").waited(after)
    }

    /// No pooled connection to `target` became free within `after`.
    pub fn pool_exhausted(target: impl Into<String>, after: Duration) -> Self {
        Self::new(BackendErrorKind::PoolExhausted, target, "").waited(after)
    }

    /// `target`'s ACL refused `denied` (`the command 'getrange'`, or the
    /// keys); `rule` is the ACL rule that allows it (`+getrange`).
    pub fn denied(
        target: impl Into<String>,
        denied: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        let mut err = Self::new(BackendErrorKind::Denied, target, denied);
        err.0.rule = Some(rule.into());
        err
    }

    /// `target` took a write, but only `acked` of the `wanted` replicas
    /// acknowledged it within `after`.
    pub fn not_replicated(
        target: impl Into<String>,
        acked: u32,
        wanted: u32,
        after: Duration,
    ) -> Self {
        let mut err = Self::new(BackendErrorKind::NotReplicated, target, "").waited(after);
        err.0.replicas = Some((acked, wanted));
        err
    }

    /// Keeps `source`, the error behind this one, as its
    /// [`source`](std::error::Error::source). Its text must hold no secret:
    /// a program may print the whole chain.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.0.source = Some(Arc::new(source));
        self
    }

    fn waited(mut self, after: Duration) -> Self {
        self.0.after = Some(after);
        self
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> BackendErrorKind {
        self.0.kind
    }

    /// The server the call was for, password redacted (`Redis at
    /// redis://app:***@cache:6379`); empty for a configuration error.
    pub fn target(&self) -> &str {
        &self.0.target
    }

    /// What failed, as the client library or the server put it (secrets
    /// scrubbed), without the advice around it; for
    /// [`Denied`](BackendErrorKind::Denied), what was refused.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// For [`Denied`](BackendErrorKind::Denied): the ACL rule that allows
    /// what was refused (`+getrange`, or a key pattern). SECURITY.md lists
    /// what each role needs.
    pub fn rule(&self) -> Option<&str> {
        self.0.rule.as_deref()
    }

    /// For [`NotReplicated`](BackendErrorKind::NotReplicated): how many
    /// replicas acknowledged the write.
    pub fn acked(&self) -> Option<u32> {
        self.0.replicas.map(|(acked, _)| acked)
    }

    /// For [`NotReplicated`](BackendErrorKind::NotReplicated): how many
    /// replicas were asked for.
    pub fn wanted(&self) -> Option<u32> {
        self.0.replicas.map(|(_, wanted)| wanted)
    }

    /// How long the call waited: for a [`Timeout`](BackendErrorKind::Timeout),
    /// the bound it ran out of; for
    /// [`PoolExhausted`](BackendErrorKind::PoolExhausted), the wait for a
    /// connection; for [`NotReplicated`](BackendErrorKind::NotReplicated),
    /// the wait for the replicas.
    pub fn after(&self) -> Option<Duration> {
        self.0.after
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use BackendErrorKind as K;
        let target = &self.0.target;
        let message = &self.0.message;
        // The kinds whose text is built from their data show a message
        // given as well, in brackets.
        let extra = if message.is_empty() {
            String::new()
        } else {
            format!(" ({message})")
        };
        let within = match self.0.after {
            Some(after) => format!("within {after:?}"),
            None => "in time".to_owned(),
        };
        match self.0.kind {
            K::Config => write!(f, "invalid backend configuration: {message}"),
            K::Unreachable => write!(
                f,
                "could not reach {target}: {message}; is the server running?"
            ),
            K::Tls => write!(f, "{target} failed the TLS handshake: {message}"),
            K::Disconnected => write!(
                f,
                "{target} closed the connection: {message}; is it running, and below its \
                 maxclients limit?"
            ),
            K::Timeout => write!(
                f,
                "{target} did not answer {within}{extra}; is it overloaded, paused or behind \
                 a firewall?"
            ),
            K::Auth => write!(
                f,
                "{target} refused access: {message}; check the user and password in the URL \
                 and the user's ACL"
            ),
            K::Denied => {
                write!(
                    f,
                    "{target} refused {message}: the user's ACL does not allow it; "
                )?;
                if let Some(rule) = &self.0.rule {
                    write!(
                        f,
                        "add `{rule}` to the user (`ACL SETUSER <user> {rule}`); "
                    )?;
                }
                f.write_str("SECURITY.md lists the commands each role needs")
            }
            K::PoolExhausted => write!(
                f,
                "no connection to {target} became free {within}{extra}; raise the pool size or \
                 look for a caller holding connections"
            ),
            K::NotReplicated => {
                write!(f, "{target} took the write, but ")?;
                match self.0.replicas {
                    Some((acked, wanted)) => {
                        write!(f, "only {acked} of {wanted} replica(s) acknowledged it")?
                    }
                    None => f.write_str("too few replicas acknowledged it")?,
                }
                write!(
                    f,
                    " {within}{extra}, so a failover now could lose it; check the replicas \
                     (running, connected, caught up?) and write again once they are back"
                )
            }
            K::Server => write!(f, "{target} failed the command: {message}"),
        }
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("BackendError");
        s.field("kind", &self.0.kind)
            .field("target", &self.0.target);
        s.field("message", &self.0.message);
        if let Some(rule) = &self.0.rule {
            s.field("rule", rule);
        }
        if let Some((acked, wanted)) = self.0.replicas {
            s.field("acked", &acked).field("wanted", &wanted);
        }
        if let Some(after) = &self.0.after {
            s.field("after", after);
        }
        if let Some(source) = &self.0.source {
            s.field("source", source);
        }
        s.finish()
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// Equal when all but the sources are: a source is the client library's
/// error, which has no equality of its own.
impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        (
            self.0.kind,
            &self.0.target,
            &self.0.message,
            &self.0.rule,
            self.0.replicas,
            self.0.after,
        ) == (
            other.0.kind,
            &other.0.target,
            &other.0.message,
            &other.0.rule,
            other.0.replicas,
            other.0.after,
        )
    }
}

impl Eq for BackendError {}

/// The error of a synchronizer operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key could not be built.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A setting was out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// Other processes kept deleting or corrupting the key while this one
    /// tried to create or repair it.
    #[error("the key {key} kept changing under this process ({tries} tries); is something else deleting or overwriting it?")]
    Contended {
        /// The rendered key.
        key: String,
        /// How many tries were made.
        tries: u32,
    },
}
