//! A small web service whose settings reload in every running copy the
//! moment any copy changes them.
//!
//! The settings are a JSON object kept in a file. `PUT /settings` saves a new
//! object to the file (atomically) and bumps the shared generation; every
//! instance reloads the file on its next request. Beside the file,
//! `<file>.fence` keeps the greatest writers' fencing token the saver
//! accepted (and `<file>.lock` is what instances on one host lock while
//! they save): an instance that stalled past its writers' lease has its
//! save refused instead of overwriting a newer change. On its own (no Redis) it
//! uses the in-memory backend, which only this one process sees.
//!
//! ```sh
//! cargo run --example settings_server --features metrics
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
//! cargo build --example settings_server --features metrics
//! for port in 8081 8082 8083; do
//!     target/debug/examples/settings_server --listen 127.0.0.1:$port \
//!         --redis redis://127.0.0.1:6379 --settings ./settings.json &
//! done
//!
//! curl -s localhost:8081/settings    # {"generation":...,"settings":{...}}
//! curl -s -X PUT localhost:8082/settings \
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
//! 0 picks a free one), `--settings FILE` (default `./settings.json`,
//! created with default settings when missing), `--redis URL` (or
//! `REDIS_URL`), `--key KEY` (default `example:settings`, stored as
//! `gensync:example:settings`). Logs go to stderr (`RUST_LOG`, default
//! `info`); stdout gets one line once the service listens.
//!
//! Endpoints: `GET /settings`, `PUT /settings` (a JSON object),
//! `GET /healthz`, `GET /metrics` (Prometheus text: the `gensync_*`
//! counters and histograms, labelled with the key, exported through
//! `metrics-exporter-prometheus`).

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use clap::Parser;
use gensync::reload::{
    blocking_loader, fenced, BoxError, CheckMode, PublishError, Reloader, SettingsReloadLayer,
    Snapshot, StaleFence,
};
use gensync::{Backend, BackendError, Fence, Key, MemoryBackend, RedisBackend, Synchronizer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Map, Value};
use tracing_subscriber::EnvFilter;

/// The settings: any JSON object.
type Settings = Map<String, Value>;

/// Written to the settings file when it is missing.
fn default_settings() -> Settings {
    let mut settings = Map::new();
    settings.insert("site_name".into(), Value::from("gensync demo"));
    settings.insert("theme".into(), Value::from("light"));
    settings
}

/// Exit status for bad arguments (as clap uses).
const USAGE: u8 = 2;

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
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,

    /// The settings file (a JSON object), created with default settings
    /// when missing.
    #[arg(long, value_name = "FILE", default_value = "./settings.json")]
    settings: PathBuf,

    /// Redis server shared by all instances:
    /// redis://[user:password@]host[:port][/db]. Without it, an in-memory
    /// backend that only this process sees.
    #[arg(long, value_name = "URL", env = "REDIS_URL", hide_env_values = true)]
    redis: Option<String>,

    /// The generation's key, as `part:part` (stored under the `gensync:`
    /// namespace).
    #[arg(long, value_name = "KEY", default_value = "example:settings")]
    key: String,

    /// How requests learn the settings changed: strict (read the
    /// generation for every request, coalesced), push (Redis pushes each
    /// change; no round trip between changes) or interval=DURATION (read
    /// at most once per DURATION, as 250ms or 2s).
    #[arg(long, value_name = "MODE", default_value = "strict")]
    mode: CheckMode,
}

/// A start-up failure: the message and the exit status.
struct Fatal(String, u8);

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message, status)) => {
            eprintln!("settings_server: error: {message}");
            ExitCode::from(status)
        }
    }
}

async fn run(args: Args) -> Result<(), Fatal> {
    // Everything that can be wrong with the arguments, before touching
    // anything.
    let key = Key::parse(&args.key)
        .map_err(|e| Fatal(format!("invalid --key {:?}: {e}", args.key), USAGE))?;
    let redis = match args.redis.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(url) => Some(RedisBackend::open(url).map_err(|e| Fatal(e.to_string(), USAGE))?),
    };

    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| {
            let status = if e.kind() == io::ErrorKind::InvalidInput {
                USAGE
            } else {
                1
            };
            Fatal(format!("could not listen on {}: {e}", args.listen), status)
        })?;
    let address = listener
        .local_addr()
        .map_err(|e| Fatal(format!("could not read the bound address: {e}"), 1))?;

    let path = args.settings;
    match create_if_missing(&path, &default_settings()) {
        Ok(true) => {
            tracing::info!(file = %path.display(), "created the settings file with default settings")
        }
        Ok(false) => {}
        Err(e) => {
            return Err(Fatal(
                format!("could not create the settings file {}: {e}", path.display()),
                1,
            ))
        }
    }

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

    let (reloader, backend) = match redis {
        Some(redis) => {
            match redis.ping().await {
                Ok(()) => {}
                // It answered, and said no: nothing changes until the
                // configuration does, so say what to fix.
                Err(e @ BackendError::Auth { .. }) => tracing::error!(
                    error = %e,
                    "Redis refused this instance's credentials (or its ACL denied a \
                     command) at start-up; fix the user and password in --redis (or \
                     REDIS_URL), or the user's ACL, and restart it. Until then it serves \
                     the settings file, reading it again now and then, but cannot tell \
                     other instances of its own changes"
                ),
                Err(e) => tracing::warn!(
                    error = %e,
                    "Redis did not answer at start-up; starting anyway on the settings \
                     file, and picking up other instances' changes once it answers"
                ),
            }
            let name = redis.describe().to_owned();
            (build_reloader(redis, key, &path, args.mode)?, name)
        }
        None => (
            build_reloader(MemoryBackend::new(), key, &path, args.mode)?,
            "in-memory, this process only".to_owned(),
        ),
    };
    reloader.on_reload(|_, new| match new.generation() {
        Some(generation) => tracing::info!(generation = generation.get(), "settings reloaded"),
        // Every backoff window while Redis cannot be read: not news.
        None => {
            tracing::debug!("settings reloaded (generation unknown: Redis could not be read)")
        }
    });
    if reloader.reload_now().await.is_err() {
        tracing::warn!(
            file = %path.display(),
            "could not load the settings at start-up; serving the default settings until a \
             reload succeeds"
        );
    }

    let app = Router::new()
        .route("/settings", get(get_settings).put(put_settings))
        .layer(SettingsReloadLayer::new(reloader.clone()))
        // Outside the layer: a health probe or a metrics scrape neither
        // waits on Redis nor counts as a settings check.
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || render_metrics(metrics.clone())))
        .with_state(reloader);

    println!(
        "settings_server listening on http://{address} (backend: {backend}; mode: {})",
        args.mode
    );
    let _ = io::stdout().flush();

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Fatal(format!("the server failed: {e}"), 1))?;
    tracing::info!("stopped");
    Ok(())
}

fn build_reloader<B: Backend + 'static>(
    backend: B,
    key: Key,
    path: &Path,
    mode: CheckMode,
) -> Result<Reloader<Settings>, Fatal> {
    let sync = Synchronizer::new(backend, key);
    let read_from = path.to_owned();
    let loader = blocking_loader(move || read_settings(&read_from));
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

/// `GET /settings`: the settings this request was served, and their
/// generation.
async fn get_settings(Extension(snapshot): Extension<Snapshot<Settings>>) -> Json<Value> {
    Json(json!({
        "generation": snapshot.generation().map(|g| g.get()),
        "settings": snapshot.settings(),
    }))
}

/// `PUT /settings`: saves a new settings object and tells every instance.
async fn put_settings(State(reloader): State<Reloader<Settings>>, body: Bytes) -> Response {
    let settings = match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(settings)) => settings,
        Ok(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the settings must be a JSON object such as {{\"theme\": \"dark\"}}, \
                     not {}; nothing was saved",
                    kind(&other)
                ),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "the body is not valid JSON ({e}); send a JSON object such as \
                     {{\"theme\": \"dark\"}}; nothing was saved"
                ),
            )
        }
    };
    match reloader.publish(settings).await {
        Ok(generation) => {
            tracing::info!(generation = generation.get(), "settings published");
            Json(json!({ "generation": generation.get() })).into_response()
        }
        Err(e) => {
            tracing::warn!("publishing the settings failed: {e}");
            // This saver replaces the file in one rename: when it fails,
            // the file was not replaced.
            let saved = match &e {
                PublishError::Save(_) => Some(false),
                other => other.saved(),
            };
            let body = json!({ "error": e.to_string(), "saved": saved });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// `GET /metrics`: the reloader's counters and histograms for Prometheus.
async fn render_metrics(handle: PrometheusHandle) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The loader: reads and parses the settings file.
fn read_settings(path: &Path) -> Result<Settings, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("could not read {}: {e}", path.display()))?;
    match serde_json::from_slice(&text) {
        Ok(Value::Object(settings)) => Ok(settings),
        Ok(other) => Err(format!(
            "{} holds {}, not a JSON object",
            path.display(),
            kind(&other)
        )),
        Err(e) => Err(format!("{} is not valid JSON: {e}", path.display())),
    }
}

/// Writes a temporary file beside `path` (so a rename cannot cross
/// filesystems), flushed to disk, with the permissions of the file it
/// replaces, or those `File::create` would give.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(match std::fs::metadata(path) {
        Ok(existing) => existing.permissions(),
        Err(_) => std::os::unix::fs::PermissionsExt::from_mode(0o666),
    });
    let mut file = builder.tempfile_in(directory(path))?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    Ok(file)
}

/// The saver's write: a temporary file in the same directory, flushed,
/// then renamed over the target, so a reader sees the old file or the new
/// one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_temp(path, bytes)?
        .persist(path)
        .map_err(|e| e.error)?;
    sync_directory(path);
    Ok(())
}

/// The saver: refuses a writer whose lease lapsed (a fencing token below
/// the greatest accepted, kept in `<file>.fence`), then replaces the file.
/// Both under an exclusive lock on `<file>.lock`, so the instances on one
/// host take turns and a stalled one cannot overwrite a newer change when
/// it wakes. Each file is replaced atomically, the token first: a crash
/// between the two leaves a newer token over older settings, which
/// refuses no rightful writer.
fn save_fenced(path: &Path, bytes: &[u8], fence: Fence) -> Result<(), BoxError> {
    let lock_path = beside(path, ".lock");
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| format!("could not open {}: {e}", lock_path.display()))?;
    // Released when the file is closed, on every return below.
    lock.lock()
        .map_err(|e| format!("could not lock {}: {e}", lock_path.display()))?;
    let fence_path = beside(path, ".fence");
    let accepted = match std::fs::read_to_string(&fence_path) {
        Ok(text) => text.trim().parse().map(Fence::new).map_err(|_| {
            format!(
                "{} holds {text:?}, not a fencing token; fix it, or delete it while no \
                 instance is writing",
                fence_path.display()
            )
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Fence::new(0),
        Err(e) => return Err(format!("could not read {}: {e}", fence_path.display()).into()),
    };
    if fence < accepted {
        return Err(StaleFence {
            offered: fence,
            accepted,
        }
        .into());
    }
    write_atomically(&fence_path, format!("{fence}\n").as_bytes())
        .map_err(|e| format!("could not write {}: {e}", fence_path.display()))?;
    write_atomically(path, bytes)
        .map_err(|e| format!("could not write {}: {e}", path.display()).into())
}

/// A file beside `path`: its name with `suffix` added.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}

/// The file's form: pretty JSON ending in a newline.
fn encode(settings: &Settings) -> serde_json::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(settings)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Creates the file with `settings` unless it exists, without ever
/// replacing one another instance created meanwhile. Returns whether it
/// created it.
fn create_if_missing(path: &Path, settings: &Settings) -> io::Result<bool> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let bytes = encode(settings).map_err(io::Error::other)?;
    match write_temp(path, &bytes)?.persist_noclobber(path) {
        Ok(_) => {
            sync_directory(path);
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// The directory `path` is in.
fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Makes a rename or a new name in `path`'s directory durable. Best effort:
/// not every platform can open a directory.
fn sync_directory(path: &Path) {
    if let Ok(dir) = std::fs::File::open(directory(path)) {
        let _ = dir.sync_all();
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_saver_refuses_a_token_older_than_the_last_it_took() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        save_fenced(&path, b"{\"v\": 1}\n", Fence::new(10)).unwrap();
        save_fenced(&path, b"{\"v\": 2}\n", Fence::new(10)).expect("the same writer again");
        save_fenced(&path, b"{\"v\": 3}\n", Fence::new(12)).expect("a newer writer");
        let err = save_fenced(&path, b"{\"v\": 4}\n", Fence::new(11)).unwrap_err();
        assert!(err.to_string().contains("token 11"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"v\": 3}\n", "kept");
        assert_eq!(
            std::fs::read_to_string(beside(&path, ".fence")).unwrap(),
            "12\n"
        );
    }

    #[test]
    fn a_damaged_token_file_refuses_every_save_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        std::fs::write(beside(&path, ".fence"), "").unwrap();
        let err = save_fenced(&path, b"{}\n", Fence::new(u64::MAX)).unwrap_err();
        assert!(err.to_string().contains("not a fencing token"), "{err}");
        assert!(!path.exists(), "nothing saved");
    }
}
