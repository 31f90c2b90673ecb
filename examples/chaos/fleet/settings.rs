//! The fleet's settings: its keys, timeouts and Redis configuration, and
//! the bound a check is held to.

use std::time::Duration;

use gensync::{Key, RedisBackend, RedisConfig};

/// The version every target starts at.
pub const INITIAL: u64 = 0;
/// Tenants of the keyed set.
pub const TENANTS: u16 = 8;
/// Tenants a keyed instance keeps loaded: fewer, so they are evicted and
/// loaded again (first loads) all run long.
pub(super) const CAPACITY: u64 = 5;
/// Push mode's heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Interval mode's interval.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// How long a check waits for a reload.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// How long a load may take; a hung loader outlasts it.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
/// The writers' lease: short, so a stalled or dead writer's lapses.
pub(super) const LOCK_TTL: Duration = Duration::from_secs(1);
/// A writer abandons a write it cannot finish after this.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// Reloaders' backoff after a failed load: first, and at most.
pub(super) const BACKOFF: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(500));

/// The fleet's Redis configuration: timeouts short enough that faults are
/// outages, long enough that a busy machine is not one.
pub fn config() -> RedisConfig {
    RedisConfig::default()
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(300))
        .reconnect_delay(Duration::from_millis(100))
        .heartbeat(HEARTBEAT)
}

/// A writer's configuration: the fleet's, and where there are replicas,
/// a bump answered only once one has it (else a failover may lose a bump
/// its writer was told was done, as DEPLOYMENT.md says).
pub(super) fn writer_config(replicated: bool) -> RedisConfig {
    if replicated {
        config().wait_for_replicas(1, Duration::from_millis(500))
    } else {
        config()
    }
}

/// The most a check may take, by the documented bounds: a read of the
/// generation and the reload wait; or, for a keyed tenant's first load, a
/// read, the key's creation when it is missing, and the load's timeout.
pub fn check_bound() -> Duration {
    config().call_bound() * 2 + MAX_WAIT.max(LOAD_TIMEOUT)
}

/// The most a keyed check may take: a tenant's first load (a read; when
/// the key is missing, the parent's read and creation, the key's creation
/// and its read back; the load's timeout), then, for a check that waited
/// on another's first load, a check of its own.
pub fn keyed_check_bound() -> Duration {
    config().call_bound() * 5 + LOAD_TIMEOUT + check_bound()
}

/// The unkeyed reloaders' key.
pub fn global_key() -> Key {
    Key::new(["chaos"]).expect("a valid key")
}

/// The keyed set's key: its parent.
pub fn set_key() -> Key {
    Key::new(["chaos-keyed"]).expect("a valid key")
}

/// The fleet's keys as stored (the keyed members share their parent's
/// Cluster slot): the nodes the nemesis's server faults hit.
pub fn keys() -> Vec<String> {
    vec![
        global_key().as_str().to_owned(),
        set_key().as_str().to_owned(),
    ]
}

pub(super) fn backend(url: &str) -> Result<RedisBackend, String> {
    RedisBackend::with_config(url, config()).map_err(|e| format!("the fleet's backend: {e}"))
}
