//! Server URLs with their secrets redacted, for messages and logs.

use std::fmt;

/// Query parameters that carry a secret in a `redis+unix://` URL.
const SECRET_PARAMS: &[&str] = &["pass", "password"];

/// A server URL that is safe to print: its password, and any `pass=` or
/// `password=` query parameter, replaced with `***`.
///
/// ```
/// use gensync::RedactedUrl;
///
/// let url = RedactedUrl::new("redis://app:hunter2@cache:6379/0");
/// assert_eq!(url.to_string(), "redis://app:***@cache:6379/0");
/// assert!(!format!("{url:?}").contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Redacts `raw`. Text that does not parse as a URL is replaced as a
    /// whole, since there is no telling where a secret in it would be.
    pub fn new(raw: &str) -> Self {
        let Ok(mut url) = ::url::Url::parse(raw) else {
            return RedactedUrl("<unparsable URL>".to_owned());
        };
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
        RedactedUrl(url.to_string().replace("%2A%2A%2A", "***"))
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The secrets in `raw`, as written and percent-decoded, to scrub out of
/// text another library produced from it.
pub(crate) fn secrets(raw: &str) -> Vec<String> {
    let Ok(url) = ::url::Url::parse(raw) else {
        return Vec::new();
    };
    let mut found: Vec<String> = url.password().map(str::to_owned).into_iter().collect();
    found.extend(
        url.query_pairs()
            .filter(|(k, _)| is_secret(k))
            .map(|(_, v)| v.into_owned()),
    );
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

    #[test]
    fn passwords_never_survive() {
        for raw in [
            "redis://:s3cret-pw@127.0.0.1:6379",
            "redis://user:s3cret-pw@127.0.0.1:6379/2",
            "rediss://user:s3cret-pw@cache.example:6380",
            "redis+unix:///tmp/redis.sock?db=1&pass=s3cret-pw",
            "redis+unix:///tmp/redis.sock?user=u&password=s3cret-pw",
            "not a url s3cret-pw",
        ] {
            let r = RedactedUrl::new(raw);
            assert!(!r.to_string().contains("s3cret"), "{raw} -> {r}");
            assert!(!format!("{r:?}").contains("s3cret"), "{raw} -> {r:?}");
        }
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
    }
}
