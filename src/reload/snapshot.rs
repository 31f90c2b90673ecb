//! The settings one request sees: an immutable snapshot, cheap to clone.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::generation::Generation;

/// One loaded copy of the settings and the generation it matches.
///
/// Cloning is one reference-count increment; the settings are never copied.
/// The middleware puts the snapshot for each request into the request's
/// extensions, so a handler sees one consistent copy for the whole request
/// even if a reload lands meanwhile.
///
/// ```
/// use gensync::reload::Snapshot;
///
/// let snapshot = Snapshot::new(String::from("theme=dark"), None);
/// assert_eq!(&*snapshot, "theme=dark");
/// assert_eq!(snapshot.generation(), None);
/// ```
pub struct Snapshot<S> {
    inner: Arc<Inner<S>>,
}

pub(crate) struct Inner<S> {
    settings: S,
    /// 0 while unknown: settings loaded while the shared generation could
    /// not be read get it once a check finds it unchanged.
    generation: AtomicU64,
    /// When the generation these settings were loaded for was observed.
    observed_at: Instant,
    /// When this instance is due to replace these settings with a newer
    /// generation it heard of (spread loads); `None` until one is heard.
    /// A lock, not an atomic: set once per change heard, read by callers.
    deferred_until: Mutex<Option<Instant>>,
}

impl<S> Snapshot<S> {
    /// A snapshot of `settings` matching `generation` (`None`: not known to
    /// match any, as for initial settings).
    pub fn new(settings: S, generation: Option<Generation>) -> Self {
        Self::observed(settings, generation, Instant::now())
    }

    /// A snapshot loaded for `generation`, which was observed at `at`.
    pub(crate) fn observed(settings: S, generation: Option<Generation>, at: Instant) -> Self {
        Snapshot {
            inner: Arc::new(Inner {
                settings,
                generation: AtomicU64::new(generation.map_or(0, Generation::get)),
                observed_at: at,
                deferred_until: Mutex::new(None),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &S {
        &self.inner.settings
    }

    /// The shared generation these settings were loaded for, as this
    /// process's synchronizer observed it (see
    /// [`GenerationSynchronizer::check`](crate::GenerationSynchronizer::check)):
    /// the number every process shows for this state, fit for an ETag.
    /// `None` for the initial settings, and for settings loaded while the
    /// shared generation could not be read: they come from the source of
    /// truth, but no generation is known to match them yet. Once a check
    /// finds the generation this process recorded before still there (no
    /// bump since), they get that one; a bump makes the process load again.
    pub fn generation(&self) -> Option<Generation> {
        Generation::new(self.inner.generation.load(Ordering::Relaxed))
    }

    /// Gives settings loaded without a generation the one a later check
    /// found still recorded and unchanged: they were read after it was
    /// seen, and no bump came since, so they are what it stands for.
    pub(crate) fn stamp(&self, generation: Generation) {
        let _ = self.inner.generation.compare_exchange(
            0,
            generation.get(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Whether this instance knows these settings are out of date and has
    /// put off replacing them: `Some(due)` once it heard of a newer
    /// generation and, because its loads are spread
    /// ([`ReloaderBuilder::spread_loads`](super::ReloaderBuilder::spread_loads)),
    /// loads it at `due`, the end of its spread window. Until then checks
    /// serve these settings at once, labelled
    /// [`Freshness::Deferred`](super::Freshness::Deferred); from then on
    /// they wait for the load as without spread. `due` in the past means
    /// the load is under way or failed (checks then say so as usual). `None`
    /// when no newer generation was deferred: without spread, always.
    ///
    /// ```
    /// use gensync::reload::Snapshot;
    ///
    /// let snapshot = Snapshot::new(1, None);
    /// assert_eq!(snapshot.deferred_until(), None);
    /// ```
    pub fn deferred_until(&self) -> Option<Instant> {
        *crate::unpoisoned::lock(&self.inner.deferred_until)
    }

    /// Marks these settings as due to be replaced at `due` (see
    /// [`deferred_until`](Self::deferred_until)).
    pub(crate) fn defer_until(&self, due: Instant) {
        *crate::unpoisoned::lock(&self.inner.deferred_until) = Some(due);
    }

    /// When the generation these settings were loaded for was observed.
    #[cfg_attr(not(feature = "metrics"), allow(dead_code))]
    pub(crate) fn observed_at(&self) -> Instant {
        self.inner.observed_at
    }

    pub(crate) fn from_arc(inner: Arc<Inner<S>>) -> Self {
        Snapshot { inner }
    }

    pub(crate) fn as_arc(&self) -> &Arc<Inner<S>> {
        &self.inner
    }

    /// Whether two snapshots are the same load.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl<S> Clone for Snapshot<S> {
    fn clone(&self) -> Self {
        Snapshot {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S> Deref for Snapshot<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.inner.settings
    }
}

impl<S: fmt::Debug> fmt::Debug for Snapshot<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation())
            .field("settings", &self.inner.settings)
            .finish()
    }
}
