//! The other examples do what the README says they do, and print what a
//! reader can read.

use std::process::Command;

fn run(name: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(crate::example::binary(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run example {name}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_example_the_readme_names_exists() {
    let readme = include_str!("../../README.md");
    let named: Vec<&str> = readme
        .split("--example ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
        })
        .collect();
    assert!(
        named.contains(&"quickstart") && named.contains(&"blocking"),
        "{named:?}"
    );
    for name in named {
        // A single-file example, or one of several files.
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        assert!(
            examples.join(format!("{name}.rs")).exists()
                || examples.join(name).join("main.rs").exists(),
            "the README names {name}"
        );
    }
}

#[test]
fn the_quickstart_walks_through_a_change_and_prints_plain_generations() {
    let (ok, stdout, stderr) = run("quickstart", &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("reloaded at generation"), "{stdout}");
    assert!(stdout.contains("theme=dark"), "{stdout}");
    assert!(
        !stdout.contains("Some(") && !stdout.contains("Generation("),
        "debug output where numbers belong: {stdout}"
    );
}

#[test]
fn the_blocking_example_keeps_settings_current_with_no_runtime() {
    let (ok, stdout, stderr) = run("blocking", &[]);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("after a change: working with batch_size=500"),
        "{stdout}"
    );
}

#[test]
fn the_services_help_describes_the_service() {
    let (ok, stdout, _) = run("settings_server", &["--help"]);
    assert!(ok);
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("The gensync example service"), "{stdout}");
    assert!(
        !stdout.contains(env!("CARGO_PKG_DESCRIPTION")),
        "the crate's description, not the service's: {stdout}"
    );
}

/// A library user reads the README first: it must say that gensync logs
/// through tracing and how to see those lines (its Rust blocks compile as
/// doctests, so the line shown is one that builds).
#[test]
fn the_readme_says_how_to_see_the_logs() {
    let readme = include_str!("../../README.md");
    assert!(readme.contains("logs through [`tracing`]"));
    assert!(readme.contains("tracing_subscriber::fmt().with_env_filter(filter).init();"));
}
