//! A simulated fleet of push-mode instances (issue 24, targets 1–3): each
//! instance a `Reloader` in `CheckMode::Push` with its own `RedisBackend`,
//! as separate processes would have, spread over a few worker processes
//! (this program run again with `--worker`), against one redis-server or a
//! 3-shard Cluster that the coordinator starts.
//!
//! ```text
//! cargo run --release --all-features --example fleet -- \
//!     --topology single --instances 1000 --processes 4 --bumps 50 \
//!     --heartbeat 200ms [--spread 1s] [--load-latency 20ms] [--restart] [--runs 3]
//! ```
//!
//! It measures, with the machine's load beside each figure: the commands/s
//! Redis receives while the fleet is idle, against instances/heartbeat;
//! the time from a bump until every instance serves it (p50/p99/max over
//! instances × bumps) and the source's peak concurrent loads; Redis's CPU
//! time per phase; memory per instance; with `--restart`, the connection
//! attempts per second Redis sees after a kill -9 and restart, and the time
//! until every instance vouches again and serves a bump made after it.
//! Figures are printed as markdown tables, one set per run, and a min–max
//! summary over the runs.

mod coordinator;
mod proto;
mod redis_probe;
mod stats;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    Single,
    Cluster,
}

#[derive(Debug, Parser)]
#[command(about = "A simulated fleet of push-mode reloaders against Redis")]
pub struct Args {
    /// One redis-server, or a 3-shard Cluster (3 primaries, 3 replicas).
    #[arg(long, value_enum, default_value = "single")]
    pub topology: Topology,
    /// Instances in the whole fleet.
    #[arg(long, default_value_t = 1000)]
    pub instances: usize,
    /// Worker processes the instances are spread over.
    #[arg(long, default_value_t = 4)]
    pub processes: usize,
    /// Bumps measured per run.
    #[arg(long, default_value_t = 50)]
    pub bumps: usize,
    /// Push mode's heartbeat (`RedisConfig::heartbeat`).
    #[arg(long, default_value = "200ms", value_parser = stats::parse_duration)]
    pub heartbeat: Duration,
    /// Spread each bump's loads over this window (`0`: off).
    #[arg(long, default_value = "0", value_parser = stats::parse_duration)]
    pub spread: Duration,
    /// A load sleeps this long before reading the source: a database query.
    #[arg(long, default_value = "0", value_parser = stats::parse_duration)]
    pub load_latency: Duration,
    /// How long the idle phase counts Redis's commands.
    #[arg(long, default_value = "10s", value_parser = stats::parse_duration)]
    pub idle: Duration,
    /// Also kill -9 and restart Redis (a Cluster: the key's primary).
    #[arg(long)]
    pub restart: bool,
    /// Runs of the measured phases, for their spread.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,

    /// Internal: run as a worker process.
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Internal: the worker's Redis URL.
    #[arg(long, hide = true)]
    pub url: Option<String>,
    /// Internal: the worker's source file.
    #[arg(long, hide = true)]
    pub source: Option<PathBuf>,
    /// Internal: the worker's instances.
    #[arg(long, hide = true, default_value_t = 0)]
    pub count: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.worker {
        return worker::run(worker::WorkerArgs {
            url: args.url.ok_or("--worker needs --url")?,
            source: args.source.ok_or("--worker needs --source")?,
            count: args.count,
            heartbeat: args.heartbeat,
            load_latency: args.load_latency,
            spread: args.spread,
        });
    }
    coordinator::run(&args)
}
