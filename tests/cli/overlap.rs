//! `gensync sync` runs on one state file never overlap: a SIGTERM to
//! gensync reaches CMD and gensync holds the lock until CMD is gone, and
//! a lock file deleted during a run does not let a second run start. Each
//! test starts its own redis-server.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{gensync, tempdir};
use gensync::testing::RedisServer;

const KEY: &str = "overlap:settings";
const PATIENCE: Duration = Duration::from_secs(10);

/// Starts `gensync sync --state DIR/state KEY -- sh -c SCRIPT` in DIR.
fn spawn(url: &str, dir: &Path, flags: &[&str], script: &str) -> Child {
    gensync()
        .current_dir(dir)
        .args(["--url", url, "sync", "--state"])
        .arg(dir.join("state"))
        .args(flags)
        .args([KEY, "--", "sh", "-c", script])
        // Not pipes: an orphaned CMD (the bug) would hold them open.
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("stderr.{}", unique()))).unwrap())
        .spawn()
        .unwrap()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// Kills the command's process on drop, so a failing test leaves no
/// orphan behind.
struct KillOnDrop(String);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0])
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits until `path` exists: the command writes it to say it started.
fn await_file(path: &Path) {
    let deadline = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` at most [`PATIENCE`], killing it after: its exit
/// code.
fn bounded(mut child: Child) -> Option<i32> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("gensync did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// SIGTERM to gensync reaches CMD, which cleans up and exits; gensync
/// exits only after it (128+15), records nothing, and leaves no orphan.
#[test]
fn sigterm_is_passed_on_to_the_command_and_waited_for() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    // CMD says it started (with its pid), then runs until told to stop,
    // taking a moment to clean up on SIGTERM.
    let script = "trap 'sleep 0.3; echo cleaned > cleaned; exit 0' TERM; \
                  echo $$ > started.tmp; mv started.tmp started; \
                  while :; do sleep 0.05; done";
    let child = spawn(&server.url(), dir.path(), &[], script);
    let started = dir.path().join("started");
    await_file(&started);
    let cmd_pid = std::fs::read_to_string(&started).unwrap().trim().to_owned();
    let _reaper = KillOnDrop(cmd_pid.clone());
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(bounded(child), Some(128 + 15));
    assert!(
        dir.path().join("cleaned").exists(),
        "CMD never got the signal"
    );
    assert!(!alive(&cmd_pid), "CMD {cmd_pid} outlived gensync");
    assert!(!dir.path().join("state").exists(), "a stopped run recorded");
}

/// Deleting (or replacing) FILE.lock while a run holds it lets no second
/// run start beside it: the next run waits for it (or, with --no-wait,
/// exits 75), and once the first ends, the next has nothing to do.
#[test]
fn a_lock_file_deleted_during_a_run_lets_no_second_run_start() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    for replace in [false, true] {
        let dir = tempdir();
        let held = "echo x >> marker; echo > started; while [ ! -e go ]; do sleep 0.01; done";
        let first = spawn(&url, dir.path(), &[], held);
        // Lets the first run end whatever happens, so none outlives a failure.
        let _go = Go(dir.path().join("go"));
        await_file(&dir.path().join("started"));
        let lock = dir.path().join("state.lock");
        std::fs::remove_file(&lock).unwrap();
        if replace {
            std::fs::write(&lock, "").unwrap();
        }
        let mark = "echo x >> marker";
        let busy = spawn(&url, dir.path(), &["--no-wait"], mark);
        assert_eq!(bounded(busy), Some(75), "replace: {replace}");
        assert_eq!(runs(dir.path()), 1, "a second run started beside the first");
        std::fs::write(dir.path().join("go"), "").unwrap();
        assert_eq!(bounded(first), Some(0));
        let next = spawn(&url, dir.path(), &["--no-wait"], mark);
        assert_eq!(bounded(next), Some(0));
        assert_eq!(runs(dir.path()), 1, "nothing changed: nothing to run");
    }
}

/// Creates its file when dropped: the held command's signal to end.
struct Go(std::path::PathBuf);

impl Drop for Go {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, "");
    }
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("marker"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}
