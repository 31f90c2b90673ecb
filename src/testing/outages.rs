//! Configurations and addresses for tests of outages: timeouts short
//! enough to wait out, timeouts a busy machine never reaches, and a port
//! nobody answers on.

#[cfg(feature = "redis")]
use std::time::Duration;

#[cfg(feature = "redis")]
use crate::backend::RedisConfig;

/// How long a client of [`fast_config`] or [`patient_config`] waits after a
/// failed connect before it dials again.
#[cfg(feature = "redis")]
pub const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Tight timeouts (150 ms to connect and to answer), for tests that
/// measure them or wait them out.
///
/// ```
/// use gensync::testing::{closed_port, fast_config};
/// use gensync::{GenerationSynchronizer, Key, RedisBackend, Synchronizer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let url = format!("redis://127.0.0.1:{}", closed_port());
/// let backend = RedisBackend::with_config(&url, fast_config()).unwrap();
/// let sync = Synchronizer::new(backend, Key::new(["flags"]).unwrap());
/// assert!(sync.refresh().await.is_err()); // refused at once
/// # }
/// ```
#[cfg(feature = "redis")]
pub fn fast_config() -> RedisConfig {
    RedisConfig::default()
        .connect_timeout(Duration::from_millis(150))
        .response_timeout(Duration::from_millis(150))
        .reconnect_delay(RECONNECT_DELAY)
}

/// Timeouts a stalled test machine does not reach (2 s), for tests that
/// measure no timeout: there a slow reply would read as an outage and fail
/// them.
#[cfg(feature = "redis")]
pub fn patient_config() -> RedisConfig {
    RedisConfig::default()
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .reconnect_delay(RECONNECT_DELAY)
}

/// A free loopback port with nothing listening on it: connections to it
/// are refused at once.
///
/// # Panics
///
/// If the system has no free loopback port to bind.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}
