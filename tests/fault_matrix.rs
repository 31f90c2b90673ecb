//! The fault matrix: each fault injected into a real
//! redis-server, the loader or a writer while a fleet of three "processes"
//! serves at least 64 concurrent requests through the tower layer, with the
//! promises of that fault asserted, not just the absence of a panic.
//!
//! Rows run one after another (latency means nothing otherwise), each with
//! its own server. The table goes to stdout as markdown; a broken promise
//! names its row and makes the binary exit non-zero.
//!
//! `cargo test --all-features --test fault_matrix` (add `--release` for the
//! numbers in FAULTS.md).

mod support;

#[path = "fault_matrix/fleet.rs"]
mod fleet;
#[path = "fault_matrix/harness.rs"]
mod harness;
#[path = "fault_matrix/rows.rs"]
mod rows;
#[path = "fault_matrix/trial.rs"]
mod trial;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::Command;
use std::time::{Duration, Instant};

use trial::Row;

/// The most one row may take before it counts as stuck.
const ROW_LIMIT: Duration = Duration::from_secs(60);
/// The most the whole binary may take, whatever hangs.
const RUN_LIMIT: Duration = Duration::from_secs(400);

fn main() {
    harness::install_log_capture();
    harness::quiet_injected_panics();
    std::thread::spawn(|| {
        std::thread::sleep(RUN_LIMIT);
        eprintln!("fault matrix: still running after {RUN_LIMIT:?}; something is stuck");
        std::process::exit(2);
    });
    // At least two workers (the default is one per core): the stalled
    // writer's row blocks one, and the load must go on through it.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let filters = filters();
    let selected: Vec<_> = matrix()
        .into_iter()
        .filter(|(fault, _)| wanted(fault, &filters))
        .collect();
    if selected.is_empty() {
        eprintln!("fault matrix: no row matches {filters:?}; nothing run");
        return;
    }
    let started = Instant::now();
    let outcomes = runtime.block_on(async {
        let mut outcomes = Vec::new();
        for (fault, row) in selected {
            outcomes.push(run(fault, row).await);
        }
        outcomes
    });
    print_table(&outcomes, started.elapsed());
    let broken: Vec<String> = outcomes
        .iter()
        .filter_map(|(fault, outcome)| outcome.as_ref().err().map(|e| format!("{fault}: {e}")))
        .collect();
    for promise in &broken {
        eprintln!("fault matrix: BROKEN PROMISE in row `{promise}`");
    }
    let _ = std::io::stdout().flush();
    // Exits at once: a stuck blocking thread must not hold the verdict.
    std::process::exit(i32::from(!broken.is_empty()));
}

type RowFuture = Pin<Box<dyn Future<Output = Result<Row, String>>>>;

/// The rows, in FAULTS.md's order. Nothing runs until awaited.
fn matrix() -> Vec<(&'static str, RowFuture)> {
    vec![
        (
            "server killed, restarted empty",
            Box::pin(rows::server_killed()),
        ),
        (
            "server paused (SIGSTOP) 3 s",
            Box::pin(rows::server_paused()),
        ),
        ("FLUSHALL / key evicted", Box::pin(rows::key_evicted())),
        (
            "garbage value, wrong type at the key",
            Box::pin(rows::key_corrupted()),
        ),
        (
            "wrong password / ACL denied",
            Box::pin(rows::access_refused()),
        ),
        (
            "connection refused at start-up",
            Box::pin(rows::refused_at_start()),
        ),
        ("loader fails N times", Box::pin(rows::loader_fails())),
        ("loader panics", Box::pin(rows::loader_panics())),
        (
            "pool exhausted / maxclients reached",
            Box::pin(rows::clients_exhausted()),
        ),
        (
            "writer dies between save and bump",
            Box::pin(rows::writer_dies()),
        ),
        (
            "writer stalled past its lease",
            Box::pin(rows::writer_stalled()),
        ),
    ]
}

/// The name filters `cargo test [FILTER]` passes to every test binary.
/// Options, and the values of libtest's options that take one, are not
/// filters.
fn filters() -> Vec<String> {
    const WITH_VALUE: &[&str] = &[
        "--test-threads",
        "--skip",
        "--format",
        "--color",
        "--logfile",
    ];
    let mut filters = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if WITH_VALUE.contains(&arg.as_str()) {
            args.next();
        } else if !arg.starts_with('-') {
            filters.push(arg);
        }
    }
    filters
}

/// A row runs when its name (or "fault_matrix") contains a filter.
fn wanted(fault: &str, filters: &[String]) -> bool {
    let matches = |filter: &String| {
        fault.contains(filter.as_str()) || "fault_matrix".contains(filter.as_str())
    };
    filters.is_empty() || filters.iter().any(matches)
}

async fn run(fault: &'static str, row: RowFuture) -> (&'static str, Result<Row, String>) {
    eprintln!("fault matrix: {fault}");
    let mark = harness::log_mark();
    let outcome = match tokio::time::timeout(ROW_LIMIT, row).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "the row did not finish within {ROW_LIMIT:?}: stuck"
        )),
    };
    if outcome.is_err() {
        // What the library said last, to tell a broken promise from a slow machine.
        let logs = harness::logs_since(mark);
        let lines: Vec<&str> = logs.lines().collect();
        eprintln!("fault matrix: the row's last log lines:");
        for line in &lines[lines.len().saturating_sub(20)..] {
            eprintln!("  {line}");
        }
    }
    let outcome = outcome.map(|row| Row { fault, ..row });
    (fault, outcome)
}

fn print_table(outcomes: &[(&'static str, Result<Row, String>)], took: Duration) {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!(
        "machine: nproc {}, {}, {}; {profile} build; {} s in all\n",
        command_output("nproc", &[]),
        cpu_model(),
        command_output(
            &std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()),
            &["--version"]
        ),
        took.as_secs()
    );
    println!(
        "| fault | requests served | failed (synchronizer) | worst latency | loader runs \
         | converge after recovery | stale answers (counted) | min in flight |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (fault, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.fault,
                    r.served,
                    r.failed,
                    millis(r.worst),
                    r.loader_runs,
                    millis(r.converge),
                    r.stale,
                    r.min_in_flight
                );
                notes.extend(r.notes.iter().map(|n| format!("{fault}: {n}")));
            }
            Err(e) => println!("| {fault} | BROKEN: {} | | | | | | |", e.replace('|', "/")),
        }
    }
    if !notes.is_empty() {
        println!("\nNotes:\n");
        for note in notes {
            println!("- {note}");
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("({program}: {e})"))
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}
