//! A real redis-server as a conformance store.

use std::sync::Mutex;
use std::time::Duration;

use super::store::Store;
use crate::backend::RedisBackend;
use crate::key::Key;
use crate::testing::{fast_config, patient_config, RedisServer};
use crate::unpoisoned;

/// A real redis-server of its own as a [`Store`]: each process a new
/// [`RedisBackend`] client, corruption and eviction through a raw
/// connection of the store's.
pub struct RedisStore {
    /// The server, for tests that pause, kill or restart it.
    pub server: RedisServer,
    admin: Mutex<redis::Connection>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on a redis-server started for it.
    ///
    /// # Panics
    ///
    /// If the server does not start or take a connection.
    pub fn new() -> Self {
        Self::from_server(RedisServer::start().expect("start redis-server"))
    }

    /// A store on a server started with arguments of the test's own.
    ///
    /// # Panics
    ///
    /// If the server takes no connection.
    pub fn from_server(server: RedisServer) -> Self {
        let admin = Mutex::new(server.connection().expect("connect to redis-server"));
        RedisStore { server, admin }
    }

    /// A backend as [`Store::process`] makes it, but with
    /// [`fast_config`], for tests that wait out a timeout.
    pub fn fast_process(&self) -> RedisBackend {
        RedisBackend::with_config(&self.server.url(), fast_config()).expect("valid URL")
    }

    /// Runs a raw command on the store's own connection.
    ///
    /// # Panics
    ///
    /// If the command fails or its reply is not a `T`.
    pub fn raw<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> T {
        cmd.query(&mut *unpoisoned::lock(&self.admin))
            .expect("raw command")
    }
}

impl Default for RedisStore {
    fn default() -> Self {
        Self::new()
    }
}

impl Store for RedisStore {
    type Backend = RedisBackend;

    /// With [`patient_config`]: a busy machine's slow reply is no outage.
    fn process(&self) -> RedisBackend {
        RedisBackend::with_config(&self.server.url(), patient_config()).expect("valid URL")
    }
    fn write_raw(&self, key: &Key, raw: &str) {
        self.raw::<()>(redis::cmd("SET").arg(key.as_str()).arg(raw));
    }
    fn evict(&self, key: &Key) {
        self.raw::<()>(redis::cmd("DEL").arg(key.as_str()));
    }
    fn ttl(&self, key: &Key) -> Option<Duration> {
        let pttl: i64 = self.raw(redis::cmd("PTTL").arg(key.as_str()));
        u64::try_from(pttl).ok().map(Duration::from_millis)
    }
}
