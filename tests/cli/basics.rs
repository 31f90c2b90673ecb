//! The `gensync` command, run as a real process against a real
//! redis-server that each test starts for itself.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::{gensync, run, tempdir, Run, BIN};
use gensync::testing::RedisServer;

const KEY: &str = "cli:settings";
/// How KEY is stored in Redis.
const STORED_KEY: &str = "gensync:cli:settings";
/// Appends a line to `marker` in the current directory: one line per run.
const MARK: &str = "echo x >> marker";

/// Nothing on stdout, and one line on stderr holding every needle.
fn one_error_line(out: &Run, needles: &[&str]) {
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    for needle in needles {
        assert!(out.stderr.contains(needle), "{}", out.stderr);
    }
}

/// Runs `gensync --url URL ARGS...`.
fn with_url(url: &str, args: &[&str]) -> Run {
    run(gensync().arg("--url").arg(url).args(args))
}

/// The generation `gensync get` prints, which must succeed.
fn get(url: &str) -> u64 {
    let out = with_url(url, &["get", KEY]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout.trim().parse().expect("a decimal generation")
}

fn bump(url: &str) -> u64 {
    let out = with_url(url, &["bump", KEY]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.stdout.trim().parse().expect("a decimal generation")
}

/// A URL nothing listens on: connections are refused at once.
fn closed_url() -> String {
    format!("redis://127.0.0.1:{}", gensync::testing::closed_port())
}

fn raw_get(server: &RedisServer) -> Option<String> {
    redis::cmd("GET")
        .arg(STORED_KEY)
        .query(&mut server.connection().unwrap())
        .unwrap()
}

/// `gensync --url URL sync --state DIR/state KEY -- sh -c SCRIPT`, run in
/// DIR so the script can write `marker` there.
fn sync(url: &str, dir: &Path, script: &str) -> Run {
    run(&mut sync_cmd(url, dir, &["sh", "-c", script]))
}

fn sync_cmd(url: &str, dir: &Path, command: &[&str]) -> Command {
    let mut cmd = gensync();
    cmd.current_dir(dir)
        .args(["--url", url, "sync", "--state"])
        .arg(dir.join("state"))
        .args([KEY, "--"])
        .args(command);
    cmd
}

fn runs(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("marker"))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// The generation the state file records, as its own line (the file also
/// names the server it was read from).
fn state(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("state")).ok()?;
    let generation = text.split_whitespace().next().unwrap_or_default();
    Some(format!("{generation}\n"))
}

#[test]
fn bump_creates_then_increments_and_get_prints_it() {
    let server = RedisServer::start().unwrap();
    let url = server.url();

    // What the CLI prints is the number services show (the stored value
    // mixed with the server's identity); what is stored steps.
    let stored = || -> u64 { raw_get(&server).unwrap().parse().unwrap() };
    let first = bump(&url);
    let first_stored = stored();
    let second = bump(&url);
    assert_ne!(first, second);
    // A random step, so a bump after a rollback repeats no value.
    assert!(
        (1..=1 << 40).contains(&(stored() - first_stored)),
        "{first_stored} -> {}",
        stored()
    );

    let out = with_url(&url, &["get", KEY]);
    assert_eq!(out.code, Some(0));
    assert_eq!(out.stdout, format!("{second}\n"));
    assert_eq!(out.stderr, "");
}

#[test]
fn clear_deletes_the_key_and_get_then_exits_1() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    bump(&url);

    let out = with_url(&url, &["clear", KEY]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout,
        format!("cleared {STORED_KEY}: every process reloads on its next check\n")
    );
    assert_eq!(raw_get(&server), None);

    let out = with_url(&url, &["get", KEY]);
    assert_eq!(out.code, Some(1));
    one_error_line(&out, &[&format!("no generation at {STORED_KEY}")]);

    // Clearing a missing key is not an error, and says so.
    let out = with_url(&url, &["clear", KEY]);
    assert_eq!(out.code, Some(0));
    assert_eq!(
        out.stdout,
        format!("nothing to clear: there was no generation at {STORED_KEY}\n")
    );
}

#[test]
fn get_on_a_missing_key_exits_1_and_creates_nothing() {
    let server = RedisServer::start().unwrap();
    let out = with_url(&server.url(), &["get", KEY]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stdout, "");
    assert_eq!(raw_get(&server), None, "get is read-only");
}

#[test]
fn get_on_a_corrupt_value_exits_1_with_one_line() {
    let server = RedisServer::start().unwrap();
    redis::cmd("SET")
        .arg(STORED_KEY)
        .arg("garbage")
        .exec(&mut server.connection().unwrap())
        .unwrap();
    let out = with_url(&server.url(), &["get", KEY]);
    assert_eq!(out.code, Some(1));
    one_error_line(&out, &["not a generation"]);
}

#[test]
fn the_url_comes_from_the_flag_then_gensync_url_then_redis_url() {
    let server = RedisServer::start().unwrap();
    let good = server.url();
    let bad = closed_url();

    // --url wins over both variables.
    let out = run(gensync()
        .args(["--url", &good, "bump", KEY])
        .env("GENSYNC_URL", &bad)
        .env("REDIS_URL", &bad));
    assert_eq!(out.code, Some(0), "{}", out.stderr);

    // GENSYNC_URL wins over REDIS_URL, whichever of them is the good one.
    let out = run(gensync()
        .args(["bump", KEY])
        .env("GENSYNC_URL", &good)
        .env("REDIS_URL", &bad));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gensync()
        .args(["bump", KEY])
        .env("GENSYNC_URL", &bad)
        .env("REDIS_URL", &good));
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains(&bad), "{}", out.stderr);

    // REDIS_URL alone, and behind an empty GENSYNC_URL.
    let out = run(gensync().args(["bump", KEY]).env("REDIS_URL", &good));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gensync()
        .args(["bump", KEY])
        .env("GENSYNC_URL", "")
        .env("REDIS_URL", &good));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
}

#[test]
fn no_url_at_all_exits_2_with_one_line_saying_how_to_give_one() {
    for args in [&["get", KEY][..], &["bump", KEY], &["clear", KEY]] {
        let out = run(gensync().args(args));
        assert_eq!(out.code, Some(2), "{args:?}");
        one_error_line(&out, &["--url", "GENSYNC_URL", "REDIS_URL"]);
    }
}

#[test]
fn a_bad_url_exits_2_without_showing_the_password() {
    let url = "http://user:s3cret-pw@host:6379";
    let by_flag = with_url(url, &["bump", KEY]);
    let by_env = run(gensync().args(["get", KEY]).env("GENSYNC_URL", url));
    for out in [by_flag, by_env] {
        assert_eq!(out.code, Some(2));
        assert!(
            out.stderr.contains("unsupported Redis URL"),
            "{}",
            out.stderr
        );
        assert!(!out.all().contains("s3cret"), "{}", out.all());
    }
}

#[test]
fn an_unreachable_server_exits_2_fast_with_a_clear_line() {
    let url = closed_url();
    for command in ["get", "bump", "clear"] {
        let started = Instant::now();
        let out = with_url(&url, &[command, KEY]);
        let took = started.elapsed();
        assert_eq!(out.code, Some(2), "{command}: {}", out.stderr);
        one_error_line(&out, &[&format!("could not reach Redis at {url}")]);
        assert!(took < Duration::from_secs(2), "{command} took {took:?}");
    }
}

#[test]
fn a_wrong_password_exits_2_and_no_password_appears_anywhere() {
    let server = RedisServer::start_with_password("right-pw-1234").unwrap();
    let url = format!("redis://:wrong-pw-5678@127.0.0.1:{}", server.port());
    let dir = tempdir();
    let mut outputs = Vec::new();
    for command in ["get", "bump", "clear"] {
        let out = with_url(&url, &[command, KEY]);
        assert_eq!(out.code, Some(2), "{command}: {}", out.stderr);
        assert!(out.stderr.contains("refused access"), "{}", out.stderr);
        assert!(
            out.stderr.contains("redis://:***@127.0.0.1"),
            "{}",
            out.stderr
        );
        outputs.push(out.all());
    }
    // A refused password is no outage: sync runs nothing, and says why.
    let out = sync(&url, dir.path(), MARK);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 0);
    assert!(out.stderr.contains("refused access"), "{}", out.stderr);
    outputs.push(out.all());
    // Neither is `--help`, with the URL in the environment.
    outputs.push(run(gensync().arg("--help").env("GENSYNC_URL", &url)).all());

    let text = outputs.concat();
    assert!(!text.contains("wrong-pw"), "{text}");
    assert!(!text.contains("right-pw"), "{text}");
}

#[test]
fn an_invalid_key_exits_2_with_the_key_error() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    for args in [
        &["get", " : "][..],
        &["bump", " : "],
        &["clear", ""],
        &["sync", "--state", "state", "::", "--", "true"],
    ] {
        let out = run(gensync()
            .current_dir(dir.path())
            .args(["--url", &server.url()])
            .args(args));
        assert_eq!(out.code, Some(2), "{args:?}");
        assert!(out.stderr.contains("the key is empty"), "{}", out.stderr);
    }
    assert_eq!(raw_get(&server), None);
    assert_eq!(state(dir.path()), None);
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["get"],
        &["sync", KEY, "--", "true"],
        // No command, with or without the `--`.
        &["sync", "--state", "f", KEY],
        &["sync", "--state", "f", KEY, "--"],
    ] {
        let out = run(gensync().args(["--url", "redis://127.0.0.1:1"]).args(args));
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn sync_runs_the_command_first_and_records_the_generation() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();

    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(runs(dir.path()), 1);
    // The missing key was created, and the file holds its value and the
    // server's run_id.
    let shared = get(&server.url());
    assert_eq!(state(dir.path()), Some(format!("{shared}\n")));
    let run_id = gensync::testing::server_identity(&server).expect("a run_id");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state")).unwrap(),
        format!("{shared} {run_id}\n")
    );
    // The atomic write leaves no temporary file behind; beside the state,
    // the lock runs on it take turns with.
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["marker", "state", "state.lock"]);
}

#[test]
fn sync_does_not_run_the_command_again_while_the_generation_is_unchanged() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    let recorded = state(dir.path());

    for _ in 0..3 {
        let out = sync(&server.url(), dir.path(), MARK);
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(out.stdout, "");
        assert_eq!(out.stderr, "");
    }
    assert_eq!(runs(dir.path()), 1);
    assert_eq!(state(dir.path()), recorded);
}

#[test]
fn sync_runs_the_command_again_after_a_bump() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));

    let bumped = bump(&server.url());
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    assert_eq!(runs(dir.path()), 2);
    assert_eq!(state(dir.path()), Some(format!("{bumped}\n")));

    // And again after a clear, which re-creates the key.
    assert_eq!(with_url(&server.url(), &["clear", KEY]).code, Some(0));
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    assert_eq!(runs(dir.path()), 3);
    assert_eq!(state(dir.path()), Some(format!("{}\n", get(&server.url()))));
}

#[test]
fn a_failing_command_passes_on_its_exit_code_and_leaves_the_state_file() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    let before = state(dir.path());
    bump(&server.url());

    let out = sync(&server.url(), dir.path(), "exit 7");
    assert_eq!(out.code, Some(7));
    assert_eq!(state(dir.path()), before);

    // Still expired: the next sync runs the command.
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    assert_eq!(runs(dir.path()), 2);
}

#[test]
fn a_failing_first_run_creates_no_state_file() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    assert_eq!(sync(&server.url(), dir.path(), "exit 3").code, Some(3));
    assert_eq!(state(dir.path()), None);
}

#[cfg(unix)]
#[test]
fn a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let out = sync(&server.url(), dir.path(), "kill -TERM $$");
    assert_eq!(out.code, Some(128 + 15));
    assert_eq!(state(dir.path()), None);
}

#[test]
fn a_command_that_cannot_be_found_exits_127() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let out = run(&mut sync_cmd(
        &server.url(),
        dir.path(),
        &["gensync-no-such-command-here", "arg"],
    ));
    assert_eq!(out.code, Some(127));
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("gensync-no-such-command-here"),
        "{}",
        out.stderr
    );
    assert_eq!(state(dir.path()), None);
}

#[test]
fn a_server_that_is_down_still_runs_the_command_and_records_nothing() {
    let mut server = RedisServer::start().unwrap();
    let url = server.url();
    let dir = tempdir();
    assert_eq!(sync(&url, dir.path(), MARK).code, Some(0));
    let before = state(dir.path());
    assert!(before.is_some());
    server.kill();

    let out = sync(&url, dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 2);
    assert_eq!(state(dir.path()), before);
    assert!(
        out.stderr.contains("could not reach Redis at"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("as it was"), "{}", out.stderr);
}

#[test]
fn a_bump_while_the_command_runs_makes_the_next_sync_run_it_again() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let before = bump(&server.url());

    // The command itself bumps, as a writer elsewhere might mid-reload.
    let script = format!("{MARK} && \"$GENSYNC\" bump {KEY} >/dev/null");
    let out = run(sync_cmd(&server.url(), dir.path(), &["sh", "-c", &script])
        .env("GENSYNC", BIN)
        .env("GENSYNC_URL", server.url()));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let after = get(&server.url());
    assert_ne!(after, before);
    // The fence: the file holds what was seen before the command ran.
    assert_eq!(state(dir.path()), Some(format!("{before}\n")));

    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    assert_eq!(runs(dir.path()), 2, "the bump during the run was not lost");
    assert_eq!(state(dir.path()), Some(format!("{after}\n")));
}

#[test]
fn an_unparsable_state_file_runs_the_command_and_is_replaced() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let shared = bump(&server.url());
    for junk in ["", "not a number\n", "0\n"] {
        std::fs::write(dir.path().join("state"), junk).unwrap();
        assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
        assert_eq!(state(dir.path()), Some(format!("{shared}\n")));
    }
    assert_eq!(runs(dir.path()), 3);
}

#[test]
fn a_state_file_that_cannot_be_read_exits_2_without_running_the_command() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(2));
    assert!(
        out.stderr.contains("cannot read the state file"),
        "{}",
        out.stderr
    );
    assert_eq!(runs(dir.path()), 0);
}

#[test]
fn the_command_inherits_stdin_and_stdout() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let mut child = sync_cmd(&server.url(), dir.path(), &["cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello from stdin\n")
        .unwrap();
    let out = Run::from(child.wait_with_output().unwrap());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hello from stdin\n");
}

/// Redis restarts from a snapshot that holds the recorded generation, after
/// a bump it took and lost: the value matches, but it comes from another
/// server, so the command runs.
#[test]
fn sync_runs_again_after_a_restart_from_an_older_snapshot() {
    let mut server = RedisServer::start().unwrap();
    let dir = tempdir();
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    assert_eq!(runs(dir.path()), 1);
    let _: () = redis::cmd("SAVE")
        .query(&mut server.connection().unwrap())
        .unwrap();
    bump(&server.url());
    server.restart().unwrap();

    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        runs(dir.path()),
        2,
        "the command ran for the restarted server"
    );
    assert_eq!(sync(&server.url(), dir.path(), MARK).code, Some(0));
    assert_eq!(runs(dir.path()), 2, "and then not again");
}

/// What `sync` says when it cannot tell which server answered.
const BLIND: &str = "cannot tell whether Redis restarted from an older snapshot";

/// A Redis user that may run everything but `INFO`.
const NO_INFO: [&str; 8] = [
    "--user", "noinfo", "on", ">pw", "~*", "&*", "+@all", "-info",
];

/// Without `+info` nothing names the server, so a restart from an older
/// snapshot that brings back the recorded generation looks current: `sync`
/// says so at every run, whether CMD runs or not, and still works. The
/// restore here goes unseen (the documented cost of a user without
/// `+info`); with `+info`, the same restore runs CMD
/// (`sync_runs_again_after_a_restart_from_an_older_snapshot`), and nothing
/// is said.
#[test]
fn sync_without_info_says_at_every_run_that_it_cannot_tell_a_restore() {
    let mut server = RedisServer::start_with_args(NO_INFO).unwrap();
    let url = format!("redis://noinfo:pw@127.0.0.1:{}", server.port());
    let dir = tempdir();
    let warned = |out: &Run, what: &str| {
        assert_eq!(out.code, Some(0), "{what}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{what}: {}", out.stderr);
        assert!(out.stderr.contains(BLIND), "{what}: {}", out.stderr);
        assert!(out.stderr.contains("+info"), "{what}: {}", out.stderr);
        assert!(out.stderr.contains("state"), "{what}: {}", out.stderr);
        assert!(!out.stderr.contains("pw@"), "{what}: {}", out.stderr);
    };

    warned(&sync(&url, dir.path(), MARK), "first run");
    assert_eq!(runs(dir.path()), 1);
    warned(&sync(&url, dir.path(), MARK), "no change");
    assert_eq!(runs(dir.path()), 1);

    let _: () = redis::cmd("SAVE")
        .query(&mut server.connection().unwrap())
        .unwrap();
    bump(&server.url());
    warned(&sync(&url, dir.path(), MARK), "after a bump");
    assert_eq!(runs(dir.path()), 2);
    // Back to the snapshot, which holds the generation the first run
    // recorded; the state file holds the bumped one.
    server.restart().unwrap();
    warned(&sync(&url, dir.path(), MARK), "after the restore");
    assert_eq!(
        runs(dir.path()),
        3,
        "the restored value differs from the state"
    );
    // Now the state and the restored server agree...
    let _: () = redis::cmd("SAVE")
        .query(&mut server.connection().unwrap())
        .unwrap();
    bump(&server.url());
    server.restart().unwrap();
    // ...and a bump lost in a restart from that snapshot goes unseen.
    warned(&sync(&url, dir.path(), MARK), "after a lost bump");
    assert_eq!(
        runs(dir.path()),
        3,
        "a restore sync cannot see, as it warned"
    );

    // The default user may run INFO: no warning.
    let out = sync(&server.url(), dir.path(), MARK);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stderr, "");
}

#[test]
fn a_url_with_surrounding_whitespace_works_from_the_flag_and_the_environment() {
    let server = RedisServer::start().unwrap();
    let padded = format!("  {}  ", server.url());
    let out = with_url(&padded, &["bump", KEY]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = run(gensync().env("REDIS_URL", &padded).args(["get", KEY]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Whitespace alone is no URL, and the message says which was empty.
    let out = with_url("   ", &["get", KEY]);
    assert_eq!(out.code, Some(2));
    one_error_line(&out, &["--url is empty"]);
}

#[test]
fn a_key_given_with_the_namespace_is_pointed_out() {
    let server = RedisServer::start().unwrap();
    let out = with_url(&server.url(), &["get", STORED_KEY]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("already starts with the namespace")
            && out.stderr.contains(&format!("give {KEY}")),
        "{}",
        out.stderr
    );
    let help = run(gensync().arg("--help"));
    assert!(
        help.stdout.contains("stored as gensync:site:settings"),
        "{}",
        help.stdout
    );
}

#[test]
fn a_key_stored_hashed_says_so() {
    let server = RedisServer::start().unwrap();
    let out = with_url(&server.url(), &["bump", "my site:settings"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("stored hashed, as gensync:%sha256:"),
        "{}",
        out.stderr
    );
}

/// A cron job with a broken URL must be able to fail instead of looking
/// healthy forever.
#[test]
fn sync_strict_exits_2_and_runs_nothing_when_redis_cannot_be_read() {
    let dir = tempdir();
    let out = sync_with(&closed_url(), dir.path(), &["--strict"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 0);
    assert!(
        out.stderr.contains("not running the command (--strict)"),
        "{}",
        out.stderr
    );
    // Without it, the command runs (a broken cache server must not freeze
    // the host), and says --strict would not.
    let out = sync_with(&closed_url(), dir.path(), &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 1);
    assert!(out.stderr.contains("--strict would not"), "{}", out.stderr);
}

/// A state that cannot be written is found before the command runs, and
/// named as the user gave it.
#[test]
fn a_state_folder_that_does_not_exist_is_refused_before_running_anything() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    let state = dir.path().join("nodir").join("state");
    let out = run(gensync()
        .current_dir(dir.path())
        .args(["--url", &server.url(), "sync", "--state"])
        .arg(&state)
        .args([KEY, "--", "sh", "-c", MARK]));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert_eq!(runs(dir.path()), 0, "nothing ran");
    let given = state.display().to_string();
    assert!(out.stderr.contains(&given), "{}", out.stderr);
    assert!(!out.stderr.contains(".tmp"), "{}", out.stderr);
}

/// Two runs on one state (a slow run and the next cron tick): the second
/// waits for the first and then has nothing to do, or, with --no-wait,
/// leaves at once with 75.
#[test]
fn overlapping_syncs_on_one_state_take_turns() {
    let server = RedisServer::start().unwrap();
    let dir = tempdir();
    // The command marks that it started, then holds until the test says.
    let held = "echo x >> marker; while [ ! -e go ]; do sleep 0.01; done";
    let spawn = |script: &str| {
        sync_cmd(&server.url(), dir.path(), &["sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let first = spawn(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while runs(dir.path()) == 0 {
        assert!(Instant::now() < deadline, "the first run never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The first run holds the lock while its command runs.
    let busy = sync_with(&server.url(), dir.path(), &["--no-wait"]);
    assert_eq!(busy.code, Some(75), "{}", busy.stderr);
    assert!(
        busy.stderr.contains("another sync holds"),
        "{}",
        busy.stderr
    );
    let second = spawn(held);
    std::fs::write(dir.path().join("go"), "").unwrap();
    assert_eq!(Run::from(first.wait_with_output().unwrap()).code, Some(0));
    let second = Run::from(second.wait_with_output().unwrap());
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(
        runs(dir.path()),
        1,
        "the second waited, then had nothing to do"
    );
}

fn sync_with(url: &str, dir: &Path, flags: &[&str]) -> Run {
    let mut cmd = gensync();
    cmd.current_dir(dir)
        .args(["--url", url, "sync", "--state"])
        .arg(dir.join("state"))
        .args(flags)
        .args([KEY, "--", "sh", "-c", MARK]);
    run(&mut cmd)
}

/// A bump by the operator command reaches a reloader in push mode, with no
/// request made: it reloads on the push alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_by_the_cli_reaches_a_push_reloader() {
    use gensync::reload::{CheckMode, Reloader};
    use gensync::{Key, RedisBackend, Synchronizer};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let server = RedisServer::start().unwrap();
    let url = server.url();
    let db = Arc::new(AtomicU64::new(1));
    let source = Arc::clone(&db);
    let backend = RedisBackend::open(&url).unwrap();
    let reloader = Reloader::builder(
        Synchronizer::new(backend, Key::parse(KEY).unwrap()),
        move || {
            let v = source.load(Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(v) }
        },
    )
    .mode(CheckMode::Push)
    .build(0)
    .unwrap();
    assert_eq!(*reloader.check().await, 1);
    let tracker = reloader.synchronizer().track().unwrap();
    let patience = std::time::Duration::from_secs(10);
    // Armed and vouching: tracking has read the generation just recorded.
    tokio::time::timeout(patience, async {
        loop {
            let changed = tracker.changed();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if reloader.synchronizer().vouched().is_some() {
                return;
            }
            changed.await;
        }
    })
    .await
    .expect("tracking armed");
    db.store(2, Ordering::SeqCst);
    let mut settings = reloader.subscribe();
    let url2 = url.clone();
    tokio::task::spawn_blocking(move || bump(&url2))
        .await
        .unwrap();
    tokio::time::timeout(patience, settings.wait_for(|s| **s == 2))
        .await
        .expect("the CLI's bump was pushed")
        .unwrap();
}

/// Refused credentials and an ACL denial are a configuration error, not
/// an outage: `sync` exits 2 and runs nothing, with or without --strict.
#[test]
fn sync_with_refused_credentials_exits_2_without_running_the_command() {
    let server = RedisServer::start_with_password("right-pw").unwrap();
    let port = server.port();
    // A user the ACL lets log in and run nothing.
    let _: () = redis::cmd("ACL")
        .arg(&["SETUSER", "idle", "on", ">idle-pw", "~*", "-@all"])
        .query(&mut server.connection().unwrap())
        .unwrap();
    for url in [
        format!("redis://:wrong-pw@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
        format!("redis://idle:idle-pw@127.0.0.1:{port}"),
    ] {
        let dir = tempdir();
        let out = sync(&url, dir.path(), MARK);
        assert_eq!(out.code, Some(2), "{url}: {}", out.stderr);
        assert_eq!(runs(dir.path()), 0, "{url}: the command ran");
        assert!(
            out.stderr.contains("not running the command"),
            "{}",
            out.stderr
        );
        assert_eq!(state(dir.path()), None);
    }
}
