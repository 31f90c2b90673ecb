//! What the reloader did: counters kept in the reloader for
//! [`ReloadMetrics`], and, with the `metrics` feature, the same counters and
//! three histograms sent through the `metrics` facade (listed on
//! [`ReloadMetrics`]).

use std::sync::atomic::{AtomicU64, Ordering};

use super::snapshot::Snapshot;
use crate::key::Key;

/// One counter: kept here for [`ReloadMetrics`], and exported when the
/// `metrics` feature is on.
#[derive(Debug)]
pub(crate) struct Tally {
    count: AtomicU64,
    #[cfg(feature = "metrics")]
    exported: metrics::Counter,
}

impl Tally {
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    fn new(name: &'static str, key: &Key) -> Self {
        Tally {
            count: AtomicU64::new(0),
            #[cfg(feature = "metrics")]
            exported: metrics::counter!(name, "key" => key.as_str().to_owned()),
        }
    }

    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        self.exported.increment(1);
    }

    fn get(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The start of something timed; costs nothing without the `metrics`
/// feature.
#[derive(Debug)]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Stopwatch {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }
}

/// Live counters, shared by every clone of a reloader.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) checks: Tally,
    pub(crate) expired: Tally,
    pub(crate) backend_errors: Tally,
    pub(crate) loader_runs: Tally,
    pub(crate) reloads: Tally,
    pub(crate) reload_failures: Tally,
    pub(crate) stale_served: Tally,
    pub(crate) deferred_served: Tally,
    #[cfg(feature = "metrics")]
    check_duration: metrics::Histogram,
    #[cfg(feature = "metrics")]
    reload_duration: metrics::Histogram,
    #[cfg(feature = "metrics")]
    settings_age: metrics::Histogram,
}

impl Counters {
    pub(crate) fn new(key: &Key) -> Self {
        #[cfg(feature = "metrics")]
        describe();
        #[cfg(feature = "metrics")]
        let histogram =
            |name: &'static str| metrics::histogram!(name, "key" => key.as_str().to_owned());
        Counters {
            checks: Tally::new("gensync_checks_total", key),
            expired: Tally::new("gensync_expired_total", key),
            backend_errors: Tally::new("gensync_backend_errors_total", key),
            loader_runs: Tally::new("gensync_loader_runs_total", key),
            reloads: Tally::new("gensync_reloads_total", key),
            reload_failures: Tally::new("gensync_reload_failures_total", key),
            stale_served: Tally::new("gensync_stale_served_total", key),
            deferred_served: Tally::new("gensync_deferred_served_total", key),
            #[cfg(feature = "metrics")]
            check_duration: histogram("gensync_check_duration_seconds"),
            #[cfg(feature = "metrics")]
            reload_duration: histogram("gensync_reload_duration_seconds"),
            #[cfg(feature = "metrics")]
            settings_age: histogram("gensync_settings_age_seconds"),
        }
    }

    /// A check that started at `stopwatch` hands out `snapshot`.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn served<S>(&self, stopwatch: Stopwatch, snapshot: &Snapshot<S>) {
        #[cfg(feature = "metrics")]
        {
            // One clock read for both: each costs tens of nanoseconds.
            let now = std::time::Instant::now();
            self.check_duration
                .record(now.saturating_duration_since(stopwatch.started));
            self.settings_age
                .record(now.saturating_duration_since(snapshot.observed_at()));
        }
    }

    /// A loader run that started at `stopwatch` ended.
    #[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
    pub(crate) fn reload_took(&self, stopwatch: Stopwatch) {
        #[cfg(feature = "metrics")]
        self.reload_duration.record(stopwatch.started.elapsed());
    }

    pub(crate) fn snapshot(&self) -> ReloadMetrics {
        ReloadMetrics {
            checks: self.checks.get(),
            expired: self.expired.get(),
            backend_errors: self.backend_errors.get(),
            loader_runs: self.loader_runs.get(),
            reloads: self.reloads.get(),
            reload_failures: self.reload_failures.get(),
            stale_served: self.stale_served.get(),
            deferred_served: self.deferred_served.get(),
        }
    }
}

/// Help texts for the exported metrics, given to the recorder once per
/// reloader (describing again is harmless).
#[cfg(feature = "metrics")]
fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!("gensync_checks_total", "Checks of the shared generation.");
    describe_counter!(
        "gensync_expired_total",
        "Checks that found the settings expired."
    );
    describe_counter!(
        "gensync_backend_errors_total",
        "Checks that could not read the shared generation."
    );
    describe_counter!("gensync_loader_runs_total", "Calls of the settings loader.");
    describe_counter!("gensync_reloads_total", "Successful settings reloads.");
    describe_counter!(
        "gensync_reload_failures_total",
        "Settings loads that failed, panicked or timed out."
    );
    describe_counter!(
        "gensync_stale_served_total",
        "Expired checks answered with the last good settings."
    );
    describe_counter!(
        "gensync_deferred_served_total",
        "Expired checks answered at once while spread loads put the load off."
    );
    describe_histogram!(
        "gensync_check_duration_seconds",
        Unit::Seconds,
        "How long a check took, a reload it waited for included."
    );
    describe_histogram!(
        "gensync_reload_duration_seconds",
        Unit::Seconds,
        "How long a run of the settings loader took."
    );
    describe_histogram!(
        "gensync_settings_age_seconds",
        Unit::Seconds,
        "Age of the settings a check served, since their generation was observed."
    );
}

/// What a reloader has done since it was made.
///
/// With the `metrics` feature, the same counts, and three histograms, also
/// go to whatever recorder (exporter) is installed through the `metrics`
/// facade, each labelled with the generation's `key`:
///
/// | name | kind | what |
/// |---|---|---|
/// | `gensync_checks_total` | counter | checks of the shared generation |
/// | `gensync_expired_total` | counter | checks that found the settings expired |
/// | `gensync_backend_errors_total` | counter | checks that could not read the generation |
/// | `gensync_loader_runs_total` | counter | calls of the settings loader |
/// | `gensync_reloads_total` | counter | loads that replaced the settings |
/// | `gensync_reload_failures_total` | counter | loads that failed, panicked or timed out |
/// | `gensync_stale_served_total` | counter | expired checks served the last good settings |
/// | `gensync_deferred_served_total` | counter | expired checks answered at once while spread loads put the load off |
/// | `gensync_check_duration_seconds` | histogram | how long a check took, a reload it waited for included |
/// | `gensync_reload_duration_seconds` | histogram | how long a run of the loader took |
/// | `gensync_settings_age_seconds` | histogram | per check, the age of the settings served, since their generation was observed |
///
/// The handles are registered when the reloader is built, so install the
/// recorder first. Reloaders of one key in one process share the exported
/// series (the label is the key); `ReloadMetrics` stays per reloader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadMetrics {
    /// Checks of the shared generation.
    pub checks: u64,
    /// Checks that found the local settings expired.
    pub expired: u64,
    /// Checks that could not read the shared generation. In interval
    /// mode, only the checks a failed read answered: those it serves
    /// without a read during an outage count in `stale_served` instead.
    pub backend_errors: u64,
    /// Times the loader was called.
    pub loader_runs: u64,
    /// Loads that succeeded and replaced the settings.
    pub reloads: u64,
    /// Loads that failed, panicked or timed out.
    pub reload_failures: u64,
    /// Expired checks answered with the last good settings because the
    /// reload failed, was backing off, or outlasted the wait bound, or (in
    /// interval mode) because the interval's read failed.
    pub stale_served: u64,
    /// Expired checks answered at once with the settings in service,
    /// labelled [`Freshness::Deferred`](super::Freshness::Deferred),
    /// because spread loads put the load off
    /// ([`ReloaderBuilder::spread_loads`](super::ReloaderBuilder::spread_loads)).
    pub deferred_served: u64,
}
