//! Running the `gensync` command in the tests that drive it as a process.

#![allow(dead_code)]

use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_gensync");

/// The command with no URL in its environment, whatever the caller's is.
pub fn gensync() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("GENSYNC_URL").env_remove("REDIS_URL");
    for var in ["GENSYNC_TLS_CA", "GENSYNC_TLS_CERT", "GENSYNC_TLS_KEY"] {
        cmd.env_remove(var);
    }
    cmd
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub fn run(cmd: &mut Command) -> Run {
    read(cmd.output().expect("run gensync"))
}

/// What a finished run printed and exited with.
pub fn read(out: Output) -> Run {
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("gensync-cli-")
        .tempdir()
        .unwrap()
}
