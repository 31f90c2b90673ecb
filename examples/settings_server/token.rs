//! The write token: where it comes from, and how a request's
//! `Authorization: Bearer` header is checked against it.

use std::fmt;
use std::path::Path;

use axum::http::{header, HeaderMap};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The environment variable the write token may be given in.
pub const TOKEN_ENV: &str = "SETTINGS_WRITE_TOKEN";

/// The token a `PUT` must present, kept as its SHA-256 digest: comparing
/// digests in constant time takes the same time whatever the length or
/// content of what a client sends.
#[derive(Clone)]
pub struct WriteToken([u8; 32]);

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
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "the write token from {source} holds a space, a control character or \
                 non-ASCII text; use printable ASCII only (as `openssl rand -hex 32` gives)"
            ));
        }
        Ok(WriteToken(Sha256::digest(text.as_bytes()).into()))
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
    /// compared in constant time.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer(v.as_bytes()))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        digest.ct_eq(&self.0).into()
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
        let token = WriteToken::new("s3cret-token", "test").unwrap();
        assert!(token.admits(&with("Bearer s3cret-token")));
        assert!(token.admits(&with("bearer s3cret-token")));
        assert!(!token.admits(&HeaderMap::new()));
        for wrong in [
            "Bearer s3cret-toke",
            "Bearer s3cret-token2",
            "Bearer ",
            "Basic s3cret-token",
            "s3cret-token",
        ] {
            assert!(!token.admits(&with(wrong)), "{wrong}");
        }
    }

    #[test]
    fn a_bad_token_is_refused_without_being_quoted() {
        for bad in ["", "has space", "tab\there", "naïve"] {
            let err = WriteToken::new(bad, "the test").unwrap_err();
            assert!(bad.is_empty() || !err.contains(bad), "{err}");
        }
        let token = WriteToken::new("s3cret-token", "test").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
    }
}
