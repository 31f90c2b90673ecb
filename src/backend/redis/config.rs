//! What a Redis backend is told: its timeouts and pool size, and which URLs
//! it accepts.

use std::time::Duration;

use crate::backend::redact::RedactedUrl;
use crate::error::BackendError;

/// The URL forms accepted, for error messages.
pub(super) const URL_FORMS: &str = "redis://[user:password@]host[:port][/db], \
     rediss://... (with the `tls` feature) or redis+unix:///path/to/socket[?db=N&pass=...]";

/// Timeouts and pool size for a Redis backend.
///
/// Defaults: 250 ms to connect (TCP, TLS and the `AUTH`/`SELECT`
/// handshake), 250 ms for a reply, 8 pooled connections for the blocking
/// path, and 100 ms before a read dials again after a failed connect. A local Redis answers in well under a millisecond, so these only
/// matter when something is wrong, and then they bound what a caller pays.
///
/// # The call bound
///
/// A call on a connection made for it takes at most a connect and a reply.
/// A call on a connection made earlier takes no connect, but that
/// connection may turn out dead (closed by an idle `timeout`, a
/// `CLIENT KILL` or a proxy): then the call is made once more on a new
/// connection, which adds a connect and a second reply. So
/// [`call_bound`](Self::call_bound) is one connect and two replies; a call
/// that would not fit in it is not retried.
///
/// ```
/// use std::time::Duration;
/// use gensync::RedisConfig;
///
/// let config = RedisConfig::default()
///     .connect_timeout(Duration::from_millis(100))
///     .response_timeout(Duration::from_millis(50));
/// assert_eq!(config.call_bound(), Duration::from_millis(200));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    pub(super) connect_timeout: Duration,
    pub(super) response_timeout: Duration,
    pub(super) pool_size: u32,
    pub(super) reconnect_delay: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(250),
            pool_size: 8,
            reconnect_delay: Duration::from_millis(100),
        }
    }
}

impl RedisConfig {
    /// How long making a connection may take: TCP, TLS, the
    /// `AUTH`/`SELECT` handshake, and reading the server's identity
    /// (`INFO server`), which gets what is left and is skipped when
    /// nothing is.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its reply.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How many connections the blocking path may hold.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// How long a read is answered the last connect error before a new
    /// connection is dialled, on both paths. Without it, a server that
    /// refuses every connection (a wrong password, `maxclients` reached)
    /// would be sent a new connection per check, thousands a second. A
    /// write is never answered a cached error: it dials, so what it reports
    /// is what the server says now. The one new connection a call tries
    /// after finding its connection dead does not start the delay (it
    /// comes once per dead connection, not once per call). Zero dials every
    /// time.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// The most one backend call can take: a connection and two replies,
    /// the second on a new connection when the one the call found turned
    /// out dead (see [the call bound](Self#the-call-bound)).
    pub fn call_bound(&self) -> Duration {
        self.connect_timeout + self.response_timeout * 2
    }

    /// Whether a call that began `elapsed` ago and found its connection
    /// dead has time left for a new connection and a reply.
    pub(super) fn retry_fits(&self, elapsed: Duration) -> bool {
        elapsed + self.connect_timeout + self.response_timeout <= self.call_bound()
    }

    pub(super) fn validate(&self) -> Result<(), BackendError> {
        if self.connect_timeout.is_zero() || self.response_timeout.is_zero() {
            return Err(BackendError::Config(
                "Redis timeouts must be greater than zero".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(BackendError::Config(
                "the Redis pool size must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Refuses a URL the backend cannot use before the client library sees it,
/// with the forms it accepts, or with the feature this build lacks for
/// `rediss://`, so the message says what to change.
pub(super) fn check_url(url: &str, redacted: &RedactedUrl) -> Result<(), BackendError> {
    let scheme = url.split("://").next().unwrap_or_default();
    if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") || !url.contains("://") {
        return Err(BackendError::Config(format!(
            "unsupported Redis URL {redacted}: expected {URL_FORMS}"
        )));
    }
    if scheme == "rediss" && !cfg!(feature = "tls") {
        return Err(BackendError::Config(format!(
            "{redacted} asks for TLS, but gensync was built without its `tls` feature; \
             enable it or use redis://"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::redis::BlockingRedisBackend;

    #[cfg(not(feature = "tls"))]
    #[test]
    fn rediss_without_the_feature_says_so() {
        use crate::backend::redis::RedisBackend;

        let err = RedisBackend::open("rediss://:pw@127.0.0.1:6380").unwrap_err();
        assert!(err.to_string().contains("`tls` feature"), "{err}");
    }

    #[test]
    fn zero_timeouts_and_pools_are_refused() {
        let url = "redis://127.0.0.1:1";
        for config in [
            RedisConfig::default().connect_timeout(Duration::ZERO),
            RedisConfig::default().response_timeout(Duration::ZERO),
            RedisConfig::default().pool_size(0),
        ] {
            assert!(matches!(
                BlockingRedisBackend::with_config(url, config),
                Err(BackendError::Config(_))
            ));
        }
    }
}
