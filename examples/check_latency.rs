//! Latency of one task doing sequential `is_expired()` checks, against the
//! raw `GET` a hand-written check would send.
//!
//! ```text
//! cargo run --release --example check_latency
//! cargo run --release --example check_latency -- --iterations 50000
//! cargo run --release --example check_latency -- --url redis://127.0.0.1:6379
//! cargo run --release --example check_latency -- --runtime multi
//! cargo run --release --example check_latency -- --topology cluster
//! ```
//!
//! Without `--url` it starts its own throwaway `redis-server` (on `PATH`, or
//! at `$REDIS_SERVER`) and talks to it over loopback TCP; with `--topology
//! sentinel` or `cluster`, a throwaway Sentinel group or Cluster instead,
//! whose URL gensync is given while the raw GETs go straight to the node
//! that holds the key (what a hand-written check that knew it would send).
//!
//! Five variants, each timed call by call with `std::time::Instant`:
//!
//! - `raw async GET`: `GET` of the key on a multiplexed async connection
//!   from `redis::Client::get_multiplexed_async_connection` (the baseline
//!   for the async path);
//! - `Synchronizer<RedisBackend>`: `is_expired().await`;
//! - `raw sync GET`: `GET` of the key on a plain `redis::Connection` (the
//!   baseline for the blocking path);
//! - `BlockingSynchronizer<BlockingRedisBackend>`: `is_expired()` on the
//!   r2d2 pool;
//! - `Synchronizer<MemoryBackend>`: `is_expired().await` in process memory.
//!
//! The variants run in rounds of `--chunk` calls each, in an order that
//! rotates every round, so slow spells of the machine fall on all of them
//! alike. The async variants run as a task spawned on the runtime (like a
//! request handler would); the blocking ones on the main thread, outside it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gensync::testing::{RedisCluster, RedisServer, SentinelGroup};
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, GenerationSynchronizer, Key, MemoryBackend,
    RedisBackend, Synchronizer,
};
use redis::aio::MultiplexedConnection;

/// For scale, an outside figure this program does not reproduce: Djblets
/// 6.1's Python synchronizer over Django's Redis cache, measured on a
/// machine of this kind, per check in µs and checks per second on one
/// thread.
const REFERENCE_US: f64 = 235.0;
const REFERENCE_PER_SEC: f64 = 4_250.0;

/// Latency of one task doing sequential `is_expired()` checks, against a
/// raw `GET` baseline.
#[derive(clap::Parser)]
#[command(name = "check_latency")]
struct Args {
    /// A Redis server to measure against; without it, a throwaway
    /// redis-server started by this program.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Without --url: the throwaway deployment to start.
    #[arg(long, value_enum, default_value_t = Topology::Single, conflicts_with = "url")]
    topology: Topology,
    /// Timed calls per variant.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..))]
    iterations: u32,
    /// Untimed warm-up calls per variant.
    #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(1..))]
    warmup: u32,
    /// Calls per variant in one round.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    chunk: u32,
    /// The tokio runtime the async variants run on.
    #[arg(long, value_enum, default_value_t = Flavor::Current)]
    runtime: Flavor,
    /// Run only these variants (for profiling one path with perf or
    /// strace); repeatable.
    #[arg(long, value_enum)]
    only: Vec<Variant>,
}

/// A throwaway deployment.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Topology {
    Single,
    Sentinel,
    Cluster,
}

/// The tokio runtime flavour.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Flavor {
    Current,
    Multi,
}

/// The variants, in table order.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Variant {
    #[value(name = "raw-async")]
    RawAsyncGet,
    #[value(name = "async")]
    RedisAsync,
    #[value(name = "raw-sync")]
    RawSyncGet,
    #[value(name = "blocking")]
    RedisBlocking,
    Memory,
}

const VARIANTS: [Variant; 5] = [
    Variant::RawAsyncGet,
    Variant::RedisAsync,
    Variant::RawSyncGet,
    Variant::RedisBlocking,
    Variant::Memory,
];

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::RawAsyncGet => "raw async GET (MultiplexedConnection)",
            Variant::RedisAsync => "`Synchronizer<RedisBackend>::is_expired`",
            Variant::RawSyncGet => "raw sync GET (redis::Connection)",
            Variant::RedisBlocking => "`BlockingSynchronizer<BlockingRedisBackend>::is_expired`",
            Variant::Memory => "`Synchronizer<MemoryBackend>::is_expired`",
        }
    }

    fn baseline(self) -> Option<Variant> {
        match self {
            Variant::RedisAsync => Some(Variant::RawAsyncGet),
            Variant::RedisBlocking => Some(Variant::RawSyncGet),
            _ => None,
        }
    }
}

/// Everything the variants run against.
struct Targets {
    key: String,
    raw_async: MultiplexedConnection,
    redis_async: Arc<Synchronizer<RedisBackend>>,
    raw_sync: redis::Connection,
    redis_blocking: BlockingSynchronizer<BlockingRedisBackend>,
    memory: Arc<Synchronizer<MemoryBackend>>,
}

/// Per-call latencies in nanoseconds, and how many calls gave a wrong
/// answer (an expired check, or a missing key for the raw GETs).
struct Samples {
    nanos: Vec<u64>,
    wrong: usize,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `n` calls of an async variant as one task on the runtime.
fn run_async(
    rt: &tokio::runtime::Runtime,
    targets: &Targets,
    variant: Variant,
    n: usize,
    out: &mut Samples,
) {
    let key = targets.key.clone();
    let mut raw = targets.raw_async.clone();
    let redis = Arc::clone(&targets.redis_async);
    let memory = Arc::clone(&targets.memory);
    let task = async move {
        let mut nanos_out = Vec::with_capacity(n);
        let mut wrong = 0;
        for _ in 0..n {
            let start = Instant::now();
            let ok = match variant {
                Variant::RawAsyncGet => {
                    let reply: redis::RedisResult<Option<u64>> =
                        redis::cmd("GET").arg(&key).query_async(&mut raw).await;
                    matches!(reply, Ok(Some(_)))
                }
                Variant::RedisAsync => !redis.is_expired().await,
                Variant::Memory => !memory.is_expired().await,
                _ => unreachable!("not an async variant"),
            };
            nanos_out.push(nanos(start.elapsed()));
            wrong += usize::from(!ok);
        }
        (nanos_out, wrong)
    };
    let (nanos_out, wrong) = rt
        .block_on(rt.spawn(task))
        .expect("the measuring task panicked");
    out.nanos.extend(nanos_out);
    out.wrong += wrong;
}

/// Runs `n` calls of a blocking variant on this thread.
fn run_blocking(targets: &mut Targets, variant: Variant, n: usize, out: &mut Samples) {
    for _ in 0..n {
        let start = Instant::now();
        let ok = match variant {
            Variant::RawSyncGet => {
                let reply: redis::RedisResult<Option<u64>> = redis::cmd("GET")
                    .arg(&targets.key)
                    .query(&mut targets.raw_sync);
                matches!(reply, Ok(Some(_)))
            }
            Variant::RedisBlocking => !targets.redis_blocking.is_expired(),
            _ => unreachable!("not a blocking variant"),
        };
        out.nanos.push(nanos(start.elapsed()));
        out.wrong += usize::from(!ok);
    }
}

fn run(
    rt: &tokio::runtime::Runtime,
    targets: &mut Targets,
    variant: Variant,
    n: usize,
    out: &mut Samples,
) {
    match variant {
        Variant::RawAsyncGet | Variant::RedisAsync | Variant::Memory => {
            run_async(rt, targets, variant, n, out)
        }
        Variant::RawSyncGet | Variant::RedisBlocking => run_blocking(targets, variant, n, out),
    }
}

/// Runs every variant `total` times, `chunk` calls at a time, rotating the
/// order each round.
fn measure(
    rt: &tokio::runtime::Runtime,
    targets: &mut Targets,
    total: usize,
    chunk: usize,
    only: &[Variant],
) -> Vec<Samples> {
    let mut samples: Vec<Samples> = VARIANTS
        .iter()
        .map(|_| Samples {
            nanos: Vec::with_capacity(total),
            wrong: 0,
        })
        .collect();
    let mut done = 0;
    let mut round = 0;
    while done < total {
        let n = chunk.min(total - done);
        for i in 0..VARIANTS.len() {
            let v = (round + i) % VARIANTS.len();
            if !only.is_empty() && !only.contains(&VARIANTS[v]) {
                continue;
            }
            run(rt, targets, VARIANTS[v], n, &mut samples[v]);
        }
        done += n;
        round += 1;
    }
    samples
}

struct Stats {
    median_us: f64,
    p99_us: f64,
    mean_us: f64,
    per_sec: f64,
}

fn stats(nanos: &mut [u64]) -> Stats {
    nanos.sort_unstable();
    let n = nanos.len();
    let median = if n % 2 == 1 {
        nanos[n / 2] as f64
    } else {
        (nanos[n / 2 - 1] + nanos[n / 2]) as f64 / 2.0
    };
    // Nearest rank: the smallest sample at or above 99 % of them.
    let p99 = nanos[(n * 99).div_ceil(100) - 1] as f64;
    let mean = nanos.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    Stats {
        median_us: median / 1e3,
        p99_us: p99 / 1e3,
        mean_us: mean / 1e3,
        per_sec: 1e9 / mean,
    }
}

/// The key every variant reads.
fn key() -> Key {
    Key::new(["bench", "check_latency"]).expect("a valid key")
}

/// gensync's URL and the raw GETs' (the node that holds the key), with
/// what keeps a throwaway deployment alive until the end.
type Deployment = (Box<dyn std::any::Any>, String, String);

fn deployment(args: &Args) -> Result<Deployment, Box<dyn std::error::Error>> {
    if let Some(url) = &args.url {
        return Ok((Box::new(()), url.clone(), url.clone()));
    }
    let node = |port: u16| format!("redis://127.0.0.1:{port}");
    Ok(match args.topology {
        Topology::Single => {
            let server = RedisServer::start()?;
            let url = server.url();
            (Box::new(server), url.clone(), url)
        }
        Topology::Sentinel => {
            let group = SentinelGroup::start()?;
            let (url, raw) = (group.url(), node(group.primary_port()?));
            (Box::new(group), url, raw)
        }
        Topology::Cluster => {
            let cluster = RedisCluster::start()?;
            let raw = node(cluster.primary_for(key().as_str())?);
            let url = cluster.url();
            (Box::new(cluster), url, raw)
        }
    })
}

fn setup(
    rt: &tokio::runtime::Runtime,
    url: &str,
    raw_url: &str,
) -> Result<Targets, Box<dyn std::error::Error>> {
    let key = key();
    let client = redis::Client::open(raw_url)?;

    let redis_async = Arc::new(Synchronizer::new(RedisBackend::open(url)?, key.clone()));
    let redis_blocking = BlockingSynchronizer::new(BlockingRedisBackend::open(url)?, key.clone());
    let memory = Arc::new(Synchronizer::new(MemoryBackend::new(), key.clone()));

    let raw_async = rt.block_on(async {
        // Create the key (or adopt the one there) and record it, so every
        // check below reads as current.
        redis_async.refresh().await?;
        memory.refresh().await?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok::<_, Box<dyn std::error::Error>>(conn)
    })?;
    redis_blocking.refresh()?;
    let raw_sync = client.get_connection_with_timeout(Duration::from_secs(5))?;

    if redis_async.sync_gen() != redis_blocking.sync_gen() {
        return Err("the async and blocking synchronizers recorded different generations".into());
    }
    Ok(Targets {
        key: key.as_str().to_owned(),
        raw_async,
        redis_async,
        raw_sync,
        redis_blocking,
        memory,
    })
}

fn main() -> ExitCode {
    match main_with(<Args as clap::Parser>::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main_with(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Keep our own deployment alive until the end.
    let (_deployment, url, raw_url) = deployment(&args)?;
    let (mut builder, flavor) = match args.runtime {
        Flavor::Multi => (
            tokio::runtime::Builder::new_multi_thread(),
            format!(
                "multi-thread ({} workers)",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            ),
        ),
        Flavor::Current => (
            tokio::runtime::Builder::new_current_thread(),
            "current_thread".to_owned(),
        ),
    };
    let rt = builder.enable_all().build()?;

    let mut targets = setup(&rt, &url, &raw_url)?;
    let started = Instant::now();
    let (iterations, warmup, chunk) = (
        args.iterations as usize,
        args.warmup as usize,
        args.chunk as usize,
    );
    let warm = measure(&rt, &mut targets, warmup, chunk, &args.only);
    let warm_wrong: usize = warm.iter().map(|s| s.wrong).sum();
    let mut samples = measure(&rt, &mut targets, iterations, chunk, &args.only);
    let elapsed = started.elapsed();

    println!("# gensync check latency: one task, sequential checks");
    println!();
    println!(
        "server: {} ({}), key `{}`",
        gensync::backend::RedactedUrl::new(&url),
        match (args.url.is_some(), args.topology) {
            (true, _) => "given with --url",
            (false, Topology::Single) => "throwaway redis-server started by this program",
            (false, Topology::Sentinel) =>
                "throwaway Sentinel group started by this program; raw GETs to its primary",
            (false, Topology::Cluster) =>
                "throwaway Cluster started by this program; raw GETs to the key's primary",
        },
        targets.key
    );
    println!("tokio runtime: {flavor}; async variants run as one spawned task, blocking ones on the main thread");
    println!(
        "{} timed calls per variant after {} warm-up calls, in rounds of {} per variant, \
         order rotated each round; {:.1} s in all",
        args.iterations,
        args.warmup,
        args.chunk,
        elapsed.as_secs_f64()
    );
    println!();
    println!("| variant | median µs | p99 µs | mean µs | checks/s (1/mean) | median vs baseline |");
    println!("|---|---:|---:|---:|---:|---:|");
    let all: Vec<Option<Stats>> = samples
        .iter_mut()
        .map(|s| (!s.nanos.is_empty()).then(|| stats(&mut s.nanos)))
        .collect();
    let of = |v: Variant| all[VARIANTS.iter().position(|x| *x == v).expect("listed")].as_ref();
    for v in VARIANTS {
        let Some(s) = of(v) else { continue };
        let ratio = match (v.baseline(), v.baseline().and_then(of)) {
            (Some(b), Some(base)) => format!("{:.2}× {}", s.median_us / base.median_us, short(b)),
            (Some(_), None) => "(baseline not run)".to_owned(),
            (None, _) if matches!(v, Variant::RawAsyncGet | Variant::RawSyncGet) => {
                "1.00 (baseline)".to_owned()
            }
            (None, _) => "—".to_owned(),
        };
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.0} | {} |",
            v.name(),
            s.median_us,
            s.p99_us,
            s.mean_us,
            s.per_sec,
            ratio
        );
    }
    let mut versus = Vec::new();
    for (label, v) in [
        ("async", Variant::RedisAsync),
        ("blocking", Variant::RedisBlocking),
    ] {
        if let Some(s) = of(v) {
            versus.push(format!(
                "{label} {:.2} µs median ({:.1}× less), {:.0} checks/s ({:.1}× more)",
                s.median_us,
                REFERENCE_US / s.median_us,
                s.per_sec,
                s.per_sec / REFERENCE_PER_SEC
            ));
        }
    }
    if !versus.is_empty() {
        println!();
        println!(
            "for scale, Djblets' Python synchronizer (outside figure, one thread): {REFERENCE_US:.0} µs per check, \
             ~{REFERENCE_PER_SEC:.0} checks/s; gensync here: {}",
            versus.join("; ")
        );
    }
    let wrong: usize = samples.iter().map(|s| s.wrong).sum();
    if wrong + warm_wrong > 0 {
        println!();
        println!(
            "WARNING: {warm_wrong} warm-up and {wrong} timed calls read as expired \
             (or, for the raw GETs, found no key or failed):"
        );
        for (v, s) in VARIANTS.iter().zip(&samples) {
            println!("  {}: {}", v.name(), s.wrong);
        }
    }
    Ok(())
}

fn short(v: Variant) -> &'static str {
    match v {
        Variant::RawAsyncGet => "raw async GET",
        Variant::RawSyncGet => "raw sync GET",
        _ => "",
    }
}
