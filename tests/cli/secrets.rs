//! The `gensync` command never shows a Redis password: not for URLs whose
//! unescaped password split them, not for typo'd schemes, not in clap's
//! usage errors, and not when the URL comes from a file. Each test that
//! needs Redis starts its own redis-server.

use std::time::{Duration, Instant};

use crate::run::{gensync, run, tempdir, Run};
use gensync::testing::RedisServer;

/// Every password in the corpus holds this.
const SECRET: &str = "LeakPW";

/// URLs as people write them with a password holding `#`, `?`, `/` or `@`
/// unescaped, or with a typo'd scheme. None may be shown or dialled.
const HIDDEN: &[&str] = &[
    "redis://default:8#kLeakPW9@127.0.0.1:6379",
    "redis://:8#kLeakPW9@127.0.0.1:6379",
    "redis://default:a?LeakPW@127.0.0.1:6379/0",
    "redis://default:a/LeakPW@127.0.0.1:6379",
    "redis://u:LeakPW#@127.0.0.1",
    "redis:/:LeakPW@127.0.0.1:6379",
    "redis:LeakPW@127.0.0.1:6379",
    "redis//:LeakPW@127.0.0.1:6379",
    "redis+unix:///tmp/gensync-none.sock?pass=a#LeakPW",
    "redis+unix:///tmp/gensync-none.sock?pass=a&LeakPW",
];

/// Of [`HIDDEN`], those a password split: refused with how to write it.
const SPLIT: &[&str] = &[
    "redis://default:8#kLeakPW9@127.0.0.1:6379",
    "redis://:8#kLeakPW9@127.0.0.1:6379",
    "redis://default:a?LeakPW@127.0.0.1:6379/0",
    "redis://default:a/LeakPW@127.0.0.1:6379",
    "redis://u:LeakPW#@127.0.0.1",
];

fn assert_secret_kept(out: &Run, what: &str) {
    assert!(!out.all().contains(SECRET), "{what}: {}", out.all());
    assert!(!out.all().contains("panicked"), "{what}: {}", out.all());
}

#[test]
fn a_corpus_of_malformed_urls_exits_2_and_never_shows_the_password() {
    let dir = tempdir();
    for url in HIDDEN {
        let file = dir.path().join("url");
        std::fs::write(&file, format!("{url}\n")).unwrap();
        for command in ["get", "break-lock"] {
            let started = Instant::now();
            let outs = [
                run(gensync().args(["--url", url, command, "a:b"])),
                run(gensync().args([command, "a:b"]).env("GENSYNC_URL", url)),
                run(gensync().args([command, "a:b"]).env("REDIS_URL", url)),
                run(gensync()
                    .arg("--url-file")
                    .arg(&file)
                    .args([command, "a:b"])),
            ];
            // Three runs refused before any lookup or dial.
            let took = started.elapsed();
            assert!(took < Duration::from_secs(4), "{url}: {took:?}");
            for out in outs {
                let what = format!("{command} with {url}");
                assert_eq!(out.code, Some(2), "{what}: {}", out.stderr);
                assert_eq!(out.stderr.lines().count(), 1, "{what}: {}", out.stderr);
                assert_secret_kept(&out, &what);
                if SPLIT.contains(url) {
                    assert!(out.stderr.contains("percent-encode"), "{}", out.stderr);
                }
            }
        }
    }
}

#[test]
fn a_url_given_where_a_subcommand_goes_is_redacted_in_the_usage_error() {
    for args in [
        &["redis://:TypoLeakPW@127.0.0.1:6379", "get", "a:b"][..],
        &["redis://default:8#kLeakPW9@127.0.0.1:6379", "get", "a:b"],
        &["get", "a:b", "redis://:LeakPW@127.0.0.1"],
        &[
            "--url",
            "redis://127.0.0.1:1",
            "redis:LeakPW@h",
            "get",
            "a:b",
        ],
        &["--ur=redis://:LeakPW@127.0.0.1", "get", "a:b"],
    ] {
        let out = run(gensync().args(args));
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("error:"), "{}", out.stderr);
        assert_secret_kept(&out, &format!("{args:?}"));
    }
    let out = run(gensync().args(["redis://:TypoLeakPW@127.0.0.1:6379", "get", "a:b"]));
    assert!(
        out.stderr.contains("redis://:***@127.0.0.1:6379"),
        "{}",
        out.stderr
    );
}

#[test]
fn url_and_url_file_together_are_refused_without_echoing_either() {
    let dir = tempdir();
    let file = dir.path().join("url");
    std::fs::write(&file, "redis://:FileLeakPW@127.0.0.1:1").unwrap();
    let out = run(gensync()
        .args(["--url", "redis://:LeakPW@127.0.0.1:1", "--url-file"])
        .arg(&file)
        .args(["get", "a:b"]));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);
    assert_secret_kept(&out, "both");
}

#[test]
fn the_url_can_come_from_a_file_and_a_bad_file_is_one_clear_line() {
    let server = RedisServer::start_with_password("file-LeakPW-1").unwrap();
    let dir = tempdir();
    let file = dir.path().join("url");
    let url = format!("redis://:file-LeakPW-1@127.0.0.1:{}", server.port());
    std::fs::write(&file, format!("  {url}\n")).unwrap();
    let bumped = run(gensync().arg("--url-file").arg(&file).args(["bump", "a:b"]));
    assert_eq!(bumped.code, Some(0), "{}", bumped.stderr);
    let got = run(gensync().arg("--url-file").arg(&file).args(["get", "a:b"]));
    assert_eq!(got.stdout, bumped.stdout);
    // It comes before the environment.
    let over_env = run(gensync()
        .arg("--url-file")
        .arg(&file)
        .args(["get", "a:b"])
        .env("GENSYNC_URL", "redis://127.0.0.1:1"));
    assert_eq!(over_env.stdout, bumped.stdout, "{}", over_env.stderr);

    let cases: [(&str, Vec<u8>); 4] = [
        ("is empty", b"\n  \n".to_vec()),
        ("more than the URL", format!("{url}\n{url}\n").into_bytes()),
        ("larger than 4096 bytes", vec![b'x'; 5000]),
        ("not UTF-8", b"redis://:\xffLeakPW@h".to_vec()),
    ];
    for (says, contents) in cases {
        std::fs::write(&file, contents).unwrap();
        let out = run(gensync().arg("--url-file").arg(&file).args(["get", "a:b"]));
        assert_eq!(out.code, Some(2), "{says}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("--url-file"), "{}", out.stderr);
        assert!(out.stderr.contains(says), "{says}: {}", out.stderr);
        assert_secret_kept(&out, says);
    }
    let missing = run(gensync()
        .arg("--url-file")
        .arg(dir.path().join("nope"))
        .args(["get", "a:b"]));
    assert_eq!(missing.code, Some(2));
    assert!(
        missing.stderr.contains("cannot read it"),
        "{}",
        missing.stderr
    );
}

#[test]
fn help_says_where_to_put_the_password_instead_of_the_command_line() {
    let help = run(gensync().arg("--help")).stdout;
    for needle in [
        "ps",
        "GENSYNC_URL",
        "REDIS_URL",
        "--url-file",
        "percent-encoded",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
}

#[test]
fn a_password_percent_encoded_as_advised_works_and_is_never_shown() {
    let server = RedisServer::start_with_password("8#k/LeakPW?9").unwrap();
    let port = server.port();
    let right = format!("redis://:8%23k%2FLeakPW%3F9@127.0.0.1:{port}");
    let out = run(gensync().args(["bump", "a:b"]).env("GENSYNC_URL", &right));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let wrong = format!("redis://:8%23k%2FWrongLeakPW%3F9@127.0.0.1:{port}");
    for command in ["get", "bump", "break-lock"] {
        let out = run(gensync().args([command, "a:b"]).env("GENSYNC_URL", &wrong));
        assert_eq!(out.code, Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("refused access"), "{}", out.stderr);
        assert!(
            out.stderr.contains("redis://:***@127.0.0.1"),
            "{}",
            out.stderr
        );
        assert_secret_kept(&out, command);
        assert!(!out.all().contains("%23k"), "{}", out.all());
    }
}

/// `redis://SECRET@host`: userinfo without a colon is a password in Redis
/// URLs, so it is hidden like one, in the refusal of a server that is down
/// and of one that wants another password.
#[test]
fn a_password_written_without_a_colon_is_never_shown() {
    let server = RedisServer::start_with_password("right-pw").unwrap();
    for url in [
        "redis://LeakPW@127.0.0.1:1".to_owned(),
        format!("redis://LeakPW@127.0.0.1:{}", server.port()),
    ] {
        for command in ["get", "bump"] {
            let out = run(gensync().args([command, "a:b"]).env("GENSYNC_URL", &url));
            assert_eq!(out.code, Some(2), "{url}: {}", out.stderr);
            assert!(
                out.stderr.contains("redis://***@127.0.0.1"),
                "{}",
                out.stderr
            );
            assert_secret_kept(&out, &url);
        }
    }
}

/// A URL given to `--url-file` by mistake is not echoed as the path.
#[test]
fn a_url_given_as_the_url_file_is_shown_redacted() {
    let out = run(gensync().args(["--url-file", "redis://:LeakPW@127.0.0.1:1", "get", "a:b"]));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--url-file"), "{}", out.stderr);
    assert!(out.stderr.contains("cannot read it"), "{}", out.stderr);
    assert_secret_kept(&out, "--url-file URL");
}

/// A short password is hidden where it stands, not as letters inside the
/// words of the message: password `e` leaves "Connection refused" whole.
#[test]
fn a_short_password_does_not_garble_the_message() {
    let server = RedisServer::start_with_password("right-pw").unwrap();
    let wrong = format!("redis://:e@127.0.0.1:{}", server.port());
    let out = run(gensync().args(["get", "a:b"]).env("GENSYNC_URL", &wrong));
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("refused access"), "{}", out.stderr);
    assert!(
        out.stderr.contains("redis://:***@127.0.0.1"),
        "{}",
        out.stderr
    );
    let down = run(gensync()
        .args(["get", "a:b"])
        .env("GENSYNC_URL", "redis://:e@127.0.0.1:1"));
    assert_eq!(down.code, Some(2), "{}", down.stderr);
    assert!(!down.stderr.contains("***ction"), "{}", down.stderr);
    assert!(
        down.stderr.contains("Connection refused") || down.stderr.contains("connection refused"),
        "{}",
        down.stderr
    );
}
