//! What the service never shows (Redis passwords in any URL form, its own
//! internals to clients, the write token), and the write token's check.

use super::*;

/// Asserts none of `secrets` is in `text`.
fn assert_hidden(secrets: &[&str], text: &str, context: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{context}: {secret:?} shown in:\n{text}"
        );
    }
}

/// Redis URLs as people write them, a password with `#`, `?`, `/` or `@`
/// unescaped, or a scheme typo'd, each with the parts of its password
/// that must never be shown. Whatever the library makes of them (a
/// refusal at start-up, or a server it cannot reach), no part of the
/// password is shown on stdout, in the log at any level, or in an answer.
#[tokio::test]
async fn no_part_of_a_redis_password_is_shown_whatever_the_url_looks_like() {
    // Port 1 on loopback: refused at once, and (outside the ephemeral
    // range) never a port another test's process happens to bind.
    let port = 1;
    let corpus: Vec<(String, &[&str])> = vec![
        // Parses, as host `app` and port 123, the rest a fragment.
        (
            format!("redis://app:123#abcPW1x@127.0.0.1:{port}"),
            &["123#abc", "abcPW1x"],
        ),
        (
            format!("redis://app:6379/PW2xyz@127.0.0.1:{port}"),
            &["PW2xyz"],
        ),
        (format!("redis://:pa#PW3xyz@127.0.0.1:{port}"), &["PW3xyz"]),
        (format!("redis://:pa?PW4xyz@127.0.0.1:{port}"), &["PW4xyz"]),
        (format!("redis://u:pa/PW5xyz@127.0.0.1:{port}"), &["PW5xyz"]),
        (format!("redis:/:PW6xyz@127.0.0.1:{port}"), &["PW6xyz"]),
        (format!("redis:PW7xyz@127.0.0.1:{port}"), &["PW7xyz"]),
        (
            format!("redis://app:p@PW8xyz@127.0.0.1:{port}/0"),
            &["PW8xyz"],
        ),
        // The clean forms, which held: redacted, the rest shown.
        (
            format!("redis://app:PW9xyz@127.0.0.1:{port}/0"),
            &["PW9xyz"],
        ),
        (
            format!("redis://127.0.0.1:{port}/0?password=PW10xyz"),
            &["PW10xyz"],
        ),
        // Userinfo without a colon is a password in Redis URLs.
        (format!("redis://PW11xyz@127.0.0.1:{port}/0"), &["PW11xyz"]),
    ];
    let client = client();
    for (url, secrets) in &corpus {
        let dir = TempDir::new();
        let file = dir.settings();
        // Every log level, and the URL from the environment as a
        // deployment would give it.
        let envs = [("REDIS_URL", url.as_str()), ("RUST_LOG", "trace")];
        let args = ["--settings", path_str(&file), "--listen", "127.0.0.1:0"];
        let mut child = Reaped(command(&args, &envs).spawn().unwrap());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stdout, out_reader) = capture(child.stdout.take().unwrap(), Some(ready_tx));
        let (stderr, err_reader) = capture(child.stderr.take().unwrap(), None);
        let watchdog = Watchdog::arm(child.id());
        // Either it refuses the URL, or it serves: then ask it to write.
        if let Ok(address) = ready_rx.recv_timeout(DEADLINE) {
            let base = format!("http://{address}");
            let (status, body) = get(&client, format!("{base}/settings")).await;
            assert_eq!(status, StatusCode::OK, "{url}");
            assert_hidden(secrets, &body.to_string(), url);
            let (status, _, body) =
                put_as(&client, format!("{base}/settings"), None, r#"{"a": 1}"#).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{url}: {body}");
            assert_hidden(secrets, &body, url);
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        let status = child.wait().unwrap();
        watchdog.disarm();
        for reader in [out_reader, err_reader] {
            reader.join().unwrap();
        }
        assert!(
            status.success() || status.code() == Some(2),
            "{url}: {status}\n{}",
            stderr.text()
        );
        assert_hidden(secrets, &stdout.text(), &format!("{url} on stdout"));
        assert_hidden(secrets, &stderr.text(), &format!("{url} on stderr"));
    }
}

/// A Redis URL given where clap or the listener does not expect it is
/// shown redacted in the refusal, as is one whose password is a word of
/// the refusal's own text: password `e` leaves the messages whole.
#[test]
fn argument_errors_never_show_a_redis_password() {
    for args in [
        &["redis://:PW12xyz@127.0.0.1:1"][..],
        &["--listen", "redis://:PW12xyz@127.0.0.1:1"],
        &["--listen=redis://PW12xyz@127.0.0.1:1"],
        &["--mode", "redis://:PW12xyz@h"],
    ] {
        let out = command(args, &[]).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // 2 for clap's refusals, 1 for an address that does not resolve.
        assert!(matches!(out.status.code(), Some(1 | 2)), "{args:?}: {text}");
        assert_hidden(&["PW12xyz"], &text, &format!("{args:?}"));
        assert!(text.contains("***"), "{args:?}: {text}");
    }
}

/// The start-up line of a one-letter password keeps its words.
#[test]
fn a_short_password_does_not_garble_the_log() {
    let dir = TempDir::new();
    let file = dir.settings();
    let args = [
        "--settings",
        path_str(&file),
        "--listen",
        "127.0.0.1:0",
        "--redis",
        "redis://:e@127.0.0.1:1",
    ];
    let mut child = Reaped(command(&args, &[]).spawn().unwrap());
    let (ready_tx, ready_rx) = mpsc::channel();
    let (_stdout, out_reader) = capture(child.stdout.take().unwrap(), Some(ready_tx));
    let (stderr, err_reader) = capture(child.stderr.take().unwrap(), None);
    let watchdog = Watchdog::arm(child.id());
    if ready_rx.recv_timeout(DEADLINE).is_ok() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
    }
    child.wait().unwrap();
    watchdog.disarm();
    for reader in [out_reader, err_reader] {
        reader.join().unwrap();
    }
    let log = stderr.text();
    assert!(log.contains("redis://:***@127.0.0.1:1"), "{log}");
    assert!(!log.contains("***ction"), "{log}");
    assert!(!log.contains("r***fus"), "{log}");
}

/// A client that could not write is told what happened in its own terms;
/// the Redis host, port, user and refusal, and the file's path, go to the
/// log only, under the incident number the answer gives.
#[tokio::test]
async fn a_failed_put_tells_the_client_what_happened_without_internals() {
    let server = RedisServer::start_with_password("right-pw").unwrap();
    let port = server.port().to_string();
    let url = format!("redis://appuser:wrong-pw@127.0.0.1:{port}");
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    let client = client();
    let internals = [
        "127.0.0.1",
        port.as_str(),
        "appuser",
        "WRONGPASS",
        "password",
        "redis://",
        path_str(dir.0.path()),
    ];

    let (status, _, body) = put_as(&client, instance.url("/settings"), None, "{}").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_hidden(&internals, &body, "the answer to a PUT Redis refused");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["saved"], json!(false));
    let error = reply["error"].as_str().unwrap();
    assert!(error.contains("nothing was saved"), "{error}");
    assert!(error.contains("incident 1"), "{error}");
    // The operator finds the details in the log, by the incident number.
    assert!(
        instance.stderr.wait_for("incident=1", DEADLINE),
        "{}",
        instance.stderr.text()
    );
    let log = instance.stderr.text();
    let line = log.lines().find(|l| l.contains("incident=1")).unwrap();
    assert!(line.contains("appuser") && line.contains(&port), "{line}");
    drop(instance);

    // A file the service cannot write: its path stays in the log.
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    std::fs::remove_dir_all(dir.0.path()).unwrap();
    let (status, _, body) = put_as(&client, instance.url("/settings"), None, "{}").await;
    assert!(status.is_server_error(), "{status}: {body}");
    assert_hidden(&internals, &body, "the answer to a PUT the file refused");
    assert!(body.contains("nothing was saved"), "{body}");
    let stopped = instance.stop();
    assert!(
        stopped.stderr.contains(path_str(dir.0.path())),
        "{}",
        stopped.stderr
    );
}

const TOKEN: &str = "tok-9f2c41aa-S3cret";

/// Asserts the running instance's command line does not hold the token
/// (what `ps` shows).
fn assert_not_in_ps(instance: &Instance) {
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", instance.child.id()))
        .expect("read the instance's command line");
    assert_hidden(
        &[TOKEN],
        &String::from_utf8_lossy(&cmdline),
        "the command line",
    );
}

/// With a write token, a PUT without it, or with a wrong one, is refused
/// 401 and saves nothing; the token itself is never shown.
#[tokio::test]
async fn a_put_needs_the_write_token_from_the_environment() {
    let dir = TempDir::new();
    let file = dir.settings();
    // Every log level: no line shows an Authorization header either.
    let instance = Instance::start(
        &["--settings", path_str(&file)],
        &[("SETTINGS_WRITE_TOKEN", TOKEN), ("RUST_LOG", "trace")],
    );
    assert_not_in_ps(&instance);
    let client = client();
    let before = std::fs::read(&file).unwrap();
    let wrong = [
        None,
        Some("Bearer"),
        Some("Bearer wrong"),
        Some("Bearer tok-9f2c41aa-S3cre"),
        Some("Bearer tok-9f2c41aa-S3cret2"),
        Some("Basic dG9rLTlmMmM0MWFhLVMzY3JldA=="),
        Some(TOKEN),
    ];
    for authorization in wrong {
        let (status, headers, body) = put_as(
            &client,
            instance.url("/settings"),
            authorization,
            r#"{"theme": "hacked"}"#,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{authorization:?}: {body}"
        );
        assert!(
            headers["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{headers:?}"
        );
        assert!(body.contains("nothing was saved"), "{body}");
        assert_hidden(&[TOKEN], &body, "a 401");
        assert_eq!(std::fs::read(&file).unwrap(), before, "{authorization:?}");
    }
    let (status, _, body) = put_as(
        &client,
        instance.url("/settings"),
        Some(&format!("Bearer {TOKEN}")),
        r#"{"theme": "dark"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_json(&file), json!({"theme": "dark"}));
    // Reads need no token.
    let (status, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_hidden(&[TOKEN], &body.to_string(), "a GET");

    let stopped = instance.stop();
    assert_hidden(&[TOKEN], &stopped.stdout, "stdout");
    assert_hidden(&[TOKEN], &stopped.stderr, "stderr");
    assert!(
        !stopped.stderr.contains("NO WRITE TOKEN"),
        "{}",
        stopped.stderr
    );
}

/// The token from a file: its final newline ignored, never on the command
/// line, never shown.
#[tokio::test]
async fn a_put_needs_the_write_token_from_a_file() {
    let dir = TempDir::new();
    let file = dir.settings();
    let token_file = dir.0.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let instance = Instance::start(
        &[
            "--settings",
            path_str(&file),
            "--write-token-file",
            path_str(&token_file),
        ],
        &[],
    );
    assert_not_in_ps(&instance);
    let client = client();
    let (status, _, _) = put_as(&client, instance.url("/settings"), None, "{}").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, body) = put_as(
        &client,
        instance.url("/settings"),
        Some(&format!("Bearer {TOKEN}")),
        r#"{"from": "file"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_json(&file), json!({"from": "file"}));
    let stopped = instance.stop();
    assert_hidden(&[TOKEN], &stopped.stderr, "stderr");

    // A token file that cannot be read, or holds nothing: refused at
    // start-up, with nothing of its content shown.
    std::fs::write(&token_file, "\n").unwrap();
    for token_file in [token_file.clone(), dir.0.path().join("missing")] {
        let output = run_to_exit(
            &[
                "--settings",
                path_str(&file),
                "--listen",
                "127.0.0.1:0",
                "--write-token-file",
                path_str(&token_file),
            ],
            &[],
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("write token"), "{stderr}");
    }
}

/// Beyond loopback without a token, the service says loudly that anyone
/// can write; with one, or on loopback, it does not.
#[tokio::test]
async fn listening_beyond_loopback_without_a_token_is_warned_about() {
    let dir = TempDir::new();
    let file = dir.settings();
    let open = Instance::start(
        &["--settings", path_str(&file), "--listen", "0.0.0.0:0"],
        &[],
    );
    assert!(
        open.stderr.wait_for("NO WRITE TOKEN", DEADLINE),
        "{}",
        open.stderr.text()
    );
    let stopped = open.stop();
    let line = stopped
        .stderr
        .lines()
        .find(|l| l.contains("NO WRITE TOKEN"))
        .unwrap();
    assert!(line.contains("WARN"), "{line}");

    for (args, envs) in [
        (
            vec!["--settings", path_str(&file), "--listen", "0.0.0.0:0"],
            vec![("SETTINGS_WRITE_TOKEN", TOKEN)],
        ),
        (vec!["--settings", path_str(&file)], vec![]),
    ] {
        let stopped = Instance::start(&args, &envs).stop();
        assert!(
            !stopped.stderr.contains("NO WRITE TOKEN"),
            "{args:?}: {}",
            stopped.stderr
        );
    }
}
