//! The server loop: HTTP/1 connections with a bound on reading a request's
//! header (which also bounds an idle keep-alive connection), a cap on
//! connections below the file limit, and accept errors that neither spin
//! nor flood the log.
//!
//! At the cap, a new connection sheds the oldest one with no request in
//! progress (a client that connected and sent nothing, or a whole header,
//! or is idle between requests), so silent connections cannot lock out a
//! client that sends its request.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tower::ServiceExt;

/// File descriptors kept back from connections: the settings file, its
/// lock, fence and temporary files, Redis connections, the runtime's own.
const RESERVED_FDS: u64 = 32;
/// The most a request's line and headers may take, counted up to and
/// including the blank line that ends them: a longer URI is answered 414
/// (above 64 KiB), a longer head 431.
pub const MAX_HEAD: usize = 128 * 1024;
/// The fewest connections worth serving: a file limit that leaves fewer
/// is refused at start-up rather than served one client at a time.
pub const MIN_CONNECTIONS: usize = 16;
/// How long in-flight requests may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after an error that is not one
/// connection's (out of file descriptors or memory).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this long for each kind of repeated trouble.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The bounds the loop keeps.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// How long a client may take to send a request's header, counted from
    /// when the connection opens or its previous answer was sent (so it
    /// also bounds idle keep-alive connections).
    pub header_timeout: Duration,
    /// How many connections may be open at once.
    pub max_connections: usize,
}

/// `requested`, lowered to fit the process's file limit (with a warning
/// that says so), or why the limit leaves too little room to serve. The
/// soft limit is raised to the hard one first (as Go does for its
/// servers): the soft default of 1024 is for programs that use `select`.
pub fn connection_cap(requested: usize) -> Result<usize, String> {
    let Some(limit) = file_limit() else {
        return Ok(requested);
    };
    let room = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if room >= requested {
        return Ok(requested);
    }
    let needed = RESERVED_FDS + requested as u64;
    if room < MIN_CONNECTIONS.min(requested) {
        return Err(format!(
            "the file limit ({limit} open files, `ulimit -n`) leaves room for {room} \
             connections after the {RESERVED_FDS} this service keeps back, and at least \
             {MIN_CONNECTIONS} are needed; raise it (`ulimit -n {needed}`, or LimitNOFILE= \
             under systemd)"
        ));
    }
    tracing::warn!(
        requested,
        max_connections = room,
        file_limit = limit,
        "the file limit lowers --max-connections from {requested} to {room}; raise it \
         (`ulimit -n {needed}`, or LimitNOFILE= under systemd) to allow {requested}"
    );
    Ok(room)
}

#[cfg(unix)]
fn file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    // `rlim_t` is not `u64` on every platform.
    #[allow(clippy::unnecessary_cast)]
    let current = limit.rlim_cur as u64;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(current)
}

#[cfg(not(unix))]
fn file_limit() -> Option<u64> {
    None
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the
/// requests in progress finish (within [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let registry = Arc::new(Registry::default());
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut accept_errors = Throttle::default();
    let mut refusals = Throttle::default();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // That one connection's trouble: the next may be fine.
            Err(e) if is_one_connections(&e) => continue,
            Err(e) => {
                // Out of file descriptors or memory: free one, and wait for
                // a connection to close (or a moment) instead of spinning.
                registry.shed_oldest_idle();
                if let Some(more) = accept_errors.ready() {
                    tracing::error!(
                        error = %e,
                        connections = registry.len(),
                        "could not accept a connection; shedding idle connections and \
                         retrying{}",
                        repeats(more)
                    );
                }
                tokio::select! {
                    () = registry.freed.notified() => {}
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    () = &mut shutdown => break,
                }
                continue;
            }
        };
        if registry.len() >= limits.max_connections && !registry.shed_oldest_idle() {
            if let Some(more) = refusals.ready() {
                tracing::warn!(
                    max = limits.max_connections,
                    "every connection has a request in progress; refusing new ones until \
                     one finishes{}",
                    repeats(more)
                );
            }
            continue;
        }
        let _ = stream.set_nodelay(true);
        registry.spawn(&mut tasks, |in_flight, guard| {
            connection(
                stream,
                peer,
                app.clone(),
                limits,
                in_flight,
                stopping.clone(),
                guard,
            )
        });
    }
    let _ = stop.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "requests still in progress after {DRAIN:?}; closing their connections"
        );
    }
}

/// Serves one connection until it closes, its header read times out, it
/// is shed, or the service stops (after its request in progress).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    in_flight: Arc<AtomicUsize>,
    mut stopping: watch::Receiver<bool>,
    _registered: Registered,
) {
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        // Who sent it, for the budget of guesses at the write token.
        request.extensions_mut().insert(ConnectInfo(peer));
        let busy = Busy::new(&in_flight);
        let app = app.clone();
        async move {
            let _busy = busy;
            app.oneshot(request).await
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // The head's own bound, exact: the buffer's bound alone lets one
        // read run past it, and a head so read is served.
        .max_header_size(MAX_HEAD)
        .max_buf_size(MAX_HEAD);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopped(&mut stopping) => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        // A client's doing (a timeout, a reset, a malformed request): not
        // the operator's business unless they ask.
        tracing::debug!(error = %e, "connection closed");
    }
}

/// Returns once the service stops (or the loop that would say so is gone).
async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|stop| *stop).await;
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    connections: Mutex<BTreeMap<u64, Entry>>,
    next: AtomicU64,
    /// Told whenever a connection closes.
    freed: Notify,
}

struct Entry {
    /// Requests in progress on it.
    in_flight: Arc<AtomicUsize>,
    abort: AbortHandle,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Spawns a connection's task and records it; the task's
    /// [`Registered`] removes it again when it ends.
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        self: &Arc<Self>,
        tasks: &mut JoinSet<()>,
        task: impl FnOnce(Arc<AtomicUsize>, Registered) -> F,
    ) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let registered = Registered {
            registry: Arc::clone(self),
            id,
        };
        // Held across the spawn, so the task cannot end (and remove its
        // entry) before the entry is made.
        let mut connections = self.lock();
        let abort = tasks.spawn(task(Arc::clone(&in_flight), registered));
        connections.insert(id, Entry { in_flight, abort });
    }

    /// Closes the oldest connection with no request in progress, if any.
    fn shed_oldest_idle(&self) -> bool {
        let mut connections = self.lock();
        let oldest = connections
            .iter()
            .find(|(_, c)| c.in_flight.load(Ordering::Acquire) == 0)
            .map(|(&id, _)| id);
        match oldest.and_then(|id| connections.remove(&id)) {
            Some(entry) => {
                entry.abort.abort();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the registry, given up when its task ends or
/// is aborted.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        self.registry.freed.notify_one();
    }
}

/// A request in progress on a connection, while it lives.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(in_flight: &Arc<AtomicUsize>) -> Self {
        in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(in_flight))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether an accept error is one connection's (it was reset before it
/// was accepted, say), not the listener's or the process's.
fn is_one_connections(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Lets one log line through per [`LOG_EVERY`], counting the rest.
#[derive(Default)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// `Some(how many were held back since the last line)` when a line
    /// may be logged now.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now - last < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

fn repeats(more: u64) -> String {
    if more == 0 {
        String::new()
    } else {
        format!(" ({more} more like it since the last report)")
    }
}
