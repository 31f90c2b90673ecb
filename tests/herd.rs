//! No herd on Redis: a fleet that lost its server together redials spread
//! over a window, at a bounded rate, and every instance is back within the
//! redial cap once the server is; an armed idle instance costs one command
//! per heartbeat, and instances armed together do not beat in lockstep. On
//! a real redis-server per test.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::sync::Arc;
use std::time::Duration;

use gensync::backend::{Backend, Tracker};
use gensync::reload::{CheckMode, Reloader};
use gensync::testing::RedisServer;
use gensync::{Key, RedisBackend, RedisConfig, Synchronizer};
use tokio::time::{timeout, Instant};

const MS: fn(u64) -> Duration = Duration::from_millis;
/// Long enough that only a broken promise reaches it.
const PATIENCE: Duration = Duration::from_secs(20);
/// What a session takes, past its pause, to be armed on a loaded 2-core
/// machine with a fleet setting up at once: a connect and a few round
/// trips each, one after the other.
const SETUP: Duration = Duration::from_millis(600);

fn key() -> Key {
    Key::new(["herd", "settings"]).unwrap()
}

/// Push mode with a short heartbeat and a redial schedule of `first` and
/// `cap`.
fn config(first: Duration, cap: Duration) -> RedisConfig {
    support::patient_config()
        .heartbeat(MS(100))
        .redial(first, cap)
}

/// An instance of the fleet: its own backend (its own connections), and
/// the tracker its push mode reads.
struct Instance {
    _backend: RedisBackend,
    tracker: Arc<Tracker>,
}

fn fleet(url: &str, n: usize, config: &RedisConfig) -> Vec<Instance> {
    (0..n)
        .map(|_| {
            let backend = RedisBackend::with_config(url, config.clone()).unwrap();
            let tracker = Tracker::new();
            assert!(backend.track(&key(), &tracker), "tracking starts");
            Instance {
                _backend: backend,
                tracker,
            }
        })
        .collect()
}

/// Waits until `tracker` is armed (`true`) or lost (`false`), and says when.
async fn until(tracker: &Tracker, armed: bool) -> Instant {
    loop {
        let changed = tracker.changed();
        let mut changed = std::pin::pin!(changed);
        changed.as_mut().enable();
        if tracker.is_armed() == armed {
            return Instant::now();
        }
        changed.await;
    }
}

async fn all_armed(fleet: &[Instance]) {
    timeout(PATIENCE, async {
        for i in fleet {
            until(&i.tracker, true).await;
        }
    })
    .await
    .expect("the whole fleet armed");
}

/// For each instance, when it next loses tracking and when it is armed
/// again after that.
fn watch(fleet: &[Instance]) -> Vec<tokio::task::JoinHandle<(Instant, Instant)>> {
    fleet
        .iter()
        .map(|i| {
            let tracker = Arc::clone(&i.tracker);
            tokio::spawn(async move {
                let lost = until(&tracker, false).await;
                (lost, until(&tracker, true).await)
            })
        })
        .collect()
}

async fn outcomes(
    watches: Vec<tokio::task::JoinHandle<(Instant, Instant)>>,
) -> Vec<(Instant, Instant)> {
    let mut all = Vec::new();
    for w in watches {
        all.push(timeout(PATIENCE, w).await.expect("re-armed").unwrap());
    }
    all
}

/// The most connection attempts one session can make in `window` after a
/// loss, each after the shortest pause the schedule allows (half of
/// `min(first × 2ⁿ, cap)`).
fn most_attempts(first: Duration, cap: Duration, window: Duration) -> u64 {
    let (mut at, mut attempts) = (Duration::ZERO, 0u32);
    loop {
        let hi = first.saturating_mul(1 << attempts.min(20)).min(cap);
        at += hi / 2;
        if at > window {
            return u64::from(attempts);
        }
        attempts += 1;
    }
}

/// 50 instances lose their server at the same instant (killed, then
/// restarted on the same port): their first redials are spread over the
/// window the schedule draws from (`[first / 2, first]`), none sooner than
/// `first / 2` after its loss, and all are armed again within the cap of
/// the server's return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_that_lost_redis_together_rearms_spread_and_within_the_cap() {
    let (first, cap) = (MS(800), MS(1600));
    let mut server = RedisServer::start().unwrap();
    let fleet = fleet(&server.url(), 50, &config(first, cap));
    all_armed(&fleet).await;

    let watches = watch(&fleet);
    server.restart().unwrap();
    let back = Instant::now();
    let rearmed = outcomes(watches).await;

    let earliest = rearmed.iter().map(|(_, a)| *a).min().unwrap();
    let latest = rearmed.iter().map(|(_, a)| *a).max().unwrap();
    for (i, (lost, armed)) in rearmed.iter().enumerate() {
        assert!(
            *armed - *lost >= first / 2,
            "instance {i} redialled {:?} after its loss, sooner than half the first pause",
            *armed - *lost
        );
    }
    eprintln!(
        "re-armed: spread {:?}, last {:?} after the server was back",
        latest - earliest,
        latest.saturating_duration_since(back)
    );
    // Without jitter every pause is the same, and the fleet re-arms within
    // the few milliseconds its set-up takes.
    assert!(
        latest - earliest >= first / 4,
        "50 instances re-armed within {:?} of each other: in lockstep",
        latest - earliest
    );
    assert!(
        latest.saturating_duration_since(back) <= cap + SETUP,
        "the last instance re-armed {:?} after the server was back",
        latest.saturating_duration_since(back)
    );
}

/// A server that turns every connection away (the fleet's password
/// changed under it) for three seconds: each session's attempts stay
/// within the schedule's count, the fleet's within that times its size;
/// once the server lets it in again, every instance is armed within the
/// cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_keeps_redials_bounded_and_all_converge_within_the_cap() {
    let (first, cap) = (MS(200), MS(800));
    let window = Duration::from_secs(3);
    let server = RedisServer::start_with_password("admin-pw-1234").unwrap();
    let mut admin = server.connection().unwrap();
    let set_password = |admin: &mut redis::Connection, pw: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("requirepass")
            .arg(pw)
            .query::<()>(admin)
            .unwrap();
    };
    set_password(&mut admin, "fleet-pw-5678");
    let url = format!("redis://:fleet-pw-5678@127.0.0.1:{}", server.port());
    let n = 20;
    let fleet = fleet(&url, n, &config(first, cap));
    all_armed(&fleet).await;

    let watches = watch(&fleet);
    set_password(&mut admin, "admin-pw-1234");
    let before = support::connections_received(&mut admin);
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query::<i64>(&mut admin)
        .unwrap();
    // The outage is the measure: a window of fixed length.
    tokio::time::sleep(window).await;
    let dials = support::connections_received(&mut admin) - before;
    set_password(&mut admin, "fleet-pw-5678");
    let back = Instant::now();
    let rearmed = outcomes(watches).await;

    let per_session = most_attempts(first, cap, window);
    eprintln!(
        "{dials} attempts by {n} sessions in {window:?} (at most {per_session} each); last re-armed {:?} after",
        rearmed.iter().map(|(_, a)| *a).max().unwrap().saturating_duration_since(back)
    );
    assert!(
        dials <= per_session * n as u64,
        "{dials} connection attempts in {window:?}: more than {per_session} per session"
    );
    assert!(dials >= n as u64, "every session tried again: {dials}");
    let latest = rearmed.iter().map(|(_, a)| *a).max().unwrap();
    assert!(
        latest.saturating_duration_since(back) <= cap + SETUP,
        "the last instance re-armed {:?} after the server let it in",
        latest.saturating_duration_since(back)
    );
}

/// Reads on a data connection whose connects keep failing dial ever less
/// often (never sooner than half the reconnect delay, doubling up to the
/// cap), and find the server again within the cap once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_whose_connects_keep_failing_dial_within_the_schedule_and_reconnect_within_the_cap() {
    let (first, cap) = (MS(200), MS(400));
    let delay = support::RECONNECT_DELAY;
    let window = Duration::from_secs(3);
    let server = RedisServer::start_with_password("admin-pw-1234").unwrap();
    let mut admin = server.connection().unwrap();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("fleet-pw-5678")
        .query::<()>(&mut admin)
        .unwrap();
    let url = format!("redis://:fleet-pw-5678@127.0.0.1:{}", server.port());
    let n = 10;
    let backends: Vec<RedisBackend> = (0..n)
        .map(|_| RedisBackend::with_config(&url, config(first, cap)).unwrap())
        .collect();
    for b in &backends {
        b.get(&key()).await.unwrap();
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("admin-pw-1234")
        .query::<()>(&mut admin)
        .unwrap();
    let before = support::connections_received(&mut admin);
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query::<i64>(&mut admin)
        .unwrap();
    let end = Instant::now() + window;
    let readers: Vec<_> = backends
        .iter()
        .cloned()
        .map(|b| {
            tokio::spawn(async move {
                while Instant::now() < end {
                    let _ = b.get(&key()).await;
                    tokio::time::sleep(MS(1)).await;
                }
            })
        })
        .collect();
    for r in readers {
        r.await.unwrap();
    }
    let dials = support::connections_received(&mut admin) - before;
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("fleet-pw-5678")
        .query::<()>(&mut admin)
        .unwrap();
    let back = Instant::now();

    // The connection found dead is tried once more at once (no pause),
    // then each failure earns its pause.
    let per_backend = 2 + most_attempts(delay, cap, window);
    assert!(
        dials <= per_backend * n as u64,
        "{dials} dials in {window:?}: more than {per_backend} per connection"
    );
    let mut latest = Duration::ZERO;
    for b in &backends {
        let found = timeout(PATIENCE, async {
            while b.get(&key()).await.is_err() {
                tokio::time::sleep(MS(1)).await;
            }
        });
        found.await.expect("reads reach the server again");
        latest = back.elapsed();
    }
    eprintln!("{dials} dials by {n} connections in {window:?} (at most {per_backend} each); back {latest:?} after");
    assert!(
        latest <= cap + SETUP,
        "the last connection was back {latest:?} after the server"
    );
}

/// An armed push instance left idle sends its server one command per
/// heartbeat and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_armed_idle_instance_sends_one_command_per_heartbeat() {
    let heartbeat = MS(100);
    let window = Duration::from_secs(2);
    let server = RedisServer::start().unwrap();
    let backend = RedisBackend::with_config(
        &server.url(),
        config(MS(400), MS(1600)).heartbeat(heartbeat),
    )
    .unwrap();
    let reloader = Reloader::builder(Synchronizer::new(backend, key()), || async {
        Ok::<_, std::io::Error>(1u64)
    })
    .mode(CheckMode::Push)
    .build(0)
    .unwrap();
    support::push_armed(&reloader, PATIENCE).await;
    let mut admin = server.connection().unwrap();

    let before = commands(&mut admin);
    // The idle time is the measure: a window of fixed length.
    tokio::time::sleep(window).await;
    let sent = commands(&mut admin) - before;
    let beats = window.as_millis().div_ceil(heartbeat.as_millis()) as u64;
    eprintln!("{sent} commands in {window:?} ({beats} heartbeats)");
    // At most one per heartbeat (a loaded machine may delay some, never
    // add any).
    assert!(
        (beats / 2..=beats + 2).contains(&sent),
        "{sent} commands in {window:?} at one heartbeat per {heartbeat:?} ({beats})"
    );
    drop(reloader);
}

/// Every command the server ran, but the `INFO` that asks.
fn commands(admin: &mut redis::Connection) -> u64 {
    support::command_calls(admin, |name| name != "info")
}

/// 20 instances armed at the same moment: in one heartbeat period their
/// beats (each one read of the key) fall spread over the period, not
/// together. Watched with `MONITOR`, which stamps each command with the
/// server's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_armed_together_do_not_heartbeat_in_lockstep() {
    let heartbeat = MS(100);
    let server = RedisServer::start().unwrap();
    let n = 20;
    let fleet = fleet(
        &server.url(),
        n,
        &config(MS(400), MS(1600)).heartbeat(heartbeat),
    );
    all_armed(&fleet).await;

    let port = server.port();
    let beats = tokio::task::spawn_blocking(move || monitor_reads(port, 3 * n))
        .await
        .unwrap();
    // Each client's first beat in the watch, as a phase of the period:
    // beats spread over it leave no gap longer than half a period; beats
    // in lockstep leave one nearly as long as the period.
    let mut first: std::collections::HashMap<String, f64> = Default::default();
    for (at, client) in beats {
        first.entry(client).or_insert(at);
    }
    assert!(
        first.len() >= n / 2,
        "beats of {} clients seen",
        first.len()
    );
    let period = heartbeat.as_secs_f64();
    let mut phases: Vec<f64> = first.values().map(|t| t.rem_euclid(period)).collect();
    phases.sort_by(f64::total_cmp);
    let widest = phases
        .windows(2)
        .map(|w| w[1] - w[0])
        .chain([phases[0] + period - phases[phases.len() - 1]])
        .fold(0.0, f64::max);
    eprintln!(
        "widest gap {widest:.3} s of {period:.3} s over {} clients",
        phases.len()
    );
    assert!(
        widest < period / 2.0,
        "the beats of {} instances leave a gap of {widest:.3} s of a {period:.3} s period: {phases:?}",
        phases.len()
    );
    drop(fleet);
}

/// The next `count` reads of the key the server runs (`GETRANGE`), with
/// the server's time and the client that sent each.
fn monitor_reads(port: u16, count: usize) -> Vec<(f64, String)> {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    conn.write_all(b"MONITOR\r\n").unwrap();
    let mut lines = BufReader::new(conn).lines();
    let mut reads = Vec::new();
    while reads.len() < count {
        let line = lines.next().expect("MONITOR output").unwrap();
        // +1700000000.123456 [0 127.0.0.1:54321] "GETRANGE" "herd:settings" ...
        if !line.contains("\"GETRANGE\"") {
            continue;
        }
        let Some((at, rest)) = line.trim_start_matches('+').split_once(' ') else {
            continue;
        };
        let client = rest
            .split_once(' ')
            .and_then(|(_, r)| r.split_once(']'))
            .map(|(c, _)| c.to_owned())
            .unwrap_or_default();
        reads.push((at.parse().unwrap(), client));
    }
    reads
}

/// Reads of a key whose Cluster shard is down fail without dialling the
/// Cluster's other nodes each time (a new Cluster client per failed read
/// would connect to every node), and reach the promoted replica once the
/// shard has failed over: the client follows its nodes itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_of_a_dead_shard_do_not_dial_the_whole_cluster_each_time() {
    let mut cluster = gensync::testing::RedisCluster::start().unwrap();
    let backend = RedisBackend::with_config(&cluster.url(), support::patient_config()).unwrap();
    backend.get(&key()).await.unwrap();
    let victim = cluster.primary_for(key().as_str()).unwrap();
    let mut admins: Vec<redis::Connection> = cluster
        .nodes()
        .iter()
        .filter(|n| n.port() != victim)
        .map(|n| n.connection().unwrap())
        .collect();
    let received = |admins: &mut Vec<redis::Connection>| -> u64 {
        admins.iter_mut().map(support::connections_received).sum()
    };
    let before = received(&mut admins);
    cluster.kill_node(victim).unwrap();
    let (mut reads, mut failed) = (0, 0);
    let end = Instant::now() + Duration::from_secs(1);
    while Instant::now() < end {
        reads += 1;
        failed += u64::from(backend.get(&key()).await.is_err());
        tokio::time::sleep(MS(5)).await;
    }
    let dials = received(&mut admins) - before;
    eprintln!(
        "{reads} reads ({failed} failed) of a dead shard: {dials} connections to the other nodes"
    );
    assert!(
        failed > 10,
        "the shard was down: {failed} of {reads} reads failed"
    );
    // The Cluster client's own reconnects, not one set per read.
    assert!(
        dials <= admins.len() as u64,
        "{dials} connections to the other {} nodes for {reads} reads",
        admins.len()
    );
    cluster
        .wait_for_failover(key().as_str(), victim, Duration::from_secs(30))
        .unwrap();
    timeout(PATIENCE, async {
        while backend.get(&key()).await.is_err() {
            tokio::time::sleep(MS(10)).await;
        }
    })
    .await
    .expect("reads reach the promoted replica");
}

/// A Cluster node killed and restarted at once answers `CLUSTERDOWN` until
/// it has rejoined: a passing state, so tracking redials on its schedule
/// and is armed again within the redial cap, not put off as a server that
/// refuses to track (15–30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_cluster_primary_is_tracked_again_within_the_cap() {
    let mut cluster = gensync::testing::RedisCluster::start().unwrap();
    let (first, cap) = (MS(400), MS(800));
    let fleet = fleet(&cluster.url(), 20, &config(first, cap));
    all_armed(&fleet).await;
    let watches = watch(&fleet);
    let victim = cluster.primary_for(key().as_str()).unwrap();
    cluster.kill_node(victim).unwrap();
    cluster.restart_node(victim).unwrap();
    let back = Instant::now();
    let rearmed = outcomes(watches).await;
    let last = rearmed.iter().map(|&(_, armed)| armed).max().unwrap();
    // The node rejoins within a second or two; past that, the cap and the
    // setup. A refusal's pause (15 s at least) is far beyond.
    let bound = Duration::from_secs(3) + cap + SETUP;
    assert!(
        last - back <= bound,
        "the last instance re-armed {:?} after the node was back (bound {bound:?})",
        last - back
    );
}
