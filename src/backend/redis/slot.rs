//! The async path's connection slot: the one multiplexed (or Cluster)
//! connection in use, made one at a time, and the last failed connect a reader is
//! answered with while the pause it earned runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use redis::RedisError;
use tokio::time::Instant;

use super::config::RedisConfig;
use super::conn::AsyncConn;
use super::redial::Redials;
use crate::unpoisoned::lock;

/// The current connection, tagged so a caller that saw it fail only drops
/// that one, not a newer one another caller already made.
#[derive(Default)]
pub(super) struct Slot {
    current: Mutex<Option<Current>>,
    next_id: AtomicU64,
    // One connect at a time; the others wait for it rather than pile on.
    pub(super) connecting: tokio::sync::Mutex<()>,
    /// The last failed connect, answered again until the pause it earned
    /// has passed, and how many failed in a row.
    failed: Mutex<Failed>,
}

/// The connects that failed in a row, the last one's error, and until when
/// it stands in for a dial.
#[derive(Default)]
struct Failed {
    last: Option<(Instant, RedisError)>,
    redials: Redials,
}

/// The connection in the slot, with its tag, when it was made, and the
/// epoch of the server it reached.
#[derive(Clone)]
pub(super) struct Current {
    pub(super) id: u64,
    pub(super) conn: AsyncConn,
    pub(super) made: Instant,
    pub(super) epoch: u64,
}

impl Slot {
    pub(super) fn get(&self) -> Option<Current> {
        lock(&self.current).clone()
    }

    pub(super) fn set(&self, (conn, epoch): (AsyncConn, u64)) -> Current {
        let current = Current {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            conn,
            made: Instant::now(),
            epoch,
        };
        *lock(&self.current) = Some(current.clone());
        current
    }

    /// The last connect error, while the pause it earned runs.
    pub(super) fn recent_failure(&self) -> Result<(), RedisError> {
        match &lock(&self.failed).last {
            Some((until, e)) if Instant::now() < *until => Err(e.clone()),
            _ => Ok(()),
        }
    }

    /// What a connect did: a failure earns a pause (see
    /// [`RedisConfig::reconnect_pause`]), doubling while they come in a
    /// row; a success starts the schedule again.
    pub(super) fn record_failure(&self, error: Option<RedisError>, config: &RedisConfig) {
        let mut failed = lock(&self.failed);
        match error {
            Some(e) => {
                let pause = config.reconnect_pause(&mut failed.redials);
                failed.last = Some((Instant::now() + pause, e));
            }
            None => {
                failed.redials.reset();
                failed.last = None;
            }
        }
    }

    pub(super) fn drop_if(&self, id: u64) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|cur| cur.id == id) {
            *current = None;
        }
    }
}
