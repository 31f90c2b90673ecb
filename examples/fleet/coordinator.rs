//! The coordinator: starts Redis and the workers, runs the phases (idle,
//! bumps, restart) and prints their tables, each with the machine's load.

use std::error::Error;
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use gensync::testing::{RedisCluster, RedisServer};
use gensync::{GenerationSynchronizer, RedisBackend, Synchronizer};

use crate::proto::{now_ns, Reply, Served};
use crate::redis_probe::{grown, top_commands, NodeSample, Probe};
use crate::stats::{busy_percent, cpu_jiffies, peak_concurrency, percentile, range};
use crate::worker::{config, key};
use crate::{Args, Topology};

type BoxError = Box<dyn Error>;

/// How long a worker may take to answer anything.
const PATIENCE: Duration = Duration::from_secs(120);

enum Redis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl Redis {
    fn start(topology: Topology) -> io::Result<Self> {
        Ok(match topology {
            Topology::Single => Redis::Single(RedisServer::start()?),
            Topology::Cluster => Redis::Cluster(RedisCluster::start()?),
        })
    }

    fn url(&self) -> String {
        match self {
            Redis::Single(server) => server.url(),
            Redis::Cluster(cluster) => cluster.url(),
        }
    }

    /// Every node's port, primaries and replicas.
    fn ports(&self) -> Vec<u16> {
        match self {
            Redis::Single(server) => vec![server.port()],
            Redis::Cluster(cluster) => cluster.nodes().iter().map(RedisServer::port).collect(),
        }
    }

    /// On a Cluster, the port of the key's primary now.
    fn key_owner(&self) -> Option<String> {
        match self {
            Redis::Single(_) => None,
            Redis::Cluster(cluster) => Some(
                cluster
                    .primary_for(key().as_str())
                    .map_or_else(|e| e.to_string(), |port| port.to_string()),
            ),
        }
    }

    /// Kills (SIGKILL) and starts again, on the same port, the server that
    /// holds the key: the one server, or the key's primary. Returns its port.
    fn restart(&mut self) -> io::Result<u16> {
        match self {
            Redis::Single(server) => {
                server.restart()?;
                Ok(server.port())
            }
            Redis::Cluster(cluster) => {
                let port = cluster.primary_for(key().as_str())?;
                cluster.kill_node(port)?;
                cluster.restart_node(port)?;
                Ok(port)
            }
        }
    }
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    replies: Receiver<Reply>,
}

impl Worker {
    fn spawn(args: &Args, url: &str, source: &Path, count: usize) -> io::Result<Worker> {
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--worker")
            .args(["--url", url])
            .arg("--source")
            .arg(source)
            .args(["--count", &count.to_string()])
            .args(["--heartbeat", &format!("{}us", args.heartbeat.as_micros())])
            .args([
                "--load-latency",
                &format!("{}us", args.load_latency.as_micros()),
            ])
            .args(["--spread", &format!("{}us", args.spread.as_micros())])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = child.stdout.take().expect("piped");
        let (tx, replies) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                match serde_json::from_str(&line) {
                    Ok(reply) => {
                        if tx.send(reply).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("fleet: a worker said {line:?}: {e}"),
                }
            }
        });
        Ok(Worker {
            child,
            stdin,
            replies,
        })
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()
    }

    fn recv(&self, timeout: Duration) -> Result<Reply, BoxError> {
        self.replies.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => "a worker did not answer in time".into(),
            RecvTimeoutError::Disconnected => "a worker exited".into(),
        })
    }
}

struct Fleet {
    workers: Vec<Worker>,
}

impl Fleet {
    fn send_all(&mut self, line: &str) -> io::Result<()> {
        self.workers.iter_mut().try_for_each(|w| w.send(line))
    }

    fn ask_all(&mut self, line: &str) -> Result<Vec<Reply>, BoxError> {
        self.send_all(line)?;
        self.workers.iter().map(|w| w.recv(PATIENCE)).collect()
    }

    fn served(&mut self, version: u64) -> Result<Served, BoxError> {
        let mut all = Served {
            at: Vec::new(),
            missing: 0,
            loads: Vec::new(),
        };
        for reply in self.ask_all(&format!("served {version} 30000"))? {
            let Reply::Served(s) = reply else {
                return Err(format!("expected Served, got {reply:?}").into());
            };
            all.at.extend(s.at);
            all.missing += s.missing;
            all.loads.extend(s.loads);
        }
        Ok(all)
    }

    fn loads(&mut self) -> Result<Vec<(u64, u64)>, BoxError> {
        let mut loads = Vec::new();
        for reply in self.ask_all("loads")? {
            let Reply::Loaded(l) = reply else {
                return Err(format!("expected Loaded, got {reply:?}").into());
            };
            loads.extend(l.loads);
        }
        Ok(loads)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.send("quit");
        }
        // A worker stuck past a few seconds is killed: the coordinator
        // must not hang on its way out.
        let deadline = Instant::now() + Duration::from_secs(5);
        for w in &mut self.workers {
            while matches!(w.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if matches!(w.child.try_wait(), Ok(None)) {
                let _ = w.child.kill();
            }
            let _ = w.child.wait();
        }
    }
}

/// The machine's load at the start of a phase.
struct Machine {
    loadavg: String,
    jiffies: (u64, u64),
}

impl Machine {
    fn now() -> Self {
        Machine {
            loadavg: loadavg(),
            jiffies: jiffies(),
        }
    }

    /// `load avg before → after, busy %` over the phase since `self`.
    fn since(&self) -> String {
        format!(
            "{} → {} | {:.0} %",
            self.loadavg,
            loadavg(),
            busy_percent(self.jiffies, jiffies())
        )
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn jiffies() -> (u64, u64) {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| cpu_jiffies(&s))
        .unwrap_or((0, 0))
}

fn cpu_grown(before: &[NodeSample], after: &[NodeSample]) -> f64 {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| grown(b, a, |s| s.cpu))
        .sum()
}

/// What one run measured, for the summary over runs.
#[derive(Default)]
struct Figures {
    idle_cmds: f64,
    idle_expected: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    peak_loads: f64,
    restart: Option<Restarted>,
}

#[derive(Default, Clone, Copy)]
struct Restarted {
    max_per_s: f64,
    total: f64,
    vouch_s: f64,
    converge_ms: f64,
}

/// The coordinator's state across phases.
struct Bench<'a> {
    args: &'a Args,
    redis: Redis,
    probe: Probe,
    fleet: Fleet,
    rt: tokio::runtime::Runtime,
    sync: Synchronizer<RedisBackend>,
    source: std::path::PathBuf,
    version: u64,
}

pub fn run(args: &Args) -> Result<(), BoxError> {
    if args.processes == 0 || args.instances < args.processes {
        return Err("--instances must be at least --processes, which must be > 0".into());
    }
    let machine = Machine::now();
    let redis = Redis::start(args.topology)?;
    let url = redis.url();
    let mut probe = Probe::new(redis.ports());
    // tmpfs, so reading the source costs no disk.
    let dir = tempfile::Builder::new()
        .prefix("gensync-fleet")
        .tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())?;
    let source = dir.path().join("source");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sync = Synchronizer::new(
        RedisBackend::with_config(&url, config(args.heartbeat))?,
        key(),
    );
    let version = 1;
    std::fs::write(&source, version.to_string())?;
    rt.block_on(sync.mark_updated())?;
    let clients_before: u64 = probe.sample().iter().map(|s| s.clients).sum();

    println!(
        "## fleet: {} instances, {:?}",
        args.instances, args.topology
    );
    println!();
    println!(
        "- {} worker processes (one-thread runtime each), heartbeat {:?}, load latency {:?}, spread {:?}, {} bumps, idle window {:?}, {} run(s)",
        args.processes, args.heartbeat, args.load_latency, args.spread, args.bumps, args.idle, args.runs
    );
    println!(
        "- nproc {}, load average at start {}",
        nproc(),
        machine.loadavg
    );
    println!("- Redis: {url}");

    let started = Instant::now();
    let mut workers = Vec::new();
    for p in 0..args.processes {
        let count =
            args.instances / args.processes + usize::from(p < args.instances % args.processes);
        workers.push(Worker::spawn(args, &url, &source, count)?);
    }
    let fleet = Fleet { workers };
    let (mut rss_before, mut rss_after, mut unvouched) = (0, 0, 0);
    for w in &fleet.workers {
        let Reply::Armed(armed) = w.recv(PATIENCE)? else {
            return Err("a worker did not arm".into());
        };
        rss_before += armed.rss_before_kb;
        rss_after += armed.rss_after_kb;
        unvouched += armed.unvouched;
    }
    let armed_in = started.elapsed();
    let clients_after: u64 = probe.sample().iter().map(|s| s.clients).sum();
    println!();
    println!("### memory and connections (after arming)");
    println!();
    println!("| instances | armed in s | unvouched | workers' RSS before MiB | with instances MiB | KiB per instance | Redis clients per instance | load before → after, busy % |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    println!(
        "| {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {} |",
        args.instances,
        armed_in.as_secs_f64(),
        unvouched,
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / args.instances as f64,
        clients_after.saturating_sub(clients_before) as f64 / args.instances as f64,
        machine.since()
    );

    let mut bench = Bench {
        args,
        redis,
        probe,
        fleet,
        rt,
        sync,
        source,
        version,
    };
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        println!();
        println!("### run {run}");
        let mut figures = Figures::default();
        bench.idle(&mut figures)?;
        bench.bumps(&mut figures)?;
        if args.restart {
            bench.restart(&mut figures)?;
        }
        println!();
        print!(
            "summary run {run}: idle {:.0} cmds/s (expected {:.0}); bump → all serving p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; peak concurrent loads {:.0}",
            figures.idle_cmds, figures.idle_expected, figures.p50_ms, figures.p99_ms, figures.max_ms, figures.peak_loads
        );
        if let Some(r) = figures.restart {
            print!(
                "; restart: max {:.0} connections/s, {:.0} in all, all vouch after {:.2} s, converged {:.0} ms after a bump",
                r.max_per_s, r.total, r.vouch_s, r.converge_ms
            );
        }
        println!();
        runs.push(figures);
    }
    if runs.len() > 1 {
        summary(&runs);
    }
    println!();
    println!("load average at end: {}", loadavg());
    drop(dir);
    Ok(())
}

fn nproc() -> usize {
    std::thread::available_parallelism().map_or(0, usize::from)
}

impl Bench<'_> {
    fn bump(&mut self) -> Result<u64, BoxError> {
        self.version += 1;
        std::fs::write(&self.source, self.version.to_string())?;
        let t0 = now_ns();
        // Right after a restart the writer's own connection may need a
        // few tries.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.rt.block_on(self.sync.mark_updated()) {
                Ok(_) => return Ok(t0),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("fleet: bump failed, trying again: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn idle(&mut self, figures: &mut Figures) -> Result<(), BoxError> {
        let machine = Machine::now();
        let before = self.probe.sample();
        let started = Instant::now();
        std::thread::sleep(self.args.idle);
        let after = self.probe.sample();
        let secs = started.elapsed().as_secs_f64();
        let load = machine.since();
        // Less this probe's own INFO, one per node, counted in `after`.
        let calls: u64 = before
            .iter()
            .zip(&after)
            .map(|(b, a)| grown(b, a, |s| s.calls))
            .sum::<u64>()
            - before.len() as u64;
        let expected = self.args.instances as f64 / self.args.heartbeat.as_secs_f64();
        figures.idle_cmds = calls as f64 / secs;
        figures.idle_expected = expected;
        println!();
        println!("#### idle");
        println!();
        println!("| heartbeat | window s | commands/s Redis received | expected (instances / heartbeat) | ratio | commands in the window (most run) | Redis CPU ms/s | load before → after | machine busy |");
        println!("|---:|---:|---:|---:|---:|---|---:|---|---:|");
        println!(
            "| {:?} | {:.1} | {:.0} | {:.0} | {:.2} | {} | {:.1} | {} |",
            self.args.heartbeat,
            secs,
            figures.idle_cmds,
            expected,
            figures.idle_cmds / expected,
            top_commands(&before, &after, 3),
            1000.0 * cpu_grown(&before, &after) / secs,
            load
        );
        Ok(())
    }

    fn bumps(&mut self, figures: &mut Figures) -> Result<(), BoxError> {
        let machine = Machine::now();
        let before = self.probe.sample();
        let started = Instant::now();
        self.fleet.loads()?;
        let (mut latencies, mut peaks, mut missing, mut loads) = (Vec::new(), Vec::new(), 0, 0);
        for _ in 0..self.args.bumps {
            let t0 = self.bump()?;
            let served = self.fleet.served(self.version)?;
            latencies.extend(served.at.iter().map(|&t| t.saturating_sub(t0)));
            missing += served.missing;
            loads += served.loads.len();
            peaks.push(peak_concurrency(&served.loads));
            // Every instance vouches again before the next bump.
            self.fleet.ask_all("vouched 10000")?;
        }
        let after = self.probe.sample();
        let load = machine.since();
        latencies.sort_unstable();
        let ms = |p: f64| percentile(&latencies, p).unwrap_or(0) as f64 / 1e6;
        figures.p50_ms = ms(50.0);
        figures.p99_ms = ms(99.0);
        figures.max_ms = ms(100.0);
        figures.peak_loads = peaks.iter().copied().max().unwrap_or(0) as f64;
        let mean_peak = peaks.iter().sum::<usize>() as f64 / peaks.len().max(1) as f64;
        println!();
        println!("#### bump → all serving");
        println!();
        println!("| bumps | served (instance × bump) | missing | p50 ms | p99 ms | max ms | loads | peak concurrent loads (max / mean per bump) | phase s | Redis commands (most run) | Redis CPU ms | load before → after | machine busy |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---:|");
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} | {:.0} / {:.0} | {:.1} | {} | {:.0} | {} |",
            self.args.bumps,
            latencies.len(),
            missing,
            figures.p50_ms,
            figures.p99_ms,
            figures.max_ms,
            loads,
            figures.peak_loads,
            mean_peak,
            started.elapsed().as_secs_f64(),
            top_commands(&before, &after, 3),
            1000.0 * cpu_grown(&before, &after),
            load
        );
        println!();
        println!(
            "peak concurrent loads, bump by bump: {}",
            peaks
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(())
    }

    fn restart(&mut self, figures: &mut Figures) -> Result<(), BoxError> {
        let machine = Machine::now();
        self.fleet.loads()?;
        let before = self.probe.sample();
        let dials_before: u64 = self.probe.dials.iter().sum();
        // The workers watch their instances stop vouching and start again.
        self.fleet.send_all("revouched 60000")?;
        std::thread::sleep(Duration::from_millis(50));
        let killed = Instant::now();
        let port = self.redis.restart()?;
        let back = Instant::now();
        let back_ns = now_ns();
        // (seconds since back, the fleet's connections since the kill).
        let mut series = vec![(0.0, 0u64)];
        let mut pending: Vec<usize> = (0..self.fleet.workers.len()).collect();
        let (mut last_vouch, mut unvouched, mut never_lost) = (0, 0, 0);
        let mut tail_until = None;
        let mut tick = back;
        let cpu_after;
        loop {
            tick += Duration::from_millis(100);
            std::thread::sleep(tick.saturating_duration_since(Instant::now()));
            let now = self.probe.sample();
            let dials = self.probe.dials.iter().sum::<u64>() - dials_before;
            let received: u64 = before
                .iter()
                .zip(&now)
                .map(|(b, a)| grown(b, a, |s| s.connections_received))
                .sum();
            series.push((back.elapsed().as_secs_f64(), received.saturating_sub(dials)));
            pending.retain(|&i| match self.fleet.workers[i].replies.try_recv() {
                Ok(Reply::Vouched(v)) => {
                    last_vouch = last_vouch.max(v.at);
                    unvouched += v.unvouched;
                    never_lost += v.never_lost;
                    false
                }
                _ => true,
            });
            if pending.is_empty() && tail_until.is_none() {
                // A second more, for the reconnects' tail.
                tail_until = Some(Instant::now() + Duration::from_secs(1));
            }
            if tail_until.is_some_and(|t| Instant::now() >= t) || back.elapsed() > PATIENCE {
                cpu_after = now;
                break;
            }
        }
        let max_per_s = series
            .iter()
            .map(|&(t, n)| {
                let end = series
                    .iter()
                    .filter(|&&(u, _)| u <= t + 1.0)
                    .map(|&(_, m)| m)
                    .max()
                    .unwrap_or(n);
                end - n
            })
            .max()
            .unwrap_or(0);
        let total = series.last().map_or(0, |&(_, n)| n);
        let vouch_s = last_vouch.saturating_sub(back_ns) as f64 / 1e9;
        let restart_loads = self.fleet.loads()?;
        let t0 = self.bump()?;
        let served = self.fleet.served(self.version)?;
        let converge_ms = served.at.iter().max().map_or(0, |&t| t.saturating_sub(t0)) as f64 / 1e6;
        self.fleet.ask_all("vouched 10000")?;
        let load = machine.since();
        let restarted = Restarted {
            max_per_s: max_per_s as f64,
            total: total as f64,
            vouch_s,
            converge_ms,
        };
        figures.restart = Some(restarted);
        println!();
        println!("#### restart (kill -9, same port: node {port})");
        println!();
        println!("| restart took ms | max connections/s | connections in all | unvouched at the end (never lost it) | all vouch again after s | loads after the restart (peak concurrent) | bump after: all serving ms (missing) | Redis CPU ms | load before → after | machine busy |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
        println!(
            "| {:.0} | {} | {} | {} ({}) | {:.2} | {} ({}) | {:.1} ({}) | {:.0} | {} |",
            (back - killed).as_secs_f64() * 1000.0,
            max_per_s,
            total,
            unvouched,
            never_lost,
            vouch_s,
            restart_loads.len(),
            peak_concurrency(&restart_loads),
            converge_ms,
            served.missing,
            1000.0 * cpu_grown(&before, &cpu_after),
            load
        );
        println!();
        let per_tick: Vec<u64> = series.windows(2).map(|w| w[1].1 - w[0].1).collect();
        println!(
            "connections received, per 100 ms after the restart: {}",
            squeeze_zeros(&per_tick)
        );
        if let Some(owner) = self.redis.key_owner() {
            println!("the key's primary after the restart: {owner}");
        }
        Ok(())
    }
}

/// `0 888 0 0 0 0 122 0 0` as `0 888 0×4 122 0×2`: long quiet stretches
/// in one short line.
fn squeeze_zeros(values: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut zeros = 0;
    let flush = |zeros: &mut usize, out: &mut Vec<String>| {
        match *zeros {
            0 => {}
            1 => out.push("0".into()),
            n => out.push(format!("0×{n}")),
        }
        *zeros = 0;
    };
    for &v in values {
        if v == 0 {
            zeros += 1;
        } else {
            flush(&mut zeros, &mut out);
            out.push(v.to_string());
        }
    }
    flush(&mut zeros, &mut out);
    out.join(" ")
}

fn summary(runs: &[Figures]) {
    let col = |f: &dyn Fn(&Figures) -> f64, decimals| {
        range(&runs.iter().map(f).collect::<Vec<_>>(), decimals)
    };
    println!();
    println!("### over {} runs (min–max)", runs.len());
    println!();
    println!("| idle cmds/s | expected | p50 ms | p99 ms | max ms | peak concurrent loads |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {} | {} | {} | {} |",
        col(&|f| f.idle_cmds, 0),
        col(&|f| f.idle_expected, 0),
        col(&|f| f.p50_ms, 1),
        col(&|f| f.p99_ms, 1),
        col(&|f| f.max_ms, 1),
        col(&|f| f.peak_loads, 0)
    );
    let restarts: Vec<Restarted> = runs.iter().filter_map(|f| f.restart).collect();
    if !restarts.is_empty() {
        let col = |f: &dyn Fn(&Restarted) -> f64, decimals| {
            range(&restarts.iter().map(f).collect::<Vec<_>>(), decimals)
        };
        println!();
        println!("| restart: max connections/s | in all | all vouch after s | bump after: all serving ms |");
        println!("|---:|---:|---:|---:|");
        println!(
            "| {} | {} | {} | {} |",
            col(&|r| r.max_per_s, 0),
            col(&|r| r.total, 0),
            col(&|r| r.vouch_s, 2),
            col(&|r| r.converge_ms, 1)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::squeeze_zeros;

    #[test]
    fn quiet_stretches_are_squeezed() {
        assert_eq!(
            squeeze_zeros(&[0, 888, 0, 0, 0, 0, 122, 0, 0]),
            "0 888 0×4 122 0×2"
        );
        assert_eq!(squeeze_zeros(&[]), "");
        assert_eq!(squeeze_zeros(&[5, 0, 5]), "5 0 5");
    }
}
