//! How often a reloader reads the shared generation, and what each choice
//! promises.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How a [`Reloader`](super::Reloader) learns that the shared generation
/// moved, chosen with [`ReloaderBuilder::mode`](super::ReloaderBuilder::mode).
///
/// Every mode keeps the other promises (the reload fence, the wait bound,
/// the last good settings on failure); they differ in how fresh a check's
/// answer is and in what it costs the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
    /// [`Reloader::subscribe`](super::Reloader::subscribe) hears of it.
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

impl fmt::Display for CheckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckMode::Strict => f.write_str("strict"),
            CheckMode::Push => f.write_str("push"),
            CheckMode::Interval(every) => write!(f, "interval={}ms", every.as_millis()),
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
