//! A builder for the URL of a Sentinel or Cluster deployment, from its
//! parts, so that a password is encoded right and no URL is written by
//! hand.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::backend::redact::RedactedUrl;

/// What a user name or password keeps as it is in a URL: the unreserved
/// characters of RFC 3986; everything else is percent-encoded.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The URL of a Redis deployment reached through Sentinel or as a Cluster,
/// built from its parts: the same URL [`RedisBackend::open`] and
/// [`BlockingRedisBackend::open`] take as text.
///
/// User names and passwords are percent-encoded here, so one holding `@`,
/// `/`, `#` or `:` cannot split the URL in the wrong place. `Debug` and
/// `Display` show the URL with its passwords as `***`.
///
/// ```
/// use gensync::RedisUrl;
///
/// let sentinel = RedisUrl::sentinel(["10.0.0.1:26379", "10.0.0.2:26379"], "mymaster")
///     .password("p@ss/word")
///     .db(2);
/// assert_eq!(
///     sentinel.to_url(),
///     "redis+sentinel://:p%40ss%2Fword@10.0.0.1:26379,10.0.0.2:26379/mymaster/2"
/// );
/// assert_eq!(
///     sentinel.to_string(),
///     "redis+sentinel://:***@10.0.0.1:26379,10.0.0.2:26379/mymaster/2"
/// );
///
/// let cluster = RedisUrl::cluster(["10.0.1.1:7000", "10.0.1.2:7000"]).tls();
/// assert_eq!(cluster.to_url(), "rediss+cluster://10.0.1.1:7000,10.0.1.2:7000");
/// let backend = gensync::RedisBackend::open(&cluster.to_url());
/// # let _ = backend;
/// ```
///
/// [`RedisBackend::open`]: crate::RedisBackend::open
/// [`BlockingRedisBackend::open`]: crate::BlockingRedisBackend::open
#[derive(Clone)]
pub struct RedisUrl {
    sentinel_of: Option<String>,
    hosts: Vec<String>,
    user: Option<String>,
    password: Option<String>,
    sentinel_password: Option<String>,
    db: Option<u32>,
    tls: bool,
}

impl RedisUrl {
    /// A primary found through `sentinels` (each `host:port`, asked in
    /// this order) under the name `master`.
    pub fn sentinel<I, S>(sentinels: I, master: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisUrl {
            sentinel_of: Some(master.to_owned()),
            ..Self::hosts(sentinels)
        }
    }

    /// A Redis Cluster, found from `seeds` (each `host:port`; a few are
    /// enough, the rest are learnt from them).
    pub fn cluster<I, S>(seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::hosts(seeds)
    }

    fn hosts<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisUrl {
            sentinel_of: None,
            hosts: hosts.into_iter().map(Into::into).collect(),
            user: None,
            password: None,
            sentinel_password: None,
            db: None,
            tls: false,
        }
    }

    /// The user name the data nodes know (Redis 6 ACL).
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_owned());
        self
    }

    /// The data nodes' password.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// The sentinels' own password, when they require one
    /// (`requirepass` in sentinel.conf). Sentinel only.
    pub fn sentinel_password(mut self, password: &str) -> Self {
        self.sentinel_password = Some(password.to_owned());
        self
    }

    /// The database number on the primary. Sentinel only: a Cluster has
    /// database 0 alone.
    pub fn db(mut self, db: u32) -> Self {
        self.db = Some(db);
        self
    }

    /// TLS to every node and sentinel (`rediss+`; needs the `tls`
    /// feature).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// The URL, secrets included: hand it to `open` or `with_config`, and
    /// print the `RedisUrl` itself instead.
    pub fn to_url(&self) -> String {
        let encode = |s: &str| utf8_percent_encode(s, USERINFO).to_string();
        let scheme = match (self.tls, self.sentinel_of.is_some()) {
            (false, true) => "redis+sentinel",
            (true, true) => "rediss+sentinel",
            (false, false) => "redis+cluster",
            (true, false) => "rediss+cluster",
        };
        let userinfo = match (&self.user, &self.password) {
            (None, None) => String::new(),
            (user, password) => format!(
                "{}{}@",
                user.as_deref().map(encode).unwrap_or_default(),
                password
                    .as_deref()
                    .map(|p| format!(":{}", encode(p)))
                    .unwrap_or_default()
            ),
        };
        let mut url = format!("{scheme}://{userinfo}{}", self.hosts.join(","));
        if let Some(master) = &self.sentinel_of {
            url.push('/');
            url.push_str(&encode(master));
        }
        if let Some(db) = self.db {
            url.push_str(&format!("/{db}"));
        }
        if let Some(password) = &self.sentinel_password {
            url.push_str("?sentinel_password=");
            url.push_str(&encode(password));
        }
        url
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&RedactedUrl::new(&self.to_url()), f)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisUrl")
            .field(&RedactedUrl::new(&self.to_url()).as_str())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockingRedisBackend, RedisBackend};

    #[test]
    fn what_it_builds_opens_and_hides_its_secrets() {
        let url = RedisUrl::sentinel(["127.0.0.1:26379", "127.0.0.1:26380"], "main")
            .user("app")
            .password("a#b/c@d:LeakPW")
            .sentinel_password("s&LeakPW")
            .db(3);
        assert!(RedisBackend::open(&url.to_url()).is_ok());
        assert!(BlockingRedisBackend::open(&url.to_url()).is_ok());
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(!shown.contains("LeakPW"), "{shown}");
            assert!(
                shown.contains("127.0.0.1:26379,127.0.0.1:26380/main/3"),
                "{shown}"
            );
        }
        let cluster = RedisUrl::cluster(["127.0.0.1:7000"]).password("pw");
        assert!(RedisBackend::open(&cluster.to_url()).is_ok());
        assert_eq!(cluster.to_string(), "redis+cluster://:***@127.0.0.1:7000");
    }
}
