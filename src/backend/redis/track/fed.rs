//! What a tracking session feeds: one key's tracker, or a set's members.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use redis::{PushInfo, PushKind, Value};
use tokio::time::Instant;

use super::lapses::{Asked, Lapses};
use crate::backend::{Ticket, Tracker, TrackerSet};
use crate::key::Key;
use crate::unpoisoned::lock;

/// What a session's pushes feed, held weakly: the session ends once it is
/// dropped.
#[derive(Clone)]
pub(super) enum Fed {
    /// One key, which the session reads itself.
    Key { key: Key, tracker: Weak<Tracker> },
    /// A set's members, which their readers read; the session only arms
    /// the set, invalidates, heartbeats and watches their lapses.
    Set {
        prefixes: Vec<String>,
        set: Weak<TrackerSet>,
        lapses: Arc<Mutex<Lapses>>,
    },
}

impl Fed {
    /// What the session subscribes to, by prefix.
    pub(super) fn prefixes(&self) -> Vec<&str> {
        match self {
            Fed::Key { key, .. } => vec![key.as_str()],
            Fed::Set { prefixes, .. } => prefixes.iter().map(String::as_str).collect(),
        }
    }

    /// A set's, for `set`.
    pub(super) fn set(set: &Arc<TrackerSet>) -> Self {
        Fed::Set {
            prefixes: set.subscriptions().to_vec(),
            set: Arc::downgrade(set),
            lapses: Arc::default(),
        }
    }

    /// The key a heartbeat reads and compares: the key itself, or a set's
    /// first parent (which differs after a `SWAPDB`, as its members may).
    pub(super) fn compared(&self) -> Option<Key> {
        match self {
            Fed::Key { key, .. } => Some(key.clone()),
            Fed::Set { set, .. } => set
                .upgrade()
                .and_then(|s| s.parents().first().map(|p| Key::rendered(p))),
        }
    }

    /// What a set's heartbeat sent at `now` asks about its lapses.
    pub(super) fn lapses_asked(&self, now: Instant) -> Option<Asked> {
        match self {
            Fed::Key { .. } => None,
            Fed::Set { set, lapses, .. } => {
                let mut lapses = lock(lapses);
                // A new member's lapse may predate it, unpushed.
                for name in set.upgrade().map(|s| s.to_watch(false)).unwrap_or_default() {
                    lapses.changed(&name);
                }
                Some(lapses.next(now))
            }
        }
    }

    /// Reads the replies to what a heartbeat sent at `sent` asked about
    /// lapses, and invalidates the keys found lapsed. `false` once dropped.
    pub(super) fn lapses_answered(&self, asked: Asked, sent: Instant, replies: Vec<Value>) -> bool {
        let Fed::Set { set, lapses, .. } = self else {
            return true;
        };
        let Some(set) = set.upgrade() else {
            return false;
        };
        let lapsed = lock(lapses).answered(asked, sent, replies, |name| set.concerns(name));
        for name in lapsed {
            set.invalidate(&name);
        }
        true
    }

    /// Whether `name` is one of a set's parents (exact keys, not prefixes).
    pub(super) fn is_parent(&self, name: &str) -> bool {
        match self {
            Fed::Key { .. } => false,
            Fed::Set { set, .. } => set
                .upgrade()
                .is_some_and(|s| s.parents().iter().any(|p| p == name)),
        }
    }

    /// Arms on the server of `epoch`; `false` once dropped.
    pub(super) fn arm(&self, epoch: u64) -> bool {
        match self {
            Fed::Key { tracker, .. } => tracker.upgrade().map(|t| t.arm()).is_some(),
            Fed::Set { set, lapses, .. } => set
                .upgrade()
                .map(|s| {
                    s.arm(epoch);
                    // A member's lapse set before now was pushed to no
                    // session of this set: watch every one from here.
                    let mut lapses = lock(lapses);
                    for name in s.to_watch(true) {
                        lapses.changed(&name);
                    }
                })
                .is_some(),
        }
    }

    /// `false` once dropped.
    pub(super) fn lost(&self) -> bool {
        match self {
            Fed::Key { tracker, .. } => tracker.upgrade().map(|t| t.lost()).is_some(),
            Fed::Set { set, .. } => set.upgrade().map(|s| s.lost()).is_some(),
        }
    }

    /// `false` once dropped.
    pub(super) fn vouch_until(&self, sent: Instant, bound: Duration) -> bool {
        match self {
            Fed::Key { tracker, .. } => tracker.upgrade().map(|t| t.vouch_until(sent, bound)),
            Fed::Set { set, .. } => set.upgrade().map(|s| s.vouch_until(sent, bound)),
        }
        .is_some()
    }

    /// A change the server did not announce: everything fed is
    /// invalidated. `false` once dropped.
    pub(super) fn invalidate(&self) -> bool {
        match self {
            Fed::Key { tracker, .. } => tracker.upgrade().map(|t| t.invalidate()),
            Fed::Set { set, .. } => set.upgrade().map(|s| s.invalidate_all()),
        }
        .is_some()
    }

    /// Whether the session must read the key again: an event came after
    /// the `ticket` of its last read (a set has no reads of its own).
    /// `None` once dropped.
    pub(super) fn moved_since(&self, ticket: Option<Ticket>) -> Option<bool> {
        match self {
            Fed::Key { tracker, .. } => tracker
                .upgrade()
                .map(|t| ticket.is_none_or(|ticket| t.moved_since(ticket))),
            Fed::Set { set, .. } => set.upgrade().map(|_| false),
        }
    }

    /// Hands on a push, in the order the connection received it.
    pub(super) fn pushed(&self, push: &PushInfo) {
        match self {
            Fed::Key { tracker, .. } => {
                if let Some(t) = tracker.upgrade() {
                    match push.kind {
                        // Any change under the prefix, or a flush (a null one).
                        PushKind::Invalidate => t.invalidate(),
                        PushKind::Disconnection => t.lost(),
                        _ => {}
                    }
                }
            }
            Fed::Set { set, lapses, .. } => {
                if let Some(s) = set.upgrade() {
                    match push.kind {
                        PushKind::Invalidate => invalidate_set(&s, &push.data, lapses),
                        PushKind::Disconnection => s.lost(),
                        _ => {}
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for Fed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fed::Key { key, .. } => key.fmt(f),
            Fed::Set { prefixes, .. } => write!(f, "{}*", prefixes.join("*, ")),
        }
    }
}

/// An invalidation push's data: an array of key names, or null for a
/// flush. Anything else invalidates every member, to be safe. A member or
/// parent named is watched for its lapse.
fn invalidate_set(set: &TrackerSet, data: &[Value], lapses: &Mutex<Lapses>) {
    let changed = |name: &str| {
        if set.invalidated(name) {
            lock(lapses).changed(name);
        }
    };
    let [Value::Array(names)] = data else {
        set.invalidate_all();
        return;
    };
    for name in names {
        match name {
            Value::BulkString(b) => {
                // A name that is not UTF-8 is no member's rendered key.
                if let Ok(name) = std::str::from_utf8(b) {
                    changed(name);
                }
            }
            Value::SimpleString(name) => changed(name),
            _ => set.invalidate_all(),
        }
    }
}
