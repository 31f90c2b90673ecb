//! The files beside a saved file: `<file>.lock`, which the instances on one
//! host lock while they save, and `<file>.fence`, the greatest fencing
//! token the saver accepted.
//!
//! Both are regular files: a symlink in their place is refused, never
//! followed, so whoever can plant a link beside a file cannot make the
//! service create or overwrite another file. Created, they take the mode
//! and owner of the file they guard, as a save of that file keeps them, so
//! a second instance running as another user of the file's group can save
//! too.
//!
//! A fencing token is the Redis server's clock in microseconds (or one
//! more than the last, if greater). One far ahead of this host's clock is
//! refused rather than recorded: once recorded, it would refuse every
//! writer until the clock caught up, were Redis ever to lose its counter.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gensync::backend::Fence;
use gensync::reload::BoxError;

/// How far ahead of this host's clock a fencing token may be: well past
/// the skew of clocks kept by NTP, well short of the time a token from the
/// future would block writes for.
pub const MAX_AHEAD: Duration = Duration::from_secs(5 * 60);

/// The longest `.fence` file read: a number and a newline.
const MAX_FENCE_FILE: u64 = 64;

/// An error unless `path` is missing or not a symlink. A tenant's file is
/// a regular file in its folder: a link there (dangling or not) would have
/// the service write wherever it points.
pub fn refuse_link(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(is_a_link(path)),
        _ => Ok(()),
    }
}

fn is_a_link(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is a symbolic link; it must be a regular file (remove the link)",
        path.display()
    ))
}

/// Opens `path` without following a symlink in its place.
fn open_no_follow(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    refuse_link(path)?;
    options.open(path).map_err(|e| {
        #[cfg(unix)]
        if e.raw_os_error() == Some(libc::ELOOP) {
            return is_a_link(path);
        }
        e
    })
}

/// Opens the lock file, creating it if missing with the owner and mode of
/// `guarded` (the file it guards, when that exists). An existing one is
/// opened read-only: a lock needs no write permission, so an instance
/// running as another user can lock the same file.
pub fn open_lock(path: &Path, guarded: Option<&Metadata>) -> Result<File, String> {
    let could_not = |e: io::Error| format!("could not open {}: {e}", path.display());
    match open_no_follow(OpenOptions::new().read(true), path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        opened => return opened.map_err(could_not),
    }
    // Created exclusively, so only the instance that created it sets its
    // owner and mode; one that lost the race opens the winner's.
    let file = match open_no_follow(OpenOptions::new().write(true).create_new(true), path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return open_no_follow(OpenOptions::new().read(true), path).map_err(could_not)
        }
        Err(e) => return Err(could_not(e)),
    };
    #[cfg(not(unix))]
    let _ = guarded;
    #[cfg(unix)]
    if let Some(guarded) = guarded {
        crate::files::keep_owner_and_mode(&file, guarded).map_err(|e| {
            format!(
                "could not give {} the owner and mode of the file it guards: {e}",
                path.display()
            )
        })?;
    }
    Ok(file)
}

/// The greatest token accepted so far (0 when `path` does not exist).
pub fn read_fence(path: &Path) -> Result<Fence, String> {
    let mut text = String::new();
    match open_no_follow(OpenOptions::new().read(true), path) {
        Ok(file) => file
            .take(MAX_FENCE_FILE)
            .read_to_string(&mut text)
            .map_err(|e| format!("could not read {}: {e}", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Fence::new(0)),
        Err(e) => return Err(format!("could not read {}: {e}", path.display())),
    };
    text.trim().parse().map(Fence::new).map_err(|_| {
        format!(
            "{} holds {text:?}, not a fencing token; fix it, or delete it while no \
             instance is writing",
            path.display()
        )
    })
}

/// An error when `offered` or `accepted` (read from `path`) claims a time
/// more than [`MAX_AHEAD`] ahead of this host's clock. Checked before the
/// token is recorded, so nothing is saved.
pub fn refuse_from_the_future(
    offered: Fence,
    accepted: Fence,
    path: &Path,
) -> Result<(), BoxError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let bound = now.saturating_add(MAX_AHEAD.as_micros() as u64);
    let ahead = |fence: Fence| {
        let secs = (fence.get() - now) / 1_000_000;
        format!("{secs} s ahead of this host's clock")
    };
    if accepted.get() > bound {
        return Err(format!(
            "{} holds fencing token {accepted}, {}: it would refuse every writer until \
             the clock catches up; if this host's clock is right, reset it by deleting {} \
             while no instance is writing",
            path.display(),
            ahead(accepted),
            path.display()
        )
        .into());
    }
    if offered.get() > bound {
        return Err(format!(
            "the writers' fencing token {offered} is {}, more than the {} s allowed; \
             nothing was saved; set the clocks right (Redis's and this host's), or, if \
             they are, delete the Redis key holding the writers' counter \
             (`{{gensync:KEY}}:%fence`, for a tenant `{{gensync:KEY:tenants}}:@ID:%fence`)",
            ahead(offered),
            MAX_AHEAD.as_secs()
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros_from_now(ahead: Duration) -> u64 {
        (SystemTime::now() + ahead)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    }

    #[test]
    fn a_token_may_run_a_little_ahead_of_the_clock_but_not_far() {
        let path = Path::new("settings.json.fence");
        let near = Fence::new(micros_from_now(Duration::from_secs(60)));
        refuse_from_the_future(near, Fence::new(0), path).expect("a minute ahead");
        let far = Fence::new(micros_from_now(Duration::from_secs(30 * 86_400)));
        let err = refuse_from_the_future(far, Fence::new(0), path).unwrap_err();
        assert!(
            err.to_string().contains("ahead of this host's clock"),
            "{err}"
        );
        let err = refuse_from_the_future(near, far, path).unwrap_err();
        assert!(
            err.to_string().contains("deleting settings.json.fence"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_link_in_place_of_a_companion_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("f.lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = open_lock(&link, None).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
        assert!(!target.exists(), "a dangling link was written through");
        let err = read_fence(&link).unwrap_err();
        assert!(err.contains("symbolic link"), "{err}");
    }
}
