//! The `settings_server` example, run as real processes and driven over
//! HTTP: several instances sharing one settings file and one redis-server,
//! bad input, the in-memory default, an unreachable or misconfigured Redis,
//! and the settings file's creation.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use gensync::testing::RedisServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// How long an instance may take to start listening, or to stop.
const DEADLINE: Duration = Duration::from_secs(30);
/// The stdout line an instance prints once it listens.
const READY: &str = "settings_server listening on http://";

/// The example's binary, built once per test run.
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| support::example::binary("settings_server"))
}

/// A fresh directory, removed when dropped.
struct TempDir(tempfile::TempDir);

impl TempDir {
    fn new() -> Self {
        TempDir(
            tempfile::Builder::new()
                .prefix("gensync-settings-server-")
                .tempdir()
                .expect("create a temporary directory"),
        )
    }

    fn settings(&self) -> PathBuf {
        self.0.path().join("settings.json")
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.0.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

/// The example's arguments and environment.
fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "info")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Everything a stream printed, collected by a thread.
type Captured = Arc<Mutex<String>>;

fn capture(
    stream: impl Read + Send + 'static,
    ready: Option<mpsc::Sender<String>>,
) -> (Captured, JoinHandle<()>) {
    let text = Captured::default();
    let sink = Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            // Kept before the line is announced, so a test that has seen
            // the announcement also sees the line.
            {
                let mut sink = sink.lock().unwrap();
                sink.push_str(&line);
                sink.push('\n');
            }
            if let Some(address) = line.strip_prefix(READY) {
                if let Some(tx) = ready.take() {
                    let address = address.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(address.to_owned());
                }
            }
        }
    });
    (text, reader)
}

/// A running instance of the example, killed when dropped.
struct Instance {
    child: Child,
    /// `host:port` it listens on.
    address: String,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

/// What a stopped instance printed.
struct Stopped {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Instance {
    /// Starts the example and waits until it prints that it listens.
    fn start(args: &[&str], envs: &[(&str, &str)]) -> Instance {
        let mut args = args.to_vec();
        if !args.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command(&args, envs).spawn().expect("start settings_server");
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stdout, out_reader) = capture(child.stdout.take().unwrap(), Some(ready_tx));
        let (stderr, err_reader) = capture(child.stderr.take().unwrap(), None);
        let mut instance = Instance {
            child,
            address: String::new(),
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        };
        match ready_rx.recv_timeout(DEADLINE) {
            Ok(address) => instance.address = address,
            Err(e) => {
                let _ = instance.child.kill();
                let status = instance.child.wait();
                for reader in instance.readers.drain(..) {
                    let _ = reader.join();
                }
                panic!(
                    "settings_server {args:?} did not start ({e:?}, {status:?})\n\
                     stdout:\n{}\nstderr:\n{}",
                    instance.stdout.lock().unwrap(),
                    instance.stderr.lock().unwrap()
                );
            }
        }
        instance
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Asserts that the instance printed `text` on stdout.
    fn assert_printed(&self, text: &str) {
        let stdout = self.stdout.lock().unwrap();
        assert!(stdout.contains(text), "no {text:?} in:\n{stdout}");
    }

    /// Sends SIGTERM and waits for the process to exit (killing it if it
    /// has not within the deadline), then returns all it printed.
    fn stop(mut self) -> Stopped {
        let pid = self.child.id();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(signalled.success(), "kill -TERM {pid} failed");
        let watchdog = Watchdog::arm(pid);
        let status = self.child.wait().expect("wait for settings_server");
        watchdog.disarm();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Stopped {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr.lock().unwrap().clone(),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills a process with SIGKILL unless disarmed within the deadline.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Watchdog {
    fn arm(pid: u32) -> Watchdog {
        let (done, done_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if let Err(RecvTimeoutError::Timeout) = done_rx.recv_timeout(DEADLINE) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        Watchdog { done, thread }
    }

    fn disarm(self) {
        drop(self.done);
        let _ = self.thread.join();
    }
}

/// Runs the example to completion (for arguments it must reject).
fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> std::process::Output {
    let child = command(args, envs).spawn().expect("start settings_server");
    let pid = child.id();
    // It must exit on its own; if it starts serving instead, end it.
    let watchdog = Watchdog::arm(pid);
    let output = child.wait_with_output().expect("wait for settings_server");
    watchdog.disarm();
    output
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, Value) {
    let response = client.get(&url).send().await.expect("GET");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

async fn put(client: &reqwest::Client, url: String, body: &str) -> (StatusCode, Value) {
    let response = client
        .put(&url)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("PUT");
    let status = response.status();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "PUT answered {content_type}"
    );
    (status, response.json().await.expect("a JSON body"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn defaults() -> Value {
    json!({"site_name": "gensync demo", "theme": "light"})
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn a_put_on_one_instance_is_seen_by_every_other_instance() {
    let redis = RedisServer::start().expect("start redis-server");
    let dir = TempDir::new();
    let file = dir.settings();
    let url = redis.url();
    let args = [
        "--redis",
        url.as_str(),
        "--settings",
        path_str(&file),
        "--key",
        "test:three",
    ];
    let instances: Vec<Instance> = (0..3).map(|_| Instance::start(&args, &[])).collect();
    let client = client();

    // All three start on the file and agree on the generation.
    let mut first = None;
    for instance in &instances {
        let (status, body) = get(&client, instance.url("/settings")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["settings"], defaults());
        let generation = body["generation"].as_u64().expect("a generation");
        assert_eq!(*first.get_or_insert(generation), generation);
    }

    for round in 0..6usize {
        let writer = round % 3;
        let settings = json!({
            "site_name": format!("round {round}"),
            "theme": if round % 2 == 0 { "dark" } else { "light" },
            "writer": writer,
        });
        let (status, body) = put(
            &client,
            instances[writer].url("/settings"),
            &settings.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        let generation = body["generation"].as_u64().expect("a generation");
        assert_eq!(
            read_json(&file),
            settings,
            "round {round}: the file was saved"
        );

        // The two others first, then the writer itself.
        for reader in [(writer + 1) % 3, (writer + 2) % 3, writer] {
            let (status, body) = get(&client, instances[reader].url("/settings")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                body["settings"], settings,
                "round {round}: instance {reader} after a PUT on {writer}"
            );
            assert_eq!(
                body["generation"].as_u64(),
                Some(generation),
                "round {round}: instance {reader}"
            );
        }
    }
    // The atomic writes left no temporary files behind; beside the
    // settings, the greatest fencing token the saver accepted.
    assert_eq!(
        dir.names(),
        ["settings.json", "settings.json.fence", "settings.json.lock"]
    );
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_json_error_and_leaves_the_file_alone() {
    let dir = TempDir::new();
    let file = dir.settings();
    // Odd spacing, so a rewrite of the same settings would show.
    let original = b"{ \"theme\":   \"dark\" ,\"site_name\":\"kept\"}\n";
    std::fs::write(&file, original).unwrap();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let client = client();

    let invalid = ["{bad", "", "{\"theme\": \"dark\"", "theme=dark"];
    let not_objects = ["[1,2]", "\"x\"", "42", "null", "true"];
    for body in invalid.iter().chain(&not_objects) {
        let (status, reply) = put(&client, instance.url("/settings"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "body {body:?}: {reply}");
        let error = reply["error"].as_str().expect("an error message");
        if invalid.contains(body) {
            assert!(error.contains("not valid JSON"), "body {body:?}: {error}");
        } else {
            assert!(
                error.contains("must be a JSON object"),
                "body {body:?}: {error}"
            );
        }
        assert!(error.contains("nothing was saved"), "{error}");
        assert_eq!(std::fs::read(&file).unwrap(), original, "body {body:?}");
    }

    let (status, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["settings"],
        json!({"theme": "dark", "site_name": "kept"})
    );
    // Nothing was saved: no temporary file, not even a fencing token.
    assert_eq!(dir.names(), ["settings.json"]);
}

#[tokio::test]
async fn the_in_memory_default_serves_puts_health_and_metrics() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    instance.assert_printed("(backend: in-memory");
    let client = client();

    let (status, before) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(before["settings"], defaults());

    let settings = json!({"site_name": "memory", "theme": "dark", "nested": {"a": [1, 2]}});
    let (status, body) = put(&client, instance.url("/settings"), &settings.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let generation = body["generation"].as_u64().expect("a generation");
    assert_ne!(before["generation"].as_u64(), Some(generation));

    let (status, after) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        after,
        json!({"generation": generation, "settings": settings})
    );
    assert_eq!(read_json(&file), settings);

    let health = client.get(instance.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");

    let metrics = client.get(instance.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let content_type = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = metrics.text().await.unwrap();
    // Every series carries the key it counts for.
    let labels = r#"{key="gensync:example:settings"}"#;
    for name in [
        "gensync_checks_total",
        "gensync_expired_total",
        "gensync_backend_errors_total",
        "gensync_reloads_total",
        "gensync_reload_failures_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{labels} "))),
            "no {name} in:\n{text}"
        );
    }
    for name in [
        "gensync_check_duration_seconds",
        "gensync_reload_duration_seconds",
        "gensync_settings_age_seconds",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}_count{labels} "))),
            "no {name} histogram in:\n{text}"
        );
    }
    // Start-up, then the reload after the PUT.
    assert!(
        text.contains(&format!("gensync_reloads_total{labels} 2\n")),
        "{text}"
    );

    let stopped = instance.stop();
    assert!(
        stopped.status.success(),
        "SIGTERM is a clean shutdown: {}\n{}",
        stopped.status,
        stopped.stderr
    );
}

#[tokio::test]
async fn an_unreachable_redis_still_serves_the_file_settings() {
    let dir = TempDir::new();
    let file = dir.settings();
    let settings = json!({"site_name": "from the file", "theme": "dark"});
    std::fs::write(&file, settings.to_string()).unwrap();
    let url = format!("redis://127.0.0.1:{}", support::closed_port());
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    instance.assert_printed(&format!("(backend: Redis at {url}; mode: strict)"));
    let client = client();

    for _ in 0..2 {
        let (status, body) = get(&client, instance.url("/settings")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"generation": null, "settings": settings}));
    }
    let health = client.get(instance.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // A write cannot tell the other instances, so it is refused, unsaved.
    let (status, body) = put(&client, instance.url("/settings"), r#"{"theme": "light"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("nothing was saved"), "{error}");
    assert_eq!(body["saved"], json!(false));
    assert_eq!(read_json(&file), settings);

    let stopped = instance.stop();
    assert!(
        stopped.stderr.contains("Redis did not answer at start-up"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_bad_redis_url_or_key_is_one_line_on_stderr_and_exit_2() {
    let dir = TempDir::new();
    let file = dir.settings();
    let cases: [(&[&str], &str); 4] = [
        (&["--redis", "http://x"], "unsupported Redis URL"),
        (
            &["--redis", "redis://:hunter2-pw@[::1"],
            "invalid Redis URL",
        ),
        (&["--key", ":::"], "invalid --key"),
        (&["--key", "  "], "invalid --key"),
    ];
    for (args, expected) in cases {
        let mut args = args.to_vec();
        args.extend(["--settings", path_str(&file), "--listen", "127.0.0.1:0"]);
        let output = run_to_exit(&args, &[]);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, not:\n{stderr}"
        );
        assert!(stderr.starts_with("settings_server: error: "), "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2-pw"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
        assert!(!file.exists(), "{args:?}: nothing was created");
    }
}

#[tokio::test]
async fn a_redis_password_never_appears_in_the_output() {
    const SECRET: &str = "s3cret-Pa55word";
    let dir = TempDir::new();
    let file = dir.settings();
    let url = format!(
        "redis://app:{SECRET}@127.0.0.1:{}/0",
        support::closed_port()
    );
    // Through the environment, as a deployment would pass it.
    let instance = Instance::start(&["--settings", path_str(&file)], &[("REDIS_URL", &url)]);
    instance.assert_printed("app:***@");
    let client = client();

    let (status, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["settings"], defaults());
    let (status, body) = put(&client, instance.url("/settings"), r#"{"theme": "dark"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.to_string().contains(SECRET), "{body}");

    // --help shows where the URL comes from, not its value.
    let help = run_to_exit(&["--help"], &[("REDIS_URL", &url)]);
    assert!(help.status.success());
    assert!(!String::from_utf8_lossy(&help.stdout).contains(SECRET));

    let stopped = instance.stop();
    assert!(
        stopped.stderr.contains("Redis did not answer at start-up"),
        "{}",
        stopped.stderr
    );
    for (name, text) in [("stdout", &stopped.stdout), ("stderr", &stopped.stderr)] {
        assert!(!text.contains(SECRET), "the password on {name}:\n{text}");
    }
}

#[tokio::test]
async fn a_missing_settings_file_is_created_with_the_defaults() {
    let dir = TempDir::new();
    let file = dir.settings();
    assert!(!file.exists());
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);

    assert_eq!(read_json(&file), defaults());
    let (status, body) = get(&client(), instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["settings"], defaults());
    assert!(body["generation"].is_u64(), "{body}");
    assert_eq!(dir.names(), ["settings.json"]);
}

/// Redis answered, and refused the password: the start-up line says that,
/// and what to fix, not that Redis did not answer.
#[tokio::test]
async fn a_wrong_password_at_start_up_says_what_to_fix() {
    let dir = TempDir::new();
    let file = dir.settings();
    let server = gensync::testing::RedisServer::start_with_password("right-pw").unwrap();
    let url = format!("redis://:wrong-pw@127.0.0.1:{}", server.port());
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    let (status, _) = get(&client(), instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK, "still serves the file's settings");
    let stopped = instance.stop();
    assert!(
        stopped
            .stderr
            .contains("refused this instance's credentials")
            && stopped.stderr.contains("fix the user and password"),
        "{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("did not answer"),
        "{}",
        stopped.stderr
    );
    assert!(!stopped.stderr.contains("wrong-pw"), "{}", stopped.stderr);
}
