//! A service that keeps serving through a cache outage, walked through
//! phase by phase with [`FaultyBackend`].
//!
//! ```sh
//! cargo run --example fault_injection
//! RUST_LOG=info cargo run --example fault_injection    # also a warning per corrupt-key repair
//! RUST_LOG=debug cargo run --example fault_injection   # every failure, not one per episode
//! ```
//!
//! An in-process tower service sits behind [`SettingsReloadLayer`]; its
//! settings are a version number kept in a stand-in database. The shared
//! generation lives in a `FaultyBackend<MemoryBackend>`, standing in for
//! the Redis server every process would share. Four clients send requests
//! without pause while a writer (a second reloader, as another process
//! would be) publishes a new version every 50 ms. Then the cache
//! misbehaves, one phase after another:
//!
//! 1. **healthy**: each request sees every version published before it
//!    started.
//! 2. **down**: every call fails. Requests are still served, from the last
//!    good settings; writes are refused with an error saying nothing was
//!    saved.
//! 3. **slow**: 25 ms added to every call. Everything works, slower.
//! 4. **hanging**: every call hangs 150 ms, then times out. Requests are
//!    served within that bound, from the last good settings; writes are
//!    refused.
//! 5. **corrupt**: the key reads as garbage. Every check reads expired and
//!    reloads; writes repair the key. (Its first requests are served the
//!    last good settings while the reloader still backs off after the
//!    hang: "behind a finished write", and counted as "stale served".)
//! 6. **evictions**: the key is evicted before each write. It is created
//!    again and the service reloads.
//! 7. **healed**: every fault cleared. The service converges on the latest
//!    settings.
//!
//! Each phase prints one line of what the requests saw (served, failed,
//! versions, worst latency, writes) and one of what the backend and the
//! reloader counted during it. Logs go to stderr (`RUST_LOG`, default
//! `info,gensync::synchronizer=error`): an outage is one error line per
//! synchronizer and episode and one for the reloader, not one per request.
//! (The default hides the synchronizer's warning per corrupt-key repair,
//! hundreds in phase 5, and its "answering again" lines.) No network and
//! no Redis are needed; it takes about three seconds and exits 1, naming
//! the promise, if one broke: a request failed
//! or waited past its bound, a write was accepted while the cache was down,
//! a request was served older settings than a completed publish while the
//! cache was healthy, or the service did not converge once healed.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use std::time::{Duration, Instant};

use gensync::reload::{ReloadMetrics, Reloader, ReloaderBuilder, SettingsReloadLayer, Snapshot};
use gensync::testing::{FaultCounts, Faults, FaultyBackend};
use gensync::{Key, MemoryBackend, Synchronizer};
use http::Request;
use tokio::sync::RwLock;
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tracing_subscriber::EnvFilter;

/// How long each phase runs.
const PHASE: Duration = Duration::from_millis(400);
/// The pause between two writes.
const WRITE_EVERY: Duration = Duration::from_millis(50);
/// Concurrent clients, and the pause between one client's requests.
const CLIENTS: usize = 4;
const THINK: Duration = Duration::from_millis(2);
/// Reloader bounds: how long a request waits for a reload, and the backoff
/// after a failed one.
const MAX_WAIT: Duration = Duration::from_millis(250);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(20), Duration::from_millis(200));
/// The injected latency and hang.
const LATENCY: Duration = Duration::from_millis(25);
const HANG: Duration = Duration::from_millis(150);
/// No request may take longer: a hung backend call, then the wait bound,
/// with room to spare.
const REQUEST_BOUND: Duration = Duration::from_secs(1);
/// How long the healed service gets to serve the latest settings.
const CONVERGE_WITHIN: Duration = Duration::from_secs(2);

/// The settings the service runs on.
struct Settings {
    version: u64,
}

/// The source of truth the loader reads and the saver writes: a database
/// in a real service.
type Database = Arc<AtomicU64>;

/// What the writer is promised in a phase.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Writes {
    /// Every publish succeeds.
    Succeed,
    /// Every publish is refused.
    Refused,
    /// Either, as long as a refusal says so.
    Either,
}

/// One phase of the outage.
struct Phase {
    name: &'static str,
    /// Sets the faults when the phase starts.
    start: fn(&Faults),
    /// Runs before each write.
    each_write: fn(&Faults),
    writes: Writes,
    /// Every request must see every version published before it started.
    fresh: bool,
}

const PHASES: [Phase; 7] = [
    Phase {
        name: "healthy",
        start: Faults::heal,
        each_write: |_| {},
        writes: Writes::Succeed,
        fresh: true,
    },
    Phase {
        name: "down",
        start: Faults::fail_all,
        each_write: |_| {},
        writes: Writes::Refused,
        fresh: false,
    },
    Phase {
        name: "slow",
        start: |f| {
            f.heal();
            f.latency(LATENCY);
        },
        each_write: |_| {},
        writes: Writes::Succeed,
        fresh: false,
    },
    Phase {
        name: "hanging",
        start: |f| {
            f.heal();
            f.hang(HANG);
        },
        each_write: |_| {},
        writes: Writes::Refused,
        fresh: false,
    },
    Phase {
        name: "corrupt",
        start: |f| {
            f.heal();
            f.corrupt(true);
        },
        each_write: |_| {},
        // The repair races the readers' own repairs; a writer that loses
        // three times in a row is told so.
        writes: Writes::Either,
        fresh: false,
    },
    Phase {
        name: "evictions",
        start: Faults::heal,
        each_write: Faults::evict_next,
        writes: Writes::Succeed,
        fresh: false,
    },
    Phase {
        name: "healed",
        start: Faults::heal,
        each_write: |_| {},
        writes: Writes::Succeed,
        fresh: false,
    },
];

/// What the requests of one phase saw.
#[derive(Default)]
struct Seen {
    served: u64,
    failed: u64,
    first_failure: Option<String>,
    /// Served older settings than a publish that returned before the
    /// request started.
    stale: u64,
    oldest: Option<u64>,
    newest: Option<u64>,
    worst: Duration,
}

impl Seen {
    fn served(&mut self, version: u64, floor: u64, took: Duration) {
        self.served += 1;
        self.stale += u64::from(version < floor);
        self.oldest = Some(self.oldest.map_or(version, |v| v.min(version)));
        self.newest = Some(self.newest.map_or(version, |v| v.max(version)));
        self.worst = self.worst.max(took);
    }

    fn failed(&mut self, why: String, took: Duration) {
        self.failed += 1;
        self.first_failure.get_or_insert(why);
        self.worst = self.worst.max(took);
    }
}

/// What the writer of one phase did.
#[derive(Default)]
struct Written {
    ok: u64,
    refused: u64,
    first_refusal: Option<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,gensync::synchronizer=error")),
        )
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .init();
    match run().await {
        Ok(()) => {
            println!("every promise held");
            ExitCode::SUCCESS
        }
        Err(broken) => {
            eprintln!("fault_injection: {} promise(s) broken:", broken.len());
            for promise in broken {
                eprintln!("  - {promise}");
            }
            ExitCode::FAILURE
        }
    }
}

/// A reloader on its own synchronizer over `backend`, as one process of the
/// fleet would have, reading and writing `db`.
fn process(
    backend: FaultyBackend<MemoryBackend>,
    db: &Database,
) -> ReloaderBuilder<Settings, Synchronizer<FaultyBackend<MemoryBackend>>> {
    let key = Key::new(["example", "settings"]).expect("a valid key");
    let (read, write) = (Arc::clone(db), Arc::clone(db));
    Reloader::builder(Synchronizer::new(backend, key), move || {
        let version = read.load(SeqCst);
        async move { Ok::<_, Infallible>(Settings { version }) }
    })
    .saver(move |settings: &Settings| {
        write.store(settings.version, SeqCst);
        async { Ok::<_, Infallible>(()) }
    })
}

async fn run() -> Result<(), Vec<String>> {
    let backend = FaultyBackend::new(MemoryBackend::new());
    let faults = backend.faults();
    let db = Database::default();
    let server = process(backend.clone(), &db)
        .max_wait(MAX_WAIT)
        .backoff(BACKOFF.0, BACKOFF.1)
        .build(Settings { version: 0 })
        .expect("valid bounds");
    let writer = process(backend, &db)
        .write_lock(Duration::from_millis(500), 3)
        .build(Settings { version: 0 })
        .expect("valid bounds");
    if server.reload_now().await.is_err() {
        return Err(vec!["the first load failed with no fault set".into()]);
    }

    // The service: hands back the version of the settings it was served.
    let service = ServiceBuilder::new()
        .layer(SettingsReloadLayer::new(server.clone()))
        .service(service_fn(|request: Request<()>| async move {
            match request.extensions().get::<Snapshot<Settings>>() {
                Some(settings) => Ok(settings.version),
                None => Err("the request carried no settings"),
            }
        }));

    // The newest version whose publish returned: a request that starts
    // later must be served at least that one while the cache is healthy.
    let published = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let running = Arc::new(AtomicBool::new(true));
    // Each request holds a read guard; between phases the driver holds the
    // write guard, so no request straddles two phases.
    let gate = Arc::new(RwLock::new(()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (service, published, seen, running) = (
                service.clone(),
                Arc::clone(&published),
                Arc::clone(&seen),
                Arc::clone(&running),
            );
            let gate = Arc::clone(&gate);
            tokio::spawn(async move {
                loop {
                    let turn = gate.read().await;
                    if !running.load(SeqCst) {
                        return;
                    }
                    let floor = published.load(SeqCst);
                    let started = Instant::now();
                    let reply = tokio::time::timeout(
                        2 * REQUEST_BOUND,
                        service.clone().oneshot(Request::new(())),
                    )
                    .await;
                    let took = started.elapsed();
                    {
                        let mut seen = seen.lock().unwrap();
                        match reply {
                            Ok(Ok(version)) => seen.served(version, floor, took),
                            Ok(Err(e)) => seen.failed(e.to_owned(), took),
                            Err(_) => seen.failed(format!("no answer within {took:?}"), took),
                        }
                    }
                    drop(turn);
                    tokio::time::sleep(THINK).await;
                }
            })
        })
        .collect();

    println!(
        "{CLIENTS} clients, a write every {WRITE_EVERY:?}, {} phases of {PHASE:?}",
        PHASES.len()
    );
    let mut broken = Vec::new();
    let mut version = 0;
    let mut between = gate.write().await;
    for (number, phase) in PHASES.iter().enumerate() {
        (phase.start)(&faults);
        let (faults_before, metrics_before) = (faults.counts(), server.metrics());
        drop(between);
        let mut written = Written::default();
        let until = Instant::now() + PHASE;
        while Instant::now() < until {
            (phase.each_write)(&faults);
            version += 1;
            match writer.publish(Settings { version }).await {
                Ok(_) => {
                    written.ok += 1;
                    published.store(version, SeqCst);
                }
                Err(e) => {
                    written.refused += 1;
                    written.first_refusal.get_or_insert(e.to_string());
                }
            }
            tokio::time::sleep(WRITE_EVERY).await;
        }
        between = gate.write().await;
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        report(number, phase, &seen, &written, db.load(SeqCst));
        println!(
            "{:>14} backend: {} | reloader: {}",
            "",
            fault_deltas(faults_before, faults.counts()),
            metric_deltas(metrics_before, server.metrics())
        );
        broken.extend(check(phase, &seen, &written));
    }

    // Healed: the service must come to serve the latest settings.
    let latest = db.load(SeqCst);
    let started = Instant::now();
    let converged = loop {
        let served = service.clone().oneshot(Request::new(())).await;
        if served == Ok(latest) {
            break Some(started.elapsed());
        }
        if started.elapsed() > CONVERGE_WITHIN {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    match converged {
        Some(took) => {
            println!("converged: a new request is served v{latest}, the latest, within {took:.1?}")
        }
        None => broken.push(format!(
            "the healed service did not serve the latest settings (v{latest}) within \
             {CONVERGE_WITHIN:?}; it serves v{}",
            server.current().version
        )),
    }

    running.store(false, SeqCst);
    drop(between);
    for client in clients {
        if client.await.is_err() {
            broken.push("a client task panicked".into());
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken)
    }
}

/// Prints what the requests and the writer of a phase saw.
fn report(number: usize, phase: &Phase, seen: &Seen, written: &Written, latest: u64) {
    let versions = match (seen.oldest, seen.newest) {
        (Some(a), Some(b)) if a == b => format!("v{a}"),
        (Some(a), Some(b)) => format!("v{a}..v{b}"),
        _ => "nothing".into(),
    };
    println!(
        "{:>2}. {:<10} {} served, {} failed | served {versions} (latest v{latest}), \
         {} behind a finished write | worst {:.1?} | writes {} ok, {} refused",
        number + 1,
        phase.name,
        seen.served,
        seen.failed,
        seen.stale,
        seen.worst,
        written.ok,
        written.refused,
    );
    if let Some(why) = &written.first_refusal {
        println!("{:>14} refused: {why}", "");
    }
    if let Some(why) = &seen.first_failure {
        println!("{:>14} failed: {why}", "");
    }
}

/// The promises a phase must have kept.
fn check(phase: &Phase, seen: &Seen, written: &Written) -> Vec<String> {
    let name = phase.name;
    let mut broken = Vec::new();
    if seen.failed > 0 {
        broken.push(format!("{name}: {} request(s) failed", seen.failed));
    }
    if seen.served == 0 {
        broken.push(format!("{name}: no request was served"));
    }
    if seen.worst > REQUEST_BOUND {
        broken.push(format!(
            "{name}: a request took {:?}, past its {REQUEST_BOUND:?} bound",
            seen.worst
        ));
    }
    if phase.fresh && seen.stale > 0 {
        broken.push(format!(
            "{name}: {} request(s) were served settings older than a completed publish",
            seen.stale
        ));
    }
    match phase.writes {
        Writes::Succeed if written.refused > 0 => {
            broken.push(format!("{name}: {} write(s) refused", written.refused))
        }
        Writes::Refused if written.ok > 0 => broken.push(format!(
            "{name}: {} write(s) reported success while the cache was down",
            written.ok
        )),
        _ => {}
    }
    broken
}

/// The non-zero counters of `now - before`, named, or `none`.
fn deltas(rows: &[(&str, u64, u64)]) -> String {
    let mut out = String::new();
    for (name, before, now) in rows {
        let delta = now - before;
        if delta > 0 {
            let sep = if out.is_empty() { "" } else { ", " };
            let _ = write!(out, "{sep}{delta} {name}");
        }
    }
    if out.is_empty() {
        out.push_str("nothing");
    }
    out
}

fn fault_deltas(b: FaultCounts, n: FaultCounts) -> String {
    deltas(&[
        ("calls", b.calls, n.calls),
        ("with a fault", b.injected(), n.injected()),
        ("failed", b.failed, n.failed),
        ("delayed", b.delayed, n.delayed),
        ("hung", b.hung, n.hung),
        ("corrupted", b.corrupted, n.corrupted),
        ("evicted", b.evicted, n.evicted),
    ])
}

fn metric_deltas(b: ReloadMetrics, n: ReloadMetrics) -> String {
    deltas(&[
        ("checks", b.checks, n.checks),
        ("expired", b.expired, n.expired),
        ("backend errors", b.backend_errors, n.backend_errors),
        ("loads", b.loader_runs, n.loader_runs),
        ("reloads", b.reloads, n.reloads),
        ("failed loads", b.reload_failures, n.reload_failures),
        ("stale served", b.stale_served, n.stale_served),
    ])
}
