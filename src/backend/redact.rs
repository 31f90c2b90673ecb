//! Server URLs with their secrets redacted, for messages and logs.

use std::fmt;

use url::Url;

/// Query parameters that carry a secret in a `redis+unix://` URL.
const SECRET_PARAMS: &[&str] = &["pass", "password"];

/// Query parameters the client library reads that hold no secret: shown as
/// they are. Any other parameter may be the tail of a password cut at an
/// unescaped `&`, so a URL holding one is hidden whole.
const PLAIN_PARAMS: &[&str] = &["db", "protocol", "user"];

/// What a URL that cannot be shown is shown as.
const PLACEHOLDER: &str = "<malformed URL, hidden>";

/// Schemes whose URL carries a host, and so may carry a password in its
/// userinfo.
const HOST_SCHEMES: &[&str] = &["redis", "rediss", "valkey", "valkeys"];

/// A server URL that is safe to print: its password, and any `pass=` or
/// `password=` query parameter, replaced with `***`.
///
/// Only a cleanly parsed URL is shown at all. Anything else (text that is
/// no URL, a scheme not followed by `://`, an `@` after the host's end
/// that a `/`, `?` or `#` in an unescaped password would cause, a
/// fragment, an unknown query parameter) is shown as
/// [`RedactedUrl::PLACEHOLDER`], since there is no telling where a secret
/// in it would be.
///
/// ```
/// use gensync::RedactedUrl;
///
/// let url = RedactedUrl::new("redis://app:hunter2@cache:6379/0");
/// assert_eq!(url.to_string(), "redis://app:***@cache:6379/0");
/// assert!(!format!("{url:?}").contains("hunter2"));
///
/// // A password holding `#`, written unescaped, moves the URL's split.
/// let split = RedactedUrl::new("redis://app:8#kLeak@cache:6379");
/// assert_eq!(split.as_str(), RedactedUrl::PLACEHOLDER);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// What a URL that does not parse cleanly is shown as.
    pub const PLACEHOLDER: &'static str = PLACEHOLDER;

    /// Redacts `raw`.
    pub fn new(raw: &str) -> Self {
        match inspect(raw) {
            Ok(url) => RedactedUrl(redacted(url)),
            Err(_) => RedactedUrl(PLACEHOLDER.to_owned()),
        }
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a URL is not shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flaw {
    /// Not `scheme://...`, or not a URL at all.
    Unparsable,
    /// An `@` after the end of the host part: a user name or password
    /// holding `/`, `?` or `#` written unescaped, so the URL splits in the
    /// wrong place (and would dial a host made of the user name).
    SplitUserinfo,
    /// Parsed, but with a fragment or a query parameter that may hold part
    /// of a secret.
    Unclear,
}

/// The URL `raw` parses to, if it parses cleanly.
pub(crate) fn inspect(raw: &str) -> Result<Url, Flaw> {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return Err(Flaw::Unparsable);
    };
    let has_host = HOST_SCHEMES.iter().any(|s| scheme.eq_ignore_ascii_case(s));
    if has_host {
        // Where the userinfo and host end; an `@` after that was meant to
        // end a userinfo the URL has already left.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[end..].contains('@') {
            return Err(Flaw::SplitUserinfo);
        }
    }
    let url = Url::parse(raw).map_err(|_| Flaw::Unparsable)?;
    if url.cannot_be_a_base() {
        return Err(Flaw::Unparsable);
    }
    // `rediss://...#insecure` is the one fragment the client library reads.
    if url.fragment().is_some_and(|f| f != "insecure") {
        return Err(Flaw::Unclear);
    }
    let known = |k: &str| is_secret(k) || PLAIN_PARAMS.iter().any(|p| k.eq_ignore_ascii_case(p));
    if url.query_pairs().any(|(k, _)| !known(&k)) {
        return Err(Flaw::Unclear);
    }
    Ok(url)
}

fn redacted(mut url: Url) -> String {
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password at all.
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| is_secret(&k)) {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if is_secret(&k) { "***".into() } else { v };
                (k.into_owned(), v.into_owned())
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string().replace("%2A%2A%2A", "***")
}

/// The secrets in `raw`, as written and percent-decoded, to scrub out of
/// text another library produced from it. Besides what a clean parse
/// finds, whatever sits where a password would if the URL were split at
/// its last `@` counts, so a URL that parses wrongly loses its secret too.
pub(crate) fn secrets(raw: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    if let Ok(url) = Url::parse(raw) {
        found.extend(url.password().map(str::to_owned));
        found.extend(
            url.query_pairs()
                .filter(|(k, _)| is_secret(k))
                .map(|(_, v)| v.into_owned()),
        );
    }
    found.extend(userinfo_secret(raw).map(str::to_owned));
    let decoded: Vec<String> = found
        .iter()
        .filter_map(|s| {
            let pair = format!("x={s}");
            let decoded = ::url::form_urlencoded::parse(pair.as_bytes())
                .next()
                .map(|(_, v)| v.into_owned());
            decoded
        })
        .collect();
    found.extend(decoded);
    found.retain(|s| !s.is_empty());
    found.sort();
    found.dedup();
    found
}

/// The password part of `raw` read the naive way: after the scheme (and
/// any slashes), up to the last `@`, after the first `:`; the whole of it
/// when there is no `:`, since a typo'd URL may hold a bare password.
fn userinfo_secret(raw: &str) -> Option<&str> {
    let (_, rest) = raw.split_once(':')?;
    let rest = rest.trim_start_matches('/');
    let (userinfo, _) = rest.rsplit_once('@')?;
    Some(userinfo.split_once(':').map_or(userinfo, |(_, pw)| pw))
}

fn is_secret(param: &str) -> bool {
    SECRET_PARAMS.iter().any(|s| param.eq_ignore_ascii_case(s))
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// URLs whose password (always holding `LeakPW`) people write without
    /// percent-encoding, or with a typo'd scheme.
    const HOSTILE: &[&str] = &[
        "redis://default:8#kLeakPW9@127.0.0.1:6379",
        "redis://:8#kLeakPW9@127.0.0.1:6379",
        "redis://default:a?LeakPW@127.0.0.1:6379/0",
        "redis://default:a/LeakPW@127.0.0.1:6379",
        "redis://:LeakPW/x@127.0.0.1:6379",
        "rediss://u:p#LeakPW@cache.example:6380",
        "redis://u:LeakPW#@127.0.0.1",
        "redis:/:LeakPW@127.0.0.1:6379",
        "redis:LeakPW@127.0.0.1:6379",
        "redis//:LeakPW@127.0.0.1:6379",
        "redis+unix:///tmp/r.sock?pass=a&LeakPW",
        "redis+unix:///tmp/r.sock?pass=a#LeakPW",
        "redis://:LeakPW@127.0.0.1:6379#frag",
        "not a url LeakPW",
    ];

    #[test]
    fn passwords_never_survive() {
        let clean = [
            "redis://:s3cret-LeakPW@127.0.0.1:6379",
            "redis://user:s3cret-LeakPW@127.0.0.1:6379/2",
            "rediss://user:s3cret-LeakPW@cache.example:6380",
            "redis+unix:///tmp/redis.sock?db=1&pass=s3cret-LeakPW",
            "redis+unix:///tmp/redis.sock?user=u&password=s3cret-LeakPW",
            "redis://:p@ss-LeakPW@127.0.0.1:6379",
        ];
        for raw in clean.iter().chain(HOSTILE) {
            let r = RedactedUrl::new(raw);
            assert!(!r.to_string().contains("LeakPW"), "{raw} -> {r}");
            assert!(!format!("{r:?}").contains("LeakPW"), "{raw} -> {r:?}");
        }
    }

    #[test]
    fn what_does_not_parse_cleanly_is_hidden_whole() {
        for raw in HOSTILE {
            assert_eq!(RedactedUrl::new(raw).as_str(), PLACEHOLDER, "{raw}");
        }
    }

    #[test]
    fn an_at_after_the_host_is_a_split_userinfo() {
        for raw in [
            "redis://default:8#kLeakPW9@127.0.0.1:6379",
            "redis://default:a?LeakPW@127.0.0.1:6379/0",
            "redis://default:a/LeakPW@127.0.0.1:6379",
            "rediss://u:p#LeakPW@cache.example:6380",
        ] {
            assert_eq!(inspect(raw).unwrap_err(), Flaw::SplitUserinfo, "{raw}");
        }
        // A socket path or a `pass=` value may hold an `@`.
        assert!(inspect("redis+unix:///run/a@b/r.sock?pass=x@y").is_ok());
    }

    #[test]
    fn secrets_are_found_where_the_url_split_wrongly() {
        for raw in HOSTILE.iter().filter(|raw| raw.contains('@')) {
            let found = secrets(raw);
            assert!(
                found.iter().any(|s| s.contains("LeakPW")),
                "{raw}: {found:?}"
            );
        }
        let found = secrets("redis://:a%23LeakPW@127.0.0.1");
        assert!(found.contains(&"a#LeakPW".to_owned()), "{found:?}");
    }

    #[test]
    fn the_rest_is_kept() {
        assert_eq!(
            RedactedUrl::new("redis://user:pw@127.0.0.1:6390/2").as_str(),
            "redis://user:***@127.0.0.1:6390/2"
        );
        assert_eq!(
            RedactedUrl::new("redis+unix:///tmp/r.sock?db=1&pass=pw").as_str(),
            "redis+unix:///tmp/r.sock?db=1&pass=***"
        );
        assert_eq!(
            RedactedUrl::new("redis://127.0.0.1:6379").as_str(),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            RedactedUrl::new("redis://:a%23b@127.0.0.1:6379/?protocol=resp3").as_str(),
            "redis://:***@127.0.0.1:6379/?protocol=resp3"
        );
        assert_eq!(
            RedactedUrl::new("rediss://:pw@cache:6380/#insecure").as_str(),
            "rediss://:***@cache:6380/#insecure"
        );
    }
}
