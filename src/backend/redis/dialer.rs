//! How the blocking path's `r2d2` pool makes its connections, and when it
//! does not. Left alone, r2d2 dials for every checkout that finds no idle
//! connection and retries a failed dial in the background for as long as
//! it fails, caller waiting or not; here each attempt decides for itself
//! ([`Connects::should_dial`]), so a server that is down costs one dial at
//! a time. The [`Dialer`] also dials a call's second try, keeps the last
//! connect error (r2d2 keeps only its text, and the kind decides the
//! advice; it also answers readers while the reconnect delay runs), and
//! learns which server each new connection reached.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, ErrorKind, RedisError, Value};

use super::conn::{connect_blocking, BlockingConn};
use super::identity::{identity_cmd, read_run_id};
use super::redial::Redials;
use super::target::{Caller, Target};
use crate::unpoisoned::lock;

/// What the connect attempts did (r2d2 reports only text, and the kind of
/// error decides the advice: wrong password versus server down), and who
/// is waiting for one.
#[derive(Default)]
struct Connects {
    /// Why the last finished attempt failed, and when; `None` after a
    /// success.
    last_error: Option<(RedisError, Instant)>,
    /// The pause the last failure earned (see
    /// [`RedisConfig::reconnect_pause`](super::RedisConfig)), and how many
    /// failed in a row.
    pause: Duration,
    redials: Redials,
    /// When each attempt still running began (r2d2 may run several).
    running: Vec<Instant>,
    /// Readers waiting on the pool for a new connection.
    readers: usize,
    /// When each writer waiting on the pool for a new connection asked.
    writers: Vec<Instant>,
}

impl Connects {
    /// Whether a connect attempt of the pool should dial. r2d2 starts one
    /// per checkout that finds no idle connection and retries a failed one
    /// in the background every half connect timeout, for as long as it
    /// fails, whether or not anyone still waits: against a refusing server
    /// that was hundreds of dials for a few checks. So after a failure the
    /// attempt decides itself: one dial at a time, for a reader waiting
    /// once the reconnect delay has passed, or for a writer waiting that
    /// has seen no failure since it asked (it is owed a fresh answer, but
    /// one is enough). Until a connect fails, every attempt dials, as r2d2
    /// means it to. The delay is the pause the last failure earned: it
    /// doubles, jittered, while they come in a row.
    fn should_dial(&self) -> bool {
        match &self.last_error {
            None => true,
            Some((_, failed)) => {
                self.running.is_empty()
                    && ((self.readers > 0 && failed.elapsed() >= self.pause)
                        || self.writers.iter().any(|asked| asked > failed))
            }
        }
    }
}

/// Counts a caller as waiting on the pool until dropped.
pub(super) struct Waiting<'a> {
    dialer: &'a Dialer,
    writer: Option<Instant>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut connects = lock(&self.dialer.connects);
        match self.writer {
            Some(asked) => {
                if let Some(i) = connects.writers.iter().position(|t| *t == asked) {
                    connects.writers.swap_remove(i);
                }
            }
            None => connects.readers -= 1,
        }
    }
}

/// A pooled connection, with when it was made, so a call can tell one made
/// for it from one that sat in the pool.
pub(super) struct Conn {
    pub(super) conn: BlockingConn,
    pub(super) made: Instant,
    /// The epoch of the server it reached.
    pub(super) epoch: u64,
    /// Set when a call found it dead, so the pool drops it: redis-rs marks
    /// a connection closed on some failures only.
    pub(super) broken: bool,
}

/// Makes connections, for the pool and for a call's second try, and
/// records what each attempt did.
pub(super) struct Dialer {
    target: Arc<Target>,
    connects: Mutex<Connects>,
}

impl Dialer {
    /// A dialer for `target` that has made no attempt yet.
    pub(super) fn new(target: Arc<Target>) -> Self {
        Dialer {
            target,
            connects: Mutex::new(Connects::default()),
        }
    }

    /// A connect attempt of the pool: a dial, or the refusal to make one
    /// (see [`Connects::should_dial`]), which r2d2 retries later.
    fn dial_for_pool(&self) -> Result<Conn, RedisError> {
        let began = {
            let mut connects = lock(&self.connects);
            if !connects.should_dial() {
                return Err(RedisError::from((
                    ErrorKind::Client,
                    "no dial: no caller is owed one now",
                )));
            }
            let began = Instant::now();
            connects.running.push(began);
            began
        };
        self.dial(began, true)
    }

    /// A dial on the caller's thread, for a call's second try. A reader is
    /// answered the last connect error instead while the delay runs. Its
    /// own failure is reported but starts no delay: it comes once per
    /// connection found dead, not once per call, so it needs no brake, and
    /// the server that just closed the connection may be back for the next
    /// call.
    pub(super) fn dial_for_retry(&self, caller: Caller) -> Result<Conn, RedisError> {
        if caller == Caller::Reader {
            if let Some(e) = self.recent_failure() {
                return Err(e);
            }
        }
        let began = Instant::now();
        lock(&self.connects).running.push(began);
        self.dial(began, false)
    }

    /// The last connect error, while the pause it earned runs.
    pub(super) fn recent_failure(&self) -> Option<RedisError> {
        let connects = lock(&self.connects);
        match &connects.last_error {
            Some((e, at)) if at.elapsed() < connects.pause => Some(e.clone()),
            _ => None,
        }
    }

    /// Counts the caller as waiting on the pool, so its attempts dial.
    pub(super) fn wait(&self, caller: Caller, asked: Instant) -> Waiting<'_> {
        let mut connects = lock(&self.connects);
        let writer = match caller {
            Caller::Reader => {
                connects.readers += 1;
                None
            }
            Caller::Writer => {
                connects.writers.push(asked);
                Some(asked)
            }
        };
        Waiting {
            dialer: self,
            writer,
        }
    }

    /// The last connect error and when it came, and when the oldest
    /// attempt still running began: what a checkout that got no connection
    /// is told.
    pub(super) fn last_error_and_oldest_running(
        &self,
    ) -> (Option<(RedisError, Instant)>, Option<Instant>) {
        let connects = lock(&self.connects);
        (
            connects.last_error.clone(),
            connects.running.iter().min().copied(),
        )
    }

    /// Dials, as the attempt registered running since `began`; a failure
    /// is kept as the last connect error if `keep_failure`.
    fn dial(&self, began: Instant, keep_failure: bool) -> Result<Conn, RedisError> {
        let result = self.try_connect();
        let mut connects = lock(&self.connects);
        if let Some(i) = connects.running.iter().position(|t| *t == began) {
            connects.running.swap_remove(i);
        }
        match &result {
            Ok(_) => {
                connects.last_error = None;
                connects.redials.reset();
            }
            Err(e) if keep_failure => {
                connects.pause = self.target.config.reconnect_pause(&mut connects.redials);
                connects.last_error = Some((e.clone(), Instant::now()));
            }
            Err(_) => {}
        }
        result
    }

    /// Makes a connection and learns which server it reached, all within
    /// the connect timeout.
    fn try_connect(&self) -> Result<Conn, RedisError> {
        let began = Instant::now();
        let config = &self.target.config;
        let conn = connect_blocking(&self.target)?;
        let BlockingConn::Node(mut node) = conn else {
            // A Cluster's nodes are known by their answers (`Target::incoming`).
            return Ok(Conn {
                conn,
                made: Instant::now(),
                epoch: self.target.identity.epoch(),
                broken: false,
            });
        };
        // As on the async path: the identity gets what is left of the
        // connect timeout, and failing to learn it fails nothing. A reply
        // that comes too late is skipped by redis-rs on the next read.
        let began = if self.target.probe_budget_restarts() {
            Instant::now()
        } else {
            began
        };
        let left = config.connect_timeout.saturating_sub(began.elapsed());
        let run_id = if !left.is_zero()
            && node.set_read_timeout(Some(left)).is_ok()
            && node.set_write_timeout(Some(left)).is_ok()
        {
            read_run_id(identity_cmd().query::<Value>(&mut node))
        } else {
            None
        };
        node.set_read_timeout(Some(config.response_timeout))?;
        node.set_write_timeout(Some(config.response_timeout))?;
        let conn = BlockingConn::Node(node);
        let epoch = self.target.identity.met(run_id);
        Ok(Conn {
            conn,
            made: Instant::now(),
            epoch,
            broken: false,
        })
    }
}

/// The pool's side of the dialer: r2d2 asks it for connections, and
/// whether one it holds is still good.
pub(super) struct Manager(pub(super) Arc<Dialer>);

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    fn connect(&self) -> Result<Conn, RedisError> {
        self.0.dial_for_pool()
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        redis::cmd("PING").query::<()>(&mut conn.conn)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !conn.conn.is_open()
    }
}
