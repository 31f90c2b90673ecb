//! Running the `gensync` command, for the suites that drive it beside
//! other things (the `cli` suite has its own).

use std::process::Command;

pub use gensync::testing::command::{run, tempdir, Run};

/// The command with no URL in its environment, whatever the caller's is.
pub fn gensync() -> Command {
    gensync::testing::command::gensync(env!("CARGO_BIN_EXE_gensync"))
}
