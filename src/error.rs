//! Errors: what went wrong and what to check.

use std::time::Duration;

use crate::key::KeyError;

/// A failed backend call, with a message that names the server (password
/// redacted) and what to check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend was configured wrongly (a bad URL, a disabled feature).
    #[error("invalid backend configuration: {0}")]
    Config(String),
    /// No connection could be made.
    #[error("could not reach {target}: {reason}; is the server running?")]
    Unreachable {
        /// The server, password redacted.
        target: String,
        /// The cause, as the client library put it.
        reason: String,
    },
    /// A `rediss://` connection failed its TLS handshake: a certificate
    /// refused by either side, or a port that does not speak TLS. The
    /// server is running; what to change is in `check`.
    #[error("{target} failed the TLS handshake: {reason}; {check}")]
    Tls {
        /// The server, password redacted.
        target: String,
        /// The cause, as the TLS library put it.
        reason: String,
        /// What to check or change.
        check: String,
    },
    /// The server closed a connection: it went down mid-call, or it is
    /// refusing new clients (`maxclients` reached), which Redis does by
    /// closing the connection.
    #[error(
        "{target} closed the connection: {reason}; is it running, and below its maxclients limit?"
    )]
    Disconnected {
        /// The server, password redacted.
        target: String,
        /// The cause, as the client library put it.
        reason: String,
    },
    /// The server did not answer within the bound.
    #[error(
        "{target} did not answer within {after:?}; is it overloaded, paused or behind a firewall?"
    )]
    Timeout {
        /// The server, password redacted.
        target: String,
        /// How long the call waited.
        after: Duration,
    },
    /// The server refused the credentials or the ACL denied a command.
    #[error("{target} refused access: {reason}; check the user and password in the URL and the user's ACL")]
    Auth {
        /// The server, password redacted.
        target: String,
        /// The server's reply.
        reason: String,
    },
    /// The user's ACL denies a command gensync sends, or the keys it
    /// sends it on: the password was taken, the permission is missing.
    /// `rule` is what to add to the user; SECURITY.md lists what each
    /// role needs.
    #[error("{target} refused {denied}: the user's ACL does not allow it; add `{rule}` to the user (`ACL SETUSER <user> {rule}`); SECURITY.md lists the commands each role needs")]
    Denied {
        /// The server, password redacted.
        target: String,
        /// What was refused: `the command 'getrange'`, or the keys.
        denied: String,
        /// The ACL rule that allows it: `+getrange`, or a key pattern.
        rule: String,
    },
    /// Every pooled connection stayed busy for the whole wait.
    #[error("no connection to {target} became free within {after:?}; raise the pool size or look for a caller holding connections")]
    PoolExhausted {
        /// The server, password redacted.
        target: String,
        /// How long the call waited for a connection.
        after: Duration,
    },
    /// A write reached the primary, but fewer replicas than
    /// [`RedisConfig::wait_for_replicas`](crate::RedisConfig::wait_for_replicas)
    /// asks for acknowledged it in time.
    #[error(
        "{target} took the write, but only {acked} of {wanted} replica(s) acknowledged it within \
         {after:?}, so a failover now could lose it; check the replicas (running, connected, \
         caught up?) and write again once they are back"
    )]
    NotReplicated {
        /// The server, password redacted.
        target: String,
        /// How many replicas acknowledged the write.
        acked: u32,
        /// How many were asked for.
        wanted: u32,
        /// How long the primary waited for them.
        after: Duration,
    },
    /// The server answered with an error or something unexpected.
    #[error("{target} failed the command: {reason}")]
    Server {
        /// The server, password redacted.
        target: String,
        /// The server's reply or the client library's complaint.
        reason: String,
    },
}

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
