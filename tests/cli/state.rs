//! `gensync sync`'s state file: its mode and owner kept, a read-only one
//! refused, a FIFO or an oversized one never read whole, and CMD run as
//! given, never through a shell. Each test starts its own redis-server.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::run::{gensync, run, tempdir, Run};
use gensync::testing::RedisServer;

const KEY: &str = "state:settings";

/// `gensync --url URL sync --state DIR/state KEY -- CMD...`, run in DIR.
fn sync(url: &str, dir: &Path, command: &[&str]) -> Run {
    run(gensync()
        .current_dir(dir)
        .args(["--url", url, "sync", "--state"])
        .arg(dir.join("state"))
        .args([KEY, "--"])
        .args(command))
}

/// Appends a line to `marker` in the current directory: one per run.
const MARK: &[&str] = &["sh", "-c", "echo x >> marker"];

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("marker"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_state_file_keeps_its_mode_and_owner() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let state = dir.path().join("state");
    std::fs::write(&state, "1\n").unwrap();
    set_mode(&state, 0o640);
    // Only root may give a file away; elsewhere the owner is ours anyway.
    let given = std::os::unix::fs::chown(&state, Some(4242), Some(4243)).is_ok();
    let before = std::fs::metadata(&state).unwrap();

    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 1);
    let after = std::fs::metadata(&state).unwrap();
    assert_ne!(after.ino(), before.ino(), "replaced, not written in place");
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
    if !given {
        eprintln!("not root: the owner part checked only that it stayed ours");
    }
}

#[test]
fn a_read_only_state_file_is_refused_before_the_command_runs() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let state = dir.path().join("state");
    std::fs::write(&state, "1\n").unwrap();
    set_mode(&state, 0o444);

    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("read-only (mode 0444)"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("chmod u+w"), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 0, "the command must not run");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "1\n");
    let mode = std::fs::metadata(&state).unwrap().mode();
    assert_eq!(mode & 0o7777, 0o444);
}

/// Runs `cmd` for at most `bound`, killing it after: a hang fails the test
/// instead of stalling it.
fn bounded(cmd: &mut std::process::Command, bound: Duration) -> Option<Run> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + bound;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Some(Run {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success());
}

#[test]
fn a_fifo_as_the_state_or_its_lock_is_refused_at_once() {
    let server = RedisServer::start().unwrap();
    for fifo in ["state", "state.lock"] {
        let dir = tempdir();
        mkfifo(&dir.path().join(fifo));
        let mut cmd = gensync();
        cmd.current_dir(dir.path())
            .args(["--url", &server.url(), "sync", "--state"])
            .arg(dir.path().join("state"))
            .args([KEY, "--"])
            .args(MARK);
        let out = bounded(&mut cmd, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("sync hung on a FIFO at {fifo}"));
        assert_eq!(out.code, Some(2), "{fifo}: {}", out.stderr);
        assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
        assert_eq!(runs(dir.path()), 0, "{fifo}: the command must not run");
    }
}

#[test]
fn an_oversized_state_file_is_not_read_past_the_bound_and_records_nothing() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    // A record that would match, padded far past what gensync writes: read
    // whole, it would say nothing changed.
    let first = sync(&server.url(), dir.path(), MARK);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let state = dir.path().join("state");
    let record = std::fs::read_to_string(&state).unwrap();
    let mut padded = record.trim_end().to_owned();
    padded.push_str(&" ".repeat(8 << 20));
    std::fs::write(&state, padded).unwrap();

    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("larger than 1024 bytes"),
        "{}",
        out.stderr
    );
    assert_eq!(runs(dir.path()), 2, "an oversized file records nothing");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), record);
}

#[test]
fn the_command_runs_as_given_never_through_a_shell() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let words = [
        "$(touch injected)",
        "; touch injected2",
        "`touch injected3`",
    ];
    let mut command = vec!["printf", "%s\\n"];
    command.extend(words);
    let out = sync(&server.url(), dir.path(), &command);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, format!("{}\n", words.join("\n")));
    for name in ["injected", "injected2", "injected3"] {
        assert!(!dir.path().join(name).exists(), "{name}");
    }
}

#[test]
fn a_symlinked_lock_file_is_refused_and_its_target_never_created() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    // A dangling link another user of a shared folder could leave.
    let target = dir.path().join("planted");
    std::os::unix::fs::symlink(&target, dir.path().join("state.lock")).unwrap();

    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("state.lock"), "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert!(
        std::fs::symlink_metadata(&target).is_err(),
        "the link's target was created"
    );
    assert_eq!(runs(dir.path()), 0, "the command must not run");
    assert!(!dir.path().join("state").exists());

    // A link to an existing file is not followed either.
    std::fs::write(&target, "kept\n").unwrap();
    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "kept\n");
    assert_eq!(runs(dir.path()), 0, "the command must not run");
}

/// A state file that is a symbolic link is written through: the file it
/// points at gets the record, and the link stays a link.
#[test]
fn a_symlinked_state_file_is_written_through() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    let real = kept.join("real-state");
    std::fs::write(&real, "").unwrap();
    std::os::unix::fs::symlink(&real, dir.path().join("state")).unwrap();

    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let link = std::fs::symlink_metadata(dir.path().join("state")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    let record = std::fs::read_to_string(&real).unwrap();
    assert!(!record.trim().is_empty(), "the target holds no record");
    // And it is read through: nothing changed, nothing runs.
    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 1);
}

/// `--url-file` naming a FIFO is refused at once instead of waiting for a
/// writer for good.
#[test]
fn a_fifo_as_the_url_file_is_refused_at_once() {
    let dir = tempdir();
    let fifo = dir.path().join("url");
    mkfifo(&fifo);
    let mut cmd = gensync();
    cmd.arg("--url-file").arg(&fifo).args(["get", KEY]);
    let out = bounded(&mut cmd, Duration::from_secs(10)).expect("gensync hung on a FIFO");
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("not a regular file"), "{}", out.stderr);
}
