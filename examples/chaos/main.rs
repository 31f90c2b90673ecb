//! The chaos soak: a fleet of reloaders in every mode, writers and readers
//! over a Redis that a seeded nemesis keeps breaking; every read and write
//! recorded, then checked against each mode's promise.
//!
//! ```text
//! cargo run --release --all-features --example chaos -- \
//!     --duration 10m --seed 7 --topology single|sentinel|cluster
//! ```
//!
//! It prints a summary (faults by kind, operations checked, violations
//! with their history excerpt and the seed) and exits 1 on any violation.
//! The same seed, duration and topology replay the same fault schedule.
//! `--history FILE` keeps every event as JSON lines (a failing run keeps
//! them in `chaos-history-SEED.jsonl` unasked), and `--check FILE` checks
//! a kept history again, offline.

mod checker;
mod fleet;
mod history;
mod nemesis;
mod proxy;
mod topology;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::checker::{Params, Report};
use crate::fleet::Fleet;
use crate::history::{Event, Micros, Recorder};
use crate::topology::{Kind, Topology};

/// A chaos soak of gensync: the fleet, the writers, the readers and the
/// nemesis, then the history checked against every mode's promise.
#[derive(Parser, Debug)]
#[command(name = "chaos")]
struct Args {
    /// How long the nemesis runs: `90s`, `10m`, `1h`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// The fault schedule's seed (a random one, printed, when not given).
    #[arg(long)]
    seed: Option<u64>,
    /// The Redis under test: `single`, `sentinel` or `cluster`.
    #[arg(long, default_value = "single")]
    topology: Kind,
    /// Readers per fleet instance.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    readers: u16,
    /// Keep the whole history here, as JSON lines.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Check a kept history instead of running (with the seed it ran with,
    /// for the table).
    #[arg(long, conflicts_with_all = ["history"])]
    check: Option<PathBuf>,
}

/// `90s`, `10m`, `1h`, `500ms`: a number and a unit.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write 90s, 10m, 1h or 500ms"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number: write 90s, 10m or 1h"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{unit:?} is not a unit: use ms, s, m or h")),
    };
    if duration < Duration::from_secs(10) {
        return Err(format!(
            "{text} is too short for a soak: give it 10s at least"
        ));
    }
    Ok(duration)
}

/// The checker's bounds, from the fleet's configuration.
fn params() -> Params {
    let us = |d: Duration| d.as_micros() as Micros;
    Params {
        heartbeat: us(fleet::HEARTBEAT),
        // The documented bound, and room for a 2-core machine that runs
        // the fleet, the nemesis and every Redis process at once.
        check_bound: us(fleet::check_bound() + SCHEDULING_MARGIN),
        keyed_check_bound: us(fleet::keyed_check_bound() + SCHEDULING_MARGIN),
        recovery: us(RECOVERY),
        initial: fleet::INITIAL,
    }
}

/// What a check may take beyond its documented bound on this machine,
/// where the fleet's threads wait behind Redis and the nemesis for a core.
const SCHEDULING_MARGIN: Duration = Duration::from_millis(200);

/// How long the fleet keeps reading and writing on the healed Redis after
/// the nemesis stopped: the last writes land and every reader sees them.
const SETTLE: Duration = Duration::from_secs(8);

/// How long after the heal the fleet may take to be current again:
/// reconnects (100 ms apart), the loaders' backoff (at most 500 ms), push
/// tracking armed again, a Cluster's slot map refreshed.
const RECOVERY: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    quiet_injected_panics();
    let seed = args.seed.unwrap_or_else(rand::random);
    if let Some(path) = &args.check {
        return check_kept(path, seed);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("chaos: could not start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    finish(runtime.block_on(soak(&args, seed)), seed)
}

/// The table and the exit code: 1 on a violation, 2 when the run (or the
/// kept history) could not be had.
fn finish(report: Result<Report, String>, seed: u64) -> ExitCode {
    match report {
        Ok(report) => {
            println!("{}", report.table(seed));
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos: {e}");
            ExitCode::from(2)
        }
    }
}

/// The loaders' injected panics are the nemesis's, expected by the
/// thousand: print every other panic as usual, not those.
fn quiet_injected_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let injected = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|message| message.starts_with(fleet::INJECTED));
        if !injected {
            default(info);
        }
    }));
}

/// The run: start the Redis and the fleet, let the nemesis loose for the
/// duration, heal, settle, stop, check.
async fn soak(args: &Args, seed: u64) -> Result<Report, String> {
    eprintln!(
        "chaos: {} for {:?}, seed {seed} (replay: --seed {seed} --duration {}s --topology {})",
        args.topology.name(),
        args.duration,
        args.duration.as_secs(),
        args.topology.name(),
    );
    let topology = Topology::start(args.topology)
        .await
        .map_err(|e| format!("starting the {} Redis: {e}", args.topology.name()))?;
    let url = topology.url();
    let recorder = Recorder::new();
    let mut fleet = Fleet::new(&url, args.topology.replicated(), recorder.clone())?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = fleet.start_readers(usize::from(args.readers), &stop);
    tasks.extend(fleet.start_writers(&stop));
    let fleet = Arc::new(fleet);

    let plan = nemesis::plan(seed, args.duration, args.topology);
    let progress = tokio::spawn(report_progress(recorder.clone(), args.duration));
    let topology = Arc::new(std::sync::Mutex::new(topology));
    nemesis::run(
        plan,
        Arc::clone(&topology),
        Arc::clone(&fleet) as Arc<dyn nemesis::FleetFaults>,
        fleet::keys(),
        recorder.clone(),
    )
    .await;
    fleet.heal();
    recorder.record(Event::Healed { at: recorder.now() });
    progress.abort();

    tokio::time::sleep(SETTLE).await;
    stop.store(true, SeqCst);
    for task in tasks {
        // A reader or writer stuck since before the heal recorded nothing
        // after it, which the checker reports (not recovered): say so here
        // too, and do not wait for it forever.
        if tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .is_err()
        {
            eprintln!("chaos: a reader or writer did not stop within 30 s");
        }
    }
    for event in fleet.db.finals() {
        recorder.record(event);
    }
    let events = recorder.events();
    let report = checker::check(&events, &params());
    let keep = args
        .history
        .clone()
        .or_else(|| (!report.ok()).then(|| PathBuf::from(format!("chaos-history-{seed}.jsonl"))));
    if let Some(path) = keep {
        keep_history(&path, &events)?;
        eprintln!(
            "chaos: the history ({} events) is in {}",
            events.len(),
            path.display()
        );
    }
    drop(topology);
    Ok(report)
}

/// One line a minute, so a long run shows it is alive.
async fn report_progress(recorder: Recorder, duration: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!(
            "chaos: {:>4} of {} min, {} events",
            recorder.elapsed().as_secs() / 60,
            duration.as_secs() / 60,
            recorder.len()
        );
    }
}

fn keep_history(path: &PathBuf, events: &[Event]) -> Result<(), String> {
    let file = std::fs::File::create(path)
        .map_err(|e| format!("could not write the history to {}: {e}", path.display()))?;
    history::write(events, file)
        .map_err(|e| format!("could not write the history to {}: {e}", path.display()))
}

/// `--check FILE`: the checker over a kept history.
fn check_kept(path: &PathBuf, seed: u64) -> ExitCode {
    let events = std::fs::File::open(path)
        .map_err(|e| format!("could not open the history {}: {e}", path.display()))
        .and_then(|file| history::read(std::io::BufReader::new(file)));
    finish(
        events.map(|events| checker::check(&events, &params())),
        seed,
    )
}
