//! Running the `gensync` operator command as a process, from a test: of
//! the command itself, or of a deployment script that calls it.

use std::ffi::OsStr;
use std::process::{Command, Output};

/// The environment variables the command reads a URL or TLS files from.
const ENVIRONMENT: [&str; 5] = [
    "GENSYNC_URL",
    "REDIS_URL",
    "GENSYNC_TLS_CA",
    "GENSYNC_TLS_CERT",
    "GENSYNC_TLS_KEY",
];

/// The `gensync` binary at `bin`, with none of the variables it reads a
/// URL or TLS files from in its environment, whatever the test's own is:
/// each test then says what the command connects to.
///
/// In the crate's own integration tests, `bin` is
/// `env!("CARGO_BIN_EXE_gensync")`.
pub fn gensync(bin: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(bin);
    for var in ENVIRONMENT {
        cmd.env_remove(var);
    }
    cmd
}

/// What a finished process exited with and printed, its output as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// The exit code, `None` if a signal ended it.
    pub code: Option<i32>,
    /// Its standard output, lossily decoded.
    pub stdout: String,
    /// Its standard error, lossily decoded.
    pub stderr: String,
}

impl Run {
    /// Its standard output, then its standard error: to check that a text
    /// appears nowhere, or to show everything in an assertion's message.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `cmd` to its end and reads what it printed.
///
/// # Panics
///
/// If the process cannot be started.
pub fn run(cmd: &mut Command) -> Run {
    Run::from(cmd.output().expect("run the command"))
}

/// A fresh temporary folder for a command's files (its `--state`, its
/// lock), removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gensync-cli-")
        .tempdir()
        .expect("a temporary folder")
}
