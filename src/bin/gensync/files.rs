//! Reading a small file the user names: only a regular file, never more
//! than a bound.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

/// Why [`read_regular`] read nothing.
#[derive(Debug)]
pub(crate) enum Unread {
    /// It could not be opened or read (missing, no permission).
    Io(io::Error),
    /// It is a folder, a FIFO or a device.
    NotRegular,
    /// It holds more than the bound.
    TooLarge,
}

/// The bytes of the regular file at `path` (a symbolic link to one, as
/// mounted secrets are, is followed), at most `limit` of them. Opened
/// non-blocking: opening a FIFO for reading would wait for a writer for
/// good (on a regular file the flag changes nothing).
pub(crate) fn read_regular(path: &Path, limit: u64) -> Result<Vec<u8>, Unread> {
    let mut options = OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file: File = options.open(path).map_err(Unread::Io)?;
    if !file.metadata().map_err(Unread::Io)?.is_file() {
        return Err(Unread::NotRegular);
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(Unread::Io)?;
    if bytes.len() as u64 > limit {
        return Err(Unread::TooLarge);
    }
    Ok(bytes)
}
