//! The write token's limits (one `Authorization` header, a token long
//! enough to be secret, a budget of wrong guesses per client) and the
//! request limits as the README states them (the head's bound to the
//! byte, a body announced too large refused at once, a file limit too low
//! for connections, a JSON key sent twice).

use std::io::Write;

use super::connections::{connect, read_head};
use super::*;

/// 16 bytes and more: long enough to be taken.
const TOKEN: &str = "limits-token-0123456789";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A write token shorter than 16 bytes is refused at start-up, from the
/// environment or a file, saying how long it must be and without quoting
/// it; 16 bytes are taken.
#[tokio::test]
async fn a_write_token_too_short_to_be_secret_is_refused_at_start_up() {
    let dir = TempDir::new();
    let file = dir.settings();
    let short = "fifteen-bytes-x";
    let token_file = dir.0.path().join("token");
    std::fs::write(&token_file, format!("{short}\n")).unwrap();
    let from_env = run_to_exit(
        &["--settings", path_str(&file), "--listen", "127.0.0.1:0"],
        &[("SETTINGS_WRITE_TOKEN", short)],
    );
    let from_file = run_to_exit(
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
    for output in [from_env, from_file] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("too short"), "{stderr}");
        assert!(stderr.contains("at least 16"), "{stderr}");
        assert!(!stderr.contains(short), "{stderr}");
    }
    assert!(
        !file.exists(),
        "a refused start-up created the settings file"
    );

    let instance = Instance::start(
        &["--settings", path_str(&file)],
        &[("SETTINGS_WRITE_TOKEN", "sixteen-bytes-xx")],
    );
    let (status, _, body) = put_as(
        &client(),
        instance.url("/settings"),
        Some("Bearer sixteen-bytes-xx"),
        r#"{"ok": true}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Two `Authorization` headers are a 400 whichever comes first, and save
/// nothing, on the settings and on a tenant.
#[tokio::test]
async fn two_authorization_headers_are_a_400_that_saves_nothing() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(
        &["--settings", path_str(&file)],
        &[("SETTINGS_WRITE_TOKEN", TOKEN)],
    );
    let before = std::fs::read(&file).unwrap();
    let client = client();
    let right = bearer(TOKEN);
    for path in ["/settings", "/tenants/acme/settings"] {
        for pair in [[right.as_str(), "Bearer wrong"], ["Bearer wrong", &right]] {
            let response = client
                .put(instance.url(path))
                .header("content-type", "application/json")
                .header("authorization", pair[0])
                .header("authorization", pair[1])
                .body(r#"{"theme": "hijacked"}"#)
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {pair:?}: {body}");
            assert!(body.contains("one `Authorization"), "{body}");
            assert!(body.contains("nothing was saved"), "{body}");
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(dir.names(), ["settings.json"]);
}

/// A client gets 10 wrong tokens; the 11th try is a 429 with
/// `Retry-After`, the right token included (the token is not compared),
/// while another client is served.
#[tokio::test]
async fn wrong_tokens_from_one_client_are_limited_with_429_and_retry_after() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(
        &["--settings", path_str(&file)],
        &[("SETTINGS_WRITE_TOKEN", TOKEN)],
    );
    let before = std::fs::read(&file).unwrap();
    let client = client();
    let url = instance.url("/settings");
    for guess in 0..10 {
        let (status, _, body) = put_as(
            &client,
            url.clone(),
            Some(&format!("Bearer guess-{guess}")),
            "{}",
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "guess {guess}: {body}");
    }
    for authorization in ["Bearer guess-10".to_owned(), bearer(TOKEN)] {
        let (status, headers, body) = put_as(
            &client,
            url.clone(),
            Some(&authorization),
            r#"{"theme": "x"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=6).contains(&wait), "Retry-After: {wait}");
        assert!(body.contains("nothing was saved"), "{body}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // Another address (loopback is all of 127/8) has its own budget.
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (status, _, body) = put_as(&other, url, Some(&bearer(TOKEN)), r#"{"from": "other"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_json(&file), json!({"from": "other"}));
}

/// A GET whose head (request line, headers and the blank line) takes
/// exactly `size` bytes.
fn head_of(size: usize) -> Vec<u8> {
    let mut head = b"GET /settings HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    head.resize(size - 4, b'p');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// The README's 128 KiB, to the byte: a head of exactly 131072 bytes is
/// served, one of 131073 (or 150 KiB, under the old read buffer's reach)
/// is a 431.
#[tokio::test]
async fn a_head_of_exactly_128_kib_is_served_and_one_byte_more_is_431() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    for (size, expected) in [
        (128 * 1024, "HTTP/1.1 200"),
        (128 * 1024 + 1, "HTTP/1.1 431"),
        (150 * 1024, "HTTP/1.1 431"),
    ] {
        let mut stream = connect(&instance);
        stream.write_all(&head_of(size)).unwrap();
        let answer = read_head(&mut stream, Duration::from_secs(10));
        assert!(answer.starts_with(expected), "{size} bytes: {answer}");
    }
}

/// A body announced over 2 MiB is a 413 as soon as the head arrives, not
/// a 408 once the body timeout passes; nothing is saved.
#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_at_once() {
    let dir = TempDir::new();
    let file = dir.settings();
    // A body timeout far beyond the read below: a 413 that waited for the
    // body would not arrive within it.
    let instance = Instance::start(
        &["--settings", path_str(&file), "--body-timeout", "60s"],
        &[],
    );
    let before = std::fs::read(&file).unwrap();
    for length in ["99999999999", "2097153"] {
        let mut stream = connect(&instance);
        stream
            .write_all(
                format!(
                    "PUT /settings HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
                     content-length: {length}\r\n\r\n"
                )
                .as_bytes(),
            )
            .unwrap();
        let answer = read_head(&mut stream, Duration::from_secs(10));
        assert!(answer.starts_with("HTTP/1.1 413"), "{length}: {answer}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// Runs the example after a shell `setup` until it exits on its own.
fn run_after_to_exit(setup: &str, args: &[&str]) -> std::process::Output {
    let child = wrapped_command(Some(setup), args, &[])
        .spawn()
        .expect("start settings_server");
    let watchdog = Watchdog::arm(child.id());
    let output = child.wait_with_output().expect("wait for settings_server");
    watchdog.disarm();
    output
}

/// Under `ulimit -n 32` no room is left for connections: the service
/// refuses to start, saying which limit to raise, instead of serving one
/// connection at a time. A limit that only lowers the cap is warned about
/// with the numbers.
#[tokio::test]
async fn a_file_limit_too_low_for_connections_is_refused_and_a_lowered_cap_warned() {
    let dir = TempDir::new();
    let file = dir.settings();
    let output = run_after_to_exit(
        "ulimit -n 32",
        &["--settings", path_str(&file), "--listen", "127.0.0.1:0"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("file limit (32 open files"), "{stderr}");
    assert!(stderr.contains("ulimit -n"), "{stderr}");
    assert!(output.stdout.is_empty(), "it listened");
    assert!(
        !file.exists(),
        "a refused start-up created the settings file"
    );

    let instance =
        Instance::start_after(Some("ulimit -n 128"), &["--settings", path_str(&file)], &[]);
    assert!(
        instance.stderr.wait_for(
            "the file limit lowers --max-connections from 1024 to 96",
            DEADLINE
        ),
        "{}",
        instance.stderr.text()
    );
}

/// A key sent twice in one object (at any depth) is a 400 naming it, and
/// nothing is saved, for the settings and a tenant.
#[tokio::test]
async fn a_json_key_sent_twice_is_a_400_that_saves_nothing() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let before = std::fs::read(&file).unwrap();
    let client = client();
    for path in ["/settings", "/tenants/acme/settings"] {
        for body in [
            r#"{"theme": "dark", "theme": "light"}"#,
            r#"{"site": {"theme": "dark", "\u0074heme": "light"}}"#,
        ] {
            let (status, reply) = put(&client, instance.url(path), body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}: {reply}");
            let message = reply["error"].as_str().unwrap();
            assert!(message.contains("\"theme\" appears twice"), "{message}");
            assert!(message.contains("nothing was saved"), "{message}");
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), before);
    assert_eq!(dir.names(), ["settings.json"]);

    // What the README says of a saved object: its keys sorted.
    let (status, reply) = put(&client, instance.url("/settings"), r#"{"b": 1, "a": 2}"#).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let saved = std::fs::read_to_string(&file).unwrap();
    assert!(saved.find("\"a\"") < saved.find("\"b\""), "{saved}");
}
