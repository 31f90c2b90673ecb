//! The fault matrix: each fault injected into a real
//! redis-server, the loader or a writer while a fleet of three "processes"
//! serves at least 64 concurrent requests through the tower layer, with the
//! promises of that fault asserted, not just the absence of a panic.
//!
//! Every row runs twice, with the instances' reloaders in strict mode and
//! in push mode (`CheckMode::Push`, heartbeat `fleet::HEARTBEAT`), judged
//! by each mode's promise. Rows run one after another (latency means
//! nothing otherwise), each with its own server. The table goes to stdout
//! as markdown; a broken promise names its row and mode and makes the
//! binary exit non-zero.
//!
//! Two rows run the fleet on a Sentinel group and on a cluster and kill
//! the primary right after a replicated bump (`failover_rows.rs`).
//!
//! The last rows are keyed (`keyed_fleet.rs`, `keyed_trial.rs`,
//! `keyed_rows.rs`): each instance a `KeyedReloader` over 200 tenants with
//! room for 64, writers updating random tenants and changing the site,
//! judged per tenant by the same ledger (`traffic.rs`).
//!
//! `cargo test --all-features --test fault_matrix` (add `--release` for the
//! numbers in FAULTS.md).

mod failover_rows;
mod fleet;
mod harness;
mod keyed_fleet;
mod keyed_rows;
mod keyed_trial;
mod rows;
mod traffic;
mod trial;

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::process::Command;
use std::time::{Duration, Instant};

use gensync::reload::CheckMode;
use trial::{Cost, Row};

/// The most one row may take before it counts as stuck.
const ROW_LIMIT: Duration = Duration::from_secs(60);
/// The most the whole binary may take, whatever hangs.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// The modes every row runs in, in this order.
const MODES: [CheckMode; 2] = [CheckMode::Strict, CheckMode::Push];

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
        .flat_map(|(fault, row)| MODES.map(|mode| (fault, mode, row)))
        .filter(|(fault, mode, _)| wanted(&format!("{fault} [{mode}]"), &filters))
        .collect();
    if selected.is_empty() {
        eprintln!("fault matrix: no row matches {filters:?}; nothing run");
        return;
    }
    let started = Instant::now();
    let outcomes = runtime.block_on(async {
        let mut outcomes = Vec::new();
        for (fault, mode, row) in selected {
            outcomes.push(run(fault, mode, row(mode)).await);
        }
        outcomes
    });
    print_table(&outcomes, started.elapsed());
    let broken: Vec<String> = outcomes
        .iter()
        .filter_map(|(fault, mode, outcome)| {
            outcome
                .as_ref()
                .err()
                .map(|e| format!("{fault} [{mode}]: {e}"))
        })
        .collect();
    for promise in &broken {
        eprintln!("fault matrix: BROKEN PROMISE in row `{promise}`");
    }
    let _ = std::io::stdout().flush();
    // Exits at once: a stuck blocking thread must not hold the verdict.
    std::process::exit(i32::from(!broken.is_empty()));
}

type RowFuture = Pin<Box<dyn Future<Output = Result<Row, String>>>>;
type RowFn = fn(CheckMode) -> RowFuture;

/// The rows, in FAULTS.md's order. Nothing runs until called and awaited.
fn matrix() -> Vec<(&'static str, RowFn)> {
    vec![
        ("server killed, restarted empty", |mode| {
            Box::pin(rows::server_killed(mode))
        }),
        ("server paused (SIGSTOP) 3 s", |mode| {
            Box::pin(rows::server_paused(mode))
        }),
        ("FLUSHALL / key evicted", |mode| {
            Box::pin(rows::key_evicted(mode))
        }),
        ("garbage value, wrong type at the key", |mode| {
            Box::pin(rows::key_corrupted(mode))
        }),
        ("wrong password / ACL denied", |mode| {
            Box::pin(rows::access_refused(mode))
        }),
        ("connection refused at start-up", |mode| {
            Box::pin(rows::refused_at_start(mode))
        }),
        ("loader fails N times", |mode| {
            Box::pin(rows::loader_fails(mode))
        }),
        ("loader panics", |mode| Box::pin(rows::loader_panics(mode))),
        ("pool exhausted / maxclients reached", |mode| {
            Box::pin(rows::clients_exhausted(mode))
        }),
        ("writer dies between save and bump", |mode| {
            Box::pin(rows::writer_dies(mode))
        }),
        ("writer stalled past its lease", |mode| {
            Box::pin(rows::writer_stalled(mode))
        }),
        ("Sentinel: primary killed right after a bump", |mode| {
            Box::pin(failover_rows::sentinel_primary_killed(mode))
        }),
        (
            "Cluster: a shard's primary killed right after a bump",
            |mode| Box::pin(failover_rows::cluster_primary_killed(mode)),
        ),
        ("200 tenants: server killed, restarted empty", |mode| {
            Box::pin(keyed_rows::server_killed(mode))
        }),
        ("200 tenants: server paused (SIGSTOP) 1.5 s", |mode| {
            Box::pin(keyed_rows::server_paused(mode))
        }),
        ("200 tenants: FLUSHALL while writing", |mode| {
            Box::pin(keyed_rows::flushed(mode))
        }),
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

/// A row runs when its name with its mode, as `loader panics [push]`, (or
/// "fault_matrix") contains a filter.
fn wanted(fault: &str, filters: &[String]) -> bool {
    let matches = |filter: &String| {
        fault.contains(filter.as_str()) || "fault_matrix".contains(filter.as_str())
    };
    filters.is_empty() || filters.iter().any(matches)
}

type Outcome = (&'static str, CheckMode, Result<Row, String>);

async fn run(fault: &'static str, mode: CheckMode, row: RowFuture) -> Outcome {
    eprintln!("fault matrix: {fault} [{mode}]");
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
        // What push tracking did, which the last lines may not show.
        let push: Vec<&&str> = lines
            .iter()
            .filter(|l| l.contains("push mode") && !l.contains(" DEBUG "))
            .collect();
        if !push.is_empty() {
            eprintln!("fault matrix: the row's push-mode warnings (last 10):");
            for line in &push[push.len().saturating_sub(10)..] {
                eprintln!("  {line}");
            }
        }
    }
    let outcome = outcome.map(|row| Row { fault, ..row });
    (fault, mode, outcome)
}

fn print_table(outcomes: &[Outcome], took: Duration) {
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
        "| fault | mode | requests served | failed (synchronizer) | worst latency | loader runs \
         | converge after recovery | stale answers (counted) | min in flight \
         | backend calls per 1k requests: before / fault / after \
         | Redis commands per 1k requests: before / after \
         | push: vouched after cut-off / re-armed after |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (fault, mode, outcome) in outcomes {
        match outcome {
            Ok(r) => {
                let push = match (r.vouch_stopped, r.rearmed) {
                    (None, None) => "–".to_owned(),
                    (stopped, rearmed) => format!(
                        "{} / {}",
                        stopped.map_or("–".to_owned(), millis),
                        rearmed.map_or("–".to_owned(), millis)
                    ),
                };
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} / {} | {} / {} | {} |",
                    r.fault,
                    r.mode,
                    r.served,
                    r.failed,
                    millis(r.worst),
                    r.loader_runs,
                    millis(r.converge),
                    r.stale,
                    r.min_in_flight,
                    per_1k(r.before.and_then(|c| c.calls)),
                    per_1k(r.during),
                    per_1k(r.after.and_then(|c| c.calls)),
                    per_1k(r.before.and_then(|c: Cost| c.commands)),
                    per_1k(r.after.and_then(|c| c.commands)),
                    push
                );
                notes.extend(r.notes.iter().map(|n| format!("{fault} [{mode}]: {n}")));
            }
            Err(e) => println!(
                "| {fault} | {mode} | BROKEN: {} | | | | | | | | | |",
                e.replace('|', "/")
            ),
        }
    }
    if !notes.is_empty() {
        println!("\nNotes:\n");
        for note in notes {
            println!("- {note}");
        }
    }
}

/// A rate per request, per thousand requests; "–" where not measured.
fn per_1k(rate: Option<f64>) -> String {
    rate.map_or("–".to_owned(), |r| format!("{:.1}", r * 1000.0))
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
