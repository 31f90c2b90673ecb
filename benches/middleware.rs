//! What `SettingsReload` adds to a request, over the bare service it wraps.
//!
//! `cargo bench --bench middleware`. One group, `middleware`:
//!
//! - `bare`: a `service_fn` that answers at once (the baseline);
//! - `memory_current`: the same service behind `SettingsReloadLayer`, on
//!   the in-memory backend, with the settings current, so every request
//!   pays one check that finds nothing to do;
//! - `memory_current_exported` (with `--features metrics`): the same, with
//!   the reloader's metrics going to a Prometheus recorder.
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
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gensync::reload::{Reloader, SettingsReloadLayer};
use gensync::{Key, MemoryBackend, Synchronizer};
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

    // Every request was a check that found the settings current.
    let after = reloader.metrics();
    assert!(after.checks > before.checks);
    assert_eq!(
        after.expired, before.expired,
        "no check may read as expired"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = middleware
}
criterion_main!(benches);
