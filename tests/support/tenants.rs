//! A set of tenant keys under one prefix, with a parent key outside it,
//! tracked as a keyed reloader tracks them.

use std::sync::Arc;

use gensync::backend::{Backend, TrackerSet};
use gensync::{Key, RedisBackend};

/// The prefix every [`tenant`] key is under.
pub const PREFIX: &str = "gensync:tenant:";

pub fn tenant(name: &str) -> Key {
    Key::new(["tenant", name]).unwrap()
}

/// A key outside the prefix whose change invalidates every tenant.
pub fn parent() -> Key {
    Key::new(["tenants"]).unwrap()
}

/// The tenants' set, tracked by `backend`.
pub fn tracked(backend: &RedisBackend) -> Arc<TrackerSet> {
    let set = TrackerSet::new(vec![PREFIX.into()], vec![parent().as_str().into()]);
    assert_eq!(set.prefixes(), [PREFIX]);
    assert!(backend.track_set(&set), "the async Redis backend can track");
    set
}
