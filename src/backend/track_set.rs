//! Push invalidation for many keys over one connection: a [`TrackerSet`]
//! hands out a [`Tracker`] per member key, all fed by one tracking session
//! subscribed by prefix.
//!
//! The session does not read the members (there may be very many); their
//! readers do, on connections of their own, with a ticket taken before the
//! read ([`Tracker::ticket`], then [`Tracker::saw`] with the epoch of the
//! server that answered). That is sound because any change after the
//! ticket was taken moves the member's token through the tracking
//! connection, and because a member keeps only reads from the server the
//! session is armed on ([`Tracker::arm_on`]): after a failover or a
//! restart, a read and the session may briefly be on different servers.
//!
//! One heartbeat answers for every member: members share the set's bound,
//! so renewing it is one store whatever their number, and a member's
//! [`Tracker::vouched`] costs what a single key's does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::track::Bound;
use super::Tracker;
use crate::key::Key;
use crate::unpoisoned::lock;

/// The trackers of many keys, fed by one tracking session of a backend
/// ([`Backend::track_set`](super::Backend::track_set)).
///
/// Members are created on first ask and held weakly: a member nobody holds
/// any more is dropped, and pruned from the set. The session ends once the
/// set is dropped.
pub struct TrackerSet {
    prefixes: Vec<String>,
    parents: Vec<String>,
    /// What the session subscribes to: the prefixes, and the parents none
    /// of them covers, with no entry under another (Redis refuses
    /// overlapping prefixes).
    subscriptions: Vec<String>,
    /// The members and the set's arming, under one lock: a member is
    /// created armed or not, and no invalidation falls between.
    state: Mutex<State>,
    /// The members' heartbeat bound.
    bound: Arc<Bound>,
    /// Woken when the set is dropped, so its session ends at once.
    dropped: Arc<Notify>,
    /// Whether a key under no prefix was asked for (told once).
    strays_told: AtomicBool,
}

struct State {
    members: HashMap<String, Weak<Tracker>>,
    /// Members created while armed since the session last took them, whose
    /// lapse it has not begun to watch; kept only once a session watches
    /// lapses (`to_watch`), so a backend that does not never fills it.
    joined: Vec<String>,
    /// Whether a session watches the members' lapses.
    watched: bool,
    /// The epoch of the server the session is armed on, while it is.
    armed: Option<u64>,
    /// How many members were live at the last pruning: the map is pruned
    /// again once it has doubled since, so creating members costs
    /// amortized constant time however many were dropped.
    pruned_at: usize,
}

impl State {
    /// Every live member, pruning the dead ones.
    fn each(&mut self, mut f: impl FnMut(&Tracker)) {
        self.members.retain(|_, member| match member.upgrade() {
            Some(t) => {
                f(&t);
                true
            }
            None => false,
        });
        self.pruned_at = self.members.len();
    }
}

impl TrackerSet {
    /// A set whose session subscribes to every prefix in `prefixes` (one
    /// `CLIENT TRACKING ON BCAST PREFIX p1 PREFIX p2 ...`); a change of a
    /// key named in `parents` invalidates every member (parents no prefix
    /// covers are subscribed to as well).
    pub fn new(prefixes: Vec<String>, parents: Vec<String>) -> Arc<Self> {
        let subscriptions = subscriptions(&prefixes, &parents);
        Arc::new(TrackerSet {
            prefixes,
            parents,
            subscriptions,
            state: Mutex::new(State {
                members: HashMap::new(),
                joined: Vec::new(),
                watched: false,
                armed: None,
                pruned_at: 0,
            }),
            bound: Arc::new(Bound::new()),
            dropped: Arc::new(Notify::new()),
            strays_told: AtomicBool::new(false),
        })
    }

    /// The tracker of one member key (by its rendered name,
    /// [`Key::as_str`]): created on first ask, armed at once if the set is
    /// armed, held weakly by the set. Its heartbeat bound is the set's.
    ///
    /// A key under none of the set's prefixes gets a tracker that is never
    /// armed, so its readers read it every time: the server would push no
    /// change of it.
    pub fn member(&self, key: &Key) -> Arc<Tracker> {
        let name = key.as_str();
        if !self
            .subscriptions
            .iter()
            .any(|p| name.starts_with(p.as_str()))
        {
            if !self.strays_told.swap(true, Ordering::Relaxed) {
                tracing::warn!(key = %key, prefixes = ?self.prefixes, "gensync push mode: a key under none of the set's prefixes is never vouched for; checking it on every request (strict)");
            }
            return Tracker::new();
        }
        let mut state = self.state();
        if let Some(t) = state.members.get(name).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(Tracker::sharing(Arc::clone(&self.bound)));
        if let Some(epoch) = state.armed {
            t.arm_on(epoch);
        }
        if state.members.len() >= (2 * state.pruned_at).max(64) {
            state.each(|_| {});
        }
        state.members.insert(name.to_owned(), Arc::downgrade(&t));
        // Unarmed, the next arm's `to_watch(true)` takes every member.
        if state.watched && state.armed.is_some() {
            state.joined.push(name.to_owned());
        }
        t
    }

    /// The backend's side: the keys whose lapse a session should begin to
    /// watch, as their changes may not be pushed to it (made before it was
    /// armed, or while it was away): with `all`, every live member and
    /// parent (a session just armed); else the members created since the
    /// last call.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn to_watch(&self, all: bool) -> Vec<String> {
        let mut state = self.state();
        state.watched = true;
        let joined = std::mem::take(&mut state.joined);
        if !all {
            return joined;
        }
        let mut names = self.parents.clone();
        names.extend(
            state
                .members
                .iter()
                .filter(|(_, m)| m.strong_count() > 0)
                .map(|(name, _)| name.clone()),
        );
        names
    }

    /// The prefixes the set was made with.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }

    /// The parent keys the set was made with: a change of one invalidates
    /// every member.
    pub fn parents(&self) -> &[String] {
        &self.parents
    }

    /// Whether the set's session is armed (it may still have missed its
    /// heartbeat).
    pub fn is_armed(&self) -> bool {
        self.state().armed.is_some()
    }

    /// The backend's side: the session is armed on the server of `epoch`
    /// ([`Backend::epoch`](super::Backend::epoch)); every member, and
    /// every member created from now on, is armed on it.
    pub fn arm(&self, epoch: u64) {
        let mut state = self.state();
        state.armed = Some(epoch);
        state.each(|t| t.arm_on(epoch));
    }

    /// The backend's side: the session is gone, or can no longer vouch;
    /// every member is lost until the set is armed again.
    pub fn lost(&self) {
        let mut state = self.state();
        state.armed = None;
        state.each(Tracker::lost);
    }

    /// The backend's side: the key named `key` changed. Invalidates that
    /// member, or every member for a parent; other names are ignored.
    pub fn invalidate(&self, key: &str) {
        self.invalidated(key);
    }

    /// [`invalidate`](Self::invalidate), saying whether `key` concerns the
    /// set (see [`concerns`](Self::concerns)): one look at the set for a
    /// pushed key, which the backend then watches for its lapse.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn invalidated(&self, key: &str) -> bool {
        let mut state = self.state();
        if self.parents.iter().any(|p| p == key) {
            state.each(Tracker::invalidate);
            true
        } else if let Some(t) = state.members.get(key).and_then(Weak::upgrade) {
            t.invalidate();
            true
        } else {
            false
        }
    }

    /// Whether `key` is one of the set's parents or a member someone
    /// holds: a key whose lapse the backend watches.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn concerns(&self, key: &str) -> bool {
        self.parents.iter().any(|p| p == key)
            || self
                .state()
                .members
                .get(key)
                .is_some_and(|m| m.strong_count() > 0)
    }

    /// The backend's side: anything may have changed (a flush).
    pub fn invalidate_all(&self) {
        self.state().each(Tracker::invalidate);
    }

    /// The backend's side: a heartbeat sent at `sent` was answered; every
    /// member vouches until `sent + bound` (see
    /// [`Tracker::vouch_until`]). One store, whatever the number of
    /// members; they are walked only when a lapsed bound holds again, to
    /// wake their waiters.
    pub fn vouch_until(&self, sent: Instant, bound: Duration) {
        if self.bound.renew(sent + bound) {
            self.state().each(Tracker::wake);
        }
    }

    /// What the session subscribes to.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn subscriptions(&self) -> &[String] {
        &self.subscriptions
    }

    /// Woken when the set is dropped, for a session that must not keep it
    /// alive.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.dropped)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state whole: a panic elsewhere while the
        // lock was held loses nothing.
        lock(&self.state)
    }
}

impl Drop for TrackerSet {
    fn drop(&mut self) {
        // Nothing invalidates the members any more: a member that outlives
        // its set vouches for nothing.
        self.state().each(Tracker::lost);
        self.dropped.notify_waiters();
    }
}

impl std::fmt::Debug for TrackerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("TrackerSet")
            .field("prefixes", &self.prefixes)
            .field("parents", &self.parents)
            .field("armed", &state.armed.is_some())
            .field("members", &state.members.len())
            .finish_non_exhaustive()
    }
}

/// The prefixes and uncovered parents, none under another.
fn subscriptions(prefixes: &[String], parents: &[String]) -> Vec<String> {
    let mut all: Vec<String> = prefixes.iter().chain(parents).cloned().collect();
    // Shorter first: an entry is kept only if none kept before covers it.
    all.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
    let mut kept: Vec<String> = Vec::new();
    for entry in all {
        if !kept.iter().any(|k| entry.starts_with(k.as_str())) {
            kept.push(entry);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Stored;
    use crate::generation::Generation;

    fn value(n: u64) -> Stored {
        Stored::Value(Generation::new(n).unwrap())
    }

    fn key(name: &str) -> Key {
        Key::new(["tenant", name]).unwrap()
    }

    const BOUND: Duration = Duration::from_secs(3600);

    #[test]
    fn parents_under_a_prefix_and_nested_prefixes_are_subscribed_once() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            subscriptions(&s(&["a:t:", "a:t:x", "b:"]), &s(&["a:t:parent", "c:p"])),
            s(&["b:", "c:p", "a:t:"])
        );
    }

    #[tokio::test]
    async fn members_follow_the_set() {
        let set = TrackerSet::new(vec!["gensync:tenant:".into()], vec!["parent".into()]);
        let (a, b) = (set.member(&key("a")), set.member(&key("b")));
        assert!(Arc::ptr_eq(&a, &set.member(&key("a"))), "one tracker a key");
        set.arm(5);
        assert!(a.is_armed() && b.is_armed());
        set.vouch_until(Instant::now(), BOUND);
        assert!(a.saw(a.ticket(), value(1), 5));
        assert!(b.saw(b.ticket(), value(2), 5));
        assert_eq!(a.vouched(), Some((value(1), 5)));

        set.invalidate(key("a").as_str());
        assert_eq!(a.vouched(), None);
        assert_eq!(b.vouched(), Some((value(2), 5)), "only a changed");
        set.invalidate("gensync:tenant:nobody");
        assert_eq!(b.vouched(), Some((value(2), 5)));

        assert!(a.saw(a.ticket(), value(3), 5));
        set.invalidate("parent");
        assert_eq!((a.vouched(), b.vouched()), (None, None));

        assert!(a.saw(a.ticket(), value(3), 5));
        set.invalidate_all();
        assert_eq!(a.vouched(), None);

        assert!(!a.saw(a.ticket(), value(3), 4), "another server's read");
        assert!(a.saw(a.ticket(), value(3), 5));
        set.lost();
        assert!(!a.is_armed() && !set.is_armed());
        assert_eq!(a.vouched(), None);
    }

    #[tokio::test]
    async fn a_member_created_while_armed_vouches_after_its_first_read() {
        let set = TrackerSet::new(vec!["gensync:tenant:".into()], vec![]);
        set.arm(0);
        set.vouch_until(Instant::now(), BOUND);
        let late = set.member(&key("late"));
        assert!(late.is_armed());
        assert!(late.saw(late.ticket(), value(1), 0));
        assert_eq!(late.vouched(), Some((value(1), 0)));
    }

    #[tokio::test]
    async fn a_lapsed_bound_renewed_wakes_the_members() {
        let set = TrackerSet::new(vec!["gensync:tenant:".into()], vec![]);
        let a = set.member(&key("a"));
        set.arm(0);
        assert!(a.saw(a.ticket(), value(1), 0));
        let woken = a.changed();
        tokio::pin!(woken);
        woken.as_mut().enable();
        set.vouch_until(Instant::now(), BOUND);
        tokio::time::timeout(Duration::from_secs(5), woken)
            .await
            .expect("woken");
        assert_eq!(a.vouched(), Some((value(1), 0)));
    }

    #[test]
    fn dropped_members_are_pruned() {
        let set = TrackerSet::new(vec!["gensync:tenant:".into()], vec![]);
        let kept = set.member(&key("kept"));
        for n in 0..10_000 {
            drop(set.member(&key(&n.to_string())));
        }
        assert!(set.state().members.len() <= 130, "pruned as it grows");
        set.lost();
        assert_eq!(set.state().members.len(), 1);
        assert!(Arc::ptr_eq(&kept, &set.member(&key("kept"))));
    }

    #[test]
    fn joined_members_are_kept_only_for_a_session_that_watches_lapses() {
        let set = TrackerSet::new(vec!["gensync:tenant:".into()], vec![]);
        set.arm(0);
        // No session takes them (process memory, say): none is kept.
        let held: Vec<_> = (0..1000)
            .map(|n| set.member(&key(&n.to_string())))
            .collect();
        assert!(set.state().joined.is_empty());
        assert_eq!(set.to_watch(true).len(), held.len(), "every live member");
        let late = set.member(&key("late"));
        assert_eq!(
            set.to_watch(false),
            [key("late").as_str().to_owned()],
            "joined since"
        );
        assert!(set.to_watch(false).is_empty(), "taken once");
        drop(late);
    }

    #[tokio::test]
    async fn a_key_under_no_prefix_is_never_armed() {
        let set = TrackerSet::new(vec!["gensync:tenant:".into()], vec![]);
        set.arm(0);
        let stray = set.member(&Key::new(["elsewhere"]).unwrap());
        assert!(!stray.is_armed());
        set.arm(0);
        assert!(!stray.is_armed(), "nor armed later");
        assert!(!stray.saw(stray.ticket(), value(1), 0));
    }

    #[tokio::test]
    async fn a_member_outliving_its_set_vouches_for_nothing() {
        let set = TrackerSet::new(vec!["gensync:tenant:".into()], vec![]);
        let a = set.member(&key("a"));
        set.arm(0);
        set.vouch_until(Instant::now(), BOUND);
        assert!(a.saw(a.ticket(), value(1), 0));
        drop(set);
        assert_eq!(a.vouched(), None);
        assert!(!a.is_armed());
    }
}
