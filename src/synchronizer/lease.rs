//! A writers' lease as the writer holding it sees it: when it lapses unless
//! renewed, whether a renewal found it gone, and the renewals that keep it
//! while a write works.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::WriterLock;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::unpoisoned;

/// A writers' lease this process holds, as far as it knows.
pub(super) struct Lease {
    pub(super) token: Generation,
    pub(super) fence: Fence,
    /// When the lease lapses unless renewed: the time the last successful
    /// take or renewal was *sent*, plus the lease.
    valid_until: Mutex<Instant>,
    /// A renewal found the lease gone.
    lost: AtomicBool,
    /// The backend's server when the lease was last taken or renewed: a
    /// different one may not hold it.
    epoch: AtomicU64,
    /// The writer's intent is recorded (and must be again on a new server).
    pub(super) intended: AtomicBool,
}

impl Lease {
    /// A lease just taken, valid until `valid_until` unless renewed, on
    /// the server of `epoch`.
    pub(super) fn new(token: Generation, fence: Fence, valid_until: Instant, epoch: u64) -> Self {
        Lease {
            token,
            fence,
            valid_until: Mutex::new(valid_until),
            lost: AtomicBool::new(false),
            epoch: AtomicU64::new(epoch),
            intended: AtomicBool::new(false),
        }
    }

    /// Whether this process still holds the lease.
    pub(super) fn holds(&self) -> bool {
        !self.lost.load(Ordering::SeqCst) && Instant::now() < *unpoisoned::lock(&self.valid_until)
    }

    /// Whether the backend reached another server since the lease was last
    /// confirmed.
    pub(super) fn server_changed(&self, lock: &dyn WriterLock) -> bool {
        lock.epoch() != self.epoch.load(Ordering::SeqCst)
    }

    /// Renews the lease once, recording what the answer says.
    pub(super) async fn renew(&self, lock: &dyn WriterLock, ttl: Duration) {
        let (sent, epoch) = (Instant::now(), lock.epoch());
        match lock.renew(self.token, ttl).await {
            Ok(true) => {
                // A server the lease moved to (a failover) may hold the
                // lease but not the intent, written by another script: the
                // intent is recorded again there before the move counts as
                // seen, else the next renewal tries again.
                let moved = epoch != self.epoch.load(Ordering::SeqCst);
                if moved
                    && self.intended.load(Ordering::SeqCst)
                    && lock.mark_intent(self.token, ttl).await.is_err()
                {
                    return;
                }
                *unpoisoned::lock(&self.valid_until) = sent + ttl;
                self.epoch.store(epoch, Ordering::SeqCst);
            }
            Ok(false) => self.lost.store(true, Ordering::SeqCst),
            // Logged by the synchronizer; the lease stands until its known
            // lapse, and the next renewal may get through.
            Err(_) => {}
        }
    }

    /// Runs `work`, renewing the lease every third of its length while the
    /// work runs, so a slow save keeps it. The renewals run in this task
    /// and stop with it: a writer that stalls or dies stops renewing, and
    /// its lease lapses.
    pub(super) async fn keep_while<T>(
        &self,
        lock: &dyn WriterLock,
        ttl: Duration,
        work: impl Future<Output = T>,
    ) -> T {
        let renewals = async {
            loop {
                tokio::time::sleep(ttl / 3).await;
                self.renew(lock, ttl).await;
                if !self.holds() {
                    return;
                }
            }
        };
        tokio::pin!(work);
        tokio::select! {
            done = &mut work => done,
            // The lease is gone: finish the work without renewing; the
            // writer is told at the end.
            () = renewals => work.await,
        }
    }
}
