//! The Redis backend, in two paths over one set of commands.
//!
//! - [`RedisBackend`] (`aio.rs`) is the async path: one multiplexed tokio
//!   connection shared by every clone, made on first use and remade after
//!   it breaks (and a second one for writes that wait for replicas).
//! - [`BlockingRedisBackend`] (`blocking.rs`) is the blocking path: an
//!   `r2d2` pool of plain connections, for code with no async runtime,
//!   which makes them through `dialer.rs`.
//!
//! Both send the commands built once in `commands.rs`, each paired there
//! with the reader of its reply, so the two paths store and report the
//! same things. What else they share is in `target.rs`: where the servers
//! are (`deployment.rs`: one server, a Sentinel primary, a Cluster; the
//! connections each makes are `conn.rs`'s), the redacted name, the
//! [`RedisConfig`] (`config.rs`), the mapping of client errors to errors
//! that say what to check, and which server answered (`identity.rs`: the
//! `run_id` a new connection reaches, the node a Cluster script ran on),
//! whose changes are counted as epochs so a server that went back in time
//! can be told. Push mode's connection is `track.rs`'s.
//! `tls.rs` loads the TLS files a [`RedisConfig`] names (a CA to trust
//! beside the system's roots, a client certificate) and tells certificate
//! failures apart from a server that is down.

mod aio;
mod blocking;
mod commands;
mod config;
mod conn;
mod deployment;
mod dialer;
mod identity;
mod many;
mod redial;
mod scripts;
mod slot;
mod target;
mod tls;
mod track;
mod url;

pub use self::aio::RedisBackend;
pub use self::blocking::BlockingRedisBackend;
pub use self::config::RedisConfig;
/// For `testing::server_identity`.
#[cfg(any(test, feature = "testing"))]
pub(crate) use self::identity::identity_from_info;
pub use self::url::RedisUrl;

#[cfg(test)]
mod tests {
    use super::*;

    // Here rather than beside either `Debug` impl: the promise is that
    // neither path prints the password.
    #[test]
    fn debug_output_hides_the_password() {
        let backend = RedisBackend::open("redis://:s3cret-pw@127.0.0.1:6379").unwrap();
        let blocking = BlockingRedisBackend::open("redis://:s3cret-pw@127.0.0.1:6379").unwrap();
        for text in [format!("{backend:?}"), format!("{blocking:?}")] {
            assert!(!text.contains("s3cret"), "{text}");
            assert!(text.contains("127.0.0.1:6379"), "{text}");
        }
    }
}
