//! How a [`MemoryBackend`](super::MemoryBackend) pushes: the trackers of
//! each key sit behind the store's lock, and every operation tells them of
//! any change as it lets the lock go.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::{classify, Store};
use crate::backend::{Stored, Tracker};
use crate::key::Key;

/// The store and its trackers behind one lock, so a change and its
/// invalidation are one step: no reader can see the change and then be
/// vouched what came before it.
#[derive(Debug, Default)]
pub(super) struct Locked {
    store: Store,
    /// Trackers by rendered key. Not in [`Store`]: a save point does not
    /// take them along.
    pub(super) watches: HashMap<String, Watch>,
}

/// The trackers of one key, and what they were last told.
#[derive(Debug, Default)]
pub(super) struct Watch {
    /// Held weakly: a tracker nobody reads through any more is dropped
    /// at the next change.
    trackers: Vec<Weak<Tracker>>,
    /// What the key held (and until when) at the last push.
    told: Option<Told>,
}

/// What a `get` would return, in which epoch, and when the key lapses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Told {
    stored: Stored,
    epoch: u64,
    lapse: Option<Instant>,
}

/// The store, locked; dropping it pushes whatever changed to the trackers
/// before the lock is let go.
pub(super) struct Held<'a> {
    guard: MutexGuard<'a, Locked>,
    epoch: &'a AtomicU64,
}

/// How long a read of a key with no lapse in sight is vouched for: only a
/// change ends it, and every change is pushed.
const UNTIL_CHANGED: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl<'a> Held<'a> {
    pub(super) fn new(guard: MutexGuard<'a, Locked>, epoch: &'a AtomicU64) -> Self {
        Held { guard, epoch }
    }

    /// Adds a tracker of `key`: armed and told what the key holds, under
    /// the lock.
    pub(super) fn track(&mut self, key: &Key, tracker: &Arc<Tracker>) {
        let now = Instant::now();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let told = self.told(key.as_str(), now, epoch);
        let watch = self
            .guard
            .watches
            .entry(key.as_str().to_owned())
            .or_default();
        // Lapses are instants on tokio's clock, which tests may pause.
        tracker.follow_tokio_time();
        // Armed and read under the lock: no change can fall in between.
        tracker.arm();
        tell(tracker, now, told);
        watch.trackers.push(Arc::downgrade(tracker));
        // The other trackers were told what the key held at the last
        // change; if it lapsed since, the push as the lock is let go tells
        // them all.
        watch.told.get_or_insert(told);
    }
}

impl Deref for Held<'_> {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.guard.store
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.guard.store
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let Locked { store, watches } = &mut *self.guard;
        // Untracked, as every store is outside push mode: no clock read
        // added to each operation.
        if watches.is_empty() {
            return;
        }
        let now = Instant::now();
        let epoch = self.epoch.load(Ordering::SeqCst);
        watches.retain(|key, watch| {
            watch.trackers.retain(|t| t.strong_count() > 0);
            if watch.trackers.is_empty() {
                return false;
            }
            let now_told = store.told(key, now, epoch);
            match watch.told {
                // Nothing a reader could see moved.
                Some(told) if told == now_told => {}
                // Only the lapse of a live key moved (an intent cut it, a
                // renewal stretched it): the read still holds, until then.
                // A key that lapsed and came back is a change, even with
                // the same value.
                Some(told)
                    if told.stored == now_told.stored
                        && told.epoch == now_told.epoch
                        && told.lapse.is_none_or(|at| at > now) =>
                {
                    for t in watch.trackers.iter().filter_map(Weak::upgrade) {
                        vouch(&t, now, now_told.lapse);
                    }
                }
                _ => {
                    for t in watch.trackers.iter().filter_map(Weak::upgrade) {
                        t.invalidate();
                        tell(&t, now, now_told);
                    }
                }
            }
            watch.told = Some(now_told);
            true
        });
    }
}

/// Hands an armed tracker what the key holds now, as a read begun after
/// every change so far.
fn tell(tracker: &Tracker, now: Instant, told: Told) {
    tracker.saw(tracker.ticket(), told.stored, told.epoch);
    vouch(tracker, now, told.lapse);
}

/// Vouches until the key lapses: lapse is lazy here, so nothing is pushed
/// when it comes, and the vouch must end exactly when a `get` would start
/// reading the key as missing.
fn vouch(tracker: &Tracker, now: Instant, lapse: Option<Instant>) {
    let bound = lapse.map_or(UNTIL_CHANGED, |at| at.saturating_duration_since(now));
    tracker.vouch_until(now, bound);
}

impl Store {
    /// What a `get` of `key` would return at `now`, and when it lapses.
    fn told(&self, key: &str, now: Instant, epoch: u64) -> Told {
        let entry = self.entries.get(key).filter(|e| e.is_live(now));
        Told {
            stored: entry.map_or(Stored::Missing, |e| classify(&e.value)),
            epoch,
            lapse: entry.and_then(|e| e.expires_at),
        }
    }
}
