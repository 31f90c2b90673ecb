//! Helpers for testing code that uses gensync: a throwaway Redis, a
//! backend that fails on command, and mocks of the traits.
//!
//! Behind the `testing` feature.
//!
//! - [`RedisServer`]: a real redis-server per test, on a free port and a
//!   unix socket, that the test can pause, kill and restart.
//! - [`TlsCerts`]: a private CA and certificates signed by it, made with
//!   the `openssl` command, for a TLS redis-server
//!   ([`RedisServer::start_tls`]).
//! - [`FaultyBackend`]: wraps any [`Backend`](crate::Backend) and, on
//!   command from another task, fails calls, adds latency, hangs, returns
//!   corrupt values or evicts the key, counting what it did.
//! - [`MockBackend`] and [`MockGenerationSynchronizer`]: `mockall` mocks,
//!   to script exact call sequences.

mod faults;
mod faulty;
mod redis_server;
mod tls;

pub use self::faults::{FaultCounts, Faults};
pub use self::faulty::FaultyBackend;
pub use self::redis_server::RedisServer;
pub use self::tls::TlsCerts;
pub use crate::backend::{MockBackend, SavePoint};
pub use crate::synchronizer::MockGenerationSynchronizer;
