//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gensync::reload::CheckMode;
use gensync::RedisConfig;

use crate::token::TOKEN_ENV;

/// A settings service whose instances reload their settings whenever any
/// one of them changes them.
#[derive(Parser, Debug)]
#[command(
    name = "settings_server",
    version,
    about = "The gensync example service: settings kept in a JSON file, reloaded by every \
             instance the moment any instance changes them (PUT /settings).",
    long_about = None
)]
pub struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// The settings file (a JSON object, at most 8 MiB), created with
    /// default settings when missing at the fleet's first start (no
    /// generation in Redis yet). A symlink is written through.
    #[arg(long, value_name = "FILE", default_value = "./settings.json")]
    pub settings: PathBuf,

    /// The tenants' directory: tenant ID's settings are the JSON object in
    /// DIR/ID.json (GET/PUT /tenants/ID/settings). Default: `tenants/`
    /// beside the settings file. Created by the first tenant PUT.
    #[arg(long, value_name = "DIR")]
    pub tenants: Option<PathBuf>,

    /// How many tenants keep their settings in memory at once; one
    /// dropped is loaded again on its next request.
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tenant_capacity: u64,

    /// Redis shared by all instances:
    /// redis://[user:password@]host[:port][/db], or through Sentinel
    /// (redis+sentinel://host:port,host:port/master) or a Cluster
    /// (redis+cluster://host:port,host:port). Without it, an in-memory
    /// backend that only this process sees.
    #[arg(long, value_name = "URL", env = "REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,

    /// For a rediss:// --redis: a PEM file of the CA that signed the
    /// server's certificate, trusted beside the system's roots.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// For a rediss:// --redis whose server requires client certificates
    /// (tls-auth-clients yes): this instance's certificate (PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "REDIS_TLS_CERT",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (unencrypted PEM).
    #[arg(
        long,
        value_name = "FILE",
        env = "REDIS_TLS_KEY",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// The generation's key, as `part:part` (stored under the `gensync:`
    /// namespace). The tenants' set key is KEY:tenants: `gensync bump
    /// KEY:tenants` reloads every tenant, `gensync --member ID bump
    /// KEY:tenants` one.
    #[arg(long, value_name = "KEY", default_value = "example:settings")]
    pub key: String,

    /// How requests learn the settings changed: strict (read the
    /// generation for every request, coalesced), push (Redis pushes each
    /// change; no round trip between changes) or interval=DURATION (read
    /// at most once per DURATION, as 250ms or 2s).
    #[arg(long, value_name = "MODE", default_value = "strict")]
    pub mode: CheckMode,

    /// The token a PUT must send as `Authorization: Bearer <token>`, at
    /// least 16 bytes (`openssl rand -hex 32`). Prefer the environment variable or --write-token-file: a command
    /// line is visible to every user of the host (`ps`).
    #[arg(long, value_name = "TOKEN", env = TOKEN_ENV, hide_env_values = true)]
    pub write_token: Option<String>,

    /// A file holding the write token (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "write_token")]
    pub write_token_file: Option<PathBuf>,

    /// How long a client may take to send a request's header, and how
    /// long an idle keep-alive connection stays open.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,

    /// How long a PUT's whole body may take to arrive.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration)]
    pub body_timeout: Duration,

    /// How long any request may take before it is answered 503.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = duration)]
    pub request_timeout: Duration,

    /// How many connections may be open at once (lowered to fit the file
    /// limit, with a warning; refused when the limit leaves room for fewer
    /// than 16). At the cap, the oldest connection with no request in
    /// progress is closed for a new one.
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
}

impl Args {
    /// The Redis settings the flags ask for: the TLS files, checked when
    /// the backend is opened.
    pub fn redis_config(&self) -> RedisConfig {
        let mut config = RedisConfig::default();
        if let Some(ca) = &self.tls_ca {
            config = config.tls_ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config = config.tls_client_auth(cert, key);
        }
        config
    }

    /// Whether any TLS file was given.
    pub fn has_tls_files(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some()
    }
}

/// The command line's matches. On an error, clap's message with every
/// argument that could hold a Redis URL's password shown redacted (a URL
/// given where another value goes, say), then the exit clap would make.
pub fn matches() -> clap::ArgMatches {
    use clap::CommandFactory;
    Args::command()
        .try_get_matches()
        .unwrap_or_else(|e| exit_redacted(&e))
}

/// Exits as `e.exit()` would, with its message redacted.
pub fn exit_redacted(e: &clap::Error) -> ! {
    use std::io::Write;
    let text = redact_args(&e.render().to_string(), std::env::args());
    // Best effort: a closed stream must not turn a usage error into a panic.
    let _ = if e.use_stderr() {
        std::io::stderr().write_all(text.as_bytes())
    } else {
        std::io::stdout().write_all(text.as_bytes())
    };
    std::process::exit(e.exit_code())
}

/// `text` with every argument that could hold a URL's secret (one with
/// `://` or `@` in it, or such a value after `--flag=`) replaced by its
/// redacted form, the longest first so a value is not replaced inside
/// its `--flag=value` before the whole is.
fn redact_args(text: &str, args: impl Iterator<Item = String>) -> String {
    let mut risky: Vec<String> = Vec::new();
    for arg in args.skip(1) {
        if let Some((_, value)) = arg.split_once('=') {
            risky.push(value.to_owned());
        }
        risky.push(arg);
    }
    risky.retain(|a| may_hold_a_secret(a));
    risky.sort_by_key(|a| std::cmp::Reverse(a.len()));
    risky.iter().fold(text.to_owned(), |text, arg| {
        text.replace(
            arg.as_str(),
            gensync::backend::RedactedUrl::new(arg).as_str(),
        )
    })
}

fn may_hold_a_secret(text: &str) -> bool {
    text.contains("://") || text.contains('@')
}

/// An argument as it may be shown in a message: redacted when it could
/// hold a URL's password (`--listen redis://:PW@h` by mistake).
pub fn shown(text: &str) -> String {
    if may_hold_a_secret(text) {
        return gensync::backend::RedactedUrl::new(text).to_string();
    }
    text.to_owned()
}

/// A duration as `250ms`, `10s` or `2m`.
fn duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 250ms, 10s or 2m"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => {
            return Err(format!(
                "{text:?} is not a duration such as 250ms, 10s or 2m"
            ))
        }
    };
    if duration.is_zero() {
        return Err("a timeout of zero would refuse every request".to_owned());
    }
    Ok(duration)
}
