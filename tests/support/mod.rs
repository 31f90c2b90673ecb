//! What the single-file integration tests share: the conformance suite's
//! stores (a macro runs a test on each), log capture, and waits on push
//! tracking. Suites in a directory of their own (`cli`, `fault_matrix`,
//! `model`, `settings_server`) use `gensync::testing` instead.

#![allow(dead_code, unused_imports, unused_macros)] // each test binary uses a different part

#[cfg(feature = "cli")]
pub mod cli;
pub mod stall;
#[cfg(feature = "redis")]
pub mod tenants;

use std::io::Write;
use std::sync::{Arc, Mutex};

#[cfg(feature = "redis")]
use gensync::testing::{RedisCluster, RedisServer};
use gensync::Key;

/// Runs each named `async fn(impl Store)` as two tests, `$memory::name` on
/// the memory backend under the runtime given, and `$redis::name` on its own
/// redis-server under a two-thread runtime.
macro_rules! on_every_store {
    (#[$memory_runtime:meta] $memory:ident, $redis:ident: $($name:ident),* $(,)?) => {
        mod $memory {
            $(
                #[$memory_runtime]
                async fn $name() {
                    super::$name(crate::support::Memory::new()).await;
                }
            )*
        }

        #[cfg(feature = "redis")]
        mod $redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Redis::new()).await;
                }
            )*
        }
    };
}

/// The conformance suite's stores: a shared backend seen from several
/// "processes", with ways to corrupt and evict keys behind their backs.
pub use gensync::testing::closed_port;
#[cfg(feature = "redis")]
pub use gensync::testing::conformance::RedisStore as Redis;
pub use gensync::testing::conformance::{MemoryStore as Memory, Store};
#[cfg(feature = "redis")]
pub use gensync::testing::{fast_config, patient_config, RECONNECT_DELAY};

/// Captures what tracing prints on this thread while it is installed, so
/// tests can check log lines for keys and secrets.
///
/// One global subscriber per test binary sends each event to the capture
/// installed on the thread that emitted it. A scoped subscriber per test
/// (`set_default`) would be simpler, but tracing caches each callsite's
/// interest across threads, and a test running beside another one without
/// a subscriber could find an event it waits for cached as never wanted.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<LogCapture>> = const { std::cell::RefCell::new(None) };
}

/// Uninstalls a [`LogCapture`] when dropped.
pub struct CaptureGuard(());

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}

/// Writes to the capture of the current thread, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(capture) = c.borrow_mut().as_mut() {
                capture.write_all(buf)?;
            }
            Ok(buf.len())
        })
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    /// Installs the capture for the current thread until the guard drops.
    /// Events of tasks that run on this thread (a current-thread runtime)
    /// are captured; events of other threads are not.
    pub fn install(&self) -> CaptureGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            use tracing_subscriber::prelude::*;
            // Decided per event, so threads without a capture pay nothing
            // for formatting.
            let filter = tracing_subscriber::filter::dynamic_filter_fn(|meta, _| {
                *meta.level() <= tracing::Level::DEBUG && CAPTURE.with(|c| c.borrow().is_some())
            });
            tracing_subscriber::registry()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_ansi(false)
                        .with_writer(|| ThreadWriter)
                        .with_filter(filter),
                )
                .init();
        });
        // A callsite another thread registered while the global subscriber
        // was being set could have cached "never"; ask every callsite again.
        tracing::callsite::rebuild_interest_cache();
        CAPTURE.with(|c| *c.borrow_mut() = Some(self.clone()));
        CaptureGuard(())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The captured lines that contain `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        let text = self.text();
        text.lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits until push tracking vouches for `reloader`'s settings, on the
/// tracker's own signal, within `patience`. Decided without starting a
/// check that could leave a read in flight behind it.
pub async fn push_armed<T: Send + Sync + 'static>(
    reloader: &gensync::reload::Reloader<T>,
    patience: std::time::Duration,
) {
    use gensync::backend::Stored;

    let sync = reloader.synchronizer();
    let tracker = sync.track().expect("the Redis backend can track");
    tokio::time::timeout(patience, async {
        loop {
            let changed = tracker.changed();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            // Loads what tracking read, if it moved; waits for its read.
            reloader.check().await;
            if matches!(sync.vouched(), Some(Stored::Value(g)) if sync.sync_gen() == Some(g)) {
                return;
            }
            changed.await;
        }
    })
    .await
    .expect("push tracking armed and vouching within the patience");
}

#[cfg(feature = "redis")]
/// Twelve keys whose owners in `cluster` are all three shards' primaries
/// (asserted).
pub fn keys_on_every_shard(cluster: &RedisCluster) -> Vec<Key> {
    let keys: Vec<Key> = (0..12)
        .map(|i| Key::new(["shard", &i.to_string()]).unwrap())
        .collect();
    let owners: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.primary_for(k.as_str()).unwrap())
        .collect();
    assert_eq!(owners.len(), 3, "the keys cover every shard");
    keys
}

#[cfg(feature = "redis")]
/// The identity of `server` gensync learns and shows generations with
/// (its `run_id` and replication id; over TLS, for a server that listens
/// only for TLS).
pub fn run_id(server: &RedisServer) -> String {
    gensync::testing::server_identity(server).expect("a run_id")
}

#[cfg(feature = "redis")]
/// Connections the server has accepted so far.
pub fn connections_received(admin: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("stats").query(admin).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats has total_connections_received")
}

#[cfg(feature = "redis")]
/// The calls the server counted (`INFO commandstats`) of the commands
/// whose name `counted` accepts (`get`, `eval`, `info`...).
pub fn command_calls(admin: &mut redis::Connection, counted: impl Fn(&str) -> bool) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(admin).unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, stats) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            if !counted(name) {
                return None;
            }
            stats
                .split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}
