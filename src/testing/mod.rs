//! Helpers for testing code that uses gensync, and for testing a backend
//! of your own: a throwaway Redis (alone, under sentinels or as a
//! cluster), a backend wrapper that fails on command and shows a test
//! every call, a fenced store, mocks of the traits, and the backend
//! conformance suite.
//!
//! Behind the `testing` feature.
//!
//! - [`conformance`]: the promises every [`Backend`](crate::backend::Backend) keeps,
//!   as a suite a backend's author runs on their own backend
//!   ([`backend_conformance!`](crate::backend_conformance) makes one test
//!   per promise).
//! - [`RedisServer`]: a real redis-server per test, on a free port and a
//!   unix socket, that the test can pause, kill and restart.
//! - [`TlsCerts`]: a private CA and certificates signed by it, made with
//!   the `openssl` command, for a TLS redis-server
//!   ([`RedisServer::start_tls`]).
//! - [`SentinelGroup`]: a primary, a replica and three sentinels per test,
//!   to kill the primary and wait for the sentinels' failover; over TLS
//!   only with `SentinelGroup::start_tls` (the `tls` feature).
//! - [`RedisCluster`]: a six-node Redis Cluster per test, to kill one
//!   shard's primary and wait for its replica to take over; over TLS only
//!   with `RedisCluster::start_tls` (the `tls` feature).
//! - [`FaultyBackend`]: wraps any [`Backend`](crate::backend::Backend) and passes
//!   its calls through; on command from another task, fails calls, adds
//!   latency, hangs, returns corrupt values or evicts the key, counting
//!   what it did; and shows an [`Observer`] each call and its answer
//!   before the caller sees it.
//! - [`FencedStore`]: a value kept with the greatest fencing token
//!   accepted, refusing smaller ones, for the saver of a writers' test.
//! - [`fast_config`], [`patient_config`] and [`closed_port`]: timeouts
//!   for tests of outages, and a port nobody answers on.
//! - [`command`]: the `gensync` operator command run as a process.
//! - [`MockBackend`] and [`MockGenerationSynchronizer`]: `mockall` mocks,
//!   to script exact call sequences.

// The real servers need the Redis backend; the rest runs on any backend.
#[cfg(feature = "redis")]
mod cluster;
pub mod command;
pub mod conformance;
mod faults;
mod faulty;
mod fenced;
mod observe;
mod outages;
#[cfg(feature = "redis")]
mod poll;
#[cfg(feature = "redis")]
mod redis_server;
#[cfg(feature = "redis")]
mod sentinel;
#[cfg(feature = "redis")]
mod tls;

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::cluster::RedisCluster;
pub use self::faults::{FaultCounts, Faults};
pub use self::faulty::FaultyBackend;
pub use self::fenced::FencedStore;
pub use self::observe::{Answer, Call, Observer};
pub use self::outages::closed_port;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::outages::{fast_config, patient_config, RECONNECT_DELAY};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis_server::RedisServer;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::sentinel::SentinelGroup;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::tls::TlsCerts;
pub use crate::backend::{MockBackend, SavePoint};
pub use crate::synchronizer::MockGenerationSynchronizer;

use crate::generation::{run_hash, Generation};

/// The tokio that [`backend_conformance!`](crate::backend_conformance)'s
/// tests run on.
#[doc(hidden)]
pub use tokio as __tokio;

/// The number every process shows for `stored` read from the Redis server
/// whose identity is `identity` ([`server_identity`]; in a Cluster, the
/// key's slot owner's), once it learnt it: for tests that compare what a
/// server holds with what a bump returned or a process recorded.
pub fn shown_on(stored: Generation, identity: &str) -> Generation {
    stored.on_server(run_hash(identity))
}

/// The identity gensync learns of `server` (`INFO server replication`: its
/// `run_id` and replication id), as
/// [`RedisBackend::server_id`](crate::RedisBackend::server_id) reports it
/// and generations are shown with.
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub fn server_identity(server: &RedisServer) -> redis::RedisResult<String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("replication")
        .query(&mut server.connection()?)?;
    crate::backend::identity_from_info(&info).ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "no run_id in INFO server",
        ))
    })
}
