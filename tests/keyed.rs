//! Keyed reloads against real redis-servers (one per test): two instances
//! and many tenants; what a bump of one tenant, and of the parent, reloads;
//! one load for concurrent first requests; eviction; a failing tenant next
//! to healthy ones; the middleware's answers.

#![cfg(feature = "testing")]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::backend::Fence;
use gensync::keyed::{
    KeyRejection, KeyedError, KeyedReloadLayer, KeyedReloader, KeyedReloaderBuilder,
};
use gensync::reload::{CheckMode, Freshness, Snapshot};
use gensync::testing::RedisServer;
use gensync::{GenerationSynchronizer, Key, MemoryBackend, RedisBackend, Synchronizer};
use tokio::sync::Notify;
use tokio::time::timeout;
use tower::{service_fn, Layer, ServiceExt};

/// Every tenant's settings, and how many times each was loaded.
#[derive(Clone, Default)]
struct Source {
    settings: Arc<Mutex<HashMap<String, u64>>>,
    loads: Arc<Mutex<HashMap<String, u64>>>,
}

impl Source {
    fn with_tenants(n: usize) -> Self {
        let source = Source::default();
        for i in 0..n {
            source.set(&tenant(i), 1);
        }
        source
    }

    fn set(&self, tenant: &str, value: u64) {
        self.settings
            .lock()
            .unwrap()
            .insert(tenant.to_owned(), value);
    }

    fn loads(&self, tenant: &str) -> u64 {
        self.loads.lock().unwrap().get(tenant).copied().unwrap_or(0)
    }

    /// A keyed reloader over its own connection to `url`, loading from
    /// this source (and counting the loads) and saving to it.
    fn builder(&self, url: &str) -> KeyedReloaderBuilder<String, u64> {
        let (read, write) = (self.clone(), self.clone());
        KeyedReloader::builder(
            RedisBackend::open(url).expect("a Redis backend"),
            Key::new(["tenants"]).unwrap(),
            |tenant: &String| tenant.clone(),
            move |tenant: String| {
                let source = read.clone();
                async move {
                    *source
                        .loads
                        .lock()
                        .unwrap()
                        .entry(tenant.clone())
                        .or_default() += 1;
                    let value = source.settings.lock().unwrap().get(&tenant).copied();
                    value.ok_or("no such tenant")
                }
            },
        )
        .saver(move |tenant: String, value: &u64, _fence: Fence| {
            write.set(&tenant, *value);
            async { Ok::<_, Infallible>(()) }
        })
    }

    /// An instance: a keyed reloader over its own connection to `url`.
    fn instance(&self, url: &str, mode: CheckMode) -> KeyedReloader<String, u64> {
        self.builder(url)
            .mode(mode)
            .build()
            .expect("a keyed reloader")
    }
}

fn tenant(i: usize) -> String {
    format!("tenant-{i}")
}

async fn value(reloader: &KeyedReloader<String, u64>, tenant: &str) -> u64 {
    *timeout(Duration::from_secs(10), reloader.check(&tenant.to_owned()))
        .await
        .expect("a check ends")
        .expect("the tenant's settings")
}

#[tokio::test]
async fn a_bump_of_one_tenant_reloads_that_tenant_only_in_every_instance() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(20);
    let (a, b) = (
        source.instance(&server.url(), CheckMode::Strict),
        source.instance(&server.url(), CheckMode::Strict),
    );
    for i in 0..20 {
        assert_eq!(value(&a, &tenant(i)).await, 1);
        assert_eq!(value(&b, &tenant(i)).await, 1);
    }
    let before: Vec<u64> = (0..20).map(|i| source.loads(&tenant(i))).collect();
    assert!(
        before.iter().all(|&n| n == 2),
        "one first load per instance: {before:?}"
    );

    a.publish(&tenant(7), 2).await.expect("the publish");
    for i in 0..20 {
        let want = if i == 7 { 2 } else { 1 };
        assert_eq!(value(&b, &tenant(i)).await, want, "tenant {i} in B");
        assert_eq!(value(&a, &tenant(i)).await, want, "tenant {i} in A");
    }
    for (i, before) in before.iter().enumerate() {
        let reloaded = source.loads(&tenant(i)) - before;
        if i == 7 {
            // Once in B; in A once more at most (its own publish and check).
            assert!(
                (1..=2).contains(&reloaded),
                "tenant 7 reloaded {reloaded} times"
            );
        } else {
            assert_eq!(reloaded, 0, "tenant {i} was not changed");
        }
    }
}

#[tokio::test]
async fn a_parent_bump_reloads_each_tenant_once_on_its_next_use() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(10);
    let (a, b) = (
        source.instance(&server.url(), CheckMode::Strict),
        source.instance(&server.url(), CheckMode::Strict),
    );
    for i in 0..10 {
        value(&b, &tenant(i)).await;
    }
    let before: Vec<u64> = (0..10).map(|i| source.loads(&tenant(i))).collect();
    for i in 0..10 {
        source.set(&tenant(i), 5);
    }
    // A site-wide change from another process: the parent alone is bumped.
    let parent = Synchronizer::new(
        RedisBackend::open(&server.url()).unwrap(),
        a.parent().clone(),
    );
    parent.mark_updated().await.expect("the parent bump");
    for round in 0..3 {
        for i in 0..10 {
            assert_eq!(value(&b, &tenant(i)).await, 5, "tenant {i}, round {round}");
        }
    }
    for (i, before) in before.iter().enumerate() {
        assert_eq!(source.loads(&tenant(i)) - before, 1, "tenant {i}");
    }
}

#[tokio::test]
async fn concurrent_first_requests_for_one_key_run_one_load() {
    let server = RedisServer::start().expect("redis-server");
    let loads = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Notify::new());
    let (counted, held) = (Arc::clone(&loads), Arc::clone(&gate));
    let reloader = KeyedReloader::builder(
        RedisBackend::open(&server.url()).unwrap(),
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        move |_tenant: String| {
            let (counted, held) = (Arc::clone(&counted), Arc::clone(&held));
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                held.notified().await;
                Ok::<_, Infallible>(9u64)
            }
        },
    )
    .build()
    .unwrap();
    let checks: Vec<_> = (0..100)
        .map(|_| {
            let reloader = reloader.clone();
            tokio::spawn(async move { reloader.check(&"acme".to_owned()).await })
        })
        .collect();
    // Every check is waiting on the one load once it has begun.
    while loads.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    gate.notify_waiters();
    for check in checks {
        let snapshot = timeout(Duration::from_secs(10), check)
            .await
            .expect("every check ends")
            .unwrap()
            .expect("settings");
        assert_eq!(*snapshot, 9);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_evicted_key_is_loaded_again_with_what_changed_meanwhile() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(50);
    let small = source.builder(&server.url()).capacity(4).build().unwrap();
    let writer = source.instance(&server.url(), CheckMode::Strict);
    assert_eq!(value(&small, &tenant(0)).await, 1);
    // Many other tenants push tenant 0 out of a cache of four.
    for i in 1..50 {
        value(&small, &tenant(i)).await;
    }
    writer.publish(&tenant(0), 3).await.unwrap();
    assert_eq!(value(&small, &tenant(0)).await, 3);
    assert!(source.loads(&tenant(0)) >= 2);
    // moka settles its bound asynchronously; it holds it once asked to.
    assert!(small.cached_keys() <= 50);
}

#[tokio::test]
async fn a_forgotten_key_is_loaded_again_on_its_next_use() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(2);
    let reloader = source.instance(&server.url(), CheckMode::Strict);
    value(&reloader, &tenant(0)).await;
    value(&reloader, &tenant(1)).await;
    source.set(&tenant(0), 8);
    assert_eq!(
        value(&reloader, &tenant(0)).await,
        1,
        "nothing said it changed"
    );
    reloader.forget(&tenant(0)).await;
    assert_eq!(value(&reloader, &tenant(0)).await, 8);
    assert_eq!(source.loads(&tenant(0)), 2);
    assert_eq!(source.loads(&tenant(1)), 1, "the other key is kept");
}

#[tokio::test]
async fn a_failing_tenant_slows_and_fails_no_other() {
    let server = RedisServer::start().expect("redis-server");
    let hung = Arc::new(Notify::new());
    let held = Arc::clone(&hung);
    let reloader = KeyedReloader::builder(
        RedisBackend::open(&server.url()).unwrap(),
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        move |tenant: String| {
            let held = Arc::clone(&held);
            async move {
                match tenant.as_str() {
                    "hangs" => {
                        held.notified().await;
                        Err("released".into())
                    }
                    "fails" => Err::<u64, Box<dyn std::error::Error + Send + Sync>>(
                        "the tenant's database is down".into(),
                    ),
                    _ => Ok(1),
                }
            }
        },
    )
    .backoff(Duration::from_secs(60), Duration::from_secs(60))
    .build()
    .unwrap();
    let hanging = {
        let reloader = reloader.clone();
        tokio::spawn(async move { reloader.check(&"hangs".to_owned()).await })
    };
    // The others are served while one tenant's load hangs.
    for i in 0..20 {
        assert_eq!(value(&reloader, &tenant(i)).await, 1);
    }
    let failed = reloader.check(&"fails".to_owned()).await;
    let Err(KeyedError::Unavailable {
        reason, retry_in, ..
    }) = failed
    else {
        panic!("a failed first load is an error: {failed:?}");
    };
    assert!(reason.contains("database is down"), "{reason}");
    assert_eq!(retry_in, Duration::from_secs(60));
    // Within the backoff the loader is not run again: told at once.
    let again = reloader.check(&"fails".to_owned()).await;
    assert!(matches!(again, Err(KeyedError::Unavailable { .. })));
    assert_eq!(reloader.metrics().reload_failures, 1);
    assert!(!hanging.is_finished());
    hung.notify_waiters();
    let hung_result = timeout(Duration::from_secs(10), hanging)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(hung_result, Err(KeyedError::Unavailable { .. })));
}

#[tokio::test]
async fn a_first_load_with_the_backend_down_asks_it_once_and_still_serves() {
    use gensync::testing::FaultyBackend;

    let backend = FaultyBackend::new(MemoryBackend::new());
    let faults = backend.faults();
    let reloader = KeyedReloader::builder(
        backend,
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        |_tenant: String| async { Ok::<_, Infallible>(3u64) },
    )
    .build()
    .unwrap();
    faults.fail_all();
    let before = faults.counts().calls;
    // The read failing says the backend is down: trying to create the key
    // would only wait out a second failure.
    assert_eq!(*reloader.check(&"acme".to_owned()).await.unwrap(), 3);
    assert_eq!(
        faults.counts().calls - before,
        1,
        "one call to a backend that is down"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_load_is_tried_again_after_its_backoff() {
    let loads = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&loads);
    let reloader = KeyedReloader::builder(
        MemoryBackend::new(),
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        move |_tenant: String| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err("not yet")
                } else {
                    Ok(4u64)
                }
            }
        },
    )
    .backoff(Duration::from_secs(1), Duration::from_secs(8))
    .build()
    .unwrap();
    let key = "acme".to_owned();
    assert!(reloader.check(&key).await.is_err());
    tokio::time::advance(Duration::from_millis(999)).await;
    assert!(reloader.check(&key).await.is_err(), "still in the backoff");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(*reloader.check(&key).await.unwrap(), 4);
    assert_eq!(loads.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_read_of_a_key_and_its_parent_is_one_command() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(1);
    let reloader = source.instance(&server.url(), CheckMode::Strict);
    value(&reloader, &tenant(0)).await;
    let before = reads_sent(&server);
    for _ in 0..10 {
        value(&reloader, &tenant(0)).await;
    }
    assert_eq!(reads_sent(&server) - before, 10, "one script per check");
}

#[tokio::test]
async fn the_middleware_answers_a_request_without_a_key_or_settings_itself() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(2);
    let reloader = source.instance(&server.url(), CheckMode::Strict);
    let layer = KeyedReloadLayer::new(reloader, |request: &http::Request<()>| {
        let path = request.uri().path();
        path.strip_prefix("/tenants/")
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| KeyRejection::not_found("no tenant in the path"))
    });
    let reached = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&reached);
    let service = layer.layer(service_fn(move |request: http::Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let settings = request.extensions().get::<Snapshot<u64>>().map(|s| **s);
        async move { Ok::<_, Infallible>(http::Response::new(format!("{settings:?}"))) }
    }));
    let get = |path: &str| http::Request::get(path).body(()).unwrap();

    let ok = service
        .clone()
        .oneshot(get("/tenants/tenant-1"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.body(), "Some(1)");
    let nokey = service.clone().oneshot(get("/elsewhere")).await.unwrap();
    assert_eq!(nokey.status(), 404);
    assert_eq!(nokey.body(), "no tenant in the path");
    let missing = service
        .clone()
        .oneshot(get("/tenants/nobody"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 503);
    assert!(missing.headers().contains_key("retry-after"));
    assert!(
        !missing.body().contains("no such tenant"),
        "no internals: {}",
        missing.body()
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        1,
        "only the good request got through"
    );
}

/// A service whose readiness belongs to the handle that was polled, as a
/// `ConcurrencyLimit` permit does: a clone starts unready.
struct ReadyOnce {
    ready: bool,
}

impl Clone for ReadyOnce {
    fn clone(&self) -> Self {
        ReadyOnce { ready: false }
    }
}

impl tower::Service<http::Request<()>> for ReadyOnce {
    type Response = http::Response<String>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.ready = true;
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        let answer = if std::mem::take(&mut self.ready) {
            "called ready"
        } else {
            "called unready"
        };
        std::future::ready(Ok(http::Response::new(answer.to_owned())))
    }
}

#[tokio::test]
async fn the_middleware_hands_each_request_to_the_service_that_was_polled_ready() {
    let tenants = KeyedReloader::builder(
        MemoryBackend::new(),
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        |_: String| async { Ok::<_, Infallible>(1u64) },
    )
    .build()
    .unwrap();
    let mut service = KeyedReloadLayer::new(tenants, |_: &http::Request<()>| {
        Ok::<_, KeyRejection>("acme".to_owned())
    })
    .layer(ReadyOnce { ready: false });
    for _ in 0..2 {
        let ready = service.ready().await.unwrap();
        let answer = tower::Service::call(ready, http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(answer.body(), "called ready");
    }
}

/// Checks `tenant` until its reloader answers at once, without a read:
/// push tracking armed and the key's last read vouched for.
async fn until_vouched(reloader: &KeyedReloader<String, u64>, tenant: &str) {
    use std::future::Future;

    let one = reloader.reloader(&tenant.to_owned()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut check = one.check();
        let polled = std::pin::Pin::new(&mut check)
            .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
        if polled.is_ready() {
            return;
        }
        check.await;
        assert!(tokio::time::Instant::now() < deadline, "never vouched for");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The reads clients sent the server: scripts (and `MGET`s). The commands
/// a script runs inside Redis count in `INFO commandstats` too, and are
/// left out.
fn reads_sent(server: &RedisServer) -> u64 {
    support::command_calls(&mut server.connection().unwrap(), |name| {
        name.starts_with("eval") || name.starts_with("mget")
    })
}

#[tokio::test]
async fn in_push_mode_many_tenants_are_served_without_reads_and_every_change_arrives() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(20);
    let (a, b) = (
        source.instance(&server.url(), CheckMode::Strict),
        source.instance(&server.url(), CheckMode::Push),
    );
    for i in 0..20 {
        assert_eq!(value(&b, &tenant(i)).await, 1);
        until_vouched(&b, &tenant(i)).await;
    }
    let before = reads_sent(&server);
    for _ in 0..50 {
        for i in 0..20 {
            assert_eq!(value(&b, &tenant(i)).await, 1);
        }
    }
    assert_eq!(reads_sent(&server), before, "1,000 checks and no read");

    // A tenant's change, from another instance. Push mode promises it
    // once a heartbeat sent after it is answered, not at once.
    a.publish(&tenant(3), 2).await.unwrap();
    arrives(&b, &tenant(3), 2).await;
    assert_eq!(value(&b, &tenant(4)).await, 1);

    // The parent, bumped by another process: every tenant follows.
    for i in 0..20 {
        source.set(&tenant(i), 6);
    }
    let parent = Synchronizer::new(
        RedisBackend::open(&server.url()).unwrap(),
        b.parent().clone(),
    );
    parent.mark_updated().await.unwrap();
    for i in 0..20 {
        arrives(&b, &tenant(i), 6).await;
    }

    // A flush: nothing is left to vouch for; every tenant reads again.
    for i in 0..20 {
        until_vouched(&b, &tenant(i)).await;
        source.set(&tenant(i), 7);
    }
    redis::cmd("FLUSHALL")
        .query::<()>(&mut server.connection().unwrap())
        .unwrap();
    for i in 0..20 {
        arrives(&b, &tenant(i), 7).await;
    }
}

/// Checks `tenant` until it is served `want`, within far more than the
/// heartbeat bound.
async fn arrives(reloader: &KeyedReloader<String, u64>, tenant: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while value(reloader, tenant).await != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{tenant} never got {want}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn evicted_keys_leave_no_task_behind_in_push_mode() {
    let server = RedisServer::start().expect("redis-server");
    let reloader = KeyedReloader::builder(
        RedisBackend::open(&server.url()).unwrap(),
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        |_tenant: String| async { Ok::<_, Infallible>(1u64) },
    )
    .mode(CheckMode::Push)
    .capacity(4)
    .build()
    .unwrap();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let started = tasks();
    // Each key's reloader starts a task once push mode vouches for it; an
    // evicted key's task must end with it.
    for round in 0..3 {
        for i in 0..100 {
            let key = format!("t{round}-{i}");
            reloader.check(&key).await.unwrap();
            reloader.check(&key).await.unwrap();
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tasks() > started + 16 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks alive after 300 keys through a cache of 4 (from {started})",
            tasks()
        );
        // A cache hit runs moka's pending evictions.
        reloader.check(&"t0-0".to_owned()).await.unwrap();
        tokio::task::yield_now().await;
    }
}

/// A source whose saver fails for tenants whose name starts with `refused`,
/// after waiting for `gate` when one is given: the save a failed publish
/// never made.
fn refusing_instance(
    source: &Source,
    url: &str,
    gate: Option<Arc<Notify>>,
) -> KeyedReloader<String, u64> {
    let read = source.clone();
    KeyedReloader::builder(
        RedisBackend::open(url).expect("a Redis backend"),
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        move |tenant: String| {
            let value = read.settings.lock().unwrap().get(&tenant).copied();
            async move { value.ok_or("no such tenant") }
        },
    )
    .saver(move |tenant: String, _value: &u64, _fence: Fence| {
        let gate = gate.clone();
        async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            if tenant.starts_with("refused") {
                Err("the store refused the save")
            } else {
                Ok(())
            }
        }
    })
    .build()
    .expect("a keyed reloader")
}

/// Whether `reloader` answers `tenant` with "never loaded" (a 503), not
/// with settings.
async fn unavailable(reloader: &KeyedReloader<String, u64>, tenant: &str) -> bool {
    let answer = timeout(Duration::from_secs(10), reloader.check(&tenant.to_owned()))
        .await
        .expect("a check ends");
    match answer {
        Err(KeyedError::Unavailable { .. }) => true,
        Ok(settings) => panic!("{tenant} was served {} (never saved)", *settings),
        Err(other) => panic!("{tenant}: {other}"),
    }
}

#[tokio::test]
async fn a_failed_save_for_a_new_tenant_is_never_served_by_the_writer() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(2);
    let writer = refusing_instance(&source, &server.url(), None);
    let other = source.instance(&server.url(), CheckMode::Strict);
    assert_eq!(value(&writer, &tenant(0)).await, 1);

    let failed = writer.publish(&"refused-new".to_owned(), 42).await;
    assert!(
        matches!(&failed, Err(KeyedError::Publish(e)) if e.saved() != Some(true)),
        "the save failed: {failed:?}"
    );
    // The writing process answers as every other does: nothing saved.
    assert!(unavailable(&writer, "refused-new").await);
    assert!(unavailable(&other, "refused-new").await);
    // Tenants next to it are untouched.
    assert_eq!(value(&writer, &tenant(0)).await, 1);
    assert_eq!(value(&writer, &tenant(1)).await, 1);
    assert_eq!(value(&other, &tenant(1)).await, 1);
}

#[tokio::test]
async fn a_publish_that_cannot_reach_redis_leaves_nothing_to_serve_for_a_new_tenant() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(1);
    let writer = refusing_instance(&source, &server.url(), None);
    assert_eq!(value(&writer, &tenant(0)).await, 1);

    server.pause().expect("SIGSTOP");
    let failed = writer.publish(&"new".to_owned(), 42).await;
    server.resume().expect("SIGCONT");
    assert!(
        matches!(&failed, Err(KeyedError::Publish(e)) if e.saved() == Some(false)),
        "the write never started: {failed:?}"
    );
    assert!(unavailable(&writer, "new").await);
    assert_eq!(value(&writer, &tenant(0)).await, 1);
}

#[tokio::test]
async fn a_new_tenant_being_published_is_not_served_before_it_is_saved() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(1);
    let gate = Arc::new(Notify::new());
    let writer = refusing_instance(&source, &server.url(), Some(Arc::clone(&gate)));
    let publishing = {
        let writer = writer.clone();
        tokio::spawn(async move { writer.publish(&"refused-new".to_owned(), 42).await })
    };
    // Each check below runs while the saver waits at the gate: the value is
    // not saved (and never will be).
    for _ in 0..20 {
        assert!(unavailable(&writer, "refused-new").await);
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    let failed = timeout(Duration::from_secs(10), publishing)
        .await
        .expect("the publish ends")
        .unwrap();
    assert!(failed.is_err(), "the save was refused");
    assert!(unavailable(&writer, "refused-new").await);
    assert_eq!(value(&writer, &tenant(0)).await, 1);
}

/// A keyed answer says how fresh it is: a first load and a check that
/// read the key are `Read`; once the source fails after a bump, the last
/// good settings are `Stale`.
#[tokio::test]
async fn a_keyed_answer_says_whether_it_was_read_or_stale() {
    let server = RedisServer::start().expect("redis-server");
    let source = Source::with_tenants(1);
    let reader = source.instance(&server.url(), CheckMode::Strict);
    let writer = source.instance(&server.url(), CheckMode::Strict);
    let t = tenant(0);

    let first = reader.answer(&t).await.expect("the first load");
    assert_eq!((*first.snapshot, first.freshness), (1, Freshness::Read));
    let again = reader.answer(&t).await.expect("a check");
    assert_eq!((*again.snapshot, again.freshness), (1, Freshness::Read));

    // The tenant's settings vanish from the source, then its key is bumped:
    // the reload fails, and the reader keeps what it had, saying so.
    let bumper = writer.reloader(&t).await.expect("the writer's reloader");
    source.settings.lock().unwrap().remove(&t);
    bumper
        .synchronizer()
        .mark_updated()
        .await
        .expect("the bump");
    let stale = reader.answer(&t).await.expect("the last good settings");
    assert_eq!((*stale.snapshot, stale.freshness), (1, Freshness::Stale));
}
