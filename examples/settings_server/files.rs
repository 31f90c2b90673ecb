//! The settings file: reading it, creating it at first start-up, and
//! saving it atomically under the writers' fencing token.
//!
//! A save writes through a symlink to the file it points at, keeps that
//! file's mode and (where the process may) its owner, and refuses a file
//! the user made read-only.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use gensync::backend::Fence;
use gensync::reload::{BoxError, StaleFence};
use serde_json::{Map, Value};

use crate::companions;

/// The settings: any JSON object.
pub type Settings = Map<String, Value>;

/// How many symlinks a save follows before it gives up (as the kernel's
/// `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// What a JSON value is, in words, for messages.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The most a settings file may hold. Far above what a `PUT` can send
/// (axum's 2 MiB body limit), so [`encode`] can always write what a `PUT`
/// sent within it; a larger file is not one this service wrote, and is not
/// read whole.
pub const MAX_FILE: u64 = 8 * 1024 * 1024;

/// The loader: reads and parses the settings file. A missing file is a
/// failed load like any other (the reloader keeps serving the last good
/// settings): only a fleet's first start-up creates it. So is anything but
/// a regular file of at most [`MAX_FILE`] bytes: a FIFO would block the
/// read (and its thread) until a writer came, a device or `/proc` file
/// may never end.
pub fn read_settings(path: &Path) -> Result<Settings, String> {
    let failed = |e: io::Error| format!("could not read {}: {e}", path.display());
    let file = open_without_blocking(path).map_err(failed)?;
    // The file opened, not the name looked at before: nothing can swap it
    // in between.
    if !file.metadata().map_err(failed)?.is_file() {
        return Err(format!(
            "{} is not a regular file (a FIFO, a device or a folder); give --settings the \
             path of a plain file",
            path.display()
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(failed)?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!(
            "{} is larger than {} MiB, more than this service ever writes; not read",
            path.display(),
            MAX_FILE >> 20
        ));
    }
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

/// Opens `path` for reading without waiting for a FIFO's writer (which a
/// plain open does, for ever). `O_NONBLOCK` changes nothing for the
/// regular file read next.
fn open_without_blocking(path: &Path) -> io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    options.open(path)
}

/// The file's form: pretty JSON ending in a newline, or compact JSON when
/// the pretty form would pass [`MAX_FILE`] (indentation can multiply a
/// deeply nested object many times over), so every file saved can be
/// loaded again. Settings that pass it even so are an error.
pub fn encode(settings: &Settings) -> serde_json::Result<Vec<u8>> {
    let mut pretty = Bounded(Vec::new());
    if serde_json::to_writer_pretty(&mut pretty, settings).is_ok() && pretty.fits(1) {
        pretty.0.push(b'\n');
        return Ok(pretty.0);
    }
    let mut compact = Bounded(Vec::new());
    serde_json::to_writer(&mut compact, settings)?;
    if !compact.fits(1) {
        return Err(serde_json::Error::io(too_large()));
    }
    compact.0.push(b'\n');
    Ok(compact.0)
}

/// A buffer that refuses to grow past [`MAX_FILE`], so a form too large
/// fails early instead of being built whole first.
struct Bounded(Vec<u8>);

impl Bounded {
    /// Whether `more` bytes still fit.
    fn fits(&self, more: usize) -> bool {
        (self.0.len() + more) as u64 <= MAX_FILE
    }
}

impl Write for Bounded {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if !self.fits(bytes.len()) {
            return Err(too_large());
        }
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn too_large() -> io::Error {
    io::Error::other(format!(
        "the settings take more than {} MiB as JSON, more than a settings file may hold",
        MAX_FILE >> 20
    ))
}

/// The file a write to `path` must replace: `path` with its symlinks
/// followed (a dangling link's target included), so a save changes what
/// every reader of the link and of its target sees, instead of turning
/// the link into a file of its own.
pub fn resolve(path: &Path) -> io::Result<PathBuf> {
    let mut current = path.to_owned();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::read_link(&current)?;
                current = directory(&current).join(target);
            }
            _ => return Ok(current),
        }
    }
    Err(io::Error::other(format!(
        "{} goes through more than {MAX_LINKS} symlinks",
        path.display()
    )))
}

/// The saver: refuses a writer whose lease lapsed (a fencing token below
/// the greatest accepted, kept in `<file>.fence`), then replaces the file.
/// Both under an exclusive lock on `<file>.lock`, so the instances on one
/// host take turns and a stalled one cannot overwrite a newer change when
/// it wakes. `<file>` is the settings file with its symlinks followed, so
/// instances given the link and instances given its target share them.
/// Each file is replaced atomically, the token first: a crash between the
/// two leaves a newer token over older settings, which refuses no
/// rightful writer.
pub fn save_fenced(path: &Path, bytes: &[u8], fence: Fence) -> Result<(), BoxError> {
    let path = resolve(path).map_err(|e| format!("could not resolve {}: {e}", path.display()))?;
    save_resolved(&path, bytes, fence)
}

/// [`save_fenced`] for a file that must be a regular file where it is (a
/// tenant's): a symlink in its place, dangling or not, is refused, never
/// written through.
pub fn save_fenced_no_links(path: &Path, bytes: &[u8], fence: Fence) -> Result<(), BoxError> {
    companions::refuse_link(path).map_err(|e| format!("will not write: {e}"))?;
    save_resolved(path, bytes, fence)
}

/// The fenced save of `path`, which has no symlink left to follow.
fn save_resolved(path: &Path, bytes: &[u8], fence: Fence) -> Result<(), BoxError> {
    // What the lock and fence files take when they are created.
    let guarded = std::fs::symlink_metadata(path)
        .ok()
        .filter(|meta| meta.is_file());
    let lock_path = beside(path, ".lock");
    let lock = companions::open_lock(&lock_path, guarded.as_ref())?;
    // Released when the file is closed, on every return below.
    lock.lock()
        .map_err(|e| format!("could not lock {}: {e}", lock_path.display()))?;
    // Refused before the token moves, so a read-only file refuses every
    // writer alike.
    refuse_read_only(path).map_err(|e| format!("will not write {}: {e}", path.display()))?;
    let fence_path = beside(path, ".fence");
    let accepted = companions::read_fence(&fence_path)?;
    companions::refuse_from_the_future(fence, accepted, &fence_path)?;
    if fence < accepted {
        return Err(StaleFence {
            offered: fence,
            accepted,
        }
        .into());
    }
    write_atomically(
        &fence_path,
        format!("{fence}\n").as_bytes(),
        guarded.as_ref(),
    )
    .map_err(|e| format!("could not write {}: {e}", fence_path.display()))?;
    write_atomically(path, bytes, None)
        .map_err(|e| format!("could not write {}: {e}", path.display()).into())
}

/// What the start-up read of the shared generation says about the other
/// instances, which decides whether a missing settings file may be
/// created with the defaults.
pub enum Fleet {
    /// Nothing is shared yet (or the backend is this process's own): the
    /// fleet's first start.
    First,
    /// Other instances already share a generation of these settings.
    Running,
    /// The shared generation could not be read: the error, password
    /// redacted.
    Unknown(String),
}

/// Creates a missing settings file with `defaults`, at a fleet's first
/// start only. Other instances already serve their settings under the
/// shared generation, and defaults loaded here would be served under that
/// same number while they differ: the fleet split silently. So a missing
/// file is then left missing, logged as an error, and loaded as a failed
/// load (the service is not ready) until it is restored.
pub fn prepare(path: &Path, defaults: &Settings, fleet: &Fleet) -> io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(());
    }
    let file = path.display();
    match fleet {
        Fleet::First => {
            if create_if_missing(path, defaults)? {
                tracing::info!(file = %file, "created the settings file with default settings");
            }
        }
        Fleet::Running => tracing::error!(
            file = %file,
            "the settings file is missing, and other instances already share a generation \
             of these settings: not creating default settings, which would differ from \
             theirs under the same generation. Copy the file from another instance (or PUT \
             the settings); until then this instance serves no generation and /readyz \
             answers 503"
        ),
        Fleet::Unknown(error) => tracing::error!(
            file = %file,
            %error,
            "the settings file is missing, and Redis could not be read to tell whether \
             other instances already serve settings: not creating default settings, which \
             could differ from theirs. Restore the file (or PUT the settings), or restart \
             once Redis answers; until then this instance serves no generation and /readyz \
             answers 503"
        ),
    }
    Ok(())
}

/// Creates the file with `settings` unless it exists (or is a symlink,
/// dangling or not), without ever replacing one another instance created
/// meanwhile. Returns whether it created it.
fn create_if_missing(path: &Path, settings: &Settings) -> io::Result<bool> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Ok(false);
    }
    let bytes = encode(settings).map_err(io::Error::other)?;
    match write_temp(path, &bytes, None)?.persist_noclobber(path) {
        Ok(_) => {
            sync_directory(path);
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e.error),
    }
}

/// An error when `path` exists with no write permission for anyone: the
/// user made it read-only, and a rename would replace it regardless (and
/// root may write anything), so the mode bits are checked here.
fn refuse_read_only(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o222 == 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("it is read-only (mode {mode:04o}); make it writable to allow saves"),
            ));
        }
    }
    Ok(())
}

/// The saver's write: a temporary file in the same directory, flushed,
/// then renamed over the target, so a reader sees the old file or the new
/// one, never half of one. `path` must have no symlink left to follow (a
/// link put there meanwhile is replaced, not written through). A new file
/// takes the owner and mode of `like`, when given.
fn write_atomically(path: &Path, bytes: &[u8], like: Option<&std::fs::Metadata>) -> io::Result<()> {
    refuse_read_only(path)?;
    let existing = std::fs::symlink_metadata(path)
        .ok()
        .filter(|meta| meta.is_file());
    write_temp(path, bytes, existing.as_ref().or(like))?
        .persist(path)
        .map_err(|e| e.error)?;
    sync_directory(path);
    Ok(())
}

/// Writes a temporary file beside `path` (created exclusively, with a
/// random name, so a rename cannot cross filesystems and no two writers
/// share one), flushed to disk. It takes the owner and mode of the file it
/// replaces (`existing`), set after creation so the umask cannot narrow
/// them; a new file gets what `File::create` would give.
fn write_temp(
    path: &Path,
    bytes: &[u8],
    existing: Option<&std::fs::Metadata>,
) -> io::Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".settings-").suffix(".tmp");
    #[cfg(unix)]
    if existing.is_none() {
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    }
    let mut file = builder.tempfile_in(directory(path))?;
    #[cfg(unix)]
    if let Some(existing) = existing {
        keep_owner_and_mode(file.as_file(), existing)?;
    }
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    Ok(file)
}

/// Gives `file` the owner (where the process may: root can, others can
/// keep the group they are in) and the mode of `existing`. The mode is set
/// after the owner, since a change of owner may clear set-id bits.
#[cfg(unix)]
pub fn keep_owner_and_mode(file: &std::fs::File, existing: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{fchown, MetadataExt, PermissionsExt};
    let current = file.metadata()?;
    if (current.uid(), current.gid()) != (existing.uid(), existing.gid())
        && fchown(file, Some(existing.uid()), Some(existing.gid())).is_err()
    {
        // Not allowed to give the file away: keep at least the group.
        let _ = fchown(file, None, Some(existing.gid()));
    }
    file.set_permissions(std::fs::Permissions::from_mode(
        existing.permissions().mode() & 0o7777,
    ))
}

/// A file beside `path`: its name with `suffix` added.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(suffix);
    path.with_file_name(name)
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

    #[cfg(unix)]
    #[test]
    fn a_chain_of_links_resolves_to_its_last_target_and_a_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("real")).unwrap();
        std::os::unix::fs::symlink("real/target.json", d.join("a")).unwrap();
        std::os::unix::fs::symlink("a", d.join("b")).unwrap();
        // Dangling: the target does not exist yet, and is what a save writes.
        assert_eq!(resolve(&d.join("b")).unwrap(), d.join("real/target.json"));
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert!(resolve(&d.join("loop")).is_err());
    }
}
