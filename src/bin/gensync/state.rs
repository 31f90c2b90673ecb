//! `sync`'s state file: checked before CMD runs, read within a bound, and
//! replaced atomically with the mode and owner it had.

use std::fs::{self, File, Metadata};
use std::io::{self, Write};
#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use gensync::Generation;

use crate::files::{read_regular, Unread};

/// The most of a state file that is read. What gensync writes,
/// `<generation> <run_id>:<replication id>`, is about 102 bytes; a larger
/// file is not one it wrote, and records nothing.
pub(crate) const STATE_LIMIT: u64 = 1024;

/// What a state file holds: the generation recorded, and the server it was
/// read from when known.
pub(crate) type Recorded = (Option<Generation>, Option<String>);

/// Whether the state can be written at `path`, as a message saying what to
/// fix when not: checked before CMD runs, since a state that cannot be
/// written would make CMD run again and again.
pub(crate) fn check(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let path = &written(path);
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular(path)),
        Ok(meta) if read_only(&meta) => {
            return Err(format!(
                "the state file {shown} is read-only ({}): gensync does not replace a file \
                 made read-only; make it writable (chmod u+w {shown}) or give --state another file",
                mode_text(&meta)
            ))
        }
        _ => {}
    }
    writable_folder(path).map_err(|e| {
        format!(
            "cannot write the state file {shown}: {e}; check that its folder exists and is writable"
        )
    })
}

fn not_regular(path: &Path) -> String {
    format!(
        "cannot read the state file {}: it is not a regular file (a folder, a FIFO or a \
         device); give --state the path of a plain file",
        path.display()
    )
}

/// Whether no write bit is on: the user made the file read-only. Checked
/// by the bits, not by trying: root may write any file.
fn read_only(meta: &Metadata) -> bool {
    meta.permissions().readonly()
}

fn mode_text(meta: &Metadata) -> String {
    #[cfg(unix)]
    {
        format!("mode {:04o}", meta.permissions().mode() & 0o7777)
    }
    #[cfg(not(unix))]
    {
        "no write permission".to_owned()
    }
}

/// Whether a file can be made where `path` is, as writing the state will.
/// The errors name no temporary file: the caller names `path`.
fn writable_folder(path: &Path) -> io::Result<()> {
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

/// The file that writing `path` replaces: `path` itself, or, when it is a
/// symbolic link, the file it points at (an operator who links the state
/// file elsewhere means that file to be kept), so the link stays a link.
/// A dangling link's target is made.
fn written(path: &Path) -> PathBuf {
    let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    if !is_link {
        return path.to_owned();
    }
    if let Ok(real) = fs::canonicalize(path) {
        return real;
    }
    // Dangling: its target, relative to the link's folder when relative.
    match fs::read_link(path) {
        Ok(target) => directory(path).join(target),
        Err(_) => path.to_owned(),
    }
}

/// The directory `path` is in.
pub(crate) fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The generation recorded in `path`, and the server it was read from
/// when known (`<generation> <run_id>`). A missing, empty, unparsable or
/// oversized file records nothing, so CMD runs and the file is rewritten;
/// a file that is not a regular file (a FIFO would hang the read) and
/// other read errors (no permission) would also defeat the write, so they
/// are reported instead. At most [`STATE_LIMIT`] bytes are read.
pub(crate) fn read(path: &Path) -> Result<Recorded, String> {
    let bytes = match read_regular(path, STATE_LIMIT) {
        Ok(bytes) => bytes,
        Err(Unread::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Ok((None, None)),
        Err(Unread::Io(e)) => {
            return Err(format!(
                "cannot read the state file {}: {e}",
                path.display()
            ))
        }
        Err(Unread::NotRegular) => return Err(not_regular(path)),
        Err(Unread::TooLarge) => {
            crate::note(&format!(
                "the state file {} is larger than {STATE_LIMIT} bytes, so not one gensync \
                 wrote; it records nothing, and is replaced once the command succeeds",
                path.display()
            ));
            return Ok((None, None));
        }
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut words = text.split_ascii_whitespace();
    let generation = words
        .next()
        .and_then(|w| Generation::parse_stored(w.as_bytes()));
    Ok((generation, words.next().map(str::to_owned)))
}

/// Replaces `path` atomically: a reader (or a crash) sees the old content or
/// the new one, never a torn file. The new file keeps the old one's mode,
/// and its owner where this process may give it (as root); a file made
/// read-only since [`check`] is left alone.
pub(crate) fn write(path: &Path, generation: Generation, server: Option<&str>) -> io::Result<()> {
    let path = &written(path);
    let dir = directory(path);
    let existing = fs::metadata(path).ok().filter(Metadata::is_file);
    if existing.as_ref().is_some_and(read_only) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it was made read-only while the command ran",
        ));
    }
    // In the same directory, so the rename cannot cross filesystems; the
    // mode File::create would give (before the umask).
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(fs::Permissions::from_mode(0o666));
    let mut file = builder.tempfile_in(dir)?;
    #[cfg(unix)]
    if let Some(old) = &existing {
        keep_owner_and_mode(file.as_file(), old)?;
    }
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

/// Gives `file` the owner and permission bits of `old`. The owner only
/// where allowed (root, or a group of one's own): otherwise the file is
/// the writer's, as any file it makes. Set-id bits are not carried over.
#[cfg(unix)]
fn keep_owner_and_mode(file: &File, old: &Metadata) -> io::Result<()> {
    if let Err(e) = std::os::unix::fs::fchown(file, Some(old.uid()), Some(old.gid())) {
        if e.kind() != io::ErrorKind::PermissionDenied {
            return Err(e);
        }
        // The group alone may still be ours to give.
        let _ = std::os::unix::fs::fchown(file, None, Some(old.gid()));
    }
    // After the owner: a change of owner may clear bits. Set explicitly,
    // so the umask takes nothing off.
    file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o777))
}
