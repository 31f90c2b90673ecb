//! Running the `gensync` command in the tests that drive it as a process.

use std::process::Command;

pub use gensync::testing::command::{run, tempdir, Run};

pub const BIN: &str = env!("CARGO_BIN_EXE_gensync");

/// The command with no URL in its environment, whatever the caller's is.
pub fn gensync() -> Command {
    gensync::testing::command::gensync(BIN)
}
