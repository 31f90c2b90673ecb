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
//! redacted server name, the [`RedisConfig`] (`config.rs`), the mapping
//! of client errors to errors that say what to check, and the identity of
//! the server each new connection reached (its `run_id`), whose changes
//! are counted as epochs so a server that went back in time can be told.

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

/// Both paths against a real redis-server, for what only the crate can see.
#[cfg(all(test, feature = "testing"))]
mod live {
    use std::time::Duration;

    use super::*;
    use crate::testing::RedisServer;

    /// Timeouts a stalled test machine does not reach.
    fn patient() -> RedisConfig {
        RedisConfig::default()
            .connect_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(2))
    }

    /// Connections the server has accepted so far.
    fn connections_received(admin: &mut redis::Connection) -> u64 {
        let info: String = redis::cmd("INFO").arg("stats").query(admin).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .expect("INFO stats has total_connections_received")
    }

    /// Closes every client connection but `admin`'s, server side.
    fn kill_clients(admin: &mut redis::Connection) {
        let killed: u64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query(admin)
            .unwrap();
        assert!(killed > 0, "no connection to kill");
    }

    #[tokio::test]
    async fn the_async_epoch_moves_when_the_server_does_not_when_the_connection_does() {
        let mut server = RedisServer::start().unwrap();
        let backend = RedisBackend::with_config(&server.url(), patient()).unwrap();
        for _ in 0..20 {
            backend.ping().await.unwrap();
        }
        assert_eq!(backend.epoch(), 0);

        let mut admin = server.connection().unwrap();
        let before = connections_received(&mut admin);
        kill_clients(&mut admin);
        backend.ping().await.unwrap();
        assert_eq!(
            connections_received(&mut admin) - before,
            1,
            "a new connection"
        );
        assert_eq!(backend.epoch(), 0, "the same server");

        server.restart().unwrap();
        backend.ping().await.unwrap();
        assert_eq!(backend.epoch(), 1, "a restarted server");
        for _ in 0..5 {
            backend.ping().await.unwrap();
        }
        assert_eq!(backend.epoch(), 1);
    }

    #[test]
    fn the_blocking_epoch_moves_when_the_server_does_not_when_the_connection_does() {
        let mut server = RedisServer::start().unwrap();
        let backend = BlockingRedisBackend::with_config(&server.url(), patient()).unwrap();
        for _ in 0..20 {
            backend.ping().unwrap();
        }
        assert_eq!(backend.epoch(), 0);

        let mut admin = server.connection().unwrap();
        let before = connections_received(&mut admin);
        kill_clients(&mut admin);
        backend.ping().unwrap();
        assert_eq!(
            connections_received(&mut admin) - before,
            1,
            "a new connection"
        );
        assert_eq!(backend.epoch(), 0, "the same server");

        server.restart().unwrap();
        backend.ping().unwrap();
        assert_eq!(backend.epoch(), 1, "a restarted server");
        for _ in 0..5 {
            backend.ping().unwrap();
        }
        assert_eq!(backend.epoch(), 1);
    }

    /// With `INFO` denied, no connection can tell which server it reached:
    /// each new one after the first counts as a new epoch, and none fails.
    #[tokio::test]
    async fn an_unknown_identity_makes_every_new_connection_a_new_epoch() {
        let server = RedisServer::start().unwrap();
        let mut admin = server.connection().unwrap();
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg("-info")
            .query(&mut admin)
            .unwrap();
        let backend = RedisBackend::with_config(&server.url(), patient()).unwrap();
        let blocking = BlockingRedisBackend::with_config(&server.url(), patient()).unwrap();
        backend.ping().await.unwrap();
        blocking.ping().unwrap();
        assert_eq!((backend.epoch(), blocking.epoch()), (0, 0));
        for epoch in 1..=2 {
            kill_clients(&mut admin);
            backend.ping().await.unwrap();
            blocking.ping().unwrap();
            assert_eq!((backend.epoch(), blocking.epoch()), (epoch, epoch));
        }
    }
}
