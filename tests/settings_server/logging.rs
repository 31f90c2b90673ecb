//! The log under trouble: a stderr that fails must not stop the service,
//! a flood of refused writes is counted, not logged line by line, and a
//! stopped service exits at once.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use super::*;

const TOKEN: &str = "log-test-token-0123456789abcdef0123456789";

/// Starts the example with `stderr`, and waits for its start-up line:
/// the process and its address.
fn start_with_stderr(file: &Path, stderr: Stdio) -> (Reaped, String, Captured) {
    let mut child = Reaped(
        command(
            &["--settings", path_str(file), "--listen", "127.0.0.1:0"],
            &[("SETTINGS_WRITE_TOKEN", TOKEN)],
        )
        .stderr(stderr)
        .spawn()
        .unwrap(),
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stdout, _reader) = capture(child.stdout.take().unwrap(), Some(ready_tx));
    let address = ready_rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("did not start ({e:?}): {:?}", child.try_wait()));
    (child, address, stdout)
}

/// Serves GET, a refused PUT and a PUT (all of which log), then GET again
/// the settings that PUT saved, and is still running.
async fn serves_reads_and_writes(child: &mut Child, address: &str, file: &Path) {
    let client = client();
    let url = |path: &str| format!("http://{address}{path}");
    assert_eq!(get(&client, url("/settings")).await.0, StatusCode::OK);
    let (status, ..) = put_as(&client, url("/settings"), None, r#"{"theme": "x"}"#).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = put_as(
        &client,
        url("/settings"),
        Some(&bearer),
        r#"{"theme": "dark"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = get(&client, url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["settings"], json!({"theme": "dark"}));
    assert_eq!(read_json(file), json!({"theme": "dark"}));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the service stopped: {:?}",
        child.try_wait()
    );
}

/// Sends SIGTERM and returns how it exited.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let watchdog = Watchdog::arm(child.id());
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    watchdog.disarm();
    status
}

/// `2>/dev/full`: every log write fails (ENOSPC), from the first line on.
#[tokio::test]
async fn a_full_stderr_does_not_stop_the_service() {
    let dir = TempDir::new();
    let file = dir.settings();
    let full = File::options().write(true).open("/dev/full").unwrap();
    let (mut child, address, _) = start_with_stderr(&file, Stdio::from(full));
    serves_reads_and_writes(&mut child, &address, &file).await;
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
}

/// A log reader that went away after start-up: every later log write
/// fails (EPIPE).
#[tokio::test]
async fn a_closed_stderr_does_not_stop_the_service() {
    let dir = TempDir::new();
    let file = dir.settings();
    let (mut child, address, _) = start_with_stderr(&file, Stdio::piped());
    // Read up to the line that says it serves, then close the pipe.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("settings_server: serving") {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "stderr ended");
    }
    drop(stderr);
    serves_reads_and_writes(&mut child, &address, &file).await;
    let status = terminate(&mut child);
    assert!(status.success(), "{status}");
}

/// A client guessing the token: each guess is counted in a metric, and
/// the log gets a bounded number of lines, then says how many it held
/// back.
#[tokio::test]
async fn a_flood_of_refused_writes_is_counted_not_logged_line_by_line() {
    const GUESSES: usize = 200;
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(
        &["--settings", path_str(&file)],
        &[("SETTINGS_WRITE_TOKEN", TOKEN)],
    );
    // From 20 addresses, 10 guesses each: the most one client may make
    // before it is answered 429 without its token being compared.
    let clients: Vec<reqwest::Client> = (1..=20u8)
        .map(|n| {
            reqwest::Client::builder()
                .no_proxy()
                .timeout(std::time::Duration::from_secs(10))
                .local_address(std::net::IpAddr::from([127, 0, 0, n]))
                .build()
                .unwrap()
        })
        .collect();
    for i in 0..GUESSES {
        let wrong = format!("Bearer guess-{i}");
        let client = &clients[i % clients.len()];
        let (status, ..) = put_as(client, instance.url("/settings"), Some(&wrong), "{}").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let client = client();
    let metrics = client
        .get(instance.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("settings_server_unauthorized_total {GUESSES}")),
        "{metrics}"
    );
    let stopped = instance.stop();
    assert!(stopped.status.success(), "{}", stopped.status);
    let logged = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("refused a PUT without the right write token"))
        .count();
    // One window's burst: the loop takes well under the window.
    assert!(
        (1..=10).contains(&logged),
        "{logged} lines:\n{}",
        stopped.stderr
    );
    // The rest reported as a count, naming the statement they came from.
    let suppressed: usize = stopped
        .stderr
        .lines()
        .filter(|l| l.contains("similar log lines suppressed") && l.contains("http.rs"))
        .map(|l| {
            let words = l.split("WARN").nth(1).unwrap();
            words
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        })
        .sum();
    assert_eq!(logged + suppressed, GUESSES, "{}", stopped.stderr);
}

/// A load stuck in a blocking read (a FIFO with no writer as the settings
/// file) does not keep a stopped service from exiting.
#[tokio::test]
async fn a_stopped_service_exits_at_once_whatever_blocking_work_is_left() {
    let dir = TempDir::new();
    let file = dir.settings();
    let made = Command::new("mkfifo").arg(&file).status().unwrap();
    assert!(made.success());
    // It starts once the load times out.
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let began = Instant::now();
    let stopped = instance.stop();
    let took = began.elapsed();
    assert!(stopped.status.success(), "{}", stopped.status);
    assert!(stopped.stderr.contains("stopped"), "{}", stopped.stderr);
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after SIGTERM"
    );
}
