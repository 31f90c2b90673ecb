//! Helpers for testing code that uses gensync against a real Redis.
//!
//! Behind the `testing` feature.

mod redis_server;

pub use self::redis_server::RedisServer;
