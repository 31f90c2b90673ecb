//! Placeholder until the tracking session for sets lands (keyed-push).

use std::sync::Arc;

use super::Tracker;
use crate::key::Key;

/// Trackers of many keys, fed by one tracking session.
#[derive(Debug)]
pub struct TrackerSet {
    prefixes: Vec<String>,
}

impl TrackerSet {
    /// A set whose session subscribes to every prefix in `prefixes`.
    pub fn new(prefixes: Vec<String>, parents: Vec<String>) -> Arc<Self> {
        let _ = parents;
        Arc::new(TrackerSet { prefixes })
    }

    /// The tracker of one member key.
    pub fn member(&self, key: &Key) -> Arc<Tracker> {
        let _ = key;
        Tracker::new()
    }

    /// The prefixes its session subscribes to.
    pub fn prefixes(&self) -> &[String] {
        &self.prefixes
    }
}
