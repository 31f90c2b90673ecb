//! `gensync break-lock`, and keys no log line can be injected through.
//! Each test starts its own redis-server.

#![cfg(feature = "keyed")]

use crate::run::{gensync, run};
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

#[test]
fn a_members_key_is_got_bumped_and_cleared_and_its_set_key_is_the_parent() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let server = RedisServer::start().unwrap();
    let url = server.url();
    let cli = |args: &[&str]| {
        let out = run(gensync().args(["--url", &url]).args(args));
        (out.code, out.stdout.trim().to_owned(), out.stderr)
    };
    let (code, bumped, err) = cli(&["bump", "tenants", "--member", "acme"]);
    assert_eq!(code, Some(0), "{err}");
    // Stored at the member's key; what is printed is the number shown for
    // it (mixed with the server's identity and the set's generation).
    let stored: String = raw(&server, redis::cmd("GET").arg("{gensync:tenants}:@acme"));
    assert!(stored.parse::<gensync::Generation>().is_ok(), "{stored}");
    assert_eq!(cli(&["get", "tenants", "--member", "acme"]).1, bumped);

    // A keyed reloader of the set `tenants` follows both bumps.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let loads = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&loads);
        let tenants = gensync::keyed::KeyedReloader::builder(
            gensync::RedisBackend::open(&url).unwrap(),
            gensync::Key::parse("tenants").unwrap(),
            |id: &String| id.clone(),
            move |_id: String| {
                let n = counted.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, std::convert::Infallible>(n) }
            },
        )
        .build()
        .unwrap();
        let acme = "acme".to_owned();
        assert_eq!(*tenants.check(&acme).await.unwrap(), 0);
        assert_eq!(cli(&["bump", "tenants", "--member", "acme"]).0, Some(0));
        assert_eq!(*tenants.check(&acme).await.unwrap(), 1, "the member bump");
        assert_eq!(cli(&["bump", "tenants"]).0, Some(0));
        assert_eq!(*tenants.check(&acme).await.unwrap(), 2, "the parent bump");
        assert_eq!(*tenants.check(&acme).await.unwrap(), 2, "once");
    });

    let (code, said, err) = cli(&["clear", "tenants", "--member", "acme"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(said.contains("{gensync:tenants}:@acme"), "{said}");
    assert_eq!(
        raw::<i64>(&server, redis::cmd("EXISTS").arg("{gensync:tenants}:@acme")),
        0
    );
    let (code, _, err) = cli(&["get", "tenants", "--member", " "]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--member"), "{err}");
}

/// `bump --member ID` on a member with no generation (a typo'd ID) says
/// the member did not exist; a bump of an existing member says nothing.
#[test]
fn bumping_a_member_that_did_not_exist_says_so() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let bump = |id: &str| run(gensync().args(["--url", &url, "--member", id, "bump", "tenants"]));
    let first = bump("acme");
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    assert!(
        first.stderr.contains("\"acme\" did not exist"),
        "{}",
        first.stderr
    );
    let again = bump("acme");
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(again.stderr, "", "an existing member");
    let typo = bump("acmee");
    assert_eq!(typo.code, Some(0), "{}", typo.stderr);
    assert_eq!(typo.stderr.lines().count(), 1, "{}", typo.stderr);
    assert!(
        typo.stderr.contains("\"acmee\" did not exist"),
        "{}",
        typo.stderr
    );
    assert!(typo.stderr.contains("check the ID"), "{}", typo.stderr);
    // Without --member, a new key is no typo of a member: nothing said.
    let plain = run(gensync().args(["--url", &url, "bump", "fresh"]));
    assert_eq!(plain.stderr, "");

    // The set's generation gone (lapsed, flushed), the member still there:
    // `get` says so, and a bump of the member is no new member.
    raw::<i64>(&server, redis::cmd("DEL").arg("gensync:tenants"));
    let get = run(gensync().args(["--url", &url, "--member", "acme", "get", "tenants"]));
    assert_eq!(get.code, Some(1), "{}", get.stderr);
    assert!(
        get.stderr.contains("exists, but its set has no generation"),
        "{}",
        get.stderr
    );
    let lapsed = bump("acme");
    assert_eq!(lapsed.code, Some(0), "{}", lapsed.stderr);
    assert_eq!(lapsed.stderr, "", "an existing member whose set lapsed");
}
