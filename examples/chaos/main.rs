//! The chaos soak: a fleet of reloaders in every mode, writers and readers
//! over a Redis that a seeded nemesis keeps breaking; every read and write
//! recorded, then checked against each mode's promise.

#![allow(dead_code)] // skeleton: the modules are being written

mod checker;
mod fleet;
mod history;
mod nemesis;
mod proxy;
mod topology;

#[allow(dead_code)] // filled in as the run is wired
fn main() {}
