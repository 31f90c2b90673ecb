//! `gensync break-lock`, and keys no log line can be injected through.
//! Each test starts its own redis-server.

#![cfg(feature = "cli")]

mod cli_support;

use cli_support::{gensync, run};
use gensync::testing::RedisServer;

const KEY: &str = "keys:settings";
/// The writers' lease beside KEY, as Redis names it.
const LOCK: &str = "{gensync:keys:settings}:%lock";

fn raw<T: redis::FromRedisValue>(server: &RedisServer, cmd: &mut redis::Cmd) -> T {
    cmd.query(&mut server.connection().unwrap()).unwrap()
}

#[test]
fn break_lock_deletes_a_stuck_lease_and_says_which() {
    let server = RedisServer::start().unwrap();
    // A lease a foreign client holds for an hour: every write waits on it.
    raw::<()>(
        &server,
        redis::cmd("SET")
            .arg(LOCK)
            .arg("123")
            .arg("PX")
            .arg(3_600_000),
    );
    let url = server.url();
    let out = run(gensync().args(["--url", &url, "break-lock", KEY]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout
            .starts_with(&format!("broke the writers' lease {LOCK}")),
        "{}",
        out.stdout
    );
    assert_eq!(raw::<i64>(&server, redis::cmd("EXISTS").arg(LOCK)), 0);

    let again = run(gensync().args(["--url", &url, "break-lock", KEY]));
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(
        again.stdout,
        format!("no writers' lease at {LOCK}: nothing to break\n")
    );
}

#[test]
fn keys_with_control_characters_are_hashed_and_non_utf8_ones_refused() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let out = run(gensync().args(["--url", &url, "bump", "evil\ngensync: forged:x"]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // One note, on one line, naming the hashed key: nothing forged.
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("stored hashed"), "{}", out.stderr);
    assert!(!out.all().contains("forged"), "{}", out.all());

    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        let key = std::ffi::OsString::from_vec(b"a\xff\n:b".to_vec());
        let out = run(gensync().args(["--url", &url, "get"]).arg(key));
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("invalid UTF-8"), "{}", out.stderr);
    }
}
