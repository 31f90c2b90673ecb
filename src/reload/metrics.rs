//! Counters of what the reloader did, for dashboards and tests.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters, shared by every clone of a reloader.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) checks: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) backend_errors: AtomicU64,
    pub(crate) loader_runs: AtomicU64,
    pub(crate) reloads: AtomicU64,
    pub(crate) reload_failures: AtomicU64,
    pub(crate) stale_served: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> ReloadMetrics {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReloadMetrics {
            checks: read(&self.checks),
            expired: read(&self.expired),
            backend_errors: read(&self.backend_errors),
            loader_runs: read(&self.loader_runs),
            reloads: read(&self.reloads),
            reload_failures: read(&self.reload_failures),
            stale_served: read(&self.stale_served),
        }
    }
}

/// What a reloader has done since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReloadMetrics {
    /// Checks of the shared generation.
    pub checks: u64,
    /// Checks that found the local settings expired.
    pub expired: u64,
    /// Checks that could not read the shared generation.
    pub backend_errors: u64,
    /// Times the loader was called.
    pub loader_runs: u64,
    /// Loads that succeeded and replaced the settings.
    pub reloads: u64,
    /// Loads that failed, panicked or timed out.
    pub reload_failures: u64,
    /// Expired checks answered with the last good settings because the
    /// reload failed, was backing off, or outlasted the wait bound.
    pub stale_served: u64,
}

impl ReloadMetrics {
    /// The counters in the Prometheus text exposition format, named
    /// `gensync_*_total`.
    ///
    /// ```
    /// let text = gensync::reload::ReloadMetrics::default().to_prometheus();
    /// assert!(text.contains("gensync_checks_total 0"));
    /// ```
    pub fn to_prometheus(&self) -> String {
        let rows = [
            ("checks", "Checks of the shared generation.", self.checks),
            (
                "expired",
                "Checks that found the settings expired.",
                self.expired,
            ),
            (
                "backend_errors",
                "Checks that could not read the shared generation.",
                self.backend_errors,
            ),
            (
                "loader_runs",
                "Calls of the settings loader.",
                self.loader_runs,
            ),
            ("reloads", "Successful settings reloads.", self.reloads),
            (
                "reload_failures",
                "Settings loads that failed, panicked or timed out.",
                self.reload_failures,
            ),
            (
                "stale_served",
                "Expired checks answered with the last good settings.",
                self.stale_served,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in rows {
            let _ = writeln!(out, "# HELP gensync_{name}_total {help}");
            let _ = writeln!(out, "# TYPE gensync_{name}_total counter");
            let _ = writeln!(out, "gensync_{name}_total {value}");
        }
        out
    }
}
