//! How often a reloader reads the shared generation, and what each choice
//! promises.

//!
//! Everything a mode does lives here: what a check may take without a
//! read, how it reads, and what it promises. The reloader, the keyed
//! reloader and the builders ask the mode instead of matching on it, so a
//! new mode is this file (and its tests).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use super::reads::{Observe, Reads};
use crate::backend::Stored;
use crate::error::Error;
use crate::generation::Generation;
use crate::synchronizer::GenerationSynchronizer;

/// How a [`Reloader`](super::Reloader) learns that the shared generation
/// moved, chosen with [`ReloaderBuilder::mode`](super::ReloaderBuilder::mode).
///
/// Every mode keeps the other promises (the reload fence, the wait bound,
/// the last good settings on failure); they differ in how fresh a check's
/// answer is and in what it costs the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CheckMode {
    /// A check is answered with settings at least as new as every update
    /// whose bump completed before the check began.
    ///
    /// Reads are coalesced: a check that arrives while a read of the
    /// generation is in flight waits for the *next* read (never one that
    /// began before it arrived), and one read answers every check waiting
    /// for it. Under concurrency the backend sees far fewer reads than
    /// checks, and a check waits at most about two round trips.
    #[default]
    Strict,
    /// The backend pushes every change of the key, and a check costs no
    /// round trip between changes.
    ///
    /// A check is answered with settings at least as new as every update
    /// whose bump completed before the last answered heartbeat was sent;
    /// heartbeats are answered or the mode falls back, so that is at most
    /// two heartbeat periods before the check (400 ms by default, see
    /// [`RedisConfig::heartbeat`](crate::RedisConfig::heartbeat)), and in
    /// practice one round trip. While the push connection is not armed
    /// (starting, lost, a missed heartbeat, a restarted server), checks
    /// are strict. A backend that cannot push
    /// ([`Backend::track`](crate::backend::Backend::track)), or a server that
    /// refuses to track, runs strict throughout. A change the backend
    /// pushes also reloads the settings at once, request or not, so
    /// [`Reloader::subscribe`](super::Reloader::subscribe) hears of it;
    /// with [`ReloaderBuilder::spread_loads`](super::ReloaderBuilder::spread_loads),
    /// at a random moment within the window instead, answering
    /// [`Deferred`](super::Freshness::Deferred) until then, so a fleet
    /// does not load from the source all at once.
    Push,
    /// The generation is read at most once per interval: a check is
    /// answered with settings at least as new as every update whose bump
    /// completed an interval before the check began. Checks that arrive
    /// while the interval's read is out wait for that read, not the next.
    ///
    /// **During an outage** a failed read is the interval's read, so there
    /// is still at most one read per interval. For an interval after the
    /// read failed, and while the next interval's read is out, checks are
    /// answered at once with the last good settings (counted in
    /// [`ReloadMetrics::stale_served`](super::ReloadMetrics::stale_served)),
    /// without waiting on the backend; only the check that sends the next
    /// read waits for it (up to the backend's response timeout). One read,
    /// one waiting check and one backend error per interval, and the outage
    /// is logged once. So after a failed read, even a single one, the
    /// settings served may lag the promise above by that read's interval
    /// and the next read's time (at most the call bound). Two exceptions wait on the read in flight as in
    /// healthy times: the checks that arrive while the read that first
    /// finds the backend down is out, and those that arrive after an idle
    /// spell of two intervals since the last failure (the backend may be
    /// back with an update).
    Interval(Duration),
}

impl CheckMode {
    /// Every mode, the interval one reading every `interval`: for code
    /// that runs or compares each mode (benchmarks, test matrices).
    pub fn all(interval: Duration) -> Vec<CheckMode> {
        vec![
            CheckMode::Strict,
            CheckMode::Push,
            CheckMode::Interval(interval),
        ]
    }

    /// The mode's name, without its parameters: `strict`, `push`,
    /// `interval`.
    pub fn name(&self) -> &'static str {
        match self {
            CheckMode::Strict => "strict",
            CheckMode::Push => "push",
            CheckMode::Interval(_) => "interval",
        }
    }

    /// Whether the mode relies on the backend pushing changes of the key.
    pub fn pushes(&self) -> bool {
        matches!(self, CheckMode::Push)
    }

    /// How often the mode reads the generation, when it reads on a clock.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            CheckMode::Interval(every) => Some(*every),
            _ => None,
        }
    }

    /// How long before a check an update's bump may have completed and
    /// the check still not see it, by the mode's promise: none in strict
    /// mode, two heartbeats (`heartbeat`, the backend's) in push mode, the
    /// interval in interval mode. Outages aside (see each mode).
    pub fn lag(&self, heartbeat: Duration) -> Duration {
        match self {
            CheckMode::Strict => Duration::ZERO,
            CheckMode::Push => heartbeat * 2,
            CheckMode::Interval(every) => *every,
        }
    }

    /// The mode a reloader runs in when its backend cannot push: strict
    /// for push mode, the mode itself otherwise.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))] // keyed sets only
    pub(crate) fn without_push(self) -> CheckMode {
        match self {
            CheckMode::Push => CheckMode::Strict,
            other => other,
        }
    }

    /// Refuses a mode no reloader can keep, saying why.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            CheckMode::Interval(every) if every.is_zero() => Err(Error::Config(
                "the check interval must be greater than zero".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The shared generation as the mode vouches for it now, without a
    /// read: pushed (and heard from within the heartbeat bound), or read
    /// within the interval. (Push tracking is started by the reloader.)
    pub(super) fn vouched(
        &self,
        sync: &dyn GenerationSynchronizer,
        reads: &Reads,
    ) -> Option<Generation> {
        match self {
            CheckMode::Strict => None,
            CheckMode::Push => match sync.vouched() {
                Some(Stored::Value(g)) => Some(g),
                _ => None,
            },
            CheckMode::Interval(every) => reads.last()?.fresh(*every),
        }
    }

    /// Whether a check is answered at once with the settings in service,
    /// without a read: interval mode while the backend failed the
    /// interval's read, so an outage costs one read (and one waiting
    /// check) per interval, not one per request.
    pub(super) fn answers_unread(&self, reads: &Reads) -> bool {
        match self {
            CheckMode::Interval(every) => reads.down(*every),
            CheckMode::Strict | CheckMode::Push => false,
        }
    }

    /// What a check observes when no generation was vouched for: the next
    /// read (strict, push), or one within the interval. `None` when the
    /// interval's read failed: nothing to wait for. A waiting check is
    /// woken through `waker`.
    pub(super) fn observe(
        &self,
        sync: &Arc<dyn GenerationSynchronizer>,
        reads: &Arc<Reads>,
        waker: &Waker,
    ) -> Option<Observe> {
        match self {
            CheckMode::Interval(every) => reads.within(sync, *every, waker),
            CheckMode::Strict | CheckMode::Push => Some(reads.next(sync, waker)),
        }
    }
}

impl fmt::Display for CheckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.interval() {
            Some(every) => write!(f, "{}={}ms", self.name(), every.as_millis()),
            None => f.write_str(self.name()),
        }
    }
}

/// Why a mode's text was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid check mode {given:?}: {reason}; expected strict, push or interval=DURATION (as 250ms, 2s)")]
pub struct ParseCheckModeError {
    given: String,
    reason: &'static str,
}

impl FromStr for CheckMode {
    type Err = ParseCheckModeError;

    /// `strict`, `push`, or `interval=` and a duration in `ms` or `s`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refuse = |reason| ParseCheckModeError {
            given: text.to_owned(),
            reason,
        };
        match text.trim() {
            "strict" => Ok(CheckMode::Strict),
            "push" => Ok(CheckMode::Push),
            other => {
                let every = other
                    .strip_prefix("interval=")
                    .ok_or_else(|| refuse("unknown mode"))?;
                let (number, unit) = match every.strip_suffix("ms") {
                    Some(n) => (n, Duration::from_millis(1)),
                    None => (
                        every
                            .strip_suffix('s')
                            .ok_or_else(|| refuse("the interval needs a unit, ms or s"))?,
                        Duration::from_secs(1),
                    ),
                };
                let n: u32 = number
                    .parse()
                    .map_err(|_| refuse("the interval is not a whole number"))?;
                if n == 0 {
                    return Err(refuse("the interval must be greater than zero"));
                }
                Ok(CheckMode::Interval(unit * n))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_from_their_text_and_print_back() {
        for (text, mode) in [
            ("strict", CheckMode::Strict),
            ("push", CheckMode::Push),
            (
                "interval=250ms",
                CheckMode::Interval(Duration::from_millis(250)),
            ),
            ("interval=2s", CheckMode::Interval(Duration::from_secs(2))),
        ] {
            assert_eq!(text.parse::<CheckMode>(), Ok(mode));
        }
        assert_eq!(
            CheckMode::Interval(Duration::from_secs(2)).to_string(),
            "interval=2000ms"
        );
        assert_eq!(
            "interval=2000ms".parse::<CheckMode>(),
            Ok(CheckMode::Interval(Duration::from_secs(2)))
        );
    }

    /// Its place in the enum: an exhaustive match, so a new mode fails to
    /// compile here until it is listed, and the test below then asks
    /// [`CheckMode::all`] to hold it.
    fn place(mode: CheckMode) -> usize {
        match mode {
            CheckMode::Strict => 0,
            CheckMode::Push => 1,
            CheckMode::Interval(_) => 2,
        }
    }

    #[test]
    fn every_mode_is_listed_once_with_its_name_and_promise() {
        let every = Duration::from_millis(250);
        let all = CheckMode::all(every);
        let mut places: Vec<usize> = all.iter().copied().map(place).collect();
        places.sort_unstable();
        assert_eq!(
            places,
            (0..=place(CheckMode::Interval(every))).collect::<Vec<_>>()
        );
        let mut names: Vec<&str> = all.iter().map(CheckMode::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "{names:?}");
        for mode in all {
            assert_eq!(mode.to_string().parse::<CheckMode>(), Ok(mode));
            assert!(mode.to_string().starts_with(mode.name()), "{mode}");
            assert!(mode.validate().is_ok(), "{mode}");
            assert!(!mode.without_push().pushes(), "{mode}");
        }
        let heartbeat = Duration::from_millis(200);
        assert_eq!(CheckMode::Strict.lag(heartbeat), Duration::ZERO);
        assert_eq!(CheckMode::Push.lag(heartbeat), heartbeat * 2);
        assert_eq!(CheckMode::Interval(every).lag(heartbeat), every);
        assert_eq!(CheckMode::Interval(every).interval(), Some(every));
        assert_eq!(CheckMode::Push.interval(), None);
        assert!(CheckMode::Push.pushes() && !CheckMode::Strict.pushes());
        assert!(CheckMode::Interval(Duration::ZERO).validate().is_err());
    }

    #[test]
    fn bad_modes_say_what_to_write() {
        for bad in [
            "",
            "pull",
            "interval=",
            "interval=5",
            "interval=0ms",
            "interval=-1s",
            "interval=1.5s",
        ] {
            let err = bad.parse::<CheckMode>().unwrap_err().to_string();
            assert!(
                err.contains("expected strict, push or interval=DURATION"),
                "{bad}: {err}"
            );
        }
    }
}
