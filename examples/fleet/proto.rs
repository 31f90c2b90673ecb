//! What workers tell the coordinator, one JSON line per command, and the
//! clock they share: CLOCK_REALTIME in nanoseconds, the same in every
//! process on the machine.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Nanoseconds since the epoch: comparable across the fleet's processes.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Armed(Armed),
    Served(Served),
    Vouched(Vouched),
    Loaded(Loaded),
    Rss(u64),
}

/// The worker's instances are built and vouch (or `unvouched` do not).
#[derive(Debug, Serialize, Deserialize)]
pub struct Armed {
    pub rss_before_kb: u64,
    pub rss_after_kb: u64,
    pub unvouched: usize,
}

/// When each instance began serving a version; `missing` never did
/// within the timeout. `loads` are the loads since the last report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Served {
    pub at: Vec<u64>,
    pub missing: usize,
    pub loads: Vec<(u64, u64)>,
}

/// When the last instance vouched (again), or how many still did not;
/// after a restart, how many were never seen to stop vouching.
#[derive(Debug, Serialize, Deserialize)]
pub struct Vouched {
    pub at: u64,
    pub unvouched: usize,
    pub never_lost: usize,
}

/// The loads since the last report, each (start, end).
#[derive(Debug, Serialize, Deserialize)]
pub struct Loaded {
    pub loads: Vec<(u64, u64)>,
}
