//! The command line: parsing it without echoing a secret, and where the
//! Redis URL comes from.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use gensync::backend::RedactedUrl;

use crate::files::{read_regular, Unread};
use crate::Cli;

/// The most a `--url-file` is read: a URL is well under it, and a file
/// past it is not one.
const URL_FILE_LIMIT: u64 = 4096;

/// The parsed command line, or the exit code after clap's message. The
/// message names arguments it could not place, and one of those may be a
/// URL with its password (given where a subcommand was expected, say), so
/// each argument that could hold one is shown redacted.
pub(crate) fn parse() -> Result<Cli, ExitCode> {
    let e = match Cli::try_parse() {
        Ok(cli) => return Ok(cli),
        Err(e) => e,
    };
    let text = redact_args(&e.render().to_string(), std::env::args_os().skip(1));
    // Best effort, as for every message: a closed stream must not panic.
    let _ = if e.use_stderr() {
        io::stderr().write_all(text.as_bytes())
    } else {
        io::stdout().write_all(text.as_bytes())
    };
    Err(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)))
}

/// `text` with every argument that could hold a URL's secret (one with
/// `://` or `@` in it, or such a value after `--flag=`) replaced by its
/// redacted form.
fn redact_args(text: &str, args: impl Iterator<Item = OsString>) -> String {
    let mut risky: Vec<String> = Vec::new();
    for arg in args {
        let arg = arg.to_string_lossy().into_owned();
        if let Some((_, value)) = arg.split_once('=') {
            risky.push(value.to_owned());
        }
        risky.push(arg);
    }
    risky.retain(|a| a.contains("://") || a.contains('@'));
    // The longest first, so a value inside `--flag=value` is not replaced
    // before the whole argument is.
    risky.sort_by_key(|a| std::cmp::Reverse(a.len()));
    risky.iter().fold(text.to_owned(), |text, arg| {
        text.replace(arg.as_str(), RedactedUrl::new(arg).as_str())
    })
}

/// The Redis URL: `--url`, else the contents of `--url-file`, else
/// `$GENSYNC_URL`, else `$REDIS_URL`. Surrounding whitespace is no part of
/// a URL, wherever it came from. An empty variable counts as unset; an
/// empty `--url` or file is an error.
pub(crate) fn url(flag: Option<String>, file: Option<&Path>) -> Result<String, String> {
    if let Some(url) = flag {
        let url = url.trim();
        if url.is_empty() {
            return Err("--url is empty: give a Redis URL such as redis://127.0.0.1:6379".into());
        }
        return Ok(url.to_owned());
    }
    if let Some(path) = file {
        return url_from_file(path).map_err(|e| format!("--url-file {}: {e}", shown_path(path)));
    }
    let from_env = |name| {
        std::env::var(name)
            .ok()
            .map(|v: String| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    from_env("GENSYNC_URL")
        .or_else(|| from_env("REDIS_URL"))
        .ok_or_else(|| {
            "no Redis URL: pass --url or --url-file, or set GENSYNC_URL or REDIS_URL".into()
        })
}

/// `path` as it may be shown: a URL given as the path by mistake
/// (`--url-file redis://:PW@h`) is shown redacted.
fn shown_path(path: &Path) -> String {
    let text = path.display().to_string();
    if text.contains("://") || text.contains('@') {
        return RedactedUrl::new(&text).to_string();
    }
    text
}

/// The URL a file holds, alone on its line. Its contents are never echoed:
/// they are a secret. Only a regular file is read (a symbolic link to one,
/// as mounted secrets are, is followed): reading a FIFO would wait for a
/// writer for good.
fn url_from_file(path: &Path) -> Result<String, String> {
    let bytes = read_regular(path, URL_FILE_LIMIT).map_err(|unread| match unread {
        Unread::Io(e) => format!("cannot read it: {e}"),
        Unread::NotRegular => "it is not a regular file (a folder, a FIFO or a device); write \
                               the Redis URL into a plain file"
            .to_owned(),
        Unread::TooLarge => {
            format!("it is larger than {URL_FILE_LIMIT} bytes; it should hold one Redis URL")
        }
    })?;
    let text = String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
    let url = text.trim();
    if url.is_empty() {
        return Err("it is empty; write the Redis URL into it".into());
    }
    if url.contains(char::is_whitespace) {
        return Err("it holds more than the URL; write the Redis URL alone on one line".into());
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_that_may_hold_a_password_are_redacted_in_clap_messages() {
        let args = ["redis://:TypoPW@127.0.0.1:6379", "--url=redis:PW2@h", "get"];
        let text = "error: unrecognized subcommand 'redis://:TypoPW@127.0.0.1:6379' \
                    near --url=redis:PW2@h and redis:PW2@h";
        let redacted = redact_args(text, args.iter().map(OsString::from));
        assert!(!redacted.contains("TypoPW"), "{redacted}");
        assert!(!redacted.contains("PW2"), "{redacted}");
        assert!(
            redacted.contains("'redis://:***@127.0.0.1:6379'"),
            "{redacted}"
        );
    }
}
