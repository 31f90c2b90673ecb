//! `gensync`: read, bump and clear a shared generation in Redis from a shell,
//! and run a reload command only when the generation has moved.
//!
//! ```text
//! gensync [--url URL] get KEY      print the shared generation
//! gensync [--url URL] bump KEY     tell every process the state changed
//! gensync [--url URL] clear KEY    delete the generation (everyone reloads)
//! gensync [--url URL] sync --state FILE [--strict] [--no-wait] KEY -- CMD [ARGS...]
//! ```
//!
//! The URL comes from `--url`, else `$GENSYNC_URL`, else `$REDIS_URL`.
//! KEY is `site:settings` style text, as [`Key::parse`] reads it.
//!
//! `sync` is a reader for scripts and cron jobs: FILE holds the generation
//! the last successful run of CMD saw, and the `run_id` of the server it was
//! read from. CMD runs when the shared generation differs from it, when it
//! comes from another server (a restart from an older snapshot or a
//! failover may have lost a bump), when FILE or the key is missing, or when
//! Redis fails (a broken cache server must not freeze a host on stale
//! state; with `--strict` it exits 2 and runs nothing instead). Runs on one
//! FILE take turns (a lock on `FILE.lock`; `--no-wait` exits 75 when
//! another holds it). After CMD
//! succeeds, FILE gets the generation read *before* CMD ran (the reload
//! fence): a bump that lands while CMD runs causes one more run instead of
//! being lost. When Redis failed, nothing is recorded.
//!
//! Exit codes: 0 done; 1 `get` found no valid generation; 2 bad usage,
//! a bad URL or Redis trouble (for `sync` only with `--strict`, and a
//! state file it cannot read or write, checked before CMD runs, and 2 also
//! when writing it fails after CMD succeeded); for `sync`,
//! CMD's own code when it fails (128+N when killed by signal N), 75 when
//! `--no-wait` found another run holding FILE, and 127 when CMD cannot be
//! started.
//!
//! Every Redis call is bounded by the library's default timeouts, and a
//! password in the URL never appears in any output.

use std::ffi::OsString;
use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use clap::{Parser, Subcommand};
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, Check, Error, Generation, Key, Observed, Stored,
};

/// `get` found no key, or a value that is not a generation.
const NO_GENERATION: u8 = 1;
/// Bad usage, a bad URL, Redis trouble or an unusable state file (clap
/// uses 2 for usage errors too).
const TROUBLE: u8 = 2;
/// CMD could not be started, as in shells.
const CANNOT_RUN: u8 = 127;
/// `sync --no-wait` found another run holding the state file (sysexits'
/// EX_TEMPFAIL: try again later).
const BUSY: u8 = 75;

type Sync = BlockingSynchronizer<BlockingRedisBackend>;

/// Read, bump and clear a shared cache generation in Redis, and run a
/// reload command only when it has moved.
#[derive(Parser)]
#[command(
    name = "gensync",
    version,
    after_help = "\
KEY is `site:settings` style text. gensync adds the namespace itself: KEY
site:settings is stored as gensync:site:settings (the name `redis-cli keys`
shows), so give it without the gensync: prefix. A key holding spaces,
control characters or non-ASCII letters, or longer than 250 bytes, is stored
hashed, as gensync:%sha256:<hex>; gensync says so when it does that. (The
250 bytes count the stored name, namespace and escapes included; spaces
around the `:` separators are trimmed, not hashed.)

The URL can hold a password. On the command line every local user can read
it (ps); prefer GENSYNC_URL or REDIS_URL in the environment.

Exit codes:
  0    done (for sync: CMD ran and succeeded, or had no need to run)
  1    get: no generation at KEY, or a value that is not one
  2    bad usage, no or bad URL, Redis unreachable, timed out or refusing
       access (get, bump, clear; sync with --strict), or a state file sync
       cannot read or write (checked before CMD runs; also when writing it
       fails after CMD succeeded)
  N    sync: CMD failed with exit code N (128+S when killed by signal S)
  75   sync --no-wait: another sync holds the state file
  127  sync: CMD could not be started"
)]
struct Cli {
    /// Redis URL: redis://[user:password@]host[:port][/db] or
    /// redis+unix:///path. Default: $GENSYNC_URL, else $REDIS_URL.
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the shared generation. Exit 1 if the key is missing or corrupt.
    Get {
        /// The key, such as site:settings.
        key: Key,
    },
    /// Bump the shared generation, creating it if missing, and print the new one.
    Bump {
        /// The key, such as site:settings.
        key: Key,
    },
    /// Delete the shared generation: every reader reloads once. Says whether
    /// there was one to delete.
    Clear {
        /// The key, such as site:settings.
        key: Key,
    },
    /// Run CMD if the shared generation moved since FILE was written.
    ///
    /// CMD runs when the generation differs from the one in FILE or comes
    /// from another server than it did (a restart or a failover), when FILE
    /// or the key is missing (the key is then created), or when Redis
    /// cannot be read (unless --strict: then gensync exits 2 and runs
    /// nothing, so a cron job with a broken URL does not look healthy). If
    /// CMD succeeds, FILE gets the generation seen before CMD ran, written
    /// atomically; if Redis failed, FILE is left as it was. If CMD fails,
    /// gensync exits with its code and leaves FILE alone. CMD inherits
    /// stdin, stdout and stderr.
    ///
    /// Runs on one FILE take turns: each holds FILE.lock for its whole run,
    /// and a second waits for it (or, with --no-wait, exits 75 at once).
    Sync {
        /// Where the generation of the last successful run is kept.
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Exit 2 without running CMD when Redis cannot be read.
        #[arg(long)]
        strict: bool,
        /// Exit 75 at once if another sync holds FILE, instead of waiting.
        #[arg(long)]
        no_wait: bool,
        /// The key, such as site:settings.
        key: Key,
        /// The command to run, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Surrounding whitespace is no part of a URL, wherever it came from. An
    // empty variable counts as unset; an empty `--url` is an error.
    let trimmed = |v: String| v.trim().to_owned();
    let from_env = |name| {
        std::env::var(name)
            .ok()
            .map(trimmed)
            .filter(|v: &String| !v.is_empty())
    };
    let given = cli.url.is_some();
    let Some(url) = cli
        .url
        .map(trimmed)
        .or_else(|| from_env("GENSYNC_URL"))
        .or_else(|| from_env("REDIS_URL"))
        .filter(|url| !url.is_empty())
    else {
        let message = if given {
            "--url is empty: give a Redis URL such as redis://127.0.0.1:6379"
        } else {
            "no Redis URL: pass --url or set GENSYNC_URL or REDIS_URL"
        };
        return fail(TROUBLE, message);
    };
    // The backend's errors already redact the password.
    let backend = match BlockingRedisBackend::open(&url) {
        Ok(backend) => backend,
        Err(e) => return fail(TROUBLE, e),
    };
    let sync = |key: Key| {
        note_how_it_is_stored(&key);
        BlockingSynchronizer::new(backend, key)
    };
    match cli.command {
        Cmd::Get { key } => get(&sync(key)),
        Cmd::Bump { key } => match sync(key).mark_updated() {
            Ok(generation) => print(generation),
            Err(e) => fail(TROUBLE, e),
        },
        Cmd::Clear { key } => clear(&sync(key)),
        Cmd::Sync {
            state,
            strict,
            no_wait,
            key,
            command,
        } => {
            let options = SyncOptions {
                state: &state,
                strict,
                no_wait,
            };
            run_sync(&sync(key), options, &command)
        }
    }
}

/// Tells the operator when the stored name is not what they may expect:
/// the namespace given twice, or a key stored hashed.
fn note_how_it_is_stored(key: &Key) {
    let stored = key.as_str();
    let prefix = format!("{}:", gensync::DEFAULT_NAMESPACE);
    if let Some(rest) = stored.strip_prefix(&prefix) {
        if let Some(inner) = rest.strip_prefix(&prefix) {
            note(&format!(
                "KEY already starts with the namespace {prefix:?}, which gensync adds itself: \
                 this is {stored}; for the key {rest} give {inner}"
            ));
        }
    }
    if stored.contains(":%sha256:") {
        note(&format!(
            "KEY holds characters a key cannot carry as they are (spaces, control \
             characters, non-ASCII) or is longer than {} bytes, so it is stored hashed, \
             as {stored}",
            gensync::MAX_KEY_LEN
        ));
    }
}

fn note(text: &str) {
    let _ = writeln!(io::stderr(), "gensync: note: {text}");
}

/// `clear`: says whether there was a generation to delete.
fn clear(sync: &Sync) -> ExitCode {
    let there = match observe(sync) {
        Ok(stored) => stored != Stored::Missing,
        Err(e) => return fail(TROUBLE, e),
    };
    if let Err(e) = sync.clear() {
        return fail(TROUBLE, e);
    }
    let said = if there {
        format!(
            "cleared {}: every process reloads on its next check",
            sync.key()
        )
    } else {
        format!(
            "nothing to clear: there was no generation at {}",
            sync.key()
        )
    };
    match writeln!(io::stdout(), "{said}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(TROUBLE, format!("cannot write to stdout: {e}")),
    }
}

/// How `sync` runs.
struct SyncOptions<'a> {
    state: &'a Path,
    strict: bool,
    no_wait: bool,
}

fn get(sync: &Sync) -> ExitCode {
    match observe(sync) {
        Ok(Stored::Value(generation)) => print(generation),
        Ok(Stored::Missing) => fail(NO_GENERATION, format!("no generation at {}", sync.key())),
        Ok(Stored::Corrupt) => fail(
            NO_GENERATION,
            format!(
                "the value at {} is not a generation; `gensync bump` replaces it",
                sync.key()
            ),
        ),
        Err(e) => fail(TROUBLE, e),
    }
}

fn run_sync(sync: &Sync, options: SyncOptions<'_>, command: &[OsString]) -> ExitCode {
    let state = options.state;
    // clap already requires CMD; this only keeps an empty one from panicking.
    let Some((program, args)) = command.split_first() else {
        return fail(TROUBLE, "no command to run: give one after `--`");
    };
    if state.file_name().is_none() {
        let message = format!("--state {} names no file", state.display());
        return fail(TROUBLE, message);
    }
    // Before anything runs: a state that cannot be written would make CMD
    // run again and again.
    if let Err(e) = writable(state) {
        let message = format!(
            "cannot write the state file {}: {e}; check that its folder exists and is writable",
            state.display()
        );
        return fail(TROUBLE, message);
    }
    // Held until this run returns: runs on one FILE take turns, so two
    // never run CMD for one generation, nor does an older run's state
    // overwrite a newer one's.
    let lock = lock_path(state);
    let _turn = match take_turn(&lock, options.no_wait) {
        Ok(Some(turn)) => turn,
        Ok(None) => {
            let message = format!("another sync holds {}; try again later", lock.display());
            return fail(BUSY, message);
        }
        Err(e) => return fail(TROUBLE, format!("cannot lock {}: {e}", lock.display())),
    };
    let (recorded, recorded_server) = match read_state(state) {
        Ok(recorded) => recorded,
        Err(e) => {
            let message = format!("cannot read the state file {}: {e}", state.display());
            return fail(TROUBLE, message);
        }
    };
    let reply = observe(sync);
    let server = sync.get_ref().backend().server_id();
    // The library's rule decides: anything but an exact match is expired.
    let check = Check {
        local: recorded,
        shared: reply
            .as_ref()
            .map_or(Observed::Unavailable, |s| Observed::from(*s)),
    };
    // A value from another server (a restart from an older snapshot, a
    // failover) says nothing of a bump the old one took and lost: run.
    let other_server = recorded_server.is_some() && server.is_some() && recorded_server != server;
    if !check.is_expired() && !other_server {
        return ExitCode::SUCCESS;
    }
    // The reload fence: what to record is fixed now, before CMD runs.
    let fence = match reply {
        Ok(Stored::Value(generation)) => Ok(generation),
        // Create (or repair) the key, so the next run has a value to match.
        Ok(Stored::Missing | Stored::Corrupt) => sync.fetch_or_create().map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &fence {
        if options.strict {
            return fail(TROUBLE, format!("{e}; not running the command (--strict)"));
        }
        let _ = writeln!(
            io::stderr(),
            "gensync: {e}; running the command anyway (--strict would not) and leaving {} as it was",
            state.display()
        );
    }

    let status = match Command::new(program).args(args).status() {
        Ok(status) => status,
        Err(e) => {
            let message = format!("cannot run {}: {e}", program.to_string_lossy());
            return fail(CANNOT_RUN, message);
        }
    };
    if !status.success() {
        return ExitCode::from(failure_code(status));
    }
    if let Ok(generation) = fence {
        if let Err(e) = write_state(state, generation, server.as_deref()) {
            let message = format!(
                "the command succeeded but {} could not be written: {e}; it will run again next time",
                state.display()
            );
            return fail(TROUBLE, message);
        }
    }
    ExitCode::SUCCESS
}

/// Reads the shared generation once, as `check()` does, but keeps the error
/// that `check()` only logs: an operator needs it on stderr.
fn observe(sync: &Sync) -> Result<Stored, Error> {
    sync.read()
}

/// The lock file of the state file `path`: `path.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

/// Takes the lock file `lock`, waiting for it unless `no_wait`; `None` when
/// another run holds it and this one would not wait.
fn take_turn(lock: &Path, no_wait: bool) -> io::Result<Option<File>> {
    let opened = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock);
    let lock = match opened {
        Ok(file) => file,
        // One another user left (root's cron, say): a lock needs no write.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => File::open(lock)?,
        Err(e) => return Err(e),
    };
    if !no_wait {
        lock.lock()?;
        return Ok(Some(lock));
    }
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether a file can be made where `path` is, as writing the state will.
/// The errors name no temporary file: the caller names `path`.
fn writable(path: &Path) -> io::Result<()> {
    let dir = directory(path);
    if !fs::metadata(dir)?.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    tempfile::Builder::new()
        .tempfile_in(dir)
        .map(drop)
        .map_err(|e| io::Error::from(e.kind()))
}

/// The directory `path` is in.
fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The generation recorded in `path`, and the server it was read from
/// when known (`<generation> <run_id>`). A missing, empty or unparsable
/// file records nothing, so CMD runs and the file is rewritten; other read
/// errors (a directory, no permission) would also defeat the write, so
/// they are reported instead.
fn read_state(path: &Path) -> io::Result<(Option<Generation>, Option<String>)> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((None, None)),
        Err(e) => return Err(e),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut words = text.split_ascii_whitespace();
    let generation = words
        .next()
        .and_then(|w| Generation::parse_stored(w.as_bytes()));
    Ok((generation, words.next().map(str::to_owned)))
}

/// Replaces `path` atomically: a reader (or a crash) sees the old content or
/// the new one, never a torn file.
fn write_state(path: &Path, generation: Generation, server: Option<&str>) -> io::Result<()> {
    let dir = directory(path);
    // In the same directory, so the rename cannot cross filesystems; the
    // mode File::create would give (before the umask).
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(fs::Permissions::from_mode(0o666));
    let mut file = builder.tempfile_in(dir)?;
    match server {
        Some(server) => writeln!(file, "{generation} {server}")?,
        None => writeln!(file, "{generation}")?,
    }
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    // Makes the rename itself durable; some filesystems refuse to sync a
    // directory, and the file is already in place, so that is not an error.
    #[cfg(unix)]
    let _ = File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

/// The exit code to pass on for a failed CMD, as a shell would report it.
fn failure_code(status: ExitStatus) -> u8 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(u8::MAX);
        }
    }
    // A failure must never turn into 0, whatever the platform reports.
    match status.code().map(u8::try_from) {
        Some(Ok(code)) if code != 0 => code,
        _ => 1,
    }
}

fn print(generation: Generation) -> ExitCode {
    // `println!` would panic on a closed pipe.
    match writeln!(io::stdout(), "{generation}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(TROUBLE, format!("cannot write to stdout: {e}")),
    }
}

/// One line on stderr, then the exit code. Writing is best effort: a closed
/// stderr must not turn an error into a panic.
fn fail(code: u8, message: impl Display) -> ExitCode {
    let _ = writeln!(io::stderr(), "gensync: {message}");
    ExitCode::from(code)
}
