//! What a Redis backend is told: its timeouts and pool size, and which URLs
//! it accepts.

use std::path::PathBuf;
use std::time::Duration;

use super::redial::Redials;
use super::tls::TlsFiles;
use crate::backend::redact::{inspect, Flaw, RedactedUrl};
use crate::backend::scheme::{self, URL_FORMS};
use crate::error::BackendError;

/// Timeouts and pool size for a Redis backend.
///
/// Defaults: 250 ms to connect (TCP, TLS and the `AUTH`/`SELECT`
/// handshake), 250 ms for a reply, 8 pooled connections for the blocking
/// path, 50–100 ms before a read dials again after a failed connect
/// (growing to 1–2 s while they keep failing), and no
/// wait for replicas; in push mode, a heartbeat every 200 ms and a lost
/// tracking connection redialled after 0.5–1 s, then 1–2 s (see
/// [`redial`](Self::redial)). A local Redis answers in well under a millisecond, so
/// these only matter when something is wrong, and then they bound what a
/// caller pays.
///
/// # The call bound
///
/// A call on a connection made for it takes at most a connect and a reply.
/// A call on a connection made earlier takes no connect, but that
/// connection may turn out dead (closed by an idle `timeout`, a
/// `CLIENT KILL` or a proxy): then the call is made once more on a new
/// connection, which adds a connect and a second reply. So
/// [`call_bound`](Self::call_bound) is one connect and two replies; a call
/// that would not fit in it is not retried. While
/// [`wait_for_replicas`](Self::wait_for_replicas) is on, a bump's reply
/// also waits for the replicas, and the bound grows by that timeout.
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
    pub(super) replicas: Option<Replicas>,
    pub(super) heartbeat: Duration,
    pub(super) redial_first: Duration,
    pub(super) redial_cap: Duration,
    pub(super) tls: TlsFiles,
}

/// How many replicas a bump waits for, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Replicas {
    pub(super) count: u32,
    pub(super) timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            connect_timeout: Duration::from_millis(250),
            response_timeout: Duration::from_millis(250),
            pool_size: 8,
            reconnect_delay: Duration::from_millis(100),
            replicas: None,
            heartbeat: Duration::from_millis(200),
            redial_first: Duration::from_secs(1),
            redial_cap: Duration::from_secs(2),
            tls: TlsFiles::default(),
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

    /// How long (at most, after one failure) a read is answered the last
    /// connect error before a new connection is dialled, on both paths.
    /// Without it, a server that
    /// refuses every connection (a wrong password, `maxclients` reached)
    /// would be sent a new connection per check, thousands a second. A
    /// write is never answered a cached error: it dials, so what it reports
    /// is what the server says now. The one new connection a call tries
    /// after finding its connection dead does not start the delay (it
    /// comes once per dead connection, not once per call). Zero dials every
    /// time.
    ///
    /// The delay is jittered, and grows while connects keep failing, so a
    /// fleet that lost its server together does not redial together: after
    /// the `n`-th failure in a row (0 for the first) a read dials again
    /// after a pause drawn from `[hi / 2, hi]`,
    /// `hi = min(delay × 2ⁿ, max(cap, delay))`, the cap being
    /// [`redial`](Self::redial)'s. So a connection is dialled at most
    /// `2 / delay` times a second by reads (20 by default; writers dial
    /// when they write), and again within the cap once the server is back.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = delay;
        self
    }

    /// Makes each bump (the write that tells every process to reload) wait
    /// until `count` replicas have acknowledged it, for at most `timeout`
    /// (Redis `WAIT`). A bump fewer replicas acknowledge in time fails with
    /// a [`NotReplicated`](crate::backend::BackendErrorKind::NotReplicated) error, although the primary has it: a
    /// failover then could lose it, and its writer should know.
    ///
    /// Off by default: a bump is acknowledged by the primary alone. A
    /// `count` of 0 turns it off. While it is on, the
    /// [call bound](Self::call_bound) grows by `timeout`, and
    /// [`RedisBackend`](crate::RedisBackend) sends bumps on a connection of
    /// their own: `WAIT` holds its connection until the replicas answer,
    /// and reads must not queue behind it.
    pub fn wait_for_replicas(mut self, count: u32, timeout: Duration) -> Self {
        self.replicas = (count > 0).then_some(Replicas { count, timeout });
        self
    }

    /// Push mode's heartbeat: the tracking connection reads the key this
    /// often (a keyed set's parent, or `PING` for a set without one), and
    /// each must be answered within the same time, or the connection is
    /// dropped and readers read the key themselves until it is armed
    /// again. An answered heartbeat proves every invalidation the server
    /// queued before it has arrived, and its read catches a change the
    /// server never announces (`SWAPDB`, a lapse not yet expired), so push
    /// mode vouches for nothing older than the last answered heartbeat: at
    /// most twice this (400 ms by default) before a request, whatever the
    /// connection does, and in practice the server's round trip. Each
    /// heartbeat is one read command (a set also asks about members that
    /// changed or lapse).
    ///
    /// # Its cost, and the trade-off
    ///
    /// An armed, idle instance sends Redis exactly one command per
    /// heartbeat (two to a Sentinel primary: `ROLE` too), and nothing else:
    /// a fleet of `N` instances costs Redis `N / heartbeat` commands a
    /// second while idle, 5,000 a second for 1,000 instances at the 200 ms
    /// default. A longer heartbeat costs fewer commands, and loosens the
    /// bound on a silently dead connection, which is twice the heartbeat:
    /// for a fleet of 1,000, a heartbeat of 1 s costs 1,000 commands a
    /// second and vouches for nothing older than 2 s. (A change the server
    /// announces still arrives in a round trip, whatever the heartbeat: the
    /// bound is for a connection that died without a word, or a change the
    /// server never announces.) The first beat after the session reads its
    /// key falls at a random point of the period, so instances started, or
    /// re-armed, together do not beat in lockstep.
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// Push mode's redial schedule: how long a tracking session that
    /// failed waits before it dials again, so a fleet that lost its Redis
    /// at the same instant (a restart) redials spread over a window, not in
    /// lockstep, and a server that stays down is not dialled in a tight
    /// loop.
    ///
    /// After the `n`-th failure in a row (0 for the first, as when an armed
    /// session is lost), the pause is drawn uniformly from `[hi / 2, hi]`,
    /// `hi = min(first × 2ⁿ, cap)`. The defaults, 1 s and 2 s: 0.5–1 s,
    /// then 1–2 s for as long as it fails. Hence, per tracking session
    /// (one per tracked key or keyed set):
    ///
    /// - at most `1 + t / (first / 2)` connection attempts in any `t`
    ///   seconds, whatever happens: a fleet of `N` sessions makes at most
    ///   `N × 2 / first` attempts a second (2,000 for 1,000 sessions at the
    ///   defaults), spread over the `first / 2` window after a loss rather
    ///   than in one burst; in a long outage, about `N / (0.75 × cap)` a
    ///   second (667), at most `N × 2 / cap` (1,000). An attempt dials one
    ///   server; through Sentinel, each sentinel asked and the primary; in
    ///   a Cluster, a seed and the slot's owner.
    /// - once the server answers again, the session is armed again within
    ///   `cap` plus one session set-up (a connect and a few round trips).
    ///
    /// While tracking is down, checks read Redis themselves (strict): a
    /// longer pause costs reads, never freshness. `first` must be greater
    /// than zero and at most `cap`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gensync::RedisConfig;
    ///
    /// // A fleet of 5,000: first redials spread over 1–2 s, then 2–4 s;
    /// // at most 5,000 attempts a second, all armed within 4 s of Redis.
    /// let config = RedisConfig::default().redial(Duration::from_secs(2), Duration::from_secs(4));
    /// assert!(gensync::RedisBackend::with_config("redis://127.0.0.1:6379", config).is_ok());
    /// let backwards = RedisConfig::default().redial(Duration::from_secs(4), Duration::from_secs(2));
    /// assert!(gensync::RedisBackend::with_config("redis://127.0.0.1:6379", backwards).is_err());
    /// ```
    pub fn redial(mut self, first: Duration, cap: Duration) -> Self {
        self.redial_first = first;
        self.redial_cap = cap;
        self
    }

    /// Trusts the CA certificates in the PEM file at `path` for a
    /// `rediss://` server, beside the system's roots: the usual set-up for
    /// a self-hosted Redis whose certificate a private CA signed (the file
    /// its `tls-ca-cert-file` names will do). The file is read when the
    /// backend is opened: a missing file, or one with no PEM certificate,
    /// is a [`Config`](crate::backend::BackendErrorKind::Config) error then, as are TLS files given with a
    /// URL that is not `rediss://`. Needs the `tls` feature to be of use:
    /// without it a `rediss://` URL is refused.
    ///
    /// ```no_run
    /// use gensync::{RedisBackend, RedisConfig};
    ///
    /// # async fn run() -> Result<(), gensync::BackendError> {
    /// let config = RedisConfig::default().tls_ca_file("/etc/redis/tls/ca.crt");
    /// let backend = RedisBackend::with_config("rediss://redis.internal:6380", config)?;
    /// backend.ping().await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.ca = Some(path.into());
        self
    }

    /// Sends the client certificate in the PEM file `cert` (a chain may
    /// follow it), proven with the unencrypted PEM private key in `key`, to
    /// a `rediss://` server that requires one (`tls-auth-clients yes`).
    /// Both files are read when the backend is opened, and a key that does
    /// not belong to the certificate is refused then. The configuration
    /// shows the paths, never the key.
    ///
    /// ```no_run
    /// use gensync::{BlockingRedisBackend, RedisConfig};
    ///
    /// let config = RedisConfig::default()
    ///     .tls_ca_file("/etc/redis/tls/ca.crt")
    ///     .tls_client_auth("/etc/gensync/client.crt", "/etc/gensync/client.key");
    /// let backend = BlockingRedisBackend::with_config("rediss://redis.internal:6380", config)?;
    /// backend.ping()?;
    /// # Ok::<(), gensync::BackendError>(())
    /// ```
    pub fn tls_client_auth(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }

    /// How long push mode vouches for a read after the heartbeat sent at
    /// the same time: the next heartbeat's pause and its answer.
    pub(super) fn heartbeat_bound(&self) -> Duration {
        self.heartbeat * 2
    }

    /// The pause before a data connection dials again, after one more
    /// failed connect (see [`reconnect_delay`](Self::reconnect_delay)):
    /// never sooner than half the delay, never later than the redial cap
    /// (or the delay, if that is longer).
    pub(super) fn reconnect_pause(&self, redials: &mut Redials) -> Duration {
        let first = self.reconnect_delay;
        redials.failed(first, self.redial_cap.max(first))
    }

    /// The pause before a tracking session dials again, after one more
    /// failure (see [`redial`](Self::redial)).
    pub(super) fn redial_pause(&self, redials: &mut Redials) -> Duration {
        redials.failed(self.redial_first, self.redial_cap)
    }

    /// The most one backend call can take: a connection and two replies,
    /// the second on a new connection when the one the call found turned
    /// out dead, plus the wait for replicas when it is on (see
    /// [the call bound](Self#the-call-bound)).
    pub fn call_bound(&self) -> Duration {
        self.bound(self.replicas)
    }

    /// The bound of a call that waits for `replicas`, if any.
    pub(super) fn bound(&self, replicas: Option<Replicas>) -> Duration {
        self.connect_timeout + self.reply_timeout(replicas) + self.response_timeout
    }

    /// How long a reply may take: the response timeout, and for a write
    /// that waits for `replicas`, their timeout too.
    pub(super) fn reply_timeout(&self, replicas: Option<Replicas>) -> Duration {
        self.response_timeout + replicas.map_or(Duration::ZERO, |r| r.timeout)
    }

    /// Whether a call that began `elapsed` ago and found its connection
    /// dead has time left for a new connection and a reply: only when it
    /// found so within a response timeout.
    pub(super) fn retry_fits(&self, elapsed: Duration, replicas: Option<Replicas>) -> bool {
        elapsed + self.connect_timeout + self.reply_timeout(replicas) <= self.bound(replicas)
    }

    pub(super) fn validate(&self) -> Result<(), BackendError> {
        if self.connect_timeout.is_zero()
            || self.response_timeout.is_zero()
            || self.heartbeat.is_zero()
        {
            return Err(BackendError::config(
                "Redis timeouts and the heartbeat must be greater than zero",
            ));
        }
        if self.redial_first.is_zero() || self.redial_first > self.redial_cap {
            return Err(BackendError::config(
                "the first redial pause must be greater than zero and at most its cap",
            ));
        }
        if self.replicas.is_some_and(|r| r.timeout.is_zero()) {
            // WAIT with a timeout of 0 waits forever.
            return Err(BackendError::config(
                "the wait for replicas must be greater than zero",
            ));
        }
        if self.pool_size == 0 {
            return Err(BackendError::config(
                "the Redis pool size must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Refuses a URL the backend cannot use before the client library sees it,
/// with the forms it accepts, with the feature this build lacks for
/// `rediss://`, or with how to write a password that split the URL in the
/// wrong place, so the message says what to change.
pub(super) fn check_url(url: &str, redacted: &RedactedUrl) -> Result<(), BackendError> {
    let Some(scheme) = scheme::of(url) else {
        return Err(BackendError::config(format!(
            "unsupported Redis URL {redacted}: its scheme must be one of {}, as in {URL_FORMS}",
            scheme::names()
        )));
    };
    if inspect(url) == Err(Flaw::SplitUserinfo) {
        // Dialling it would look up a host made of the user name, and the
        // client library's errors would carry the password.
        return Err(BackendError::config(format!(
            "the Redis URL {redacted} has an `@` after the host part ends, as a user name or \
             password holding `/`, `?` or `#` written as it is would cause; percent-encode \
             them in the URL (`/` as %2F, `?` as %3F, `#` as %23, `@` as %40)"
        )));
    }
    if scheme.tls && !cfg!(feature = "tls") {
        return Err(BackendError::config(format!(
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
    use crate::error::BackendErrorKind;

    #[test]
    fn the_call_bound_holds_a_retry_and_the_wait_for_replicas() {
        let ms = Duration::from_millis;
        let config = RedisConfig::default()
            .connect_timeout(ms(100))
            .response_timeout(ms(50));
        assert_eq!(config.call_bound(), ms(200));
        assert!(config.retry_fits(ms(50), None));
        assert!(!config.retry_fits(ms(51), None));

        let waiting = config.clone().wait_for_replicas(2, ms(300));
        assert_eq!(waiting.call_bound(), ms(500));
        assert!(waiting.retry_fits(ms(50), waiting.replicas));
        assert!(!waiting.retry_fits(ms(51), waiting.replicas));
        assert_eq!(waiting.wait_for_replicas(0, ms(300)), config, "0 is off");
    }

    #[test]
    fn a_password_that_split_the_url_is_refused_with_advice_and_never_shown() {
        use crate::backend::redis::RedisBackend;

        for url in [
            "redis://default:8#kLeakPW9@127.0.0.1:6379",
            "redis://:a?LeakPW@127.0.0.1:6379/0",
            "redis://:a/LeakPW@127.0.0.1:6379",
        ] {
            let errors = [
                RedisBackend::open(url).unwrap_err(),
                BlockingRedisBackend::open(url).unwrap_err(),
            ];
            for err in errors {
                let text = err.to_string();
                assert!(text.contains("percent-encode"), "{text}");
                assert!(text.contains("%23"), "{text}");
                assert!(!text.contains("LeakPW"), "{text}");
                assert!(!format!("{err:?}").contains("LeakPW"), "{err:?}");
            }
        }
    }

    #[test]
    fn an_unknown_scheme_is_refused_with_the_accepted_ones() {
        use crate::backend::redis::RedisBackend;

        for url in [
            "http://:s3cret-pw@127.0.0.1:6379",
            "valkey+sentinel://a:1/m",
        ] {
            let err = RedisBackend::open(url).unwrap_err();
            let text = err.to_string();
            assert_eq!(err.kind(), BackendErrorKind::Config, "{err:?}");
            assert!(
                text.contains(
                    "its scheme must be one of redis, rediss, valkey, valkeys, redis+unix, \
                     valkey+unix, unix, redis+sentinel, rediss+sentinel, redis+cluster, \
                     rediss+cluster"
                ),
                "{text}"
            );
            assert!(!text.contains("s3cret"), "{text}");
        }
    }

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
            RedisConfig::default().heartbeat(Duration::ZERO),
            RedisConfig::default().wait_for_replicas(1, Duration::ZERO),
            RedisConfig::default().redial(Duration::ZERO, Duration::from_secs(1)),
            RedisConfig::default().redial(Duration::from_secs(2), Duration::from_secs(1)),
        ] {
            assert!(matches!(
                BlockingRedisBackend::with_config(url, config),
                Err(e) if e.kind() == BackendErrorKind::Config
            ));
        }
    }
}
