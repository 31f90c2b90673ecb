//! What `SettingsReload` adds to a request, over the bare service it wraps.
//!
//! `cargo bench --bench middleware`. One group, `middleware`:
//!
//! - `bare`: a `service_fn` that answers at once (the baseline);
//! - `memory_current`: the same service behind `SettingsReloadLayer`, on
//!   the in-memory backend, with the settings current, so every request
//!   pays one check that finds nothing to do;
//! - `memory_current_exported` (with `--features metrics`): the same, with
//!   the reloader's metrics going to a Prometheus recorder;
//! - `bare_multi_thread`, `push_armed`, `strict_redis`: on a real
//!   redis-server the bench starts, on a multi-thread runtime (one worker)
//!   so that the connections' tasks and push mode's heartbeats run beside
//!   the requests, as in a server: the bare service again, the bare
//!   service with a value put in each request's extensions (what any
//!   middleware that hands the handler a value pays), then the
//!   middleware in push mode with tracking armed (every check answered
//!   without a read; the bench waits until a check is ready at once before
//!   measuring, and prints the Redis commands per request it saw), and in
//!   strict mode (one coalesced read per request, one request at a time).
//!
//! `cargo bench --bench middleware` measures the crate as a library user
//! gets it by default; `cargo bench --bench middleware --features metrics`
//! adds what the `metrics` feature costs, without and with a recorder.
//!
//! All run on a current-thread tokio runtime and drive the service the
//! way a server does: `ready()`, then `call()`, then await the response.
//!
//! `cargo test --all-targets` runs each routine once, as a smoke test.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gensync::reload::{CheckMode, Reloader, SettingsReloadLayer};
use gensync::testing::RedisServer;
use gensync::{Key, MemoryBackend, RedisBackend, Synchronizer};
use tower::{service_fn, Layer, Service, ServiceExt};

async fn answer(request: http::Request<()>) -> Result<usize, Infallible> {
    Ok(request.extensions().len())
}

/// Sends `iters` requests through `service`, one at a time, as a server
/// connection does, and times them.
async fn drive<S>(mut service: S, iters: u64) -> Duration
where
    S: Service<http::Request<()>, Response = usize, Error = Infallible>,
{
    let start = Instant::now();
    for _ in 0..iters {
        let ready = service.ready().await.expect("ready");
        black_box(ready.call(http::Request::new(())).await.expect("answer"));
    }
    start.elapsed()
}

/// A reloader on the in-memory backend whose settings are current.
fn current_reloader(rt: &tokio::runtime::Runtime) -> Reloader<u64> {
    let key = Key::new(["bench", "middleware"]).expect("a valid key");
    let sync = Synchronizer::new(MemoryBackend::new(), key);
    let reloader = Reloader::builder(sync, || async { Ok::<_, Infallible>(7u64) })
        .build(0)
        .expect("a reloader");
    rt.block_on(async {
        reloader.reload_now().await.expect("the first load");
        assert_eq!(*reloader.check().await, 7);
    });
    reloader
}

fn middleware(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let reloader = current_reloader(&rt);
    let before = reloader.metrics();

    let mut group = c.benchmark_group("middleware");
    group.bench_function("bare", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| drive(service_fn(answer), iters))
    });
    group.bench_function("memory_current", |b| {
        let layer = SettingsReloadLayer::new(reloader.clone());
        b.to_async(&rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(answer)), iters))
    });
    #[cfg(feature = "metrics")]
    {
        // Built under the recorder, so its handles record into it.
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let exported = metrics::with_local_recorder(&recorder, || current_reloader(&rt));
        group.bench_function("memory_current_exported", |b| {
            let layer = SettingsReloadLayer::new(exported.clone());
            b.to_async(&rt)
                .iter_custom(|iters| drive(layer.layer(service_fn(answer)), iters))
        });
        let text = recorder.handle().render();
        assert!(
            text.contains("gensync_check_duration_seconds"),
            "the recorder saw the checks:\n{text}"
        );
    }
    group.finish();

    // Every request (if a filter left any) was a check that found the
    // settings current.
    let after = reloader.metrics();
    assert_eq!(
        after.expired, before.expired,
        "no check may read as expired"
    );
}

/// A reloader over `server` in `mode`, its settings loaded, in its steady
/// state: in push mode, tracking armed (a check is ready at once).
fn redis_reloader(rt: &tokio::runtime::Runtime, url: &str, mode: CheckMode) -> Reloader<u64> {
    let key = Key::new(["bench", "middleware"]).expect("a valid key");
    let backend = RedisBackend::open(url).expect("a Redis backend");
    let reloader = Reloader::builder(Synchronizer::new(backend, key), || async {
        Ok::<_, Infallible>(7u64)
    })
    .mode(mode)
    .build(0)
    .expect("a reloader");
    rt.block_on(async {
        reloader.reload_now().await.expect("the first load");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Each awaited check paces the loop with its own read.
            let mut check = reloader.check();
            let polled = std::pin::Pin::new(&mut check)
                .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
            if polled.is_ready() || mode == CheckMode::Strict {
                break;
            }
            assert_eq!(*check.await, 7);
            assert!(Instant::now() < deadline, "push tracking never armed");
        }
    });
    reloader
}

/// The sum of `calls` over every command in `INFO commandstats`.
fn command_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(conn)
        .expect("INFO commandstats");
    info.lines()
        .filter(|l| l.starts_with("cmdstat_"))
        .filter_map(|l| {
            l.split_once("calls=")?
                .1
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn on_redis(c: &mut Criterion) {
    let server = RedisServer::start().expect("redis-server on PATH");
    let url = server.url();
    let mut stats = server.connection().expect("a connection for INFO");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let push = redis_reloader(&rt, &url, CheckMode::Push);
    let strict = redis_reloader(&rt, &url, CheckMode::Strict);

    let mut group = c.benchmark_group("middleware");
    group.bench_function("bare_multi_thread", |b| {
        b.to_async(&rt)
            .iter_custom(|iters| drive(service_fn(answer), iters))
    });
    // What handing any value to the handler through the request's
    // extensions costs (three allocations in `http`'s map), whatever the
    // middleware: the floor under `push_armed`.
    group.bench_function("extension_multi_thread", |b| {
        let value = std::sync::Arc::new(7u64);
        b.to_async(&rt).iter_custom(|iters| {
            let value = value.clone();
            drive(
                service_fn(move |mut request: http::Request<()>| {
                    request.extensions_mut().insert(value.clone());
                    answer(request)
                }),
                iters,
            )
        })
    });
    let (checks, commands) = (push.metrics().checks, command_calls(&mut stats));
    group.bench_function("push_armed", |b| {
        let layer = SettingsReloadLayer::new(push.clone());
        b.to_async(&rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(answer)), iters))
    });
    // Less the INFO that took the first count.
    let commands = command_calls(&mut stats) - commands - 1;
    let checks = push.metrics().checks - checks;
    eprintln!(
        "push_armed: {commands} Redis commands over {checks} requests ({:.2e} per request)",
        commands as f64 / checks as f64
    );
    group.bench_function("strict_redis", |b| {
        let layer = SettingsReloadLayer::new(strict.clone());
        b.to_async(&rt)
            .iter_custom(|iters| drive(layer.layer(service_fn(answer)), iters))
    });
    group.finish();
    assert_eq!(
        push.metrics().expired,
        0,
        "no push check may read as expired"
    );
    assert_eq!(
        strict.metrics().expired,
        0,
        "no strict check may read as expired"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = middleware, on_redis
}
criterion_main!(benches);
