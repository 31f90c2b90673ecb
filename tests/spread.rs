//! Spread loads (`ReloaderBuilder::spread_loads`): a change heard by a
//! fleet at once is loaded within each instance's window, not all at once;
//! meanwhile checks answer at once and say the answer is deferred. On the
//! in-memory backend, which pushes, with tokio's paused clock.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::reload::{CheckMode, Freshness, Reloader};
use gensync::{GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(10);

fn key() -> Key {
    Key::new(["spread", "settings"]).unwrap()
}

/// The source every instance loads from: a number, and when each load ran.
#[derive(Clone, Default)]
struct Source {
    value: Arc<AtomicU64>,
    loads: Arc<Mutex<Vec<Instant>>>,
}

impl Source {
    fn at(value: u64) -> Self {
        let source = Source::default();
        source.value.store(value, SeqCst);
        source
    }

    fn loads(&self) -> Vec<Instant> {
        self.loads.lock().unwrap().clone()
    }

    /// An instance of the fleet: its own synchronizer over the shared
    /// backend, loading from this source.
    fn instance(
        &self,
        backend: &MemoryBackend,
        mode: CheckMode,
        spread: Duration,
    ) -> gensync::reload::ReloaderBuilder<u64, Synchronizer<MemoryBackend>> {
        let source = self.clone();
        Reloader::builder(Synchronizer::new(backend.clone(), key()), move || {
            let source = source.clone();
            async move {
                source.loads.lock().unwrap().push(Instant::now());
                Ok::<_, Infallible>(source.value.load(SeqCst))
            }
        })
        .mode(mode)
        .spread_loads(spread)
    }
}

/// `n` push-mode instances with spread `spread`, each loaded once and
/// vouched for by push tracking.
async fn fleet(
    source: &Source,
    backend: &MemoryBackend,
    n: usize,
    spread: Duration,
) -> Vec<Reloader<u64>> {
    let mut fleet = Vec::new();
    for _ in 0..n {
        let reloader = source
            .instance(backend, CheckMode::Push, spread)
            .build(0)
            .unwrap();
        assert_eq!(*reloader.check().await, 1, "the first load is not deferred");
        fleet.push(reloader);
    }
    // Push tracking armed: a check costs no read.
    for reloader in &fleet {
        let answer = reloader.answer().await;
        assert_eq!(answer.freshness, Freshness::Vouched);
        assert_eq!(answer.snapshot.deferred_until(), None);
    }
    fleet
}

#[tokio::test(start_paused = true)]
async fn a_fleet_loads_a_change_spread_within_the_window_answering_deferred_meanwhile() {
    const N: usize = 40;
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let fleet = fleet(&source, &backend, N, WINDOW).await;
    assert_eq!(source.loads().len(), N);

    source.value.store(2, SeqCst);
    let bumped = Instant::now();
    Synchronizer::new(backend.clone(), key())
        .mark_updated()
        .await
        .unwrap();

    // Every instance heard of it, and answers at once, without loading:
    // the old settings, labelled deferred, due within the window.
    let mut dues = Vec::new();
    for reloader in &fleet {
        let answer = reloader.answer().await;
        assert_eq!(answer.freshness, Freshness::Deferred);
        assert!(!answer.freshness.is_current());
        assert_eq!(*answer.snapshot, 1);
        let due = answer
            .snapshot
            .deferred_until()
            .expect("the snapshot says it is deferred");
        assert!(
            due >= bumped.into_std() && due < (bumped + WINDOW).into_std(),
            "due {:?} after the bump",
            due - bumped.into_std()
        );
        assert_eq!(reloader.current().deferred_until(), Some(due));
        dues.push(due);
    }
    assert_eq!(Instant::now(), bumped, "no answer waited");
    assert_eq!(source.loads().len(), N, "no instance loaded at once");
    assert!(fleet.iter().all(|r| r.metrics().deferred_served >= 1));

    // The delays are drawn per instance: spread across the window.
    dues.sort_unstable();
    dues.dedup();
    assert!(
        dues.len() > N / 2,
        "{} distinct delays among {N}",
        dues.len()
    );
    let (first, last) = (dues[0], dues[dues.len() - 1]);
    assert!(
        last - first > WINDOW / 2,
        "delays span only {:?}",
        last - first
    );

    // By the end of the window every instance loaded, none before its due
    // time and none after the window, and each answers current again.
    tokio::time::sleep(WINDOW).await;
    let loads = &source.loads()[N..];
    assert_eq!(loads.len(), N, "one load per instance");
    for at in loads {
        assert!(
            *at >= bumped && *at < bumped + WINDOW,
            "a load {:?} after the bump",
            *at - bumped
        );
    }
    for reloader in &fleet {
        let answer = reloader.answer().await;
        assert!(answer.freshness.is_current(), "{:?}", answer.freshness);
        assert_eq!(*answer.snapshot, 2);
        assert_eq!(answer.snapshot.deferred_until(), None);
    }
}

#[tokio::test(start_paused = true)]
async fn changes_heard_within_the_window_join_its_one_load() {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let reloader = &fleet(&source, &backend, 1, WINDOW).await[0];
    let writer = Synchronizer::new(backend.clone(), key());

    source.value.store(2, SeqCst);
    writer.mark_updated().await.unwrap();
    let due = reloader.answer().await.snapshot.deferred_until().unwrap();
    source.value.store(3, SeqCst);
    writer.mark_updated().await.unwrap();
    let answer = reloader.answer().await;
    assert_eq!(answer.freshness, Freshness::Deferred);
    assert_eq!(
        answer.snapshot.deferred_until(),
        Some(due),
        "the same window"
    );

    tokio::time::sleep(WINDOW).await;
    assert_eq!(source.loads().len(), 2, "one load for both changes");
    assert_eq!(*reloader.check().await, 3);
}

#[tokio::test(start_paused = true)]
async fn without_spread_push_mode_loads_a_change_at_once() {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let reloader = &fleet(&source, &backend, 1, Duration::ZERO).await[0];

    source.value.store(2, SeqCst);
    let bumped = Instant::now();
    Synchronizer::new(backend.clone(), key())
        .mark_updated()
        .await
        .unwrap();
    let answer = reloader.answer().await;
    assert!(answer.freshness.is_current(), "{:?}", answer.freshness);
    assert_eq!(*answer.snapshot, 2);
    assert_eq!(answer.snapshot.deferred_until(), None);
    assert_eq!(source.loads()[1], bumped, "loaded at once");
    assert_eq!(reloader.metrics().deferred_served, 0);
}

#[tokio::test(start_paused = true)]
async fn a_writer_reads_its_own_write_at_once() {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let saved = source.value.clone();
    let writer = source
        .instance(&backend, CheckMode::Push, WINDOW)
        .saver(move |v: &u64| {
            saved.store(*v, SeqCst);
            async { Ok::<_, Infallible>(()) }
        })
        .build(0)
        .unwrap();
    let other = &fleet(&source, &backend, 1, WINDOW).await[0];
    assert_eq!(*writer.check().await, 1);

    writer.publish(2).await.unwrap();
    let answer = writer.answer().await;
    assert!(answer.freshness.is_current(), "{:?}", answer.freshness);
    assert_eq!(*answer.snapshot, 2, "the writer reads its own write");
    // Another instance spreads it.
    assert_eq!(other.answer().await.freshness, Freshness::Deferred);

    // The writer's next change, another's, is spread again.
    source.value.store(3, SeqCst);
    Synchronizer::new(backend.clone(), key())
        .mark_updated()
        .await
        .unwrap();
    assert_eq!(writer.answer().await.freshness, Freshness::Deferred);
}

#[tokio::test(start_paused = true)]
async fn interval_mode_spreads_too_and_loads_by_the_window_without_a_request() {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let every = Duration::from_millis(100);
    let reloader = source
        .instance(&backend, CheckMode::Interval(every), WINDOW)
        .build(0)
        .unwrap();
    assert_eq!(*reloader.check().await, 1);

    source.value.store(2, SeqCst);
    let bumped = Instant::now();
    Synchronizer::new(backend.clone(), key())
        .mark_updated()
        .await
        .unwrap();
    tokio::time::sleep(every).await;
    let answer = reloader.answer().await;
    assert_eq!(answer.freshness, Freshness::Deferred);
    assert_eq!(*answer.snapshot, 1);

    // No request until the window ends: the load still ran within it.
    tokio::time::sleep(WINDOW).await;
    let loads = source.loads();
    assert_eq!(loads.len(), 2);
    assert!(
        loads[1] < bumped + every + WINDOW,
        "{:?}",
        loads[1] - bumped
    );
    assert_eq!(*reloader.current(), 2);
}

#[test]
fn strict_mode_refuses_spread_loads_naming_the_fix() {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let refused = source
        .instance(&backend, CheckMode::Strict, WINDOW)
        .build(0)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("spread_loads"), "{refused}");
    assert!(refused.contains("CheckMode::Push"), "{refused}");
    // Zero is off, which strict mode takes.
    assert!(source
        .instance(&backend, CheckMode::Strict, Duration::ZERO)
        .build(0)
        .is_ok());
}

/// The source's peak of loads running at once when a change reaches a
/// fleet of `n` push-mode instances, each load taking 50 ms.
async fn peak_concurrent_loads(n: usize, spread: Duration) -> (usize, Duration) {
    let running = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let value = Arc::new(AtomicU64::new(1));
    let loads = Arc::new(AtomicU64::new(0));
    let backend = MemoryBackend::new();
    let mut fleet = Vec::new();
    for _ in 0..n {
        let (running, peak, value, loads) =
            (running.clone(), peak.clone(), value.clone(), loads.clone());
        let reloader = Reloader::builder(Synchronizer::new(backend.clone(), key()), move || {
            let (running, peak, value, loads) =
                (running.clone(), peak.clone(), value.clone(), loads.clone());
            async move {
                let now = running.fetch_add(1, SeqCst) + 1;
                peak.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                running.fetch_sub(1, SeqCst);
                loads.fetch_add(1, SeqCst);
                Ok::<_, Infallible>(value.load(SeqCst))
            }
        })
        .mode(CheckMode::Push)
        .spread_loads(spread)
        .build(0)
        .unwrap();
        assert_eq!(*reloader.check().await, 1);
        fleet.push(reloader);
    }
    peak.store(0, SeqCst);
    value.store(2, SeqCst);
    let bumped = Instant::now();
    Synchronizer::new(backend.clone(), key())
        .mark_updated()
        .await
        .unwrap();
    // Every instance hears of it through push and loads, request or not.
    while loads.load(SeqCst) < 2 * n as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = Instant::now() - bumped;
    for reloader in &fleet {
        assert_eq!(*reloader.current(), 2);
    }
    (peak.load(SeqCst) as usize, took)
}

#[tokio::test(start_paused = true)]
async fn spread_loads_keep_a_thousand_instances_off_the_source_at_once() {
    const N: usize = 1000;
    let (herd, at_once) = peak_concurrent_loads(N, Duration::ZERO).await;
    assert_eq!(herd, N, "without spread every instance loads at once");
    assert!(at_once < Duration::from_millis(100), "{at_once:?}");
    // Over 10 s, 100 loads start per second, 5 run at once on average.
    let (spread, over) = peak_concurrent_loads(N, WINDOW).await;
    println!("peak concurrent loads for {N} instances: {herd} at once, {spread} spread over {WINDOW:?} (all loaded in {over:?})");
    assert!(spread <= 25, "{spread} loads at once with spread");
    assert!(over < WINDOW + Duration::from_millis(100), "{over:?}");
}
