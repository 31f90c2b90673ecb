//! One worker process: `count` push-mode reloaders, each with its own
//! `RedisBackend` (its own connections, as separate processes would have),
//! on a small runtime. It answers the coordinator's commands, one a line on
//! stdin, with one JSON line each on stdout.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::reload::{CheckMode, Reloader, ReloaderBuilder};
use gensync::{Key, RedisBackend, RedisConfig, Synchronizer};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::proto::{now_ns, Armed, Loaded, Reply, Served, Vouched};
use crate::stats::vm_rss_kb;

/// What a worker is told on its command line.
pub struct WorkerArgs {
    pub url: String,
    pub source: PathBuf,
    pub count: usize,
    pub heartbeat: Duration,
    pub load_latency: Duration,
    pub spread: Duration,
}

/// What every instance of this worker records, with the shared clock.
#[derive(Default)]
struct Records {
    /// (instance, version, when it began serving it).
    serves: Mutex<Vec<(u32, u64, u64)>>,
    /// Each load's (start, end).
    loads: Mutex<Vec<(u64, u64)>>,
}

pub fn key() -> Key {
    Key::new(["fleet", "settings"]).expect("a valid key")
}

pub fn config(heartbeat: Duration) -> RedisConfig {
    RedisConfig::default().heartbeat(heartbeat)
}

pub fn run(args: WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    raise_file_limit();
    // Logs only when asked (`RUST_LOG=gensync=debug`): a thousand
    // instances' warnings would drown the tables.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(io::stderr)
            .init();
    }
    // One thread per worker process: the fleet shares two cores.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let rss_before_kb = rss_kb();
    let records = Arc::new(Records::default());
    let mut fleet = Vec::with_capacity(args.count);
    for i in 0..args.count {
        fleet.push(instance(&args, i as u32, &records)?);
    }
    // The first check starts each one's push tracking.
    for reloader in &fleet {
        reloader.check().await;
    }
    let vouched = until_vouched(&fleet, Duration::from_secs(60)).await;
    records.loads.lock().unwrap().clear();
    records.serves.lock().unwrap().clear();
    reply(&Reply::Armed(Armed {
        rss_before_kb,
        rss_after_kb: rss_kb(),
        unvouched: vouched.unvouched,
    }));

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["served", version, timeout_ms] => {
                let (version, timeout) = (version.parse()?, millis(timeout_ms)?);
                reply(&Reply::Served(
                    served(&fleet, &records, version, timeout).await,
                ));
            }
            ["revouched", timeout_ms] => {
                reply(&Reply::Vouched(
                    until_vouched_again(&fleet, millis(timeout_ms)?).await,
                ));
            }
            ["vouched", timeout_ms] => {
                reply(&Reply::Vouched(
                    until_vouched(&fleet, millis(timeout_ms)?).await,
                ));
            }
            ["loads"] => {
                let loads = std::mem::take(&mut *records.loads.lock().unwrap());
                reply(&Reply::Loaded(Loaded { loads }));
            }
            ["rss"] => reply(&Reply::Rss(rss_kb())),
            ["quit"] | [] => break,
            _ => return Err(format!("unknown command {line:?}").into()),
        }
    }
    Ok(())
}

fn millis(text: &str) -> Result<Duration, std::num::ParseIntError> {
    text.parse().map(Duration::from_millis)
}

/// One instance: its own backend, a loader that reads the source after the
/// simulated query's latency, and a listener that stamps when it serves.
fn instance(
    args: &WorkerArgs,
    index: u32,
    records: &Arc<Records>,
) -> Result<Reloader<u64>, Box<dyn std::error::Error>> {
    let backend = RedisBackend::with_config(&args.url, config(args.heartbeat))?;
    let (source, latency, loads) = (args.source.clone(), args.load_latency, records.clone());
    let loader = move || {
        let (source, loads) = (source.clone(), loads.clone());
        async move {
            let start = now_ns();
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            // tmpfs: a read that never blocks for long.
            let text = std::fs::read_to_string(&source)?;
            let version = text.trim().parse::<u64>().map_err(io::Error::other)?;
            loads.loads.lock().unwrap().push((start, now_ns()));
            Ok::<_, io::Error>(version)
        }
    };
    let builder =
        Reloader::builder(Synchronizer::new(backend, key()), loader).mode(CheckMode::Push);
    let reloader = apply_spread(builder, args.spread).build(0)?;
    let serves = records.clone();
    reloader.on_reload(move |_old, new| {
        serves.serves.lock().unwrap().push((index, **new, now_ns()));
    });
    Ok(reloader)
}

/// THE ONE PLACE `--spread` is applied: `ReloaderBuilder::spread_loads`
/// (zero, the default, is off), which defers each change's load by a
/// random delay in `[0, window)`.
fn apply_spread<G>(builder: ReloaderBuilder<u64, G>, window: Duration) -> ReloaderBuilder<u64, G>
where
    G: gensync::GenerationSynchronizer + 'static,
{
    builder.spread_loads(window)
}

/// Waits until every instance serves `version` or newer, or `timeout`;
/// returns when each began serving it, and the loads so far.
async fn served(
    fleet: &[Reloader<u64>],
    records: &Records,
    version: u64,
    timeout: Duration,
) -> Served {
    let deadline = tokio::time::Instant::now() + timeout;
    while fleet.iter().any(|r| *r.current() < version) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut first = vec![None::<u64>; fleet.len()];
    for &(i, v, at) in records.serves.lock().unwrap().iter() {
        if v >= version {
            let slot = &mut first[i as usize];
            *slot = Some(slot.map_or(at, |t| t.min(at)));
        }
    }
    records
        .serves
        .lock()
        .unwrap()
        .retain(|&(_, v, _)| v > version);
    let at: Vec<u64> = first.iter().flatten().copied().collect();
    Served {
        missing: fleet.len() - at.len(),
        at,
        loads: std::mem::take(&mut *records.loads.lock().unwrap()),
    }
}

/// Polls every instance's `vouched()` (no network) every 10 ms until all
/// vouch, or `timeout`.
async fn until_vouched(fleet: &[Reloader<u64>], timeout: Duration) -> Vouched {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let unvouched = fleet
            .iter()
            .filter(|r| r.synchronizer().vouched().is_none())
            .count();
        if unvouched == 0 || tokio::time::Instant::now() >= deadline {
            return Vouched {
                at: now_ns(),
                unvouched,
                never_lost: 0,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Told before Redis is killed: polls every instance's `vouched()` every
/// 10 ms until each has stopped vouching and vouches again, or `timeout`.
/// (Push tracking redials no sooner than a heartbeat, so a 10 ms poll
/// sees each one's gap.)
async fn until_vouched_again(fleet: &[Reloader<u64>], timeout: Duration) -> Vouched {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut lost = vec![false; fleet.len()];
    loop {
        let mut unvouched = 0;
        for (reloader, lost) in fleet.iter().zip(&mut lost) {
            if reloader.synchronizer().vouched().is_none() {
                *lost = true;
                unvouched += 1;
            }
        }
        let never_lost = lost.iter().filter(|l| !**l).count();
        if (unvouched == 0 && never_lost == 0) || tokio::time::Instant::now() >= deadline {
            return Vouched {
                at: now_ns(),
                unvouched,
                never_lost,
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn reply(reply: &Reply) {
    println!(
        "{}",
        serde_json::to_string(reply).expect("a reply serializes")
    );
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| vm_rss_kb(&s))
        .unwrap_or(0)
}

/// Each instance holds a few sockets (more on a Cluster): the soft limit
/// goes up to the hard one.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
