//! The `settings_server` example, run as real processes and driven over
//! HTTP. This file is the harness; each module is one concern:
//! `basics` (instances agreeing, bad input, Redis trouble, the file's
//! creation), `secrets` (what answers, logs and stdout never show, and
//! the write token), `connections` (timeouts, the connection cap, a
//! closed stdout, the size limits), `files` (symlinks, modes, a
//! missing file, numbers kept exactly), `fence` (the lock and fence files
//! beside it: tokens from the future, their mode and owner) and `tenants` (the tenant routes:
//! instances agreeing per tenant, 404 and 400, the token, the parent
//! generation), `deployments` (over Sentinel and a Cluster), `limits`
//! (the write token's and the requests' limits, to the byte); with the
//! `tls` feature, `tls` (a TLS Redis with a private
//! CA and client certificates). `examples` runs the other examples, and
//! `example` builds an example's binary for both.
//!
//! `SETTINGS_SERVER_BIN=/path/to/settings_server` runs the tests against
//! another build of the example (an older one, to see them fail).

mod basics;
mod connections;
mod deployments;
mod example;
mod examples;
mod fence;
mod files;
mod generation;
mod limits;
mod logging;
mod ready;
mod secrets;
mod tenants;
#[cfg(feature = "tls")]
mod tls;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gensync::testing::RedisServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// How long an instance may take to start listening, or to stop.
const DEADLINE: Duration = Duration::from_secs(30);
/// The stdout line an instance prints once it listens.
const READY: &str = "settings_server listening on http://";

/// The example's binary, built once per test run (or the one
/// `SETTINGS_SERVER_BIN` names).
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| match std::env::var_os("SETTINGS_SERVER_BIN") {
        Some(path) => PathBuf::from(path),
        None => example::binary("settings_server"),
    })
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
    wrapped_command(None, args, envs)
}

/// The example run by `sh` after `setup` (as `umask 077` or `ulimit -n
/// 128`), when given.
fn wrapped_command(setup: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = match setup {
        None => Command::new(binary()),
        Some(setup) => {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(format!("{setup} && exec \"$0\" \"$@\""))
                .arg(binary());
            sh
        }
    };
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

/// Everything a stream printed, collected by a thread, with a condition
/// variable told of every line.
#[derive(Clone, Default)]
struct Captured(Arc<(Mutex<String>, Condvar)>);

impl Captured {
    fn lock(&self) -> std::sync::MutexGuard<'_, String> {
        self.0 .0.lock().unwrap()
    }

    /// Waits until `text` was printed, up to `within`; whether it was.
    fn wait_for(&self, text: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut printed = self.lock();
        while !printed.contains(text) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            printed = self.0 .1.wait_timeout(printed, left).unwrap().0;
        }
        true
    }

    fn text(&self) -> String {
        self.lock().clone()
    }
}

fn capture(
    stream: impl Read + Send + 'static,
    ready: Option<mpsc::Sender<String>>,
) -> (Captured, JoinHandle<()>) {
    let text = Captured::default();
    let sink = text.clone();
    let reader = std::thread::spawn(move || {
        let mut ready = ready;
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            // Kept before the line is announced, so a test that has seen
            // the announcement also sees the line.
            {
                let mut printed = sink.lock();
                printed.push_str(&line);
                printed.push('\n');
            }
            sink.0 .1.notify_all();
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
        Instance::start_after(None, args, envs)
    }

    /// Starts the example after a shell `setup` (see [`wrapped_command`]).
    fn start_after(setup: Option<&str>, args: &[&str], envs: &[(&str, &str)]) -> Instance {
        let mut args = args.to_vec();
        if !args.contains(&"--listen") {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        let mut child = wrapped_command(setup, &args, envs)
            .spawn()
            .expect("start settings_server");
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
                    instance.stdout.text(),
                    instance.stderr.text()
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
        let stdout = self.stdout.text();
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
            stdout: self.stdout.text(),
            stderr: self.stderr.text(),
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

/// A child process killed and reaped when dropped, so a failing test
/// leaves no service running.
struct Reaped(Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

/// A PUT with an optional `Authorization` header: the status, the
/// headers and the body's text.
pub async fn put_as(
    client: &reqwest::Client,
    url: String,
    authorization: Option<&str>,
    body: &str,
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = client
        .put(&url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = request.send().await.expect("PUT");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}
