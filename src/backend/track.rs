//! What push invalidation tells readers: the generation a backend's
//! tracking connection read last, vouched for while nothing invalidated it
//! and its heartbeats are answered in time.
//!
//! A backend that can push ([`Backend::track`](super::Backend::track))
//! feeds a [`Tracker`] from one connection: it arms the tracker once the
//! server sends it every change of the key, reads the key with a ticket
//! taken before the read, calls [`Tracker::invalidate`] for every change the
//! server pushes (before it hands on any later reply of that connection),
//! and [`Tracker::vouch_until`] after each answered heartbeat. Readers ask
//! [`Tracker::vouched`] and read the key themselves when it says nothing.
//! A member of a [`TrackerSet`](super::TrackerSet) is armed on one server
//! ([`Tracker::arm_on`]) and fed by its readers instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::clock::Clock;
use super::seen::{Seen, SeenCell};
use super::Stored;

/// The shared state between a backend's tracking connection and the
/// readers of one key.
///
/// Tokens order what the connection has said: every arming and every
/// invalidation takes a new one, losing the connection sets none (0), and
/// a read vouches only while the token it was begun under is still the
/// current one. Tokens are never reused, so a read begun before an
/// invalidation can never vouch after it.
pub struct Tracker {
    /// The current token; 0 while not armed.
    token: AtomicU64,
    /// Where tokens come from.
    tokens: AtomicU64,
    /// The last read, with the token it was begun under.
    seen: SeenCell,
    /// The epoch of the server the tracking connection was armed on, or
    /// [`ANY_EPOCH`]: reads from another server are not kept.
    armed_epoch: AtomicU64,
    /// The heartbeat bound: shared by the members of a
    /// [`TrackerSet`](super::TrackerSet), whose one connection answers for
    /// them all.
    bound: Arc<Bound>,
    /// Woken whenever what the tracker vouches for may have changed.
    changed: Arc<Notify>,
}

/// A plain [`Tracker::arm`]: the tracker's reads come from its own
/// connection, so any epoch they carry is the one it tracks.
const ANY_EPOCH: u64 = u64::MAX;

/// A read's place among the tracker's events: taken before the read is
/// sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

impl Default for Tracker {
    fn default() -> Self {
        Tracker::sharing(Arc::new(Bound::new()))
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        // Whoever waits on this tracker's changes (a reloader's tracking
        // task) learns it is gone, and ends, rather than wait for ever: a
        // keyed reloader drops one with every key it evicts.
        self.changed.notify_waiters();
    }
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("armed", &self.is_armed())
            .field("seen", &self.seen.read())
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker that vouches for nothing yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Tracker::default())
    }

    /// A member of a set: its heartbeat bound is the set's.
    pub(crate) fn sharing(bound: Arc<Bound>) -> Self {
        Tracker {
            token: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            seen: SeenCell::default(),
            armed_epoch: AtomicU64::new(ANY_EPOCH),
            bound,
            changed: Arc::new(Notify::new()),
        }
    }

    /// The server now sends every change of the key on this tracker's
    /// connection: reads begun from here on can vouch, whatever server
    /// they were read from (the connection reads the key itself).
    pub fn arm(&self) {
        self.arm_on(ANY_EPOCH);
    }

    /// Like [`arm`](Self::arm), for a connection on the server of `epoch`
    /// (see [`Backend::epoch`](super::Backend::epoch)) whose key is read
    /// by others, on connections of their own: only reads from that same
    /// server are kept ([`saw`](Self::saw)), since a change on another
    /// server would never be pushed here.
    pub fn arm_on(&self, epoch: u64) {
        // The epoch before the token: a ticket of this arming always finds
        // this epoch, or a later arming's along with a token of its own.
        self.armed_epoch.store(epoch, Ordering::SeqCst);
        self.token.store(self.fresh_token(), Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether the tracker is armed (its connection may still have missed
    /// its heartbeat).
    pub fn is_armed(&self) -> bool {
        self.token.load(Ordering::SeqCst) != 0
    }

    /// The key changed, or may have (a flush): no read begun before now
    /// vouches any more.
    pub fn invalidate(&self) {
        // Only an armed tracker moves on: a lost one stays lost until armed.
        let _ = self
            .token
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| {
                (t != 0).then(|| self.fresh_token())
            });
        self.changed.notify_waiters();
    }

    /// The connection is gone, or can no longer vouch: nothing is vouched
    /// for until it is armed again.
    pub fn lost(&self) {
        self.token.store(0, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Takes a ticket for a read about to be sent.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.token.load(Ordering::SeqCst))
    }

    /// Whether an event (an invalidation, a loss) came after `ticket`.
    pub fn moved_since(&self, ticket: Ticket) -> bool {
        self.ticket() != ticket
    }

    /// Stores what a read begun at `ticket` saw, from the server of
    /// `epoch` (see [`Backend::epoch`](super::Backend::epoch)). Kept only
    /// if nothing happened since the ticket was taken, the tracker was
    /// armed then, and (after [`arm_on`](Self::arm_on)) on the server of
    /// `epoch`; returns whether it was kept.
    pub fn saw(&self, ticket: Ticket, stored: Stored, epoch: u64) -> bool {
        // The epoch before the token (the reverse of `arm_on`): an arming
        // in between has moved the token.
        let armed_on = self.armed_epoch.load(Ordering::SeqCst);
        if armed_on != ANY_EPOCH && armed_on != epoch {
            return false;
        }
        if ticket.0 == 0 || self.moved_since(ticket) {
            return false;
        }
        self.seen.write(Seen {
            token: ticket.0,
            stored,
            epoch,
        });
        // An invalidation between the check and the store took a new token,
        // so this read vouches for nothing: the token check in `vouched`
        // sees to that.
        self.changed.notify_waiters();
        true
    }

    /// A heartbeat sent at `sent` was answered, so every change the server
    /// pushed before it has been handed to [`invalidate`](Self::invalidate):
    /// vouch until `sent + bound`, where `bound` is how long until the next
    /// heartbeat must have been answered. Replaces the bound given before
    /// (heartbeats are answered in order; a backend whose key lapses at a
    /// known time may also shorten it to that). A member of a
    /// [`TrackerSet`](super::TrackerSet) shares the set's bound: this sets
    /// it for every member.
    pub fn vouch_until(&self, sent: Instant, bound: Duration) {
        if self.bound.renew(sent + bound) {
            self.changed.notify_waiters();
        }
    }

    /// Wakes [`changed`](Self::changed)'s waiters: for a set whose shared
    /// bound holds again.
    pub(crate) fn wake(&self) {
        self.changed.notify_waiters();
    }

    /// Bounds given from now on follow tokio's clock precisely, not the
    /// cheaper coarse one: for a backend whose bounds are instants on a
    /// clock a test may pause and advance.
    pub(crate) fn follow_tokio_time(&self) {
        self.bound.clock.follow_tokio();
    }

    /// What the last read saw and the epoch of the server that answered
    /// it, if the tracker still vouches for it: armed, nothing invalidated
    /// since the read began, and the heartbeat bound not passed.
    pub fn vouched(&self) -> Option<(Stored, u64)> {
        // The bound first: a bound renewed after an invalidation is then
        // seen with that invalidation's token, never with the one before.
        let bound = &*self.bound;
        if bound.clock.now() >= bound.until.load(Ordering::SeqCst) {
            return None;
        }
        let token = self.token.load(Ordering::SeqCst);
        if token == 0 {
            return None;
        }
        let seen = self.seen.read().filter(|s| s.token == token)?;
        Some((seen.stored, seen.epoch))
    }

    /// Resolves at the next change of what the tracker vouches for (an
    /// arming, a read kept, an invalidation, a loss, a lapsed vouch
    /// renewed) after it is first
    /// polled, or [enabled](tokio::sync::futures::Notified::enable) (enable
    /// it, then look, then await, to miss nothing). A heartbeat that
    /// renews a lapsed vouch is a change; one that extends a vouch still
    /// holding is not.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// What [`changed`](Self::changed) waits on, for a task that must not
    /// keep the tracker alive.
    pub(crate) fn notifier(&self) -> Arc<Notify> {
        Arc::clone(&self.changed)
    }

    fn fresh_token(&self) -> u64 {
        self.tokens.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The time past which nothing is vouched for (the heartbeat bound of the
/// last answered heartbeat), on its clock's timeline: a tracker's own, or
/// one for every member of a set.
#[derive(Debug)]
pub(crate) struct Bound {
    until: AtomicU64,
    clock: Clock,
}

impl Bound {
    pub(crate) fn new() -> Self {
        Bound {
            until: AtomicU64::new(0),
            clock: Clock::new(),
        }
    }

    /// Moves the bound to `at`, returning whether that is a change: a
    /// vouch that had lapsed and holds again is one, one that only goes on
    /// is not.
    pub(crate) fn renew(&self, at: Instant) -> bool {
        let at = self.clock.at(at);
        let before = self.until.swap(at, Ordering::SeqCst);
        before <= self.clock.now() && at > before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generation::Generation;

    fn value(n: u64) -> Stored {
        Stored::Value(Generation::new(n).unwrap())
    }

    const BOUND: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn a_read_vouches_only_while_armed_unchanged_and_heard_from() {
        let t = Tracker::new();
        let before = t.ticket();
        assert!(!t.saw(before, value(1), 0), "not armed when the read began");
        t.arm();
        let ticket = t.ticket();
        assert!(t.saw(ticket, value(1), 7));
        assert_eq!(t.vouched(), None, "no heartbeat answered yet");
        t.vouch_until(Instant::now(), BOUND);
        assert_eq!(t.vouched(), Some((value(1), 7)));
        t.invalidate();
        assert_eq!(t.vouched(), None, "a change ends what the read vouched");
        assert!(
            !t.saw(ticket, value(1), 7),
            "a read begun before it cannot vouch"
        );
        let again = t.ticket();
        assert!(t.saw(again, value(2), 7));
        assert_eq!(t.vouched(), Some((value(2), 7)));
        t.lost();
        assert_eq!(t.vouched(), None);
        t.invalidate();
        assert!(!t.is_armed(), "an invalidation does not arm a lost tracker");
    }

    #[tokio::test]
    async fn armed_on_a_server_it_keeps_only_reads_from_that_server() {
        let t = Tracker::new();
        t.arm_on(3);
        t.vouch_until(Instant::now(), BOUND);
        assert!(
            !t.saw(t.ticket(), value(1), 2),
            "a read from the server before"
        );
        assert!(
            !t.saw(t.ticket(), value(1), 4),
            "a read from the server after"
        );
        assert_eq!(t.vouched(), None);
        assert!(t.saw(t.ticket(), value(1), 3));
        assert_eq!(t.vouched(), Some((value(1), 3)));
        // Armed again on the next server: its reads only.
        t.lost();
        t.arm_on(4);
        assert!(!t.saw(t.ticket(), value(2), 3));
        assert!(t.saw(t.ticket(), value(2), 4));
        // A plain arming takes reads from anywhere, as before.
        t.arm();
        assert!(t.saw(t.ticket(), value(3), 9));
        assert_eq!(t.vouched(), Some((value(3), 9)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missed_heartbeat_ends_the_vouching_whatever_the_connection_does() {
        let t = Tracker::new();
        t.follow_tokio_time();
        t.arm();
        assert!(t.saw(t.ticket(), value(1), 0));
        t.vouch_until(Instant::now(), Duration::from_millis(400));
        tokio::time::advance(Duration::from_millis(399)).await;
        assert!(t.vouched().is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(t.vouched(), None);
    }

    #[tokio::test]
    async fn on_the_counter_clock_a_bound_holds_until_it_has_passed() {
        let t = Tracker::new();
        t.arm();
        assert!(t.saw(t.ticket(), value(1), 0));
        t.vouch_until(Instant::now(), Duration::from_secs(3600));
        assert_eq!(t.vouched(), Some((value(1), 0)));
        let sent = Instant::now() - Duration::from_millis(500);
        t.vouch_until(sent, Duration::from_millis(400));
        assert_eq!(t.vouched(), None, "a bound 100 ms gone");
    }
}
