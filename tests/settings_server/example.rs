//! The crate's examples as binaries, for tests that run them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// The binary of example `name`, built once per test run.
///
/// `cargo test --test X` does not build examples, and a binary left by an
/// earlier build may be stale, so this runs `cargo build --example` (a
/// no-op when it is up to date) with the features this test was built
/// with, into the target directory this test runs from.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    // <target dir>/<profile dir>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));

    let mut features = vec!["testing"];
    for (on, feature) in [
        (cfg!(feature = "redis"), "redis"),
        (cfg!(feature = "layer"), "layer"),
        (cfg!(feature = "keyed"), "keyed"),
        (cfg!(feature = "metrics"), "metrics"),
        (cfg!(feature = "cli"), "cli"),
        (cfg!(feature = "tls"), "tls"),
    ] {
        if on {
            features.push(feature);
        }
    }
    let mut build = Command::new(env!("CARGO"));
    // What cargo sets for this test binary: inherited, it reads to the
    // build scripts that watch it (ring's) as a change, and the whole TLS
    // stack and this crate would be rebuilt on every run.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        let set_for_tests = var.starts_with("CARGO_PKG_")
            || var.starts_with("CARGO_BIN_")
            || var.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*var,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            );
        if set_for_tests {
            build.env_remove(&*var);
        }
    }
    build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--example", name])
        .args(["--no-default-features", "--features", &features.join(",")]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    // Cargo marks the root of a target directory with CACHEDIR.TAG.
    if let Some(target_dir) = profile_dir.parent() {
        if target_dir.join("CACHEDIR.TAG").exists() {
            build.arg("--target-dir").arg(target_dir);
        }
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("run cargo build --example {name}: {e}"));
    assert!(
        status.success(),
        "cargo build --example {name} failed: {status}"
    );
    assert!(path.exists(), "no example binary at {}", path.display());
    built.insert(name.to_owned(), path.clone());
    path
}
