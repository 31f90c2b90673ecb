//! Reads are reads: while a primary's writes are paused (`CLIENT PAUSE
//! WRITE`, how Redis's `FAILOVER` and managed failovers hand over), a
//! check's read is answered at once, on both paths and for a keyed
//! member read with its parent, and a strict reader serves the newest
//! settings as current, with no backend error.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gensync::backend::{Backend, Stored};
use gensync::reload::{CheckMode, Reloader};
use gensync::testing::RedisServer;
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, GenerationSynchronizer, Key, RedisBackend,
    RedisConfig, Synchronizer,
};

/// Pauses `server`'s writes (not its reads) until the guard drops.
struct WritesPaused<'a>(&'a RedisServer);

impl<'a> WritesPaused<'a> {
    fn start(server: &'a RedisServer) -> Self {
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(60_000)
            .arg("WRITE")
            .query::<()>(&mut server.connection().unwrap())
            .unwrap();
        WritesPaused(server)
    }
}

impl Drop for WritesPaused<'_> {
    fn drop(&mut self) {
        let _ = redis::cmd("CLIENT")
            .arg("UNPAUSE")
            .query::<()>(&mut self.0.connection().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_are_answered_while_writes_are_paused() {
    let server = RedisServer::start().expect("redis-server");
    // The default bounds: a read held back by the pause would time out.
    let config = RedisConfig::default();
    let key = Key::new(["paused", "settings"]).unwrap();
    let parent = Key::new(["paused", "parent"]).unwrap();
    let writer = Synchronizer::new(
        RedisBackend::with_config(&server.url(), support::patient_config()).unwrap(),
        key.clone(),
    );
    writer.mark_updated().await.unwrap();
    Synchronizer::new(
        RedisBackend::with_config(&server.url(), support::patient_config()).unwrap(),
        parent.clone(),
    )
    .mark_updated()
    .await
    .unwrap();

    let db = Arc::new(AtomicU64::new(1));
    let source = Arc::clone(&db);
    let backend = RedisBackend::with_config(&server.url(), config.clone()).unwrap();
    let reader = Reloader::builder(Synchronizer::new(backend.clone(), key.clone()), move || {
        let v = source.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .mode(CheckMode::Strict)
    .build(0)
    .unwrap();
    assert_eq!(*reader.check().await, 1);

    // A change made just before the pause, as a failover's last write.
    db.store(2, Ordering::SeqCst);
    let bumped = writer.mark_updated().await.unwrap();
    let paused = WritesPaused::start(&server);

    for _ in 0..20 {
        let served = reader.check().await;
        assert_eq!(*served, 2, "the newest settings");
        assert_eq!(served.generation(), Some(bumped), "served as current");
    }
    let metrics = reader.metrics();
    assert_eq!(metrics.backend_errors, 0, "a read waited out the pause");
    assert_eq!(metrics.stale_served, 0);

    // A keyed member's read, with its parent in one round trip.
    let (own, parent_read) = backend.get_with_parent(&key, &parent).await.unwrap();
    let stored: String = redis::cmd("GET")
        .arg(key.as_str())
        .query(&mut server.connection().unwrap())
        .unwrap();
    assert_eq!(own, Stored::Value(stored.parse().unwrap()));
    assert!(matches!(parent_read, Stored::Value(_)));

    // The blocking path.
    let url = server.url();
    let blocking_key = key.clone();
    let read = tokio::task::spawn_blocking(move || {
        let backend = BlockingRedisBackend::with_config(&url, config).unwrap();
        BlockingSynchronizer::new(backend, blocking_key).read()
    })
    .await
    .unwrap()
    .expect("the blocking read is answered while writes are paused");
    assert_eq!(read, Stored::Value(bumped));
    drop(paused);
}
