//! The URL schemes a server URL may have, once: what each names, whether it
//! asks for TLS, and where its server is. The Redis backend reads it to
//! accept or refuse a URL and to pick a deployment; the redaction reads it
//! to know where a URL's password can hide.

/// What a URL's scheme names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One server, at a host (and port).
    Single,
    /// One server, at a Unix socket path.
    Socket,
    /// The primary that a list of sentinels names.
    Sentinel,
    /// A Redis Cluster, from a list of seed nodes.
    Cluster,
}

/// One accepted scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Scheme {
    /// As written in a URL, lower case.
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// Whether it asks for TLS (needs the `tls` feature).
    pub(crate) tls: bool,
}

impl Scheme {
    /// Whether the URL names a comma-separated list of hosts, which no URL
    /// parser takes as it is.
    pub(crate) fn multi_host(&self) -> bool {
        matches!(self.kind, Kind::Sentinel | Kind::Cluster)
    }

    /// Whether the URL has a host part, and so a userinfo that may hold a
    /// password (a socket's password is a query parameter).
    pub(crate) fn has_host(&self) -> bool {
        self.kind != Kind::Socket
    }
}

const fn scheme(name: &'static str, kind: Kind, tls: bool) -> Scheme {
    Scheme { name, kind, tls }
}

/// Every scheme accepted. The one-server forms are the client library's
/// (redis-rs reads `valkey://`, `valkeys://` and `valkey+unix://` as
/// `redis://`, `rediss://` and `redis+unix://`); the Sentinel and Cluster
/// forms are gensync's own, and the client library has no Valkey spelling
/// of them, so neither has gensync.
pub(crate) const SCHEMES: &[Scheme] = &[
    scheme("redis", Kind::Single, false),
    scheme("rediss", Kind::Single, true),
    scheme("valkey", Kind::Single, false),
    scheme("valkeys", Kind::Single, true),
    scheme("redis+unix", Kind::Socket, false),
    scheme("valkey+unix", Kind::Socket, false),
    scheme("unix", Kind::Socket, false),
    scheme("redis+sentinel", Kind::Sentinel, false),
    scheme("rediss+sentinel", Kind::Sentinel, true),
    scheme("redis+cluster", Kind::Cluster, false),
    scheme("rediss+cluster", Kind::Cluster, true),
];

/// The URL forms accepted, for error messages.
pub(crate) const URL_FORMS: &str = "redis://[user:password@]host[:port][/db] (or valkey://), \
     rediss://... or valkeys://... (with the `tls` feature), \
     redis+unix:///path/to/socket[?db=N&pass=...] (or valkey+unix://, unix://), \
     redis+sentinel://[user:password@]host:port,host:port.../master-name[/db][?sentinel_password=...] \
     or redis+cluster://[user:password@]host:port,host:port... (rediss+sentinel://, \
     rediss+cluster:// with the `tls` feature)";

/// The scheme of `url` (the text before its `://`), if it is one accepted;
/// case does not matter, as in any URL.
pub(crate) fn of(url: &str) -> Option<Scheme> {
    let (name, _) = url.split_once("://")?;
    named(name)
}

/// The accepted scheme called `name`, in any case.
pub(crate) fn named(name: &str) -> Option<Scheme> {
    SCHEMES
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(name))
        .copied()
}

/// The accepted schemes' names, for a message: `redis, rediss, ...`.
pub(crate) fn names() -> String {
    SCHEMES
        .iter()
        .map(|s| s.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_are_found_in_any_case_and_only_before_their_slashes() {
        let valkeys = of("VALKEYS://h:1").unwrap();
        assert_eq!((valkeys.kind, valkeys.tls), (Kind::Single, true));
        assert!(of("rediss+cluster://a:1,b:2").unwrap().multi_host());
        assert!(!of("valkey+unix:///tmp/s").unwrap().has_host());
        assert_eq!(of("redis:6379"), None);
        assert_eq!(of("http://h"), None);
        assert!(names().starts_with("redis, rediss, valkey, valkeys, "));
    }
}
