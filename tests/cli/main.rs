//! The `gensync` command, run as a real process against a real
//! redis-server that each test starts for itself. One concern a module:
//! `basics` (the commands, their URLs and exit codes), `keys` (`break-lock`
//! and keys no log line can be injected through), `secrets` (no password
//! shown), and on unix `state` (`sync`'s state file) and `overlap` (`sync`
//! runs never overlap); `run` runs the command.

#![cfg(feature = "cli")]

mod basics;
mod keys;
#[cfg(unix)]
mod overlap;
mod run;
mod secrets;
#[cfg(unix)]
mod state;
