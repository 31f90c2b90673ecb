//! A throwaway `redis-server` per test: its own port and unix socket, so
//! tests run in parallel and can kill, pause and restart their own server.
//!
//! The same launcher starts the sentinels of a
//! [`SentinelGroup`](super::SentinelGroup) and the nodes of a
//! [`RedisCluster`](super::RedisCluster): they are `redis-server` too, with
//! a config file or cluster arguments and, for a sentinel, another ready
//! line; it is long because it is the one launcher of all four kinds (TLS
//! nodes too), so none of them copies it.

use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::tls::Transport;

/// How long a server may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The line `redis-server` prints once it accepts connections.
const READY: &str = "Ready to accept connections";
/// A sentinel never prints [`READY`]; it prints its id once it listens
/// (and before it starts monitoring).
const SENTINEL_READY: &str = "Sentinel ID is";
/// The config file a sentinel is given, in its own directory: a sentinel
/// refuses to start without one it can rewrite.
const SENTINEL_CONF: &str = "sentinel.conf";

/// Arguments for a node that has or may get replicas: a primary waits
/// five seconds by default before it sends a new replica its data, for
/// more replicas to share the transfer; a test has no more coming.
pub(super) const NO_SYNC_DELAY: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

/// What a [`RedisServer`] process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain data node.
    Data,
    /// A data node that also listens for TLS on a port of its own.
    Tls,
    /// A sentinel (`redis-server <conf> --sentinel`).
    Sentinel,
    /// A cluster node, with its cluster bus on `bus_port` (chosen free,
    /// like the port: the default, port + 10000, may be taken or past
    /// 65535).
    ClusterNode { bus_port: u16 },
}

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
    kind: Kind,
    /// Plain TCP, or TLS only: then [`port`](Self::port) is the TLS port.
    transport: Transport,
}

impl RedisServer {
    /// Starts a server with no password.
    pub fn start() -> io::Result<Self> {
        Self::start_with_args(Vec::<String>::new())
    }

    /// Starts a server that requires `password` (`--requirepass`).
    pub fn start_with_password(password: &str) -> io::Result<Self> {
        Self::start_data_node(Vec::new(), Some(password), &Transport::Plain)
    }

    /// Starts a server with extra command-line arguments, such as
    /// `["--maxclients", "4"]`.
    pub fn start_with_args<I, S>(args: I) -> io::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args = args.into_iter().map(Into::into).collect();
        Self::start_data_node(args, None, &Transport::Plain)
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
        let args = args.into_iter().map(Into::into).collect();
        Self::launch(Kind::Tls, args, None, &Transport::Plain, |_| Ok(()))
    }

    /// Starts a data node with extra arguments, requiring `password` if
    /// given, listening as `transport` says.
    pub(super) fn start_data_node(
        args: Vec<String>,
        password: Option<&str>,
        transport: &Transport,
    ) -> io::Result<Self> {
        Self::launch(Kind::Data, args, password, transport, |_| Ok(()))
    }

    /// Starts a sentinel whose config file says `config` (the `sentinel
    /// monitor` lines); port, bind address and directory come from the
    /// command line, as for any server.
    pub(super) fn start_sentinel(config: &str, transport: &Transport) -> io::Result<Self> {
        Self::launch(Kind::Sentinel, Vec::new(), None, transport, |dir| {
            std::fs::write(dir.join(SENTINEL_CONF), config)
        })
    }

    /// Starts a node of a cluster yet to be created, with extra arguments
    /// (such as `--cluster-node-timeout`). Its `nodes.conf` is in its own
    /// directory, so a restart keeps its identity.
    pub(super) fn start_cluster_node(args: Vec<String>, transport: &Transport) -> io::Result<Self> {
        let kind = Kind::ClusterNode { bus_port: 0 };
        Self::launch(kind, args, None, transport, |_| Ok(()))
    }

    /// Makes the directory, lets `prepare` write into it, then starts the
    /// server on free ports.
    fn launch(
        kind: Kind,
        mut args: Vec<String>,
        password: Option<&str>,
        transport: &Transport,
        prepare: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<Self> {
        if let Some(password) = password {
            args.extend(["--requirepass".into(), password.into()]);
        }
        args.extend(transport.server_args().iter().cloned());
        let mut server = RedisServer {
            child: None,
            port: 0,
            tls_port: None,
            dir: tempfile::Builder::new()
                .prefix("gensync-redis-")
                .tempdir()?,
            args,
            password: password.map(str::to_owned),
            kind,
            transport: transport.clone(),
        };
        prepare(server.dir.path())?;
        let mut last_error = None;
        // A free port found by binding can be taken by someone else before
        // the server binds it; another port then does.
        for _ in 0..5 {
            server.port = free_port()?;
            if let Kind::ClusterNode { bus_port } = &mut server.kind {
                *bus_port = free_port()?;
            }
            if server.kind == Kind::Tls {
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
        let tool = Tool::SERVER;
        let mut command = tool.command();
        // A config file must come first on the command line.
        let ready = match self.kind {
            Kind::Data | Kind::Tls => READY,
            Kind::Sentinel => {
                command
                    .arg(self.dir.path().join(SENTINEL_CONF))
                    .arg("--sentinel");
                SENTINEL_READY
            }
            Kind::ClusterNode { bus_port } => {
                command
                    .args(["--cluster-enabled", "yes", "--cluster-config-file"])
                    .arg(self.dir.path().join("nodes.conf"))
                    .arg("--cluster-port")
                    .arg(bus_port.to_string());
                READY
            }
        };
        // A TLS-only server's one port is its TLS port.
        let (port, tls_port) = match self.transport.is_tls() {
            true => (0, Some(self.port)),
            false => (self.port, self.tls_port),
        };
        let mut child = command
            .arg("--port")
            .arg(port.to_string())
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
                tls_port
                    .iter()
                    .flat_map(|port| ["--tls-port".to_owned(), port.to_string()]),
            )
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| tool.not_run(e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        // Reads the log until the server is ready, then keeps draining it so
        // the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut log = Vec::new();
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(tx) = &ready_tx {
                    if line.contains(ready) {
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

    /// The TCP URL of [`port`](Self::port), with the password when there
    /// is one: `redis://`, or `rediss://` for a server that listens only
    /// for TLS (a node of [`SentinelGroup::start_tls`](super::SentinelGroup::start_tls)
    /// or [`RedisCluster::start_tls`](super::RedisCluster::start_tls)).
    pub fn url(&self) -> String {
        self.url_at(self.transport.scheme(), self.port)
    }

    /// The `rediss://` URL of the TLS port, with the password when there is
    /// one; `None` for a server that does not listen for TLS.
    pub fn tls_url(&self) -> Option<String> {
        if self.transport.is_tls() {
            return Some(self.url());
        }
        Some(self.url_at("rediss", self.tls_port?))
    }

    fn url_at(&self, scheme: &str, port: u16) -> String {
        match &self.password {
            Some(pw) => format!("{scheme}://:{pw}@127.0.0.1:{port}"),
            None => format!("{scheme}://127.0.0.1:{port}"),
        }
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

    /// The TCP port: the TLS port for a server that listens only for TLS.
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
    /// Over TLS, trusting the private CA, for a server that listens only
    /// for TLS.
    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        self.client()?
            .get_connection_with_timeout(Duration::from_secs(5))
    }

    /// A client for [`url`](Self::url), with the certificates the server
    /// needs.
    pub(super) fn client(&self) -> redis::RedisResult<redis::Client> {
        self.transport.client(&self.url())
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

/// A Redis program, found at `$<variable>` or else on `PATH`.
pub(super) struct Tool {
    variable: &'static str,
    name: &'static str,
    package: &'static str,
}

impl Tool {
    /// `redis-server`.
    pub(super) const SERVER: Tool = Tool {
        variable: "REDIS_SERVER",
        name: "redis-server",
        package: "redis-server",
    };
    /// `redis-cli`.
    pub(super) const CLI: Tool = Tool {
        variable: "REDIS_CLI",
        name: "redis-cli",
        package: "redis-tools",
    };

    fn binary(&self) -> std::ffi::OsString {
        std::env::var_os(self.variable).unwrap_or_else(|| self.name.into())
    }

    /// A command that runs the program.
    pub(super) fn command(&self) -> Command {
        Command::new(self.binary())
    }

    /// The error for a program that could not be run, saying how to get it.
    pub(super) fn not_run(&self, e: io::Error) -> io::Error {
        io::Error::new(
            e.kind(),
            format!(
                "could not run {}: {e}; install it (apt-get install {}) or set {} to its path",
                self.binary().to_string_lossy(),
                self.package,
                self.variable
            ),
        )
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
