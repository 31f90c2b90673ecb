//! A throwaway `redis-server` per test: its own port and unix socket, so
//! tests run in parallel and can kill, pause and restart their own server.

use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The line `redis-server` prints once it accepts connections.
const READY: &str = "Ready to accept connections";

/// A `redis-server` process owned by a test, killed when dropped.
///
/// It listens on a free loopback port and on a unix socket in its own
/// temporary directory, keeps nothing on disk, and is found on `PATH` (or
/// at `$REDIS_SERVER`).
///
/// ```no_run
/// use gensync::testing::RedisServer;
///
/// let mut server = RedisServer::start().expect("redis-server on PATH");
/// let url = server.url(); // redis://127.0.0.1:<port>
/// server.pause().unwrap();   // SIGSTOP: the server stops answering
/// server.resume().unwrap();  // SIGCONT
/// server.restart().unwrap(); // killed, then started empty on the same port
/// # let _ = url;
/// ```
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    /// The TLS port, for a server started with [`start_tls`](Self::start_tls).
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
    args: Vec<String>,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server with no password.
    pub fn start() -> io::Result<Self> {
        Self::start_with_args(Vec::<String>::new())
    }

    /// Starts a server that requires `password` (`--requirepass`).
    pub fn start_with_password(password: &str) -> io::Result<Self> {
        let mut server = Self::launch(vec!["--requirepass".into(), password.into()], false)?;
        server.password = Some(password.to_owned());
        Ok(server)
    }

    /// Starts a server with extra command-line arguments, such as
    /// `["--maxclients", "4"]`.
    pub fn start_with_args<I, S>(args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::launch(args.into_iter().map(Into::into).collect(), false)
    }

    /// Starts a server that also listens for TLS on a port of its own
    /// ([`tls_url`](Self::tls_url)), besides its plain port; `args` give
    /// its certificates, as [`TlsCerts::redis_args`](super::TlsCerts::redis_args)
    /// writes them.
    pub fn start_tls<I, S>(args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::launch(args.into_iter().map(Into::into).collect(), true)
    }

    fn launch(args: Vec<String>, tls: bool) -> io::Result<Self> {
        let mut server = RedisServer {
            child: None,
            port: 0,
            tls_port: None,
            dir: tempfile::Builder::new()
                .prefix("gensync-redis-")
                .tempdir()?,
            args,
            password: None,
        };
        let mut last_error = None;
        // A free port found by binding can be taken by someone else before
        // the server binds it; another port then does.
        for _ in 0..5 {
            server.port = free_port()?;
            if tls {
                server.tls_port = Some(free_port()?);
            }
            match server.spawn() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    fn spawn(&mut self) -> io::Result<()> {
        let binary = std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let mut child = Command::new(&binary)
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--unixsocket")
            .arg(self.socket_path())
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .args(
                self.tls_port
                    .iter()
                    .flat_map(|port| ["--tls-port".to_owned(), port.to_string()]),
            )
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "could not run {}: {e}; install it (apt-get install redis-server) \
                         or set REDIS_SERVER to its path",
                        binary.to_string_lossy()
                    ),
                )
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        // Reads the log until the server is ready, then keeps draining it so
        // the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut log = Vec::new();
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(tx) = &ready_tx {
                    if line.contains(READY) {
                        let _ = tx.send(Ok(()));
                        ready_tx = None;
                    } else {
                        log.push(line);
                    }
                }
            }
            if let Some(tx) = ready_tx {
                let _ = tx.send(Err(log.join("\n")));
            }
        });
        let outcome = ready_rx.recv_timeout(START_TIMEOUT);
        self.child = Some(child);
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(log)) => {
                self.stop();
                Err(io::Error::other(format!(
                    "redis-server exited at start:\n{log}"
                )))
            }
            Err(_) => {
                self.stop();
                Err(io::Error::other(format!(
                    "redis-server did not become ready within {START_TIMEOUT:?}"
                )))
            }
        }
    }

    /// The TCP URL, with the password when there is one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The `rediss://` URL of the TLS port, with the password when there is
    /// one; `None` unless the server was started with
    /// [`start_tls`](Self::start_tls).
    pub fn tls_url(&self) -> Option<String> {
        let port = self.tls_port?;
        Some(match &self.password {
            Some(pw) => format!("rediss://:{pw}@127.0.0.1:{port}"),
            None => format!("rediss://127.0.0.1:{port}"),
        })
    }

    /// The unix-socket URL (`redis+unix://`), with the password when there
    /// is one.
    pub fn unix_url(&self) -> String {
        let path = self.socket_path();
        match &self.password {
            Some(pw) => format!("redis+unix://{}?pass={pw}", path.display()),
            None => format!("redis+unix://{}", path.display()),
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket's path.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A blocking connection for setting up a test (writing garbage,
    /// flushing, changing ACLs).
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(5))
    }

    /// Stops the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("STOP")
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) -> io::Result<()> {
        self.signal("CONT")
    }

    /// Kills the process (SIGKILL) and waits for it to go.
    pub fn kill(&mut self) {
        self.stop();
    }

    /// Whether the process is running (or paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server if it runs, then starts a new, empty one on the
    /// same port and socket.
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        self.spawn()
    }

    fn signal(&self, name: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{name} {pid} failed")))
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket_path());
    }

    /// The server's working directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
