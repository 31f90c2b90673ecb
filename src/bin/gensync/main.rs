//! `gensync`: read, bump and clear a shared generation in Redis from a shell,
//! break a stuck writers' lease, and run a reload command only when the
//! generation has moved.
//!
//! ```text
//! gensync [--url URL | --url-file FILE] get KEY      print the shared generation
//! gensync [--url URL | --url-file FILE] bump KEY     tell every process the state changed
//! gensync [--url URL | --url-file FILE] clear KEY    delete the generation (everyone reloads)
//! gensync [--url URL | --url-file FILE] break-lock KEY   delete the writers' lease
//! gensync [--url URL | --url-file FILE] sync --state FILE [--strict] [--no-wait] KEY -- CMD [ARGS...]
//! ```
//!
//! The URL comes from `--url`, else the file `--url-file` names, else
//! `$GENSYNC_URL`, else `$REDIS_URL`. For a `rediss://` URL, `--tls-ca
//! FILE` (or `$GENSYNC_TLS_CA`) trusts a private CA beside the system's
//! roots, and `--tls-cert FILE --tls-key FILE` (or `$GENSYNC_TLS_CERT`,
//! `$GENSYNC_TLS_KEY`) send a client certificate. KEY is `site:settings` style text, as
//! [`Key::parse`] reads it.
//!
//! `sync` is a reader for scripts and cron jobs: FILE holds the generation
//! the last successful run of CMD saw, and the `run_id` of the server it was
//! read from. CMD runs when the shared generation differs from it, when it
//! comes from another server (a restart from an older snapshot or a
//! failover may have lost a bump), when FILE or the key is missing, or when
//! Redis fails (a broken cache server must not freeze a host on stale
//! state; with `--strict` it exits 2 and runs nothing instead). Refused
//! credentials or an ACL denial are a configuration error, not an outage:
//! exit 2 and nothing runs, with or without `--strict`. The
//! `run_id` needs `INFO` (`+info`) and is not learnt on a Cluster: without
//! it FILE holds the generation alone, a restore that brings that
//! generation back is taken as current, and `sync` says so on stderr at
//! every run. Runs on one
//! FILE take turns (a lock on `FILE.lock`, which gensync makes itself and
//! refuses when it is a symbolic link or not a regular file; `--no-wait`
//! exits 75 when another holds it). A `FILE.lock` deleted or replaced
//! during a run lets no second run start beside it: each run also holds
//! FILE's folder's lock shared, and a run that finds no `FILE.lock` it
//! made waits until no run in that folder is left (so the first run of a
//! new FILE waits for the other runs in its folder). SIGTERM, SIGINT, SIGHUP or SIGQUIT
//! sent to gensync while CMD runs is passed on to CMD; gensync waits for
//! it, records nothing, exits 128+N, and only then lets the next run
//! start. After CMD
//! succeeds, FILE gets the generation read *before* CMD ran (the reload
//! fence): a bump that lands while CMD runs causes one more run instead of
//! being lost. When Redis failed, nothing is recorded. FILE keeps its mode
//! and owner, and a FILE that is a symbolic link is written through (the
//! file it points at is replaced, the link kept); a FILE made read-only, or one that is not a regular file, is
//! refused before CMD runs; at most 1 KiB of it is read.
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

mod args;
mod files;
mod signals;
mod state;
mod sync;

use std::ffi::OsString;
use std::fmt::Display;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gensync::backend::Stored;
use gensync::{BlockingRedisBackend, BlockingSynchronizer, Error, Generation, Key, RedisConfig};

use crate::sync::{run_sync, SyncOptions};

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

The URL can hold a password. On the command line (--url) every local user
can read it with ps: give it in GENSYNC_URL or REDIS_URL instead, or in a
file only you can read with --url-file (where secrets are mounted as
files). A password holding / ? # or @ must be percent-encoded in the URL
(%2F %3F %23 %40); gensync refuses a URL such a password split.

Exit codes:
  0    done (for sync: CMD ran and succeeded, or had no need to run)
  1    get: no generation at KEY, or a value that is not one
  2    bad usage, no or bad URL, Redis refusing the credentials or the
       ACL denying a command (every subcommand), Redis unreachable or timed
       out (get, bump, clear, break-lock; sync with --strict), or a state
       file sync cannot read or write (checked before CMD runs; also when
       writing it fails after CMD succeeded)
  N    sync: CMD failed with exit code N (128+S when killed by signal S)
  75   sync --no-wait: another sync holds the state file
  127  sync: CMD could not be started"
)]
struct Cli {
    /// Redis URL: redis://[user:password@]host[:port][/db],
    /// redis+unix:///path, redis+sentinel://host:port,host:port/master or
    /// redis+cluster://host:port,host:port (rediss... for TLS). Every local user can read it here (ps): prefer
    /// --url-file or the environment. Default: the file --url-file names,
    /// else $GENSYNC_URL, else $REDIS_URL.
    #[arg(long, global = true, value_name = "URL")]
    url: Option<String>,

    /// A file holding the Redis URL alone (at most 4 KiB), such as a
    /// mounted secret: it keeps the password out of ps and the shell's
    /// history.
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "url")]
    url_file: Option<PathBuf>,

    /// For a rediss:// URL: a PEM file of the CA that signed the server's
    /// certificate (a private CA), trusted beside the system's roots.
    #[arg(long, global = true, value_name = "FILE", env = "GENSYNC_TLS_CA")]
    tls_ca: Option<PathBuf>,

    /// For a rediss:// URL whose server requires client certificates
    /// (tls-auth-clients yes): the client certificate (PEM). Needs
    /// --tls-key.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "GENSYNC_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (unencrypted PEM).
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "GENSYNC_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,

    /// Act on one member of the set KEY (a tenant of a keyed reloader
    /// whose set is KEY) instead of KEY itself. Without it, a set's KEY is
    /// its parent generation: `bump` on it reloads every member. A `bump`
    /// of a member with no generation yet creates it and warns that it
    /// did not exist (a typo'd ID makes a new member).
    #[arg(long, global = true, value_name = "ID")]
    member: Option<String>,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the shared generation, the number the services using KEY show
    /// for it (with --member, the one the member's reloader shows). Exit 1
    /// if the key is missing or corrupt.
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
    /// Delete the writers' lease beside KEY, whoever holds it: for a lease a
    /// stuck or foreign client holds, which stops every write until it
    /// lapses. A writer still holding it fails its write at its next
    /// renewal. (A lease with no time to live, which no writer leaves, is
    /// taken over by the next writer without this.)
    BreakLock {
        /// The key, such as site:settings.
        key: Key,
    },
    /// Run CMD if the shared generation moved since FILE was written.
    ///
    /// CMD runs when the generation differs from the one in FILE or comes
    /// from another server than it did (a restart or a failover), when FILE
    /// or the key is missing (the key is then created), or when Redis
    /// cannot be read (unless --strict: then gensync exits 2 and runs
    /// nothing, so a cron job with a broken URL does not look healthy).
    /// Credentials Redis refuses, or a command its ACL denies, exit 2
    /// without running CMD, with or without --strict. If
    /// CMD succeeds, FILE gets the generation seen before CMD ran, written
    /// atomically, keeping FILE's mode and owner; if Redis failed, FILE is
    /// left as it was. If CMD fails, gensync exits with its code and leaves
    /// FILE alone. CMD runs as given, not through a shell, and inherits
    /// stdin, stdout and stderr. A FILE made read-only, or not a regular
    /// file, is refused before CMD runs.
    ///
    /// Telling another server needs its run_id, which INFO gives: for a
    /// Redis user without +info (or on a Cluster) sync warns at every run
    /// that a restore bringing back the generation in FILE is taken as
    /// current.
    ///
    /// Runs on one FILE take turns: each holds FILE.lock for its whole run,
    /// and a second waits for it (or, with --no-wait, exits 75 at once).
    /// Deleting FILE.lock during a run lets no second run start: a run
    /// that has to make FILE.lock waits until no sync runs in its folder.
    /// SIGTERM, SIGINT, SIGHUP and SIGQUIT are passed on to CMD, and gensync
    /// waits for it before letting the next run start.
    /// A FILE.lock that is a symbolic link is refused (exit 2), never
    /// followed.
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
    let cli = match args::parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let url = match args::url(cli.url, cli.url_file.as_deref()) {
        Ok(url) => url,
        Err(message) => return fail(TROUBLE, message),
    };
    let mut config = RedisConfig::default();
    if let Some(ca) = &cli.tls_ca {
        config = config.tls_ca_file(ca);
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        config = config.tls_client_auth(cert, key);
    }
    // The backend's errors already redact the password.
    let backend = match BlockingRedisBackend::with_config(&url, config) {
        Ok(backend) => backend,
        Err(e) => return fail(TROUBLE, e),
    };
    let member = cli.member;
    // The member's key read alone, without its set's: whether the member
    // exists, whatever became of the set's parent.
    let alone = {
        let backend = backend.clone();
        move |sync: &Sync| BlockingSynchronizer::new(backend.clone(), sync.key().clone()).read()
    };
    let sync = |key: Key| -> Result<Sync, ExitCode> {
        let (key, parent) = match &member {
            Some(id) => {
                let member = key
                    .member(id)
                    .map_err(|e| fail(TROUBLE, format!("--member {id:?}: {e}")))?;
                (member, Some(key))
            }
            None => (key, None),
        };
        note_how_it_is_stored(&key);
        let sync = BlockingSynchronizer::new(backend, key);
        // A member's generation as the service shows it: with its set's.
        Ok(match parent {
            Some(parent) => sync.with_parent(parent),
            None => sync,
        })
    };
    let command = cli.command;
    let key = match &command {
        Cmd::Get { key }
        | Cmd::Bump { key }
        | Cmd::Clear { key }
        | Cmd::BreakLock { key }
        | Cmd::Sync { key, .. } => key.clone(),
    };
    let sync = match sync(key) {
        Ok(sync) => sync,
        Err(code) => return code,
    };
    match command {
        Cmd::Get { .. } => get(&sync, member.is_some().then(|| alone(&sync))),
        Cmd::Bump { .. } => {
            // A typo'd member ID would make a new member silently: look
            // first, and say so after (a warning, not a refusal: a new
            // tenant's first bump is as legitimate as a typo).
            let new_member = member.is_some() && matches!(alone(&sync), Ok(Stored::Missing));
            match sync.mark_updated() {
                Ok(generation) => {
                    if new_member {
                        warn_new_member(&sync, member.as_deref().unwrap_or_default());
                    }
                    print(generation)
                }
                Err(e) => fail(TROUBLE, e),
            }
        }
        Cmd::Clear { .. } => clear(&sync),
        Cmd::BreakLock { .. } => break_lock(sync),
        Cmd::Sync {
            state,
            strict,
            no_wait,
            command,
            ..
        } => {
            let options = SyncOptions {
                state: &state,
                strict,
                no_wait,
            };
            run_sync(&sync, options, &command)
        }
    }
}

/// `break-lock`: deletes the writers' lease and says whether there was one.
fn break_lock(sync: Sync) -> ExitCode {
    let key = sync.key();
    let lock = key.companion("lock");
    let said = match sync.get_ref().backend().break_lock(key) {
        Ok(true) => format!(
            "broke the writers' lease {lock}: the next writer takes it; one still holding it \
             fails its write at its next renewal"
        ),
        Ok(false) => format!("no writers' lease at {lock}: nothing to break"),
        Err(e) => return fail(TROUBLE, e),
    };
    say(&said)
}

/// Tells the operator when the stored name is not what they may expect:
/// the namespace given twice, or a key stored hashed.
fn note_how_it_is_stored(key: &Key) {
    let stored = key.as_str();
    let prefix = format!("{}:", gensync::key::DEFAULT_NAMESPACE);
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
            gensync::key::MAX_KEY_LEN
        ));
    }
}

/// Says that `bump --member ID` made a member that had no generation.
fn warn_new_member(sync: &Sync, id: &str) {
    let _ = writeln!(
        io::stderr(),
        "gensync: warning: member {id:?} did not exist (no generation at {}); the bump \
         created it. If you meant an existing member, check the ID: that one was not bumped",
        sync.key()
    );
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
    say(&said)
}

/// One line on stdout.
fn say(line: &str) -> ExitCode {
    // `println!` would panic on a closed pipe.
    match writeln!(io::stdout(), "{line}") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(TROUBLE, format!("cannot write to stdout: {e}")),
    }
}

/// `get`; for a member, `alone` is its key read without its set's.
fn get(sync: &Sync, alone: Option<Result<Stored, Error>>) -> ExitCode {
    match observe(sync) {
        Ok(Stored::Value(generation)) => print(generation),
        // The member is there; its set's generation is not (lapsed or
        // flushed): the set's next check or write creates it.
        Ok(Stored::Missing) if matches!(alone, Some(Ok(Stored::Value(_)))) => fail(
            NO_GENERATION,
            format!(
                "{} exists, but its set has no generation (lapsed or flushed): the set's \
                 next check or write makes one, or `gensync bump` the set",
                sync.key()
            ),
        ),
        Ok(Stored::Missing) => fail(NO_GENERATION, format!("no generation at {}", sync.key())),
        // Corrupt (or a state this binary does not know: no generation).
        Ok(_) => fail(
            NO_GENERATION,
            format!(
                "the value at {} is not a generation; `gensync bump` replaces it",
                sync.key()
            ),
        ),
        Err(e) => fail(TROUBLE, e),
    }
}

/// Reads the shared generation once, as `check()` does, but keeps the error
/// that `check()` only logs: an operator needs it on stderr.
fn observe(sync: &Sync) -> Result<Stored, Error> {
    sync.read()
}

fn print(generation: Generation) -> ExitCode {
    say(&generation.to_string())
}

/// One line on stderr, then the exit code. Writing is best effort: a closed
/// stderr must not turn an error into a panic.
fn fail(code: u8, message: impl Display) -> ExitCode {
    let _ = writeln!(io::stderr(), "gensync: {message}");
    ExitCode::from(code)
}
