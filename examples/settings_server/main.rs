//! A small web service whose settings reload in every running copy the
//! moment any copy changes them.
//!
//! The settings are a JSON object kept in a file. `PUT /settings` saves a new
//! object to the file (atomically) and bumps the shared generation; every
//! instance reloads the file on its next request. Beside the file,
//! `<file>.fence` keeps the greatest writers' fencing token the saver
//! accepted (and `<file>.lock` is what instances on one host lock while
//! they save): an instance that stalled past its writers' lease has its
//! save refused instead of overwriting a newer change. Both take the
//! settings file's mode and owner, so instances running as different users
//! of its group share them, and neither is opened through a symlink. A
//! token is the Redis server's clock in microseconds: one more than 5
//! minutes ahead of this host's clock is refused (the `PUT` saves nothing
//! and the log says which clock to check), since once recorded it would
//! refuse every writer until the clock caught up. To reset a `.fence`
//! recorded from the future (the log names it), delete it while no
//! instance is writing. On its own (no Redis) it
//! uses the in-memory backend, which only this one process sees.
//!
//! ```sh
//! cargo run --example settings_server --features metrics,keyed
//! curl -s localhost:8080/settings
//! curl -s -X PUT localhost:8080/settings -d '{"site_name": "my site", "theme": "dark"}'
//! ```
//!
//! # Several instances, one Redis
//!
//! Start a Redis server, build the example once, and run three instances
//! that share the settings file and the Redis server:
//!
//! ```sh
//! redis-server --port 6379 --save '' &
//! cargo build --example settings_server --features metrics,keyed
//! # Writes need this token; from the environment, `ps` never shows it.
//! export SETTINGS_WRITE_TOKEN=$(openssl rand -hex 32)
//! for port in 8081 8082 8083; do
//!     target/debug/examples/settings_server --listen 127.0.0.1:$port \
//!         --redis redis://127.0.0.1:6379 --settings ./settings.json &
//! done
//!
//! curl -s localhost:8081/settings    # {"generation":...,"settings":{...}}
//! curl -s -X PUT localhost:8082/settings \
//!     -H "authorization: Bearer $SETTINGS_WRITE_TOKEN" \
//!     -H 'content-type: application/json' \
//!     -d '{"site_name": "gensync demo", "theme": "dark"}'
//! curl -s localhost:8083/settings    # the dark theme, same generation
//! curl -s localhost:8081/metrics     # gensync_reloads_total and friends
//! ```
//!
//! Each instance logs `settings reloaded` when it picks up a change. Stop
//! Redis and the instances keep serving their last settings (a `PUT` then
//! answers 503: it could not tell the others); start it again and they
//! converge.
//!
//! Options (see `--help`): `--listen ADDR` (default `127.0.0.1:8080`, port
//! 0 picks a free one), `--settings FILE` (default `./settings.json`, a
//! regular file of at most 8 MiB, created with default settings at the
//! fleet's first start only: with Redis, while its key holds no
//! generation), `--redis URL` (or
//! `REDIS_URL`), for a `rediss://` URL `--tls-ca FILE` (a private CA,
//! trusted beside the system's roots) and `--tls-cert FILE --tls-key FILE`
//! (a client certificate), `--key KEY` (default `example:settings`, stored as
//! `gensync:example:settings`), `--mode MODE` (`strict`, the default,
//! `push` or `interval=DURATION` such as `interval=250ms`: the README's
//! check modes), `--write-token-file FILE` (or
//! `SETTINGS_WRITE_TOKEN`; a `PUT` must then send `Authorization: Bearer
//! <token>`), and the limits `--header-timeout` (10s), `--body-timeout`
//! (10s), `--request-timeout` (60s), `--max-connections` (1024). Logs go
//! to stderr (`RUST_LOG`, default `info`), where a failed write is dropped
//! and each log statement writes at most 10 lines per 10 s, then one line
//! counting the rest; stdout gets one line once the service listens.
//!
//! Endpoints: `GET /settings`, `PUT /settings` (a JSON object, each key
//! once; saved with its keys sorted and every number's digits kept, an
//! exponent as `e+400`), `GET /healthz` (liveness), `GET /readyz`
//! (readiness: 503 while Redis refuses this instance or the last load of
//! the settings failed), `GET /metrics`
//! (Prometheus text: the `gensync_*` counters and histograms, labelled
//! with the key, exported through `metrics-exporter-prometheus`, and
//! `settings_server_unauthorized_total`, the writes refused a 401).
//!
//! # Tenants
//!
//! `GET` and `PUT /tenants/<id>/settings` serve and save one tenant's
//! settings, the JSON object in `<dir>/<id>.json` (`--tenants DIR`,
//! default `tenants/` beside the settings file, created by the first tenant
//! `PUT`, so a service without tenants leaves nothing new there), each
//! with its own generation: the member `<id>` of the set key
//! `<--key>:tenants`. A `PUT` reloads that tenant everywhere, no other; it
//! takes the write token and answers as `PUT /settings` does, and creates
//! a tenant that has no file yet. An id is 1 to 64 ASCII letters, digits,
//! `_` or `-`, as sent (anything else: 400, nothing read or written); a
//! tenant without a file is a 404 (delete the file to remove a tenant).
//! `--tenant-capacity N` (10000) bounds how many tenants stay loaded; the
//! mode applies to tenants too. A tenant's file and its `.lock` and
//! `.fence` are regular files in the folder: a symlink there, dangling or
//! not, is refused (`O_NOFOLLOW`), neither read nor written through.
//!
//! ```sh
//! curl -s -X PUT localhost:8082/tenants/acme/settings \
//!     -H "authorization: Bearer $SETTINGS_WRITE_TOKEN" -d '{"theme": "dark"}'
//! curl -s localhost:8083/tenants/acme/settings   # {"generation":...,"settings":{"theme":"dark"}}
//! ```
//!
//! After editing tenant files by hand, tell every instance with the
//! `gensync` command, through the set key (`example:settings:tenants` with
//! the default `--key`). It reaches the instances through Redis, so they
//! must run on Redis, as above (on the in-memory backend no other process
//! can reach an instance: stop it first and start it with `--redis`), and
//! the command must be installed:
//!
//! ```sh
//! cargo install --path . --features cli   # the gensync command, into ~/.cargo/bin
//! export GENSYNC_URL=redis://127.0.0.1:6379
//! gensync --member acme bump example:settings:tenants   # reloads tenant acme
//! gensync bump example:settings:tenants                 # reloads every tenant
//! gensync --member acme get example:settings:tenants    # acme's generation
//! ```
//!
//! # Secure by default
//!
//! The service is the model to copy; what it promises, with the test of
//! each, is in SECURITY.md ("The example service").
//!
//! - **Writes need a token when you give one.** Set `SETTINGS_WRITE_TOKEN`
//!   (or `--write-token-file FILE`) to at least 16 bytes (`openssl rand
//!   -hex 32`; a shorter token is refused at start-up); a `PUT` must then
//!   send one `Authorization: Bearer <token>` header, or it is answered 401
//!   (400 for two such headers) and saves nothing; each 401 is counted in
//!   `settings_server_unauthorized_total` on `/metrics`, and the log keeps
//!   a flood of them to a few lines. A client (a peer IP) gets 10 wrong
//!   tokens, then one more every 6 s: beyond that its writes are answered
//!   429 with `Retry-After`, whatever token they send. The token is
//!   compared in constant time and never logged, answered or put on the
//!   command line (`--write-token` works too, with a warning that `ps`
//!   shows it). Listening beyond loopback without a token logs a loud
//!   warning at start-up.
//! - **Nothing secret in the output.** Redis passwords are redacted in
//!   every log line and in the start-up line; a URL that does not parse
//!   cleanly (a password with `#`, `?` or `/` left unescaped) is shown as a
//!   placeholder. A failed `PUT` tells the client what happened and whether
//!   anything was saved; the host, user, Redis's error and file paths go to
//!   the log under the incident number the answer gives.
//! - **Bounded connections.** `--header-timeout` (10s) bounds reading a
//!   request's header and an idle keep-alive connection, `--body-timeout`
//!   (10s) a `PUT`'s whole body (408), `--request-timeout` (60s) any
//!   request (503). `--max-connections` (1024) caps open connections; a
//!   file limit (`ulimit -n`) too low for it lowers it with a warning, and
//!   one that leaves room for fewer than 16 is refused at start-up. At the
//!   cap the oldest connection with no request in progress is closed for
//!   the new one, so silent clients cannot lock out real ones. A head
//!   (request line, headers and the blank line) over 128 KiB (131072
//!   bytes) gets 431, a URI over 64 KiB 414, a body over 2 MiB 413 (at once
//!   when its `Content-Length` says so).
//! - **The settings file is respected.** A save writes through a symlink
//!   to its target, atomically in the target's directory; keeps the file's
//!   mode and owner; refuses a file made read-only (no write bit). Only a
//!   fleet's first start (the in-memory backend, or a Redis key with no
//!   generation yet) creates a missing file: an instance that finds it
//!   missing while other instances share a generation (or cannot read
//!   Redis to tell) does not serve defaults of its own under their number,
//!   but logs an error, serves no generation and is not ready until the
//!   file is restored. One that vanishes later is a failed load, and the
//!   last good settings stay. Only a regular file of at most 8 MiB is
//!   loaded (a FIFO or a device is refused, not waited on); a save too
//!   large to indent is written compact. A `PUT` naming a key twice in one
//!   object is a 400 that saves nothing. What is saved is the same JSON
//!   value, not the same text: keys sorted, indented, and each number's
//!   digits kept (never rounded through a float), an exponent written
//!   `e+`/`e-` (`1E400` is saved as `1e+400`). A closed stdout does not
//!   stop the service.
//! - **Liveness and readiness.** `GET /healthz` answers `ok` while the
//!   process serves: the liveness probe. `GET /readyz` is the readiness
//!   probe: 200, or 503 while Redis refuses this instance (its credentials,
//!   its ACL, the TLS handshake) or while the last load of the settings
//!   file failed, with a JSON body saying which (`ready`, `backend`,
//!   `last_load`, `generation`, `reasons`; no hosts or paths). A Redis that
//!   does not answer is reported (`"backend": "unavailable"`) but leaves
//!   the instance ready: every instance shares it, and each still serves
//!   its file.

// One concern a module, beside this file.
mod args;
mod body;
mod companions;
mod files;
mod http;
mod logging;
mod ready;
mod serve;
mod tenants;
mod token;

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::FromArgMatches;
use gensync::backend::BackendErrorKind;
use gensync::backend::{Backend, Stored};
use gensync::reload::{blocking_loader, fenced, CheckMode, Reloader};
use gensync::{Key, MemoryBackend, RedisBackend, Synchronizer};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{Map, Value};

use args::Args;
use files::{encode, read_settings, save_fenced, Fleet, Settings};
use ready::Readiness;
use token::{WriteToken, TOKEN_ENV};

/// Written to the settings file when it is missing at first start-up.
fn default_settings() -> Settings {
    let mut settings = Map::new();
    settings.insert("site_name".into(), Value::from("gensync demo"));
    settings.insert("theme".into(), Value::from("light"));
    settings
}

/// Exit status for bad arguments (as clap uses).
const USAGE: u8 = 2;

/// A start-up failure: the message and the exit status.
struct Fatal(String, u8);

fn main() -> ExitCode {
    let logs = logging::init();
    let matches = args::matches();
    let token_on_command_line =
        matches.value_source("write_token") == Some(ValueSource::CommandLine);
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => args::exit_redacted(&e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(io::stderr(), "settings_server: error: could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        logs.report_periodically();
        run(args, token_on_command_line).await
    });
    // Not waited for: once the requests are drained, what still runs is
    // blocking work nobody waits on (a load past its waiters' bound, a
    // name lookup), and a stopped service must not linger on it.
    runtime.shutdown_background();
    logs.report();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message, status)) => {
            // Ignored: with stderr gone there is no one left to tell.
            let _ = writeln!(io::stderr(), "settings_server: error: {message}");
            ExitCode::from(status)
        }
    }
}

async fn run(args: Args, token_on_command_line: bool) -> Result<(), Fatal> {
    // Everything that can be wrong with the arguments, before touching
    // anything.
    let key = Key::parse(&args.key)
        .map_err(|e| Fatal(format!("invalid --key {:?}: {e}", args.key), USAGE))?;
    let tenant_set = tenants::set_key(&args.key)
        .map_err(|e| Fatal(format!("invalid --key {:?}: {e}", args.key), USAGE))?;
    let redis = match args.redis.as_deref().map(str::trim) {
        None | Some("") if args.has_tls_files() => {
            return Err(Fatal(
                "--tls-ca, --tls-cert and --tls-key are for a rediss:// --redis URL, and no \
                 --redis was given"
                    .into(),
                USAGE,
            ))
        }
        None | Some("") => None,
        Some(url) => Some(
            RedisBackend::with_config(url, args.redis_config())
                .map_err(|e| Fatal(e.to_string(), USAGE))?,
        ),
    };
    let token = write_token(&args, token_on_command_line)?;
    let max_connections =
        serve::connection_cap(args.max_connections as usize).map_err(|m| Fatal(m, 1))?;

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            let status = if e.kind() == io::ErrorKind::InvalidInput {
                USAGE
            } else {
                1
            };
            let listen = args::shown(&args.listen);
            Fatal(format!("could not listen on {listen}: {e}"), status)
        })?;
    let address = listener
        .local_addr()
        .map_err(|e| Fatal(format!("could not read the bound address: {e}"), 1))?;
    if token.is_none() && !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "NO WRITE TOKEN: listening beyond loopback, and any client that reaches this port \
             can change every instance's settings; give a token in {TOKEN_ENV} or \
             --write-token-file, or listen on 127.0.0.1"
        );
    }

    let path = args.settings.clone();
    let tenant_dir = args
        .tenants
        .clone()
        .unwrap_or_else(|| tenants::default_dir(&path));

    // Before the reloader is built: it registers its metrics then.
    // Buckets, so each histogram is exported as one (summaries cannot be
    // added up across instances). From 100 µs to a day: checks and loads
    // are quick, the age of the settings served grows until the next bump.
    let metrics = PrometheusBuilder::new()
        .set_buckets(&[
            0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
            86400.0,
        ])
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| Fatal(format!("could not install the metrics recorder: {e}"), 1))?;

    let (reloader, tenants, backend, readiness) = match redis {
        Some(redis) => {
            // The settings' key, not a PING (which no role's ACL allows):
            // whether Redis takes this instance, and whether other
            // instances already share a generation.
            let stored = redis.get(&key).await;
            match &stored {
                Ok(_) => {}
                // It answered, and said no: nothing changes until the
                // configuration does, so say what to fix.
                Err(e) if matches!(e.kind(), BackendErrorKind::Auth | BackendErrorKind::Denied) => {
                    tracing::error!(
                        error = %e,
                        "Redis refused this instance's credentials (or its ACL denied a \
                         command) at start-up; fix the user and password in --redis (or \
                         REDIS_URL), or the user's ACL, and restart it. Until then it serves \
                         the settings file, reading it again now and then, but cannot tell \
                         other instances of its own changes"
                    )
                }
                // The same, for a certificate: the error says which.
                Err(e) if e.kind() == BackendErrorKind::Tls => tracing::error!(
                    error = %e,
                    "the TLS handshake with Redis failed at start-up; fix --tls-ca, \
                     --tls-cert and --tls-key (or the server's certificate) as the error \
                     says, and restart it. Until then it serves the settings file, reading \
                     it again now and then, but cannot tell other instances of its own \
                     changes"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "Redis did not answer at start-up; starting anyway on the settings \
                     file, and picking up other instances' changes once it answers"
                ),
            }
            prepare_settings(
                &path,
                &match stored {
                    Ok(Stored::Missing) => Fleet::First,
                    Ok(_) => Fleet::Running,
                    Err(e) => Fleet::Unknown(e.to_string()),
                },
            )?;
            let name = redis.describe().to_owned();
            let readiness = Readiness::new(redis.clone(), key.clone());
            (
                build_reloader(redis.clone(), key, &path, args.mode, &readiness)?,
                build_tenants(redis, tenant_set, &tenant_dir, &args)?,
                name,
                readiness,
            )
        }
        None => {
            // This process's own: every start is the first.
            prepare_settings(&path, &Fleet::First)?;
            let memory = MemoryBackend::new();
            let readiness = Readiness::new(memory.clone(), key.clone());
            (
                build_reloader(memory.clone(), key, &path, args.mode, &readiness)?,
                build_tenants(memory, tenant_set, &tenant_dir, &args)?,
                "in-memory, this process only".to_owned(),
                readiness,
            )
        }
    };
    reloader.on_reload(|_, new| match new.generation() {
        Some(generation) => tracing::info!(generation = generation.get(), "settings reloaded"),
        // Every backoff window while Redis cannot be read: not news.
        None => {
            tracing::debug!("settings reloaded (generation unknown: Redis could not be read)")
        }
    });
    if reloader.reload_now().await.is_err() {
        tracing::error!(
            file = %path.display(),
            "could not load the settings at start-up; serving the default settings, with no \
             generation, until a reload succeeds (/readyz answers 503 until then)"
        );
    }

    tracing::info!(
        dir = %tenant_dir.display(),
        set_key = %tenants.parent(),
        capacity = args.tenant_capacity,
        "tenants served at /tenants/<id>/settings from <dir>/<id>.json; bump the set key to \
         reload every tenant"
    );

    let limits = serve::Limits {
        header_timeout: args.header_timeout,
        max_connections,
    };
    let app = http::router(
        http::App {
            reloader,
            tenants,
            tenant_dir,
            token,
            body_timeout: args.body_timeout,
            incidents: Arc::default(),
            readiness,
        },
        metrics,
        args.request_timeout,
    );

    let shutdown = shutdown_signal();
    announce(&format!(
        "settings_server listening on http://{address} (backend: {backend}; mode: {})",
        args.mode
    ));
    tracing::info!(
        max_connections = limits.max_connections,
        header_timeout = ?limits.header_timeout,
        body_timeout = ?args.body_timeout,
        request_timeout = ?args.request_timeout,
        %address,
        "serving"
    );
    serve::serve(listener, app, limits, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// Prints the start-up line on stdout. A closed stdout (`| head -0`, a
/// supervisor that stopped reading) is no reason to stop serving.
fn announce(line: &str) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{line}").and_then(|()| stdout.flush()) {
        tracing::warn!(error = %e, "could not print the start-up line on stdout; serving anyway");
    }
}

/// The write token, from `--write-token-file`, or `--write-token` (or its
/// environment variable). Given on the command line, it is said to be
/// visible to others.
fn write_token(args: &Args, on_command_line: bool) -> Result<Option<WriteToken>, Fatal> {
    let token = match (&args.write_token_file, &args.write_token) {
        (Some(file), _) => WriteToken::from_file(file),
        (None, Some(text)) if on_command_line => {
            tracing::warn!(
                "the write token was given on the command line, where every user of this \
                 host can read it (ps); give it in {TOKEN_ENV} or --write-token-file instead"
            );
            WriteToken::new(text, "--write-token")
        }
        (None, Some(text)) => WriteToken::new(text, TOKEN_ENV),
        (None, None) => return Ok(None),
    };
    token.map(Some).map_err(|message| Fatal(message, USAGE))
}

/// The settings file at start-up: created with the defaults at a fleet's
/// first start only (see [`files::prepare`]).
fn prepare_settings(path: &Path, fleet: &Fleet) -> Result<(), Fatal> {
    files::prepare(path, &default_settings(), fleet).map_err(|e| {
        Fatal(
            format!("could not create the settings file {}: {e}", path.display()),
            1,
        )
    })
}

fn build_reloader<B: Backend + 'static>(
    backend: B,
    key: Key,
    path: &Path,
    mode: CheckMode,
    readiness: &Readiness,
) -> Result<Reloader<Settings>, Fatal> {
    let sync = Synchronizer::new(backend, key);
    let read_from = path.to_owned();
    let readiness = readiness.clone();
    let loader = blocking_loader(move || readiness.record(read_settings(&read_from)));
    let write_to = Arc::new(path.to_owned());
    Reloader::builder(sync, loader)
        .mode(mode)
        .saver(fenced(move |settings: &Settings, fence| {
            let path = Arc::clone(&write_to);
            let bytes = encode(settings);
            async move {
                let bytes = bytes.map_err(|e| format!("could not serialise the settings: {e}"))?;
                tokio::task::spawn_blocking(move || save_fenced(&path, &bytes, fence))
                    .await
                    .map_err(|e| format!("the write task stopped: {e}"))?
            }
        }))
        .build(default_settings())
        .map_err(|e| Fatal(e.to_string(), 1))
}

/// The tenants' keyed reloader, on the backend the settings use.
fn build_tenants<B: Backend + 'static>(
    backend: B,
    set: Key,
    dir: &Path,
    args: &Args,
) -> Result<tenants::Tenants, Fatal> {
    tenants::build(backend, set, dir, args.mode, args.tenant_capacity).map_err(|e| Fatal(e, 1))
}

/// Completes on SIGINT or SIGTERM. The handlers are installed here, before
/// the start-up line, so a supervisor that stops the service as soon as it
/// reads that line is heard (a handler installed on first poll is not yet
/// there, and the signal would kill the process outright).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            // A handler that could not be installed waits for ever.
            async fn recv(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    }
}
