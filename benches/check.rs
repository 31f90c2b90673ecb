//! `is_expired()` on every path, beside the raw `GET` it wraps.
//!
//! `cargo bench --bench check`. One group, `is_expired`, so the ratios of
//! each path to its baseline can be read off one report:
//!
//! - `raw_async_get`: `GET` on a multiplexed async connection (baseline for
//!   `redis_async`);
//! - `redis_async`: `Synchronizer<RedisBackend>::is_expired`;
//! - `raw_sync_get`: `GET` on a plain `redis::Connection` (baseline for
//!   `redis_blocking`);
//! - `redis_blocking`: `BlockingSynchronizer<BlockingRedisBackend>::is_expired`;
//! - `memory`: `Synchronizer<MemoryBackend>::is_expired`.
//!
//! Every Redis variant talks over loopback TCP to a throwaway
//! `redis-server` the bench starts (on `PATH`, or at `$REDIS_SERVER`). The
//! async variants run on a current-thread tokio runtime.
//!
//! `cargo test --all-targets` runs each routine once, as a smoke test.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use gensync::testing::RedisServer;
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, GenerationSynchronizer, Key, MemoryBackend,
    RedisBackend, Synchronizer,
};

fn is_expired(c: &mut Criterion) {
    let server = RedisServer::start().expect("redis-server on PATH (or at $REDIS_SERVER)");
    let url = server.url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let key = Key::new(["bench", "check"]).expect("a valid key");

    let client = redis::Client::open(url.as_str()).expect("a valid URL");
    let redis_async =
        Synchronizer::new(RedisBackend::open(&url).expect("a valid URL"), key.clone());
    let redis_blocking = BlockingSynchronizer::new(
        BlockingRedisBackend::open(&url).expect("a valid URL"),
        key.clone(),
    );
    let memory = Synchronizer::new(MemoryBackend::new(), key.clone());

    // Create the key and record it everywhere, so every check reads as
    // current, as it does in steady state.
    let raw_async = rt.block_on(async {
        redis_async.refresh().await.expect("refresh on Redis");
        memory.refresh().await.expect("refresh in memory");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("an async connection")
    });
    redis_blocking.refresh().expect("blocking refresh on Redis");
    let mut raw_sync = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .expect("a sync connection");
    assert!(!rt.block_on(redis_async.is_expired()));
    assert!(!redis_blocking.is_expired());
    assert!(!rt.block_on(memory.is_expired()));

    let mut get = redis::cmd("GET");
    get.arg(key.as_str());

    let mut group = c.benchmark_group("is_expired");
    group.bench_function("raw_async_get", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let mut conn = raw_async.clone();
            let get = &get;
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    let reply: Option<u64> = get.query_async(&mut conn).await.expect("GET");
                    black_box(reply.expect("the key exists"));
                }
                start.elapsed()
            }
        })
    });
    group.bench_function("redis_async", |b| {
        b.to_async(&rt).iter(|| redis_async.is_expired())
    });
    group.bench_function("raw_sync_get", |b| {
        b.iter(|| {
            let reply: Option<u64> = get.query(&mut raw_sync).expect("GET");
            reply.expect("the key exists")
        })
    });
    group.bench_function("redis_blocking", |b| b.iter(|| redis_blocking.is_expired()));
    group.bench_function("memory", |b| b.to_async(&rt).iter(|| memory.is_expired()));
    group.finish();

    // Nothing above may have read as expired.
    assert!(!rt.block_on(redis_async.is_expired()));
    assert!(!redis_blocking.is_expired());
    drop(server);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = is_expired
}
criterion_main!(benches);
