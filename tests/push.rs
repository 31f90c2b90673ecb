//! The check modes and their promises: strict reads coalesced, push
//! invalidation through Redis client tracking, and interval, on a real
//! redis-server per test.

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use async_trait::async_trait;
use gensync::reload::{CheckMode, Freshness, Reloader};
use gensync::testing::{Answer, Call, FaultyBackend, Observer};
use gensync::{
    BackendError, GenerationSynchronizer, Key, MemoryBackend, RedisBackend, RedisConfig,
    Synchronizer,
};
use std::sync::Mutex;
use support::stall::Stallable;
use support::{LogCapture, Redis};
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout, Instant};

const HEARTBEAT: Duration = Duration::from_millis(50);
/// Push mode vouches for nothing older than this.
const BOUND: Duration = Duration::from_millis(100);
/// Long enough that only a broken promise reaches it.
const PATIENCE: Duration = Duration::from_secs(10);

fn key() -> Key {
    Key::new(["push", "settings"]).unwrap()
}

fn config() -> RedisConfig {
    support::patient_config().heartbeat(HEARTBEAT)
}

/// The settings' source: a number the test moves, read by every loader.
#[derive(Clone, Default)]
struct Db(Arc<AtomicU64>);

impl Db {
    fn set(&self, v: u64) {
        self.0.store(v, Ordering::SeqCst);
    }
}

fn reloader(redis: &Redis, db: &Db, mode: CheckMode) -> Reloader<u64> {
    reloader_with(redis, db, mode, config())
}

fn reloader_with(redis: &Redis, db: &Db, mode: CheckMode, config: RedisConfig) -> Reloader<u64> {
    let backend = RedisBackend::with_config(&redis.server.url(), config).unwrap();
    reloader_on(backend, db, mode)
}

fn reloader_on(backend: RedisBackend, db: &Db, mode: CheckMode) -> Reloader<u64> {
    let db = db.clone();
    Reloader::builder(Synchronizer::new(backend, key()), move || {
        let v = db.0.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .mode(mode)
    .build(0)
    .unwrap()
}

/// A writer in another process: its own connection.
fn writer(redis: &Redis) -> Synchronizer<RedisBackend> {
    let backend = RedisBackend::with_config(&redis.server.url(), config()).unwrap();
    Synchronizer::new(backend, key())
}

/// How many times the server ran `cmd` so far.
fn calls(redis: &Redis, cmd: &str) -> u64 {
    let info: String = redis.raw(redis::cmd("INFO").arg("commandstats"));
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Whether a check of `reloader` is answered without waiting on anything:
/// push or interval mode vouching for the settings in service.
fn answered_at_once(reloader: &Reloader<u64>) -> Option<u64> {
    let mut check = pin!(reloader.check());
    match check.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(snapshot) => Some(*snapshot),
        Poll::Pending => None,
    }
}

/// Waits until push tracking vouches for `reloader`'s settings.
async fn armed(reloader: &Reloader<u64>) {
    support::push_armed(reloader, PATIENCE).await;
}

/// Waits until `reloader`'s subscribers hear of settings `want`, with no
/// request made: the push made it reload.
async fn heard(reloader: &Reloader<u64>, want: u64) {
    let mut settings = reloader.subscribe();
    timeout(PATIENCE, settings.wait_for(|s| **s == want))
        .await
        .unwrap_or_else(|_| panic!("the push never brought settings {want}"))
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_checks_arriving_during_a_read_share_the_next_one() {
    let redis = Redis::new();
    let db = Db::default();
    let reloader = reloader(&redis, &db, CheckMode::Strict);
    reloader.check().await;
    let before = calls(&redis, "getrange");
    let checks_before = reloader.metrics().checks;
    // The first check's read waits on a stopped server; every other check
    // arrives while it is in flight.
    redis.server.pause().unwrap();
    let first = tokio::spawn(reloader.check());
    let checks: Vec<_> = (0..512).map(|_| tokio::spawn(reloader.check())).collect();
    timeout(PATIENCE, async {
        while reloader.metrics().checks < checks_before + 513 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every check began");
    redis.server.resume().unwrap();
    first.await.unwrap();
    for check in checks {
        check.await.unwrap();
    }
    let reads = calls(&redis, "getrange") - before;
    // The read in flight, the next one for all who arrived meanwhile, and
    // one more at most for a check that counted itself before the resume
    // but asked for its read after the second began.
    assert!(
        (2..=3).contains(&reads),
        "513 checks sent {reads} reads: they were not coalesced"
    );
    assert_eq!(reloader.metrics().stale_served, 0);

    // Each check still sees every bump that completed before it began.
    for v in 1..=20 {
        db.set(v);
        writer(&redis).mark_updated().await.unwrap();
        let checks: Vec<_> = (0..16).map(|_| tokio::spawn(reloader.check())).collect();
        for check in checks {
            assert_eq!(*check.await.unwrap(), v);
        }
    }
}

/// Once armed, holds the next read's answer back, after the memory
/// backend took its value, until the gate opens: a read that began before
/// a bump and answers after it.
#[derive(Default)]
struct Gate {
    gate: Mutex<Option<oneshot::Receiver<()>>>,
    read_taken: Notify,
}

#[async_trait]
impl Observer for Gate {
    async fn answered(&self, call: Call<'_>, _: Result<&Answer, &BackendError>) {
        if !matches!(call, Call::Get { .. }) {
            return;
        }
        let gate = self.gate.lock().unwrap().take();
        if let Some(gate) = gate {
            self.read_taken.notify_one();
            let _ = gate.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_check_is_never_answered_by_a_read_that_began_before_it() {
    let gate = Arc::new(Gate::default());
    let backend = FaultyBackend::new(MemoryBackend::new()).observed(Arc::clone(&gate));
    let db = Db::default();
    let source = db.clone();
    let reloader = Reloader::builder(Synchronizer::new(backend.clone(), key()), move || {
        let v = source.0.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .build(0)
    .unwrap();
    reloader.check().await;

    // A check whose read takes the old generation and is held.
    let (open, held) = oneshot::channel();
    *gate.gate.lock().unwrap() = Some(held);
    let taken = gate.read_taken.notified();
    let early = tokio::spawn(reloader.check());
    taken.await;
    // A bump completes, then a check begins while that read is in flight.
    db.set(1);
    Synchronizer::new(backend.inner().clone(), key())
        .mark_updated()
        .await
        .unwrap();
    // Polled once by hand, so it has surely asked for its read before the
    // held one answers.
    let mut late = pin!(reloader.check());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(late.as_mut().poll(&mut cx).is_pending());
    // The read after the held one is held too, so the late check, polled
    // once the held read has answered, cannot be answered by a newer read
    // by luck: only the held one has answered by then.
    let (open_next, next_held) = oneshot::channel();
    *gate.gate.lock().unwrap() = Some(next_held);
    open.send(()).unwrap();
    early.await.unwrap();
    assert!(
        late.as_mut().poll(&mut cx).is_pending(),
        "answered by the read from before the bump"
    );
    open_next.send(()).unwrap();
    assert_eq!(*late.await, 1, "answered by the read from before the bump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_checks_cost_no_round_trip_between_changes() {
    let redis = Redis::new();
    let db = Db::default();
    db.set(1);
    // A heartbeat a loaded machine cannot miss: a late one would make a
    // check read, which is the fallback, not what this test is about.
    let patient = config().heartbeat(Duration::from_secs(5));
    let reloader = reloader_with(&redis, &db, CheckMode::Push, patient);
    armed(&reloader).await;
    let before = calls(&redis, "getrange");
    for _ in 0..10_000 {
        assert_eq!(answered_at_once(&reloader), Some(1));
    }
    assert_eq!(
        calls(&redis, "getrange"),
        before,
        "no read while nothing changed"
    );
    assert_eq!(reloader.metrics().stale_served, 0);
}

/// Every way the key can change reaches a push reloader, with no request
/// made, and a check that begins a heartbeat bound after the change is
/// answered with the new settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_reaches_a_push_reloader() {
    let redis = Redis::new();
    let db = Db::default();
    let reloader = reloader(&redis, &db, CheckMode::Push);
    armed(&reloader).await;
    let k = key();
    let changes: [(&str, &dyn Fn()); 5] = [
        ("a raw INCRBY, as another client's bump", &|| {
            redis.raw::<i64>(redis::cmd("INCRBY").arg(k.as_str()).arg(7));
        }),
        ("DEL", &|| {
            redis.raw::<()>(redis::cmd("DEL").arg(k.as_str()))
        }),
        ("FLUSHALL", &|| redis.raw::<()>(&mut redis::cmd("FLUSHALL"))),
        ("FLUSHDB", &|| redis.raw::<()>(&mut redis::cmd("FLUSHDB"))),
        ("expiry", &|| {
            redis.raw::<()>(redis::cmd("PEXPIRE").arg(k.as_str()).arg(1));
        }),
    ];
    for (i, (how, change)) in changes.iter().enumerate() {
        armed(&reloader).await;
        let v = 10 + i as u64;
        db.set(v);
        change();
        let done = Instant::now();
        heard(&reloader, v).await;
        tokio::time::sleep_until(done + BOUND).await;
        assert_eq!(*reloader.check().await, v, "after {how}");
    }

    // A bump by another process, through the library.
    armed(&reloader).await;
    db.set(100);
    writer(&redis).mark_updated().await.unwrap();
    heard(&reloader, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_key_reaches_a_push_reloader() {
    let redis = Redis::new();
    let db = Db::default();
    let reloader = reloader(&redis, &db, CheckMode::Push);
    armed(&reloader).await;
    db.set(5);
    // Every key is evictable, and the server is full: filling it evicts
    // the generation sooner or later.
    redis.raw::<()>(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg("allkeys-random"),
    );
    let used: String = redis.raw(redis::cmd("INFO").arg("memory"));
    let used: u64 = used
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    redis.raw::<()>(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(used + 512 * 1024),
    );
    let filler = "x".repeat(16 * 1024);
    for i in 0.. {
        let exists: bool = redis.raw(redis::cmd("EXISTS").arg(key().as_str()));
        if !exists {
            break;
        }
        assert!(i < 100_000, "the generation was never evicted");
        redis.raw::<()>(redis::cmd("SET").arg(format!("filler:{i}")).arg(&filler));
    }
    redis.raw::<()>(redis::cmd("CONFIG").arg("SET").arg("maxmemory").arg(0));
    heard(&reloader, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_falls_back_to_strict_then_arms_again() {
    let redis = Redis::new();
    let db = Db::default();
    let reloader = reloader(&redis, &db, CheckMode::Push);
    armed(&reloader).await;
    let clients: String = redis.raw(redis::cmd("CLIENT").arg("LIST"));
    let tracking: Vec<&str> = clients
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .collect();
    assert_eq!(tracking.len(), 1, "one tracking connection: {clients}");
    redis.raw::<i64>(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(tracking[0]));
    // Changed with no push to tell it (the connection is gone).
    db.set(7);
    writer(&redis).mark_updated().await.unwrap();
    let done = Instant::now();
    tokio::time::sleep_until(done + BOUND).await;
    assert_eq!(
        *reloader.check().await,
        7,
        "strict within the heartbeat bound"
    );
    // And tracking comes back.
    armed(&reloader).await;
    db.set(8);
    writer(&redis).mark_updated().await.unwrap();
    heard(&reloader, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_redis_falls_back_to_strict_then_arms_again() {
    let mut redis = Redis::new();
    let db = Db::default();
    let reloader = reloader(&redis, &db, CheckMode::Push);
    armed(&reloader).await;
    db.set(3);
    redis.server.restart().unwrap();
    // The restarted server holds no generation: every process reloads.
    heard(&reloader, 3).await;
    armed(&reloader).await;
    db.set(4);
    writer(&redis).mark_updated().await.unwrap();
    heard(&reloader, 4).await;
}

/// A paused server misses its heartbeats: the session ends, checks read
/// for themselves, and tracking arms again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_redis_falls_back_to_strict_then_arms_again() {
    let redis = Redis::new();
    let db = Db::default();
    let reloader = reloader(&redis, &db, CheckMode::Push);
    armed(&reloader).await;
    redis.server.pause().unwrap();
    let paused = Instant::now();
    tokio::time::sleep_until(paused + BOUND).await;
    assert_eq!(
        answered_at_once(&reloader),
        None,
        "a check after the bound waits on a read, not on a vouch nobody renewed"
    );
    redis.server.resume().unwrap();
    armed(&reloader).await;
}

/// The heartbeat bound alone ends what push mode vouches for: with the
/// tracking task stalled (its runtime held), no timeout of its connection
/// fires and no push is heard, yet a check that begins a bound after the
/// stall reads for itself and sees a change made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tracking_task_is_never_vouched_for_past_the_heartbeat_bound() {
    let redis = Redis::new();
    let db = Db::default();
    let backend = RedisBackend::with_config(&redis.server.url(), config()).unwrap();
    // The reads' connection is made here, so it goes on answering while
    // the tracking runtime is held.
    backend.ping().await.unwrap();
    let reloader = reloader_on(backend, &db, CheckMode::Push);
    let tracking = Stallable::new();
    // The first push check starts tracking on the runtime it runs on.
    let first = reloader.clone();
    tracking
        .handle()
        .spawn(async move {
            first.check().await;
        })
        .await
        .unwrap();
    armed(&reloader).await;
    assert_eq!(answered_at_once(&reloader), Some(0));

    let stall = tracking.stall().await;
    let stalled = Instant::now();
    db.set(1);
    writer(&redis).mark_updated().await.unwrap();
    // What is asserted is the bound itself: no event marks it.
    tokio::time::sleep_until(stalled + BOUND).await;
    assert_eq!(
        *reloader.check().await,
        1,
        "a check a bound after the last heartbeat read for itself"
    );
    drop(stall);
    // Let go, tracking goes on and vouches again.
    db.set(2);
    writer(&redis).mark_updated().await.unwrap();
    heard(&reloader, 2).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_that_will_not_track_runs_strict_and_says_so_once() {
    let redis = Redis::from_server(
        gensync::testing::RedisServer::start_with_args(["--rename-command", "CLIENT", ""]).unwrap(),
    );
    let logs = LogCapture::default();
    let _guard = logs.install();
    let db = Db::default();
    let reloader = reloader(&redis, &db, CheckMode::Push);
    let tracker = reloader.synchronizer().track().unwrap();
    for v in 1..=5 {
        db.set(v);
        writer(&redis).mark_updated().await.unwrap();
        // Strict: fresh at once, whatever tracking does.
        assert_eq!(*reloader.check().await, v);
        // Yields to the tracking task until it has given up.
        let changed = tracker.changed();
        let _ = timeout(HEARTBEAT, changed).await;
    }
    assert!(!tracker.is_armed());
    assert_eq!(
        logs.lines_with("will not track").len(),
        1,
        "{}",
        logs.text()
    );
}

/// A Redis down from the start never had a tracking connection to lose:
/// the log says tracking could not be armed, not that it was lost.
#[tokio::test(flavor = "current_thread")]
async fn a_redis_down_from_the_start_is_not_a_lost_tracking_connection() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let logs = LogCapture::default();
    let _guard = logs.install();
    let backend =
        RedisBackend::with_config(&format!("redis://127.0.0.1:{port}"), config()).unwrap();
    let reloader = reloader_on(backend, &Db::default(), CheckMode::Push);
    reloader.check().await;
    // Runs the tracking task (on this thread) until it has said something.
    let said = timeout(PATIENCE, async {
        while logs.lines_with("push mode").is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(said.is_ok(), "{}", logs.text());
    assert!(logs.lines_with("lost").is_empty(), "{}", logs.text());
    assert_eq!(
        logs.lines_with("could not arm tracking").len(),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_mode_reads_at_most_once_per_interval_and_catches_up_after_it() {
    let redis = Redis::new();
    let db = Db::default();
    let every = Duration::from_millis(300);
    let reloader = reloader(&redis, &db, CheckMode::Interval(every));
    reloader.check().await;
    reloader.check().await;
    let before = calls(&redis, "getrange");
    let began = Instant::now();
    let mut checks = 0;
    while began.elapsed() < every / 2 {
        reloader.check().await;
        checks += 1;
    }
    assert!(checks > 10);
    assert!(
        calls(&redis, "getrange") - before <= 1,
        "{checks} checks within one interval read more than once"
    );
    db.set(9);
    writer(&redis).mark_updated().await.unwrap();
    let done = Instant::now();
    tokio::time::sleep_until(done + every).await;
    assert_eq!(*reloader.check().await, 9, "fresh once an interval passed");
}

/// Runs `f` on a thread of its own, failing if it takes past the
/// patience: blocking code has no timeout of its own to wait with.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what} within the patience"))
}

#[test]
fn a_blocking_reloader_in_push_mode_follows_pushed_changes() {
    use gensync::reload::BlockingReloader;
    use gensync::{BlockingRedisBackend, BlockingSynchronizer};

    let redis = Redis::new();
    let db = Db::default();
    db.set(1);
    let source = db.clone();
    let backend = BlockingRedisBackend::with_config(&redis.server.url(), config()).unwrap();
    let builder = Reloader::builder(Synchronizer::new(backend, key()), move || {
        let v = source.0.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .mode(CheckMode::Push);
    let reloader = Arc::new(BlockingReloader::new(builder, 0).unwrap());
    assert_eq!(*reloader.check(), 1);
    let tracker = reloader
        .reloader()
        .synchronizer()
        .track()
        .expect("started by the check, on the reloader's runtime");
    let watching = Arc::clone(&reloader);
    within("tracking armed", move || loop {
        let changed = tracker.changed();
        let mut changed = pin!(changed);
        changed.as_mut().enable();
        if watching.reloader().synchronizer().vouched().is_some() {
            return;
        }
        futures_executor::block_on(changed);
    });
    db.set(2);
    let writer = BlockingRedisBackend::with_config(&redis.server.url(), config()).unwrap();
    BlockingSynchronizer::new(writer, key())
        .mark_updated()
        .unwrap();
    let mut settings = reloader.reloader().subscribe();
    within("the bump pushed", move || {
        futures_executor::block_on(settings.wait_for(|s| **s == 2)).map(drop)
    })
    .unwrap();
    assert_eq!(*reloader.check(), 2);
}

/// Spread loads over Redis: a bump another process makes is heard within
/// push's bound and answered at once, labelled deferred, until this
/// instance's due time; it is loaded by the end of the window, request or
/// not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_push_reloader_answers_a_bump_deferred_and_loads_it_within_the_window() {
    const WINDOW: Duration = Duration::from_secs(2);
    let redis = Redis::new();
    let db = Db::default();
    let backend = RedisBackend::with_config(&redis.server.url(), config()).unwrap();
    let source = db.clone();
    let reloader = Reloader::builder(Synchronizer::new(backend, key()), move || {
        let v = source.0.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .mode(CheckMode::Push)
    .spread_loads(WINDOW)
    .build(0)
    .unwrap();
    armed(&reloader).await;

    db.set(7);
    let bumped = Instant::now();
    writer(&redis).mark_updated().await.unwrap();
    tokio::time::sleep(BOUND).await;
    let answer = reloader.answer().await;
    let due = reloader.current().deferred_until();
    match answer.freshness {
        Freshness::Deferred => {
            assert_eq!(*answer.snapshot, 0, "the settings in service");
            let due = answer
                .snapshot
                .deferred_until()
                .expect("the snapshot says so");
            assert!(
                due > Instant::now().into_std(),
                "deferred past its due time"
            );
            assert!(due < (bumped + BOUND + WINDOW).into_std());
        }
        // This instance drew a delay shorter than push's bound.
        fresh => {
            assert!(fresh.is_current(), "{fresh:?}");
            assert_eq!(*answer.snapshot, 7);
            assert_eq!(due, None);
        }
    }
    heard(&reloader, 7).await;
    assert!(
        bumped.elapsed() < WINDOW + BOUND + Duration::from_millis(500),
        "loaded {:?} after the bump",
        bumped.elapsed()
    );
    let answer = reloader.answer().await;
    assert!(answer.freshness.is_current(), "{:?}", answer.freshness);
    assert_eq!(*answer.snapshot, 7);
}
