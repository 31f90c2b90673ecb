//! Load harness for the check modes: throughput, latency, Redis commands
//! per request, memory, and how fast a bump reaches another instance.
//!
//! ```sh
//! cargo run --release --example loadgen --features keyed      # short run, ~1 min
//! cargo run --release --example loadgen --features keyed -- --requests 1000000 # the BENCHMARKS.md run
//! ```
//!
//! It starts its own redis-server and drives a `Reloader` in process,
//! through `SettingsReloadLayer` around a `tower::service_fn`, with N tasks
//! each sending `http::Request<()>`s one after the other (N requests in
//! flight). Variants:
//!
//! - `naive`: no gensync, one `GET` of the key per request on a shared
//!   `redis::aio::MultiplexedConnection` (the baseline);
//! - `strict`, `push`, `interval` (`--interval`, 100ms by default): a
//!   `Reloader` over `RedisBackend` in that `CheckMode`;
//! - `memory`: a `Reloader` over `MemoryBackend` (default mode), the cost
//!   of the middleware with no network at all;
//! - `floor`: no gensync and no Redis: reads that take no time, made back
//!   to back by a task of their own, each releasing every request that
//!   arrived before it began (a `Notify`). A strict check must wait for a
//!   read that begins after it arrives: this is the most requests per
//!   second a strict check could reach here with a perfect coalescer and
//!   an instant Redis.
//!
//! Each cell (variant × in flight) runs in a child process (this program
//! run again with `--cell`), so its `VmHWM` is its own: peak RSS is the
//! child's, with `VmRSS` after the warm-up and at the end to show whether
//! memory grows with the number of requests. Redis commands per request
//! are the `INFO commandstats` delta over the measured run, every command
//! included (heartbeats, the push connection's setup), less the one
//! `INFO` the harness sent inside the window.
//!
//! Propagation: two reloaders with their own `RedisBackend` (two
//! instances). A (strict) changes the value its loader returns and calls
//! `mark_updated`; B, in the mode measured, runs a tight check loop. The
//! delay is from just before A's `mark_updated` to B's first check that
//! returns the new value.
//!
//! Every request task yields to the runtime after each request, as a
//! server's connection task does between requests: a check answered
//! without a read is ready at once, and a loop of ready futures would
//! otherwise starve the runtime's other tasks (push mode's heartbeats).

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use gensync::keyed::{KeyRejection, KeyedReloadLayer, KeyedReloader};
use gensync::reload::{CheckMode, Reloader, SettingsReloadLayer, Snapshot};
use gensync::testing::RedisServer;
use gensync::{Key, MemoryBackend, RedisBackend, Synchronizer};
use hdrhistogram::Histogram;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The key every variant reads; the naive one by its stored name.
const KEY: [&str; 2] = ["bench", "loadgen"];
const STORED_KEY: &str = "gensync:bench:loadgen";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
enum Variant {
    Naive,
    Strict,
    Push,
    Interval,
    Memory,
    Floor,
    KeyedStrict,
    KeyedPush,
    KeyedInterval,
}

#[derive(Parser, Debug)]
#[command(about = "gensync load harness: check modes against a naive GET per request")]
struct Args {
    /// Measured requests per cell (after a warm-up of a tenth of this,
    /// at most 20000). BENCHMARKS.md uses 1000000.
    #[arg(long, default_value_t = 100_000)]
    requests: u64,

    /// Requests in flight (tasks), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,1024")]
    inflight: Vec<usize>,

    /// Variants to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "naive,strict,push,interval,memory,floor"
    )]
    variants: Vec<Variant>,

    /// Interval mode's interval, in milliseconds.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,

    /// Keyed variants: how many distinct keys (tenants) requests are spread
    /// over, the hot ones far more often than the cold (Zipf-like, each
    /// key's share falling as one over its rank).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,

    /// Keyed variants: how many keys keep a reloader.
    #[arg(long, default_value_t = 10_000)]
    capacity: u64,

    /// Keyed variants: load every key once before the warm-up (so with a
    /// capacity of at least `--keys` every tenant is cached, and the
    /// measured run makes no first load).
    #[arg(long)]
    preload: bool,

    /// Bumps per mode in the propagation measurement (0 skips it).
    #[arg(long, default_value_t = 200)]
    bumps: usize,

    /// Internal: run one cell of this variant and print its result as JSON.
    #[arg(long, hide = true)]
    cell: Option<Variant>,

    /// Internal: the Redis server of a cell.
    #[arg(long, hide = true)]
    redis: Option<String>,
}

/// What one cell measured, handed from the child to the parent as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct CellResult {
    requests: u64,
    seconds: f64,
    p50_ns: u64,
    p99_ns: u64,
    /// Redis commands inside the measured window; `None` without Redis.
    commands: Option<u64>,
    rss_start_kb: u64,
    rss_end_kb: u64,
    hwm_kb: u64,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    if let Some(variant) = args.cell {
        let inflight = *args.inflight.first().ok_or("--inflight is empty")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let result = rt.block_on(cell(variant, inflight, &args))?;
        println!("{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    parent(&args)
}

fn parent(args: &Args) -> Result<(), BoxError> {
    let server = RedisServer::start()?;
    let url = server.url();
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("- server: {url} (throwaway redis-server started by this program)");
    println!(
        "- {cores} cores; each cell in its own process, tokio multi-thread runtime ({cores} workers)"
    );
    println!(
        "- {} measured requests per cell after a warm-up; interval mode: interval={}ms",
        args.requests, args.interval_ms
    );
    println!();
    println!("| variant | in flight | requests | req/s | p50 µs | p99 µs | Redis cmds/req | vs naive req/s | RSS after warm-up MiB | RSS at end MiB | peak RSS (VmHWM) MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let exe = std::env::current_exe()?;
    for &inflight in &args.inflight {
        let mut naive_rps = None;
        for &variant in &args.variants {
            let output = Command::new(&exe)
                .arg("--cell")
                .arg(variant_name(variant))
                .arg("--inflight")
                .arg(inflight.to_string())
                .arg("--requests")
                .arg(args.requests.to_string())
                .arg("--redis")
                .arg(&url)
                .arg("--interval-ms")
                .arg(args.interval_ms.to_string())
                .arg("--keys")
                .arg(args.keys.to_string())
                .arg("--capacity")
                .arg(args.capacity.to_string())
                .args(args.preload.then_some("--preload"))
                .stderr(Stdio::inherit())
                .output()?;
            if !output.status.success() {
                return Err(
                    format!("cell {variant:?} × {inflight} failed: {}", output.status).into(),
                );
            }
            let r: CellResult = serde_json::from_slice(&output.stdout)?;
            let rps = r.requests as f64 / r.seconds;
            if variant == Variant::Naive {
                naive_rps = Some(rps);
            }
            let vs = naive_rps.map_or("—".to_owned(), |n| format!("{:.1}×", rps / n));
            let cmds = r.commands.map_or("— (no Redis)".to_owned(), |c| {
                format!("{:.6}", c as f64 / r.requests as f64)
            });
            println!(
                "| {} | {inflight} | {} | {:.0} | {:.1} | {:.1} | {cmds} | {vs} | {:.1} | {:.1} | {:.1} |",
                label(variant, args.interval_ms),
                r.requests,
                rps,
                r.p50_ns as f64 / 1e3,
                r.p99_ns as f64 / 1e3,
                r.rss_start_kb as f64 / 1024.0,
                r.rss_end_kb as f64 / 1024.0,
                r.hwm_kb as f64 / 1024.0,
            );
        }
    }
    println!();

    if args.bumps > 0 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        println!(
            "Propagation: {} bumps per mode; A (strict) changes its loader's value and calls `mark_updated`, B (the mode) checks in a tight loop; delay from before A's `mark_updated` to B's first check returning the new value.",
            args.bumps
        );
        println!();
        println!("| B's mode | bumps | median µs | p99 µs | max µs |");
        println!("|---|---:|---:|---:|---:|");
        for mode in CheckMode::all(Duration::from_millis(args.interval_ms)) {
            let mut delays = rt.block_on(propagation(&url, mode, args.bumps))?;
            delays.sort();
            let at = |q: f64| delays[((delays.len() - 1) as f64 * q).round() as usize];
            println!(
                "| {mode} | {} | {:.0} | {:.0} | {:.0} |",
                delays.len(),
                at(0.5).as_secs_f64() * 1e6,
                at(0.99).as_secs_f64() * 1e6,
                delays[delays.len() - 1].as_secs_f64() * 1e6,
            );
        }
        println!();
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn variant_name(v: Variant) -> &'static str {
    match v {
        Variant::Naive => "naive",
        Variant::Strict => "strict",
        Variant::Push => "push",
        Variant::Interval => "interval",
        Variant::Memory => "memory",
        Variant::Floor => "floor",
        Variant::KeyedStrict => "keyed-strict",
        Variant::KeyedPush => "keyed-push",
        Variant::KeyedInterval => "keyed-interval",
    }
}

/// The check mode a reloader variant runs in (plain or keyed); `None` for
/// the variants that are no reloader's mode.
fn mode_of(v: Variant, interval: Duration) -> Option<CheckMode> {
    match v {
        Variant::Strict | Variant::KeyedStrict => Some(CheckMode::Strict),
        Variant::Push | Variant::KeyedPush => Some(CheckMode::Push),
        Variant::Interval | Variant::KeyedInterval => Some(CheckMode::Interval(interval)),
        Variant::Naive | Variant::Memory | Variant::Floor => None,
    }
}

fn label(v: Variant, interval_ms: u64) -> String {
    match v {
        Variant::Naive => "naive GET per request".into(),
        Variant::Strict => "strict".into(),
        Variant::Push => "push".into(),
        Variant::Interval => format!("interval={interval_ms}ms"),
        Variant::Memory => "memory backend (strict)".into(),
        Variant::Floor => "floor: instant reads, perfectly coalesced, no gensync".into(),
        Variant::KeyedStrict => "keyed, strict".into(),
        Variant::KeyedPush => "keyed, push".into(),
        Variant::KeyedInterval => format!("keyed, interval={interval_ms}ms"),
    }
}

/// One variant at one concurrency, in this (child) process.
async fn cell(variant: Variant, inflight: usize, args: &Args) -> Result<CellResult, BoxError> {
    let requests = args.requests;
    let interval = Duration::from_millis(args.interval_ms);
    let url = args.redis.as_deref();
    let keys = keyed(variant).then_some(args.keys);
    let warmup = (requests / 10).min(20_000);
    // The harness's own connection, opened before the window so its
    // handshake is not counted.
    let mut stats = match url {
        Some(url) if !matches!(variant, Variant::Memory | Variant::Floor) => Some(
            redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?,
        ),
        _ => None,
    };
    let url = url.unwrap_or_default();
    let key = Key::new(KEY)?;

    // Builds the service, warms it up, and measures it: one generic path
    // for the naive service and the middleware.
    macro_rules! measure {
        ($service:expr) => {{
            let service = $service;
            drive(&service, inflight, warmup, keys).await;
            let rss_start_kb = proc_status("VmRSS:");
            let scripts_only = variant != Variant::Naive;
            // A plain check reads with a `GETRANGE` of its own; a keyed
            // one with a script, whose `GETRANGE`s run inside it.
            let counted = match (scripts_only, keyed(variant)) {
                (false, _) => Counted::All,
                (true, false) => Counted::Sent { getrange: true },
                (true, true) => Counted::Sent { getrange: false },
            };
            let before = match stats.as_mut() {
                Some(conn) => Some(command_calls(conn, counted).await?),
                None => None,
            };
            let began = Instant::now();
            let histogram = drive(&service, inflight, requests, keys).await;
            let seconds = began.elapsed().as_secs_f64();
            let commands = match (stats.as_mut(), before) {
                // Less the `INFO` that took `before`: the reply to an
                // `INFO` does not count itself.
                (Some(conn), Some(before)) => {
                    Some(command_calls(conn, counted).await? - before - 1)
                }
                _ => None,
            };
            CellResult {
                requests: inflight as u64 * requests.div_ceil(inflight as u64),
                seconds,
                p50_ns: histogram.value_at_quantile(0.5),
                p99_ns: histogram.value_at_quantile(0.99),
                commands,
                rss_start_kb,
                rss_end_kb: proc_status("VmRSS:"),
                hwm_kb: proc_status("VmHWM:"),
            }
        }};
    }

    let answer = |request: http::Request<()>| async move {
        let settings = request
            .extensions()
            .get::<Snapshot<u64>>()
            .expect("the middleware inserts the snapshot");
        Ok::<u64, Infallible>(**settings)
    };
    let result = match variant {
        Variant::Naive => {
            let mut conn = redis::Client::open(url)?
                .get_multiplexed_async_connection()
                .await?;
            redis::cmd("SET")
                .arg(STORED_KEY)
                .arg("1")
                .query_async::<()>(&mut conn)
                .await?;
            // The obvious way: read the key for every request.
            measure!(service_fn(move |_request: http::Request<()>| {
                let mut conn: MultiplexedConnection = conn.clone();
                async move {
                    let value: Option<String> = redis::cmd("GET")
                        .arg(STORED_KEY)
                        .query_async(&mut conn)
                        .await?;
                    Ok::<u64, redis::RedisError>(value.map_or(0, |v| v.len() as u64))
                }
            }))
        }
        Variant::KeyedStrict | Variant::KeyedPush | Variant::KeyedInterval => {
            let mode = mode_of(variant, interval).ok_or("a keyed variant names a mode")?;
            let tenants = KeyedReloader::builder(
                RedisBackend::open(url)?,
                Key::new(["bench", "tenants"])?,
                |tenant: &u64| tenant.to_string(),
                |tenant: u64| async move { Ok::<_, Infallible>(tenant) },
            )
            .mode(mode)
            .capacity(args.capacity)
            .build()?;
            if args.preload {
                preload(&tenants, args.keys).await?;
            }
            let counted = tenants.clone();
            let layer = KeyedReloadLayer::new(tenants, |request: &http::Request<()>| {
                request.uri().path()[1..]
                    .parse::<u64>()
                    .map_err(|_| KeyRejection::bad_request("no tenant"))
            });
            let answer = |request: http::Request<()>| async move {
                let settings = request
                    .extensions()
                    .get::<Snapshot<u64>>()
                    .expect("the middleware inserts the snapshot");
                Ok::<_, Infallible>(http::Response::new(settings.to_string()))
            };
            let result = measure!(ServiceBuilder::new()
                .map_response(|r: http::Response<String>| u64::from(r.status().as_u16()))
                .layer(layer)
                .service(service_fn(answer)));
            // How many requests were a key's first load (warm-up included):
            // what keyed p99s are made of when keys are not all cached.
            let metrics = counted.metrics();
            eprintln!(
                "{} × {inflight}: {} checks, {} loader runs (first loads and reloads)",
                variant_name(variant),
                metrics.checks,
                metrics.loader_runs
            );
            result
        }
        Variant::Floor => {
            // Reads that take no time, back to back, each answering every
            // request that arrived before it began.
            let tick = Arc::new(tokio::sync::Notify::new());
            let ticker = {
                let tick = Arc::clone(&tick);
                tokio::spawn(async move {
                    loop {
                        tick.notify_waiters();
                        tokio::task::yield_now().await;
                    }
                })
            };
            let result = measure!(service_fn(move |_request: http::Request<()>| {
                let tick = Arc::clone(&tick);
                async move {
                    tick.notified().await;
                    Ok::<u64, Infallible>(7)
                }
            }));
            ticker.abort();
            result
        }
        Variant::Memory => {
            let sync = Synchronizer::new(MemoryBackend::new(), key);
            let reloader =
                Reloader::builder(sync, || async { Ok::<_, Infallible>(7u64) }).build(0)?;
            steady(&reloader, false).await?;
            measure!(SettingsReloadLayer::new(reloader).layer(service_fn(answer)))
        }
        Variant::Strict | Variant::Push | Variant::Interval => {
            let mode = mode_of(variant, interval).ok_or("a mode variant names a mode")?;
            let sync = Synchronizer::new(RedisBackend::open(url)?, key);
            let reloader = Reloader::builder(sync, || async { Ok::<_, Infallible>(7u64) })
                .mode(mode)
                .build(0)?;
            steady(&reloader, mode != CheckMode::Strict).await?;
            measure!(SettingsReloadLayer::new(reloader).layer(service_fn(answer)))
        }
    };
    Ok(result)
}

/// Loads the settings, then checks until the mode is in its steady state:
/// for push and interval, until a check is answered at once, without a
/// read (push armed, interval read made); strict answers nothing at once,
/// so one current check is its steady state.
async fn steady(reloader: &Reloader<u64>, answers_at_once: bool) -> Result<(), BoxError> {
    reloader
        .reload_now()
        .await
        .map_err(|_| "the first load failed")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut check = reloader.check();
        if let Poll::Ready(settings) = poll_once(&mut check) {
            assert_eq!(*settings, 7);
            return Ok(());
        }
        // Paced by the read this check makes.
        assert_eq!(*check.await, 7);
        if !answers_at_once {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("push or interval mode never answered a check without a read".into());
        }
    }
}

/// Polls a future once with a waker that does nothing.
fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    std::pin::Pin::new(future).poll(&mut cx)
}

/// `inflight` tasks, each sending `requests / inflight` (rounded up)
/// requests one after the other through its own clone of `service`; the
/// latency of every request.
///
/// Tasks keep their latencies in a small buffer and add it to one shared
/// histogram every [`FLUSH`] requests: a histogram per task would be tens
/// of kilobytes each, which at 1024 tasks would be the harness's memory,
/// not the service's.
async fn drive<S>(service: &S, inflight: usize, requests: u64, keys: Option<u64>) -> Histogram<u64>
where
    S: Service<http::Request<()>, Response = u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Debug,
{
    const FLUSH: usize = 128;
    let per_task = requests.div_ceil(inflight as u64);
    let all = Arc::new(Mutex::new(new_histogram()));
    let mut tasks = Vec::with_capacity(inflight);
    for _ in 0..inflight {
        let mut service = service.clone();
        let all = Arc::clone(&all);
        tasks.push(tokio::spawn(async move {
            let mut buffer = Vec::with_capacity(FLUSH);
            let flush = |buffer: &mut Vec<u64>| {
                let mut all = all.lock().expect("no panics while recording");
                for &ns in buffer.iter() {
                    all.saturating_record(ns);
                }
                buffer.clear();
            };
            for _ in 0..per_task {
                let began = Instant::now();
                let answer = service
                    .ready()
                    .await
                    .expect("ready")
                    .call(request(keys))
                    .await
                    .expect("an answer");
                buffer.push(began.elapsed().as_nanos() as u64);
                std::hint::black_box(answer);
                if buffer.len() == FLUSH {
                    flush(&mut buffer);
                }
                tokio::task::yield_now().await;
            }
            flush(&mut buffer);
        }));
    }
    for task in tasks {
        task.await.expect("a request task");
    }
    let all = all.lock().expect("no panics while recording").clone();
    all
}

/// Loads every key of `0..keys` once, 256 at a time.
async fn preload(tenants: &KeyedReloader<u64, u64>, keys: u64) -> Result<(), BoxError> {
    let next = Arc::new(AtomicU64::new(0));
    let loaders: Vec<_> = (0..256)
        .map(|_| {
            let (tenants, next) = (tenants.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= keys {
                        return Ok::<_, String>(());
                    }
                    tenants.check(&k).await.map_err(|e| e.to_string())?;
                }
            })
        })
        .collect();
    for loader in loaders {
        loader.await??;
    }
    Ok(())
}

/// A request; for keyed variants, for a key drawn Zipf-like from `keys`:
/// key `k` (from 0) with a chance proportional to `1 / (k + 1)`.
fn request(keys: Option<u64>) -> http::Request<()> {
    let Some(keys) = keys else {
        return http::Request::new(());
    };
    let u: f64 = rand::random();
    let k = ((keys as f64 + 1.0).powf(u) - 1.0).floor() as u64;
    let mut request = http::Request::new(());
    *request.uri_mut() = format!("/{}", k.min(keys - 1))
        .parse()
        .expect("a path is a URI");
    request
}

fn keyed(variant: Variant) -> bool {
    matches!(
        variant,
        Variant::KeyedStrict | Variant::KeyedPush | Variant::KeyedInterval
    )
}

fn new_histogram() -> Histogram<u64> {
    // 1 ns to 60 s, two significant digits.
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid bounds")
}

/// Which commands of `INFO commandstats` [`command_calls`] sums.
#[derive(Clone, Copy)]
enum Counted {
    /// Every command: a client that sends no scripts.
    All,
    /// What a gensync client sends itself: `EVAL`, `EVALSHA`, the
    /// connection's `PING`, `CLIENT`, `HELLO`, `SELECT`, `AUTH`, `INFO`,
    /// and, when its reads are plain commands, `GETRANGE`. The commands a
    /// script runs count in `INFO commandstats` too, and are left out.
    Sent { getrange: bool },
}

/// The sum of `calls` over the `counted` commands in `INFO commandstats`:
/// the commands clients sent.
async fn command_calls(
    conn: &mut MultiplexedConnection,
    counted: Counted,
) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    let mut total = 0;
    const SENT: &[&str] = &[
        "eval", "evalsha", "ping", "client", "hello", "select", "auth", "info",
    ];
    let counts = |l: &str| {
        let name = l["cmdstat_".len()..].split([':', '|']).next().unwrap_or("");
        match counted {
            Counted::All => true,
            Counted::Sent { getrange } => SENT.contains(&name) || (getrange && name == "getrange"),
        }
    };
    for line in info
        .lines()
        .filter(|l| l.starts_with("cmdstat_") && counts(l))
    {
        let calls = line
            .split_once("calls=")
            .and_then(|(_, rest)| rest.split(',').next())
            .ok_or_else(|| format!("unexpected commandstats line {line:?}"))?;
        total += calls.parse::<u64>()?;
    }
    Ok(total)
}

/// A `kB` field of `/proc/self/status` (0 where there is none).
fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Delays from A's bump to B's check returning the new settings, one per
/// bump, with B in `mode`.
async fn propagation(url: &str, mode: CheckMode, bumps: usize) -> Result<Vec<Duration>, BoxError> {
    let key = Key::new(["bench", "propagation", mode.name()])?;
    // The source of truth both instances load from.
    let value = Arc::new(AtomicU64::new(0));
    let loader = |value: Arc<AtomicU64>| {
        move || {
            let value = Arc::clone(&value);
            async move { Ok::<_, Infallible>(value.load(Ordering::SeqCst)) }
        }
    };
    let a = Reloader::builder(
        Synchronizer::new(RedisBackend::open(url)?, key.clone()),
        loader(Arc::clone(&value)),
    )
    .build(0)?;
    let b = Reloader::builder(
        Synchronizer::new(RedisBackend::open(url)?, key),
        loader(Arc::clone(&value)),
    )
    .mode(mode)
    .build(0)?;
    a.reload_now().await.map_err(|_| "A's first load failed")?;
    b.reload_now().await.map_err(|_| "B's first load failed")?;

    // B's loop: every check, and the moment a new value is first served.
    let (seen_tx, mut seen) = tokio::sync::watch::channel((0u64, Instant::now()));
    let looping = {
        let b = b.clone();
        tokio::spawn(async move {
            let mut last = 0;
            loop {
                let served = *b.check().await;
                if served != last {
                    last = served;
                    if seen_tx.send((served, Instant::now())).is_err() {
                        return;
                    }
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // Push: let the tracker arm before the first bump, as in steady state.
    if mode.pushes() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while poll_once(&mut b.check()).is_pending() {
            if Instant::now() > deadline {
                return Err("push mode never armed".into());
            }
            tokio::task::yield_now().await;
        }
    }

    // A pause of random length before each bump, so bumps fall at every
    // phase of the interval (or heartbeat) instead of right after the read
    // that answered the last one.
    let phase = mode.interval().unwrap_or(Duration::from_millis(10));
    let mut delays = Vec::with_capacity(bumps);
    for n in 1..=bumps as u64 {
        tokio::time::sleep(phase.mul_f64(rand::random::<f64>())).await;
        value.store(n, Ordering::SeqCst);
        let bumped = Instant::now();
        a.synchronizer().mark_updated().await?;
        let (_, at) = *seen.wait_for(|(served, _)| *served == n).await?;
        delays.push(at.saturating_duration_since(bumped));
    }
    looping.abort();
    Ok(delays)
}
