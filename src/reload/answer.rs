//! A check's answer with what it says of itself: [`Answer`] and
//! [`Freshness`].

use super::snapshot::Snapshot;

/// How a check's answer stands against its reloader's
/// [`CheckMode`](super::CheckMode) promise.
///
/// A [`Snapshot`] is shared by every check that serves it, so it cannot
/// say this; [`Reloader::answer`](super::Reloader::answer) does, per
/// check. A service can, say, mark a stale answer with a `Warning` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Freshness {
    /// A read of the shared generation answered this check: in strict and
    /// push mode one that began after the check, so the settings are at
    /// least as new as every update whose bump completed before it; in
    /// interval mode possibly the interval's read already under way, so
    /// within the interval.
    Read,
    /// Answered without a read: push tracking or the interval's last read
    /// vouched for the generation. As fresh as the mode's
    /// [`lag`](super::CheckMode::lag).
    Vouched,
    /// The last good settings, not known to keep the promise: the backend
    /// or the loader failed, or the reload outlasted the wait bound.
    /// Counted in [`ReloadMetrics::stale_served`](super::ReloadMetrics::stale_served).
    Stale,
    /// The settings in service, served at once though a newer generation
    /// is known: loads are spread
    /// ([`ReloaderBuilder::spread_loads`](super::ReloaderBuilder::spread_loads))
    /// and this instance loads it by the end of its spread window
    /// ([`Snapshot::deferred_until`]). Not current. Counted in
    /// [`ReloadMetrics::deferred_served`](super::ReloadMetrics::deferred_served).
    Deferred,
}

impl Freshness {
    /// Whether the answer keeps the mode's promise (it is neither
    /// [`Stale`](Freshness::Stale) nor [`Deferred`](Freshness::Deferred)).
    pub fn is_current(self) -> bool {
        matches!(self, Freshness::Read | Freshness::Vouched)
    }
}

/// The settings a check served and how fresh it says they are.
///
/// ```
/// use gensync::reload::{Freshness, Reloader};
/// use gensync::{Key, MemoryBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), gensync::Error> {
/// let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["site"])?);
/// let reloader = Reloader::builder(sync, || async { Ok::<_, std::io::Error>(7) }).build(0)?;
///
/// let answer = reloader.answer().await;
/// assert_eq!(*answer.snapshot, 7);
/// assert_eq!(answer.freshness, Freshness::Read);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Answer<S> {
    /// The settings served.
    pub snapshot: Snapshot<S>,
    /// How they stand against the mode's promise.
    pub freshness: Freshness,
}

impl<S> Answer<S> {
    pub(crate) fn new(snapshot: Snapshot<S>, freshness: Freshness) -> Self {
        Answer {
            snapshot,
            freshness,
        }
    }
}
