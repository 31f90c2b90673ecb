//! Server URLs with their secrets redacted, for messages and logs. Long
//! because a URL that does not parse cleanly must still give up its
//! secrets to the scrubber, and Sentinel and Cluster URLs list several
//! hosts, which no URL parser takes; a third of it is the tests of both.

use std::fmt;

use url::Url;

use super::scheme;

/// Query parameters that carry a secret: in a `redis+unix://` URL, and the
/// sentinels' password in a `redis+sentinel://` one.
const SECRET_PARAMS: &[&str] = &["pass", "password", "sentinel_password"];

/// Query parameters the client library reads that hold no secret: shown as
/// they are. Any other parameter may be the tail of a password cut at an
/// unescaped `&`, so a URL holding one is hidden whole.
const PLAIN_PARAMS: &[&str] = &["db", "protocol", "user"];

/// What a URL that cannot be shown is shown as.
const PLACEHOLDER: &str = "<malformed URL, hidden>";

/// A server URL that is safe to print: its password (or userinfo without
/// a colon, `redis://SECRET@host`, which Redis URLs read as a password),
/// and any `pass=` or `password=` query parameter, replaced with `***`.
///
/// Only a cleanly parsed URL is shown at all. Anything else (text that is
/// no URL, a scheme not followed by `://`, an `@` after the host's end
/// that a `/`, `?` or `#` in an unescaped password would cause, a
/// fragment, an unknown query parameter) is shown as
/// [`RedactedUrl::PLACEHOLDER`], since there is no telling where a secret
/// in it would be.
///
/// ```
/// use gensync::backend::RedactedUrl;
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
        if let Some(shown) = multi_host(raw) {
            return RedactedUrl(shown.unwrap_or_else(|_| PLACEHOLDER.to_owned()));
        }
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
    let known = scheme::named(scheme);
    let multi = known.is_some_and(|s| s.multi_host());
    let has_host = known.is_some_and(|s| s.has_host());
    if has_host {
        // Where the userinfo and host end; an `@` after that was meant to
        // end a userinfo the URL has already left.
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        if rest[end..].contains('@') {
            return Err(Flaw::SplitUserinfo);
        }
    }
    if multi {
        // Every host must make a clean URL; the first stands for them all.
        let mut hosts = each_host(raw).ok_or(Flaw::Unparsable)?.into_iter();
        let first = inspect(&hosts.next().ok_or(Flaw::Unparsable)?)?;
        for host in hosts {
            inspect(&host)?;
        }
        return Ok(first);
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

/// Whether `scheme` names a comma-separated list of hosts (Sentinel,
/// Cluster), which no URL parser takes as it is: each host is checked as
/// a one-host URL with the same userinfo and path.
fn is_multi_host(scheme: &str) -> bool {
    scheme::named(scheme).is_some_and(|s| s.multi_host())
}

/// A multi-host URL as one `redis://` URL per host, with its userinfo and
/// path; `None` for any other URL.
fn each_host(raw: &str) -> Option<Vec<String>> {
    let (scheme, rest) = raw.split_once("://")?;
    if !is_multi_host(scheme) {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    Some(
        hosts
            .split(',')
            .map(|host| format!("redis://{userinfo}{host}{tail}"))
            .collect(),
    )
}

/// A multi-host URL redacted: its scheme, the first host's URL redacted,
/// and every host as parsed; `None` for any other URL.
fn multi_host(raw: &str) -> Option<Result<String, Flaw>> {
    let (scheme, _) = raw.split_once("://")?;
    if !is_multi_host(scheme) {
        return None;
    }
    let shown = || {
        let first = inspect(raw)?;
        let mut hosts = Vec::new();
        for host in each_host(raw).ok_or(Flaw::Unparsable)? {
            let url = inspect(&host)?;
            let name = url.host_str().ok_or(Flaw::Unparsable)?;
            hosts.push(match url.port() {
                Some(port) => format!("{name}:{port}"),
                None => name.to_owned(),
            });
        }
        let one = redacted(first);
        let after = one.split_once("://").map_or("", |(_, rest)| rest);
        let end = after.find(['/', '?', '#']).unwrap_or(after.len());
        let (authority, tail) = after.split_at(end);
        let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
        Ok(format!(
            "{}://{userinfo}{}{tail}",
            scheme.to_ascii_lowercase(),
            hosts.join(",")
        ))
    };
    Some(shown())
}

fn redacted(mut url: Url) -> String {
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password at all.
        let _ = url.set_password(Some("***"));
    } else if !url.username().is_empty() {
        // `redis://SECRET@host`: userinfo without a colon is the password
        // in Redis URLs (as redis-cli and most clients read it).
        let _ = url.set_username("***");
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
    let parsed = Url::parse(raw).ok().or_else(|| {
        // A multi-host URL: its first host's URL holds the same secrets.
        Url::parse(each_host(raw)?.first()?).ok()
    });
    if let Some(url) = parsed {
        found.extend(url.password().map(str::to_owned));
        // Userinfo without a colon is a password in Redis URLs.
        if url.password().is_none() && !url.username().is_empty() {
            found.push(url.username().to_owned());
        }
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
/// any slashes), up to the last `@`, after the first `:`, or the whole of
/// it when there is no `:` (userinfo without a colon is a password in
/// Redis URLs).
fn userinfo_secret(raw: &str) -> Option<&str> {
    let (_, rest) = raw.split_once(':')?;
    let rest = rest.trim_start_matches('/');
    let (userinfo, _) = rest.rsplit_once('@')?;
    match userinfo.split_once(':') {
        Some((_, password)) => Some(password),
        None => Some(userinfo),
    }
}

/// `text` (another library's message about `raw`) with `raw` shown
/// redacted and every secret of it replaced by `***` where it stands as a
/// word of its own. Replacing it inside words too would hide nothing more
/// (a secret is never printed glued to other letters) and would garble the
/// message: a password `e` would turn "Connection refused" into
/// "Conn***ction r***fus***d".
pub(crate) fn scrub(text: &str, raw: &str, secrets: &[String]) -> String {
    let mut text = if raw.is_empty() {
        text.to_owned()
    } else {
        text.replace(raw, RedactedUrl::new(raw).as_str())
    };
    for secret in secrets {
        text = replace_words(&text, secret);
    }
    text
}

/// `text` with each occurrence of `word` that no letter or digit touches
/// on either side replaced by `***`.
fn replace_words(text: &str, word: &str) -> String {
    if word.is_empty() {
        return text.to_owned();
    }
    let glued = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back().or(out.chars().next_back());
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        if glued(before) || glued(after) {
            // Step one character on: an occurrence may overlap this one.
            let step = word.chars().next().map_or(1, char::len_utf8);
            out.push_str(&rest[at..at + step]);
            rest = &rest[at + step..];
        } else {
            out.push_str("***");
            rest = &rest[at + word.len()..];
        }
    }
    out.push_str(rest);
    out
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
    use crate::backend::scheme::Kind;

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

    /// Every accepted scheme, in its own URL form, written cleanly and
    /// with a password that splits the URL: redacted, shown where clean,
    /// and its secret found for the scrubber.
    #[test]
    fn every_accepted_scheme_hides_its_password() {
        for scheme in crate::backend::scheme::SCHEMES {
            let name = scheme.name;
            let (clean, split) = match scheme.kind {
                Kind::Single => (
                    format!("{name}://app:s3cret-LeakPW@cache:6379/1"),
                    format!("{name}://app:a#LeakPW@cache:6379"),
                ),
                Kind::Socket => (
                    format!("{name}:///run/r.sock?db=1&pass=s3cret-LeakPW"),
                    format!("{name}:///run/r.sock?pass=a&LeakPW"),
                ),
                Kind::Sentinel | Kind::Cluster => (
                    format!("{name}://app:s3cret-LeakPW@a:1,b:2/m"),
                    format!("{name}://app:a/LeakPW@a:1,b:2/m"),
                ),
            };
            let shown = RedactedUrl::new(&clean);
            assert_ne!(shown.as_str(), PLACEHOLDER, "{clean}");
            assert!(shown.as_str().starts_with(name), "{clean} -> {shown}");
            assert!(shown.as_str().contains("***"), "{clean} -> {shown}");
            assert!(
                secrets(&clean).contains(&"s3cret-LeakPW".to_owned()),
                "{clean}"
            );
            for raw in [&clean, &split] {
                let r = RedactedUrl::new(raw);
                assert!(!r.to_string().contains("LeakPW"), "{raw} -> {r}");
                assert!(!format!("{r:?}").contains("LeakPW"), "{raw} -> {r:?}");
            }
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
        // Userinfo without a colon is a password in Redis URLs.
        assert_eq!(
            secrets("redis://LeakPW@127.0.0.1"),
            vec!["LeakPW".to_owned()]
        );
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
            RedactedUrl::new("redis://LeakPW@127.0.0.1:6379/1").as_str(),
            "redis://***@127.0.0.1:6379/1"
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

    #[test]
    fn scrubbing_replaces_whole_words_and_the_url_never_letters_inside_words() {
        let raw = "redis://:e@127.0.0.1:1";
        let text = format!("Connection refused at {raw} (e)");
        assert_eq!(
            scrub(&text, raw, &secrets(raw)),
            "Connection refused at redis://:***@127.0.0.1:1 (***)"
        );
        let raw = "redis://LeakPW@h";
        assert_eq!(
            scrub("AUTH LeakPW failed; LeakPWx kept", raw, &secrets(raw)),
            "AUTH *** failed; LeakPWx kept"
        );
    }

    #[test]
    fn multi_host_urls_show_every_host_and_no_secret() {
        assert_eq!(
            RedactedUrl::new("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2")
                .as_str(),
            "redis+sentinel://:***@10.0.0.1:26379,10.0.0.2:26379/mymaster/2"
        );
        assert_eq!(
            RedactedUrl::new("rediss+cluster://app:pw@a:7000,b:7001").as_str(),
            "rediss+cluster://app:***@a:7000,b:7001"
        );
        let with_param = "redis+sentinel://h:1,h:2/m?sentinel_password=LeakPW";
        assert_eq!(
            RedactedUrl::new(with_param).as_str(),
            "redis+sentinel://h:1,h:2/m?sentinel_password=***"
        );
        assert!(secrets(with_param).contains(&"LeakPW".to_owned()));
        assert!(secrets("redis+cluster://:LeakPW@a:1,b:2").contains(&"LeakPW".to_owned()));
        for hidden in [
            "redis+cluster://:a/LeakPW@a:1,b:2",
            "redis+cluster://:LeakPW@a:1,b:x",
            "redis+sentinel://:LeakPW@a:1,b:2/m?other=1",
        ] {
            assert_eq!(RedactedUrl::new(hidden).as_str(), PLACEHOLDER, "{hidden}");
        }
    }
}
