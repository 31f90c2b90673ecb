//! The Redis backend, in two paths over one set of commands.
//!
//! - [`RedisBackend`] (`aio.rs`) is the async path: one multiplexed tokio
//!   connection shared by every clone, made on first use and remade after
//!   it breaks.
//! - [`BlockingRedisBackend`] (`blocking.rs`) is the blocking path: an
//!   `r2d2` pool of plain connections, for code with no async runtime.
//!
//! Both send the commands built once in `commands.rs`, each paired there
//! with the reader of its reply, so the two paths store and report the
//! same things. What else they share is in `target.rs`: the client, the
//! redacted server name, the [`RedisConfig`] (`config.rs`), and the mapping
//! of client errors to errors that say what to check.

mod aio;
mod blocking;
mod commands;
mod config;
mod target;

pub use self::aio::RedisBackend;
pub use self::blocking::BlockingRedisBackend;
pub use self::config::RedisConfig;

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
