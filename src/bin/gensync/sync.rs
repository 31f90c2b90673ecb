//! `gensync sync`: run CMD when the shared generation moved since the state
//! file was written, one run per state file at a time.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, ExitStatus};

use gensync::backend::Stored;
use gensync::synchronizer::{Check, Observed};
use gensync::Error;

use crate::{fail, observe, signals, state, Sync, BUSY, CANNOT_RUN, TROUBLE};
use gensync::backend::BackendErrorKind;

/// How `sync` runs.
pub(crate) struct SyncOptions<'a> {
    pub(crate) state: &'a Path,
    pub(crate) strict: bool,
    pub(crate) no_wait: bool,
}

pub(crate) fn run_sync(sync: &Sync, options: SyncOptions<'_>, command: &[OsString]) -> ExitCode {
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
    if let Err(message) = state::check(state) {
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
    let (recorded, recorded_server) = match state::read(state) {
        Ok(recorded) => recorded,
        Err(message) => return fail(TROUBLE, message),
    };
    let reply = observe(sync);
    let backend = sync.get_ref().backend();
    let server = backend.server_id();
    if reply.is_ok() && server.is_none() {
        warn_blind_to_restores(state, backend.is_cluster());
    }
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
        // Missing or corrupt (no generation, whatever the state): create
        // (or repair) the key, so the next run has a value to match.
        Ok(_) => sync.fetch_or_create(),
        Err(e) => Err(e),
    };
    if let Err(e) = &fence {
        // Refused credentials or an ACL denial are no outage: running CMD
        // would hide a broken configuration behind a healthy exit.
        if is_configuration(e) {
            return fail(
                TROUBLE,
                format!("{e}; not running the command: fix the configuration"),
            );
        }
        if options.strict {
            return fail(TROUBLE, format!("{e}; not running the command (--strict)"));
        }
        let _ = writeln!(
            io::stderr(),
            "gensync: {e}; running the command anyway (--strict would not) and leaving {} as it was",
            state.display()
        );
    }

    // Run as it is, never through a shell: nothing in CMD is expanded.
    // A signal that would end gensync is passed on to CMD, and gensync
    // waits for it: the lock is released only once CMD is gone, so the
    // next run cannot start beside an orphaned one.
    let status = match signals::run_forwarding(Command::new(program).args(args)) {
        Ok(status) => status,
        Err(e) => {
            let message = format!("cannot run {}: {e}", program.to_string_lossy());
            return fail(CANNOT_RUN, message);
        }
    };
    if !status.success() {
        return ExitCode::from(failure_code(status));
    }
    if let Some(signal) = signals::received() {
        // CMD was asked to stop and exited cleanly: it may not have
        // finished its work, so nothing is recorded.
        let _ = writeln!(
            io::stderr(),
            "gensync: stopped by signal {signal} while the command ran; {} left as it was",
            state.display()
        );
        return ExitCode::from(u8::try_from(128 + signal).unwrap_or(u8::MAX));
    }
    if let Ok(generation) = fence {
        if let Err(e) = state::write(state, generation, server.as_deref()) {
            let message = format!(
                "the command succeeded but {} could not be written: {e}; it will run again next time",
                state.display()
            );
            return fail(TROUBLE, message);
        }
    }
    ExitCode::SUCCESS
}

/// Whether `e` says the configuration is wrong (credentials Redis refused,
/// a command the ACL denies, a bad setting) rather than that Redis is
/// down: that is exit 2, with or without `--strict`.
fn is_configuration(e: &Error) -> bool {
    match e {
        Error::Config(_) | Error::Key(_) => true,
        Error::Backend(e) => matches!(
            e.kind(),
            BackendErrorKind::Auth | BackendErrorKind::Denied | BackendErrorKind::Config
        ),
        _ => false,
    }
}

/// Says, at every run where Redis answered without saying which server it
/// is, that a restore cannot be told from no change: the state file then
/// records the generation alone, and a restart from an older snapshot (or
/// a failover to a replica) that brings that generation back looks
/// current. No read-only command but `INFO` names the server.
fn warn_blind_to_restores(state: &Path, cluster: bool) {
    let why = if cluster {
        "on a Cluster, sync does not learn which node answered"
    } else {
        "the server refused `INFO server`, which names it (its run_id): grant this Redis \
         user +info"
    };
    let _ = writeln!(
        io::stderr(),
        "gensync: warning: {why}; so this run cannot tell whether Redis restarted from an \
         older snapshot or failed over since {} was written, and a restore that brings back \
         the generation it records is taken as current (the command does not run for it)",
        state.display()
    );
}

/// The lock file of the state file `path`: `path.lock`.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".lock");
    path.with_file_name(name)
}

/// A run's turn on one state file: its lock file, locked, and the
/// folder's shared lock. Released when dropped.
pub(crate) struct Turn {
    _lock: File,
    _folder: File,
}

/// Takes the turn on the lock file `lock`, waiting for it unless
/// `no_wait`; `None` when another run holds it and this one would not
/// wait.
///
/// The lock is on the open file, so a name swapped or deleted must not
/// let two runs hold "the" lock at once:
/// - after locking, the name must still be the file locked, else the run
///   tries again on what the name is now;
/// - the lock file appears already locked (made aside, locked, then
///   hard-linked into place), so no run locks a new one before its maker;
/// - every run holds its folder's lock shared, and a run that had to make
///   the lock file (the first ever, or after someone deleted it during a
///   run) takes the folder's lock exclusively first, so it waits for every
///   run in the folder, the one whose lock file was deleted included.
fn take_turn(lock: &Path, no_wait: bool) -> io::Result<Option<Turn>> {
    let folder_path = state::directory(lock);
    loop {
        let (file, made) = match open_lock(lock)? {
            Some(file) => (file, false),
            None => match make_lock(lock, folder_path)? {
                Some(file) => (file, true),
                // Another run made it first: take that one.
                None => continue,
            },
        };
        if !made && !acquire(&file, no_wait, File::lock, File::try_lock)? {
            return Ok(None);
        }
        if !names(lock, &file)? {
            continue;
        }
        // A lock file gensync did not make (one put in place of the one a
        // run holds, or an older gensync's) is waited out like a new one.
        let unmarked = !made && !marked(&file);
        let folder = File::open(folder_path)?;
        if made || unmarked {
            if !acquire(&folder, no_wait, File::lock, File::try_lock)? {
                return Ok(None);
            }
            if unmarked {
                // Best effort (it may be another user's, read-only): only
                // the next run's wait depends on it.
                #[cfg(unix)]
                let _ = file
                    .set_len(0)
                    .and_then(|()| std::os::unix::fs::FileExt::write_all_at(&file, MARK, 0));
            }
            // Every run that was in the folder has ended: share it again.
            folder.lock_shared()?;
        } else if !acquire(&folder, no_wait, File::lock_shared, File::try_lock_shared)? {
            return Ok(None);
        }
        return Ok(Some(Turn {
            _lock: file,
            _folder: folder,
        }));
    }
}

/// What a lock file gensync made holds, telling it from one put in its
/// place.
const MARK: &[u8] = b"gensync sync lock: do not delete while a sync runs\n";

/// Whether `file` holds [`MARK`] (gensync made it).
fn marked(file: &File) -> bool {
    let mut head = Vec::with_capacity(MARK.len());
    let read = io::Read::by_ref(&mut &*file)
        .take(MARK.len() as u64 + 1)
        .read_to_end(&mut head);
    read.is_ok() && head == MARK
}

/// Locks `file`, waiting unless `no_wait`; false when it would wait.
fn acquire(
    file: &File,
    no_wait: bool,
    wait: fn(&File) -> io::Result<()>,
    try_now: fn(&File) -> Result<(), fs::TryLockError>,
) -> io::Result<bool> {
    if !no_wait {
        wait(file)?;
        return Ok(true);
    }
    match try_now(file) {
        Ok(()) => Ok(true),
        Err(fs::TryLockError::WouldBlock) => Ok(false),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Whether the name `lock` still is the file `file` (not deleted, not
/// replaced since it was opened).
fn names(lock: &Path, file: &File) -> io::Result<bool> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let held = file.metadata()?;
        match fs::symlink_metadata(lock) {
            Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (lock, file);
        Ok(true)
    }
}

/// The existing lock file, opened without following a link; `None` when
/// there is none.
fn open_lock(lock: &Path) -> io::Result<Option<File>> {
    // Opening a FIFO would wait for its other end, for good; a symbolic
    // link (a dangling one in a shared folder) would have gensync create or
    // open whatever it points at.
    match fs::symlink_metadata(lock) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(symlink()),
        Ok(meta) if !meta.is_file() => {
            return Err(io::Error::other(
                "it is not a regular file; remove it, gensync makes it itself",
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let opened = no_follow(fs::OpenOptions::new().read(true).write(true)).open(lock);
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // One another user left (root's cron, say): a lock needs no write.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            no_follow(fs::OpenOptions::new().read(true))
                .open(lock)
                .map(Some)
                .map_err(refused_link)
        }
        Err(e) => Err(refused_link(e)),
    }
}

/// Makes the lock file already locked: a file made aside in `folder`,
/// locked, then hard-linked to `lock`; `None` when another run made it
/// first.
fn make_lock(lock: &Path, folder: &Path) -> io::Result<Option<File>> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".gensync-lock");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // As File::create would make it (before the umask).
        builder.permissions(fs::Permissions::from_mode(0o666));
    }
    let (mut file, aside) = builder.tempfile_in(folder)?.into_parts();
    // Nobody else has it yet: this cannot wait.
    file.lock()?;
    file.write_all(MARK)?;
    let linked = fs::hard_link(&aside, lock);
    drop(aside);
    match linked {
        Ok(()) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(e),
    }
}

/// `options`, never following a symbolic link at the lock's name: one made
/// between the look and the open fails the open (`ELOOP`) instead.
fn no_follow(options: &mut fs::OpenOptions) -> &mut fs::OpenOptions {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(options, libc::O_NOFOLLOW);
    options
}

fn symlink() -> io::Error {
    io::Error::other(
        "it is a symbolic link, which gensync does not follow (it would create or lock \
         whatever the link points at); remove the link, gensync makes the lock file itself",
    )
}

/// The open's error, said plainly when `O_NOFOLLOW` refused a link.
fn refused_link(e: io::Error) -> io::Error {
    #[cfg(unix)]
    if e.raw_os_error() == Some(libc::ELOOP) {
        return symlink();
    }
    e
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
