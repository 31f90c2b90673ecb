//! The write token: where it comes from, and how a request's
//! `Authorization: Bearer` header is checked against it.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable the write token may be given in.
pub const TOKEN_ENV: &str = "SETTINGS_WRITE_TOKEN";

/// The shortest token accepted, in bytes: 16 random bytes are the least
/// a secret needs (`openssl rand -hex 32` gives 64 characters); a shorter
/// one is a password someone chose, refused at start-up.
pub const MIN_TOKEN_LEN: usize = 16;

/// The token a `PUT` must present, kept as its SHA-256 digest: comparing
/// digests in constant time takes the same time whatever the length or
/// content of what a client sends.
/// It carries the budget of guesses at it, per client.
#[derive(Clone)]
pub struct WriteToken {
    digest: [u8; 32],
    pub guesses: Guesses,
}

/// Never the token, nor its digest.
impl fmt::Debug for WriteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WriteToken(***)")
    }
}

impl WriteToken {
    /// A token from its text. It must be printable ASCII without spaces,
    /// so a client can send it in a header as is. The error never quotes
    /// the text.
    pub fn new(text: &str, source: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err(format!("the write token from {source} is empty"));
        }
        if text.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the write token from {source} is {} bytes long, too short to be secret; \
                 use at least {MIN_TOKEN_LEN} (as `openssl rand -hex 32` gives)",
                text.len()
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the write token from {source} holds a space, a control character or \
                 non-ASCII text; use printable ASCII only (as `openssl rand -hex 32` gives)"
            ));
        }
        Ok(WriteToken {
            digest: Sha256::digest(text.as_bytes()).into(),
            guesses: Guesses::default(),
        })
    }

    /// A token read from a file: its content with surrounding whitespace
    /// (the final newline editors add) removed.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "could not read the write token file {}: {e}",
                path.display()
            )
        })?;
        Self::new(
            text.trim(),
            &format!("the write token file {}", path.display()),
        )
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`,
    /// compared in constant time. Callers refuse two `Authorization`
    /// headers first ([`ambiguous`]).
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.digest).into()
    }
}

/// Whether a request carries more than one `Authorization` header: which
/// one counts is up to each proxy and server on the way, so none does.
pub fn ambiguous(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
}

/// How many wrong tokens a client (a peer IP) may send in a burst.
pub const GUESS_BURST: u32 = 10;
/// How often a client earns one more guess, up to [`GUESS_BURST`].
pub const GUESS_EVERY: Duration = Duration::from_secs(6);
/// How many clients are remembered; the least recently seen is forgotten
/// first, so a flood of addresses cannot exhaust memory.
const CLIENTS: u64 = 100_000;

/// Each client's budget of wrong tokens (a token bucket per peer IP),
/// so a guesser gets [`GUESS_BURST`] tries and then one per
/// [`GUESS_EVERY`]. A client over its budget is refused before its token
/// is compared, so even the right token gets no answer that tells.
#[derive(Clone)]
pub struct Guesses(moka::sync::Cache<IpAddr, Arc<Mutex<Bucket>>>);

struct Bucket {
    /// Guesses left at `at`.
    left: f64,
    at: Instant,
}

impl Default for Guesses {
    fn default() -> Self {
        Guesses(
            moka::sync::Cache::builder()
                .max_capacity(CLIENTS)
                // A full bucket again: nothing left to remember.
                .time_to_idle(GUESS_EVERY * GUESS_BURST)
                .build(),
        )
    }
}

impl Guesses {
    fn bucket(&self, client: IpAddr) -> Arc<Mutex<Bucket>> {
        self.0.get_with(client, || {
            Arc::new(Mutex::new(Bucket {
                left: f64::from(GUESS_BURST),
                at: Instant::now(),
            }))
        })
    }

    /// `Err(how long until the next guess)` when `client` has none left.
    pub fn check(&self, client: IpAddr) -> Result<(), Duration> {
        let bucket = self.bucket(client);
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket.refill();
        if bucket.left >= 1.0 {
            Ok(())
        } else {
            Err(GUESS_EVERY.mul_f64(1.0 - bucket.left))
        }
    }

    /// Takes one guess from `client`'s budget: its token was wrong.
    pub fn failed(&self, client: IpAddr) {
        let bucket = self.bucket(client);
        let mut bucket = bucket.lock().unwrap_or_else(|e| e.into_inner());
        bucket.refill();
        bucket.left = (bucket.left - 1.0).max(0.0);
    }
}

impl Bucket {
    fn refill(&mut self) {
        let now = Instant::now();
        let earned = (now - self.at).as_secs_f64() / GUESS_EVERY.as_secs_f64();
        self.left = (self.left + earned).min(f64::from(GUESS_BURST));
        self.at = now;
    }
}

/// The credentials of a `Bearer` authorization value (the scheme is
/// case-insensitive, as RFC 9110 says).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_the_right_bearer_token_is_admitted() {
        let token = WriteToken::new("s3cret-token-0123", "test").unwrap();
        assert!(token.admits(&with("Bearer s3cret-token-0123")));
        assert!(token.admits(&with("bearer s3cret-token-0123")));
        assert!(!token.admits(&HeaderMap::new()));
        for wrong in [
            "Bearer s3cret-token-012",
            "Bearer s3cret-token-01234",
            "Bearer ",
            "Basic s3cret-token-0123",
            "s3cret-token-0123",
        ] {
            assert!(!token.admits(&with(wrong)), "{wrong}");
        }
    }

    #[test]
    fn a_bad_token_is_refused_without_being_quoted() {
        for bad in [
            "",
            "has space and is long enough",
            "tab\there-and-long-enough",
            "naïve-and-long-enough",
            "fifteen-bytes-x",
        ] {
            let err = WriteToken::new(bad, "the test").unwrap_err();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
        let err = WriteToken::new("fifteen-bytes-x", "the test").unwrap_err();
        assert!(err.contains("too short") && err.contains("16"), "{err}");
        assert!(WriteToken::new("sixteen-bytes-xx", "the test").is_ok());
        let token = WriteToken::new("s3cret-token-0123", "test").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
    }

    #[test]
    fn two_authorization_headers_are_ambiguous() {
        let mut headers = with("Bearer s3cret-token-0123");
        assert!(!ambiguous(&headers));
        headers.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer other"),
        );
        assert!(ambiguous(&headers));
    }

    #[test]
    fn a_client_gets_a_burst_of_guesses_then_waits() {
        let guesses = Guesses::default();
        let client: IpAddr = "192.0.2.1".parse().unwrap();
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..GUESS_BURST {
            assert!(guesses.check(client).is_ok());
            guesses.failed(client);
        }
        let wait = guesses.check(client).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= GUESS_EVERY, "{wait:?}");
        assert!(guesses.check(other).is_ok());
    }
}
