//! Lapses the server is slow to announce. A key past its time to live
//! stays in memory until the server's active expiry reaches it, and only
//! then is its change pushed: on a server with many keys to expire that
//! takes seconds, while a dead writer's intent must lapse for push readers
//! within the lease. A set's session does not read its members, so it
//! watches their lapses: it reads the time to live of each member (or
//! parent) that changed, with the next heartbeat (`PTTL`), and touches
//! each one whose time has come (`EXISTS`, which expires a lapsed key), so
//! its lapse ends the vouching within the heartbeat bound. A single key's
//! session needs none of this: its heartbeat reads the key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

/// At most this many keys asked about per heartbeat: a burst of changes
/// is spread over a few beats rather than one long one.
const PER_BEAT: usize = 256;

/// The keys a set's session watches for their lapse.
#[derive(Default)]
pub(super) struct Lapses {
    /// Changed (or newly watched) since they were last asked about, in
    /// the order they came: their time to live is read with the next
    /// heartbeats, first come first asked, so none waits behind a burst.
    ask: VecDeque<String>,
    /// The names in `ask`, so a name is queued once.
    asking: HashSet<String>,
    /// When each watched key lapses.
    due: HashMap<String, Instant>,
    /// How many were watched at the last pruning.
    pruned_at: usize,
}

/// What one heartbeat asks about: the keys whose time to live it reads,
/// then the keys it touches.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Asked {
    pub(super) ttls: Vec<String>,
    pub(super) touched: Vec<String>,
}

impl Asked {
    /// The commands to send with the heartbeat, in order.
    pub(super) fn cmds(&self) -> impl Iterator<Item = redis::Cmd> + '_ {
        let ttls = self.ttls.iter().map(|k| {
            let mut cmd = redis::cmd("PTTL");
            cmd.arg(k);
            cmd
        });
        let touched = self.touched.iter().map(|k| {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(k);
            cmd
        });
        ttls.chain(touched)
    }
}

impl Lapses {
    /// `name`, a member or parent, changed: its time to live may have.
    pub(super) fn changed(&mut self, name: &str) {
        if self.asking.insert(name.to_owned()) {
            self.ask.push_back(name.to_owned());
        }
    }

    /// What the heartbeat sent at `now` asks about.
    pub(super) fn next(&mut self, now: Instant) -> Asked {
        let take = self.ask.len().min(PER_BEAT);
        let ttls: Vec<String> = self.ask.drain(..take).collect();
        for name in &ttls {
            self.asking.remove(name);
        }
        let touched = self
            .due
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(name, _)| name.clone())
            .take(PER_BEAT)
            .collect();
        Asked { ttls, touched }
    }

    /// Reads the replies to what a heartbeat sent at `sent` asked;
    /// returns the keys found lapsed. A reply that is neither a number nor
    /// an error is asked about again.
    pub(super) fn answered(
        &mut self,
        asked: Asked,
        sent: Instant,
        replies: Vec<Value>,
        live: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let mut replies = replies.into_iter();
        for name in asked.ttls {
            match replies.next() {
                // Read before the server measured it: never late.
                Some(Value::Int(ms)) if ms >= 0 => {
                    let ms = u64::try_from(ms).unwrap_or(0);
                    self.due.insert(name, sent + Duration::from_millis(ms));
                }
                // Missing (its change was pushed) or without a lapse.
                Some(Value::Int(_)) => {
                    self.due.remove(&name);
                }
                _ => self.changed(&name),
            }
        }
        let mut lapsed = Vec::new();
        for name in asked.touched {
            match replies.next() {
                Some(Value::Int(0)) => {
                    self.due.remove(&name);
                    lapsed.push(name);
                }
                // Still there: its lapse was put off without a push the
                // session has read yet, or its time was read early.
                _ => {
                    self.due.remove(&name);
                    self.changed(&name);
                }
            }
        }
        if self.due.len() >= (2 * self.pruned_at).max(64) {
            // Keys of members nobody reads any more are not watched.
            self.due.retain(|name, _| live(name));
            self.pruned_at = self.due.len();
        }
        lapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_changed_key_is_asked_about_then_touched_once_due() {
        let mut lapses = Lapses::default();
        lapses.changed("t:a");
        let now = Instant::now();
        let asked = lapses.next(now);
        assert_eq!(asked.ttls, ["t:a"]);
        assert!(asked.touched.is_empty());
        assert_eq!(asked.cmds().count(), 1);
        let lapsed = lapses.answered(asked, now, vec![Value::Int(500)], |_| true);
        assert!(lapsed.is_empty());
        assert_eq!(lapses.next(now), Asked::default(), "not due yet");
        let later = now + Duration::from_millis(500);
        let asked = lapses.next(later);
        assert_eq!(asked.touched, ["t:a"]);
        // Still there: asked about again, not touched again.
        assert!(lapses
            .answered(asked, later, vec![Value::Int(1)], |_| true)
            .is_empty());
        let asked = lapses.next(later);
        assert_eq!((asked.ttls.len(), asked.touched.len()), (1, 0));
        lapses.answered(asked, later, vec![Value::Int(10)], |_| true);
        let last = later + Duration::from_millis(10);
        let asked = lapses.next(last);
        assert_eq!(
            lapses.answered(asked, last, vec![Value::Int(0)], |_| true),
            ["t:a"]
        );
        assert_eq!(
            lapses.next(last + Duration::from_secs(60)),
            Asked::default()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_without_a_lapse_is_not_watched() {
        let mut lapses = Lapses::default();
        let now = Instant::now();
        lapses.changed("t:a");
        lapses.changed("t:b");
        let asked = lapses.next(now);
        let replies = vec![Value::Int(-1), Value::Int(-2)];
        lapses.answered(asked, now, replies, |_| true);
        assert_eq!(
            lapses.next(now + Duration::from_secs(3600)),
            Asked::default()
        );
    }
}
