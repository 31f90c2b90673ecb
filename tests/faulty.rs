//! `FaultyBackend`: each fault does what it says, alone and combined, over
//! the memory backend and a real redis-server, from another task, under
//! the blocking synchronizer; and the exported synchronizer mock drives a
//! `Reloader`.

#[macro_use]
mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use gensync::backend::BackendErrorKind;
use gensync::backend::{Backend, BlockingBackend, Stored};
use gensync::reload::Reloader;
use gensync::synchronizer::{Check, Observed};
use gensync::testing::{FaultCounts, Faults, FaultyBackend, MockGenerationSynchronizer};
use gensync::{
    BackendError, BlockingRedisBackend, BlockingSynchronizer, Error, Generation,
    GenerationSynchronizer, Key, Synchronizer,
};
use support::Store;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

fn key() -> Key {
    Key::new(["faulty", "settings"]).unwrap()
}

const TTL: Duration = Duration::from_secs(60);

/// A faulty wrapper over a new handle on the store, and its fault handle.
fn faulty<S: Store>(store: &S) -> (FaultyBackend<S::Backend>, Faults) {
    let backend = FaultyBackend::new(store.process());
    let faults = backend.faults();
    (backend, faults)
}

/// Every call of the `Backend` trait, so a fault is shown to apply to each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Add,
    Incr,
    Delete,
    Lock,
    Renew,
    Unlock,
    Intend,
}

const OPS: [Op; 8] = [
    Op::Get,
    Op::Add,
    Op::Incr,
    Op::Delete,
    Op::Lock,
    Op::Renew,
    Op::Unlock,
    Op::Intend,
];

/// What a call answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Stored(Stored),
    Done(bool),
    Unit,
}

/// Makes one call on the test key; `g` is what `Add` stores and the
/// writer's token of the lease calls.
async fn call<B: Backend>(backend: &B, op: Op, g: Generation) -> Result<Reply, BackendError> {
    let key = key();
    Ok(match op {
        Op::Get => Reply::Stored(backend.get(&key).await?),
        Op::Add => Reply::Done(backend.add(&key, g, TTL).await?),
        Op::Incr => Reply::Stored(backend.incr(&key, 1, TTL, None).await?),
        Op::Delete => {
            backend.delete(&key).await?;
            Reply::Unit
        }
        Op::Lock => Reply::Done(backend.lock(&key, g, TTL).await?.is_some()),
        Op::Renew => Reply::Done(backend.renew(&key, g, TTL, TTL).await?),
        Op::Unlock => Reply::Done(backend.unlock(&key, g).await?),
        Op::Intend => {
            backend.intend(&key, g, TTL, TTL).await?;
            Reply::Unit
        }
    })
}

/// Puts `g` at the test key in the wrapped backend, behind the faults.
async fn seed<B: Backend>(backend: &FaultyBackend<B>, g: Generation) {
    let inner = backend.inner();
    inner.delete(&key()).await.unwrap();
    assert!(inner.add(&key(), g, TTL).await.unwrap());
}

/// What the wrapped backend holds at the test key, as a synchronizer shows
/// it (mixed with the server's identity), and so as a bump returns it.
async fn shown<B: Backend + Clone>(backend: &FaultyBackend<B>) -> Stored {
    Synchronizer::new(backend.inner().clone(), key())
        .read()
        .await
        .unwrap()
}

/// What the wrapped backend holds at the test key.
async fn stored<B: Backend>(backend: &FaultyBackend<B>) -> Stored {
    backend.inner().get(&key()).await.unwrap()
}

/// `FaultCounts` with named fields a test can build: the real one is
/// non-exhaustive, so it cannot be written out here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    calls: u64,
    failed: u64,
    delayed: u64,
    hung: u64,
    corrupted: u64,
    evicted: u64,
    injected: u64,
}

impl From<FaultCounts> for Tally {
    fn from(c: FaultCounts) -> Self {
        Tally {
            calls: c.calls,
            failed: c.failed,
            delayed: c.delayed,
            hung: c.hung,
            corrupted: c.corrupted,
            evicted: c.evicted,
            injected: c.injected(),
        }
    }
}

impl Tally {
    fn of(faults: &Faults) -> Self {
        faults.counts().into()
    }

    /// What was counted since `before`.
    fn since(self, before: Tally) -> Tally {
        Tally {
            calls: self.calls - before.calls,
            failed: self.failed - before.failed,
            delayed: self.delayed - before.delayed,
            hung: self.hung - before.hung,
            corrupted: self.corrupted - before.corrupted,
            evicted: self.evicted - before.evicted,
            injected: self.injected - before.injected,
        }
    }
}

// ---------------------------------------------------------------------
// Scenarios run on the memory backend and on a real redis-server.
// ---------------------------------------------------------------------

async fn fail_next_fails_exactly_n_calls_then_passes(store: impl Store) {
    for n in [0u64, 1, 2, 7] {
        let (backend, faults) = faulty(&store);
        faults.fail_next(n);
        let total = n as usize + 3;
        let mut failed = Vec::new();
        for op in OPS.iter().cycle().take(total) {
            failed.push(call(&backend, *op, Generation::fresh()).await.is_err());
        }
        let expected: Vec<bool> = (0..total).map(|i| i < n as usize).collect();
        assert_eq!(failed, expected, "fail_next({n})");
        assert_eq!(
            Tally::of(&faults),
            Tally {
                calls: total as u64,
                failed: n,
                injected: n,
                ..Tally::default()
            },
            "fail_next({n})"
        );
    }

    // Pending failures add up, and a reader sees them as expired checks.
    let (backend, faults) = faulty(&store);
    let sync = Synchronizer::new(backend, key());
    sync.refresh().await.unwrap();
    faults.fail_next(1);
    faults.fail_next(2);
    let mut expired = Vec::new();
    for _ in 0..5 {
        expired.push(sync.check().await.shared == Observed::Unavailable);
    }
    assert_eq!(expired, [true, true, true, false, false]);
    assert!(!sync.is_expired().await);
}

/// How a test starts failing every call, and how it stops.
type Setter = fn(&Faults);

async fn failing_lasts_until_stop_failing_or_heal(store: impl Store) {
    let starts: [(&str, Setter); 3] = [
        ("fail_all", Faults::fail_all),
        ("fail_next(1000)", |f| f.fail_next(1000)),
        ("fail_fraction(1.0)", |f| f.fail_fraction(1.0, 9)),
    ];
    // stop_failing leaves the other faults on; heal clears them too.
    let ends: [(&str, Setter, bool); 2] = [
        ("stop_failing", Faults::stop_failing, true),
        ("heal", Faults::heal, false),
    ];
    for (start_name, start) in starts {
        for (end_name, end, corrupt_stays) in ends {
            let case = format!("{start_name} then {end_name}");
            let (backend, faults) = faulty(&store);
            let sync = Synchronizer::new(backend, key());
            let g = sync.refresh().await.unwrap();
            faults.corrupt(true);
            start(&faults);
            for _ in 0..10 {
                assert_eq!(sync.check().await.shared, Observed::Unavailable, "{case}");
            }
            assert!(
                sync.mark_updated().await.is_err(),
                "{case}: a writer is told"
            );
            assert_eq!(faults.counts().failed, 11, "{case}");

            end(&faults);
            let expected = if corrupt_stays {
                Observed::Corrupt
            } else {
                Observed::Value(g)
            };
            for _ in 0..3 {
                assert_eq!(sync.check().await.shared, expected, "{case}");
            }
            assert_eq!(faults.counts().failed, 11, "{case}: no failure after");
        }
    }
}

async fn fail_with_sets_the_error_returned(store: impl Store) {
    let (backend, faults) = faulty(&store);
    let sync = Synchronizer::new(backend.clone(), key());
    sync.refresh().await.unwrap();

    faults.fail_next(1);
    match backend.get(&key()).await {
        Err(e) if e.kind() == BackendErrorKind::Unreachable => {
            assert_eq!(e.target(), "fault injection")
        }
        other => panic!("by default an injected failure is Unreachable, not {other:?}"),
    }

    let target = || "cache-7:6379".to_owned();
    let errors = [
        BackendError::timeout(target(), Duration::from_millis(250)),
        BackendError::new(BackendErrorKind::Auth, target(), "WRONGPASS"),
        BackendError::new(
            BackendErrorKind::Server,
            target(),
            "OOM command not allowed",
        ),
        BackendError::pool_exhausted(target(), Duration::from_secs(1)),
    ];
    for error in errors {
        faults.fail_with(error.clone());
        faults.fail_next(2);
        assert_eq!(backend.get(&key()).await, Err(error.clone()));
        assert_eq!(
            sync.mark_updated().await,
            Err(Error::Backend(error.clone()))
        );
        assert!(backend.get(&key()).await.is_ok(), "{error}: then it passes");
    }
}

async fn corrupt_reads_expired_and_mark_updated_repairs_it(store: impl Store) {
    let (backend, faults) = faulty(&store);
    let reader = Synchronizer::new(backend.clone(), key());
    let writer = Synchronizer::new(backend.clone(), key());
    let g = reader.refresh().await.unwrap();

    faults.corrupt(true);
    let check = reader.check().await;
    assert_eq!(check.shared, Observed::Corrupt);
    assert!(check.is_expired());
    assert_eq!(
        shown(&backend).await,
        Stored::Value(g),
        "the faults only lie"
    );

    let repaired = writer.mark_updated().await.unwrap();
    assert_ne!(repaired, g);
    assert_ne!(
        repaired.get(),
        g.get() + 1,
        "a fresh value, not an increment"
    );
    assert_eq!(shown(&backend).await, Stored::Value(repaired));
    assert_eq!(
        reader.check().await.shared,
        Observed::Corrupt,
        "reads still answer corrupt while the fault is on"
    );

    faults.corrupt(false);
    assert_eq!(reader.check().await.observed(), Some(repaired));
    reader.record(repaired);
    assert!(!reader.is_expired().await);
    // The check, the increment and the second check.
    assert_eq!(faults.counts().corrupted, 3);
}

async fn missing_evicts_the_key_before_every_call(store: impl Store) {
    let (backend, faults) = faulty(&store);
    let reader = Synchronizer::new(backend.clone(), key());
    let writer = Synchronizer::new(backend.clone(), key());
    let g = reader.refresh().await.unwrap();

    faults.missing(true);
    let check = reader.check().await;
    assert_eq!(check.shared, Observed::Missing);
    assert!(check.is_expired());
    assert_eq!(faults.counts().evicted, 1);
    // The increment finds no key; the repair re-creates it with a fresh
    // value, and the writer is told it worked.
    let bumped = writer.mark_updated().await.unwrap();
    assert_ne!(bumped, g);
    assert_eq!(faults.counts().evicted, 3);
    assert_eq!(shown(&backend).await, Stored::Value(bumped));
    // Evicted again before the next read.
    assert_eq!(reader.check().await.shared, Observed::Missing);
    assert_eq!(shown(&backend).await, Stored::Missing);

    faults.missing(false);
    let g2 = writer.mark_updated().await.unwrap();
    assert_eq!(reader.check().await.observed(), Some(g2));
    assert!(reader.is_expired().await, "the reader still holds {g}");
    assert_eq!(faults.counts().corrupted, 0);
}

async fn evict_next_removes_the_key_from_the_inner_backend(store: impl Store) {
    // What each call answers when its key was evicted just before it.
    let on_evicted = [
        (Op::Get, Reply::Stored(Stored::Missing)),
        (Op::Add, Reply::Done(true)),
        (Op::Incr, Reply::Stored(Stored::Missing)),
        (Op::Delete, Reply::Unit),
        // The lease lives beside the key: no eviction of the key stops it.
        (Op::Lock, Reply::Done(true)),
        (Op::Renew, Reply::Done(false)),
        (Op::Unlock, Reply::Done(false)),
        (Op::Intend, Reply::Unit),
    ];
    for (op, expected) in on_evicted {
        let (backend, faults) = faulty(&store);
        let g = Generation::fresh();
        seed(&backend, g).await;
        faults.evict_next();
        assert_eq!(stored(&backend).await, Stored::Value(g), "{op:?}: not yet");
        let reply = call(&backend, op, g).await.unwrap();
        assert_eq!(reply, expected, "{op:?} ran on the evicted key");
        let after = if op == Op::Add {
            Stored::Value(g)
        } else {
            Stored::Missing
        };
        assert_eq!(stored(&backend).await, after, "{op:?}");

        // Only the next call: a key stored again stays.
        let again = Generation::fresh();
        seed(&backend, again).await;
        assert_eq!(
            call(&backend, Op::Get, g).await,
            Ok(Reply::Stored(Stored::Value(again)))
        );
        assert_eq!(
            Tally::of(&faults),
            Tally {
                calls: 2,
                evicted: 1,
                injected: 1,
                ..Tally::default()
            },
            "{op:?}"
        );
    }
}

async fn an_eviction_waits_for_a_call_that_reaches_the_backend(store: impl Store) {
    let (backend, faults) = faulty(&store);
    let g = Generation::fresh();
    seed(&backend, g).await;
    faults.fail_next(1);
    faults.evict_next();
    assert!(call(&backend, Op::Get, g).await.is_err());
    assert_eq!(
        stored(&backend).await,
        Stored::Value(g),
        "a failed call reaches no server"
    );
    assert_eq!(
        call(&backend, Op::Get, g).await,
        Ok(Reply::Stored(Stored::Missing)),
        "the eviction is not lost: the next call that runs meets it"
    );
    assert_eq!(stored(&backend).await, Stored::Missing);
    let counts = faults.counts();
    assert_eq!((counts.failed, counts.evicted), (1, 1));
}

async fn faults_set_from_another_task_take_effect(store: impl Store) {
    let (backend, faults) = faulty(&store);
    let sync = Arc::new(Synchronizer::new(backend, key()));
    let g = sync.refresh().await.unwrap();

    // The checker tags each check with the phase it read before checking:
    // a phase is announced only after its faults are set, so every check
    // tagged with it must see them.
    let (phase_tx, phase_rx) = watch::channel(0usize);
    let (seen_tx, mut seen_rx) = mpsc::channel::<(usize, Observed)>(4);
    let checker = tokio::spawn({
        let sync = Arc::clone(&sync);
        async move {
            loop {
                let phase = *phase_rx.borrow();
                let observed = sync.check().await.shared;
                if seen_tx.send((phase, observed)).await.is_err() {
                    return;
                }
            }
        }
    });

    let phases: [(Setter, Observed); 6] = [
        (|_| {}, Observed::Value(g)),
        (Faults::fail_all, Observed::Unavailable),
        (Faults::heal, Observed::Value(g)),
        (|f| f.corrupt(true), Observed::Corrupt),
        (|f| f.missing(true), Observed::Corrupt),
        (|f| f.corrupt(false), Observed::Missing),
    ];
    for (phase, (set, expected)) in phases.into_iter().enumerate() {
        set(&faults);
        phase_tx.send_replace(phase);
        let mut seen = 0;
        while seen < 3 {
            let (tag, observed) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                .await
                .expect("the checker stalled")
                .expect("the checker stopped");
            if tag == phase {
                assert_eq!(observed, expected, "phase {phase}");
                seen += 1;
            }
        }
    }
    drop(seen_rx);
    checker.await.expect("the checker panicked");
}

// Timed: on the memory backend under tokio's paused clock, on Redis in
// real time (the durations are short).

async fn latency_adds_at_least_the_latency(store: impl Store) {
    let (backend, faults) = faulty(&store);
    let latencies = [0, 5, 40].map(Duration::from_millis);
    for latency in latencies {
        faults.latency(latency);
        for op in OPS {
            let start = Instant::now();
            call(&backend, op, Generation::fresh()).await.unwrap();
            let elapsed = start.elapsed();
            assert!(elapsed >= latency, "{op:?}: {elapsed:?} < {latency:?}");
        }
    }
    assert_eq!(
        Tally::of(&faults),
        Tally {
            calls: 3 * OPS.len() as u64,
            delayed: 2 * OPS.len() as u64,
            injected: 2 * OPS.len() as u64,
            ..Tally::default()
        }
    );

    // Latency comes first, then the failure.
    let latency = Duration::from_millis(40);
    faults.fail_next(1);
    let start = Instant::now();
    assert!(call(&backend, Op::Get, Generation::fresh()).await.is_err());
    assert!(start.elapsed() >= latency);
    let counts = faults.counts();
    assert_eq!(
        (counts.delayed, counts.failed),
        (2 * OPS.len() as u64 + 1, 1)
    );
}

async fn hang_ends_in_a_timeout_after_t(store: impl Store) {
    let (backend, faults) = faulty(&store);
    let t = Duration::from_millis(60);
    faults.hang(t);
    let timeout = BackendError::timeout("fault injection", t);
    for op in OPS {
        let start = Instant::now();
        let reply = call(&backend, op, Generation::fresh()).await;
        let elapsed = start.elapsed();
        assert_eq!(reply, Err(timeout.clone()), "{op:?}");
        assert!(elapsed >= t, "{op:?}: {elapsed:?} < {t:?}");
    }
    assert_eq!(stored(&backend).await, Stored::Missing, "nothing was added");

    let sync = Synchronizer::new(backend.clone(), key());
    assert_eq!(sync.check().await.shared, Observed::Unavailable);
    assert_eq!(sync.mark_updated().await, Err(Error::Backend(timeout)));
    assert_eq!(
        Tally::of(&faults),
        Tally {
            calls: OPS.len() as u64 + 2,
            hung: OPS.len() as u64 + 2,
            injected: OPS.len() as u64 + 2,
            ..Tally::default()
        }
    );

    faults.heal();
    sync.refresh().await.unwrap();
    assert!(!sync.is_expired().await);
    assert_eq!(faults.counts().hung, OPS.len() as u64 + 2);
}

on_every_store!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    memory, redis:
    fail_next_fails_exactly_n_calls_then_passes,
    failing_lasts_until_stop_failing_or_heal,
    fail_with_sets_the_error_returned,
    corrupt_reads_expired_and_mark_updated_repairs_it,
    missing_evicts_the_key_before_every_call,
    evict_next_removes_the_key_from_the_inner_backend,
    an_eviction_waits_for_a_call_that_reaches_the_backend,
    faults_set_from_another_task_take_effect,
);

on_every_store!(
    #[tokio::test(start_paused = true)]
    memory_paused_clock, redis_real_clock:
    latency_adds_at_least_the_latency,
    hang_ends_in_a_timeout_after_t,
);

// ---------------------------------------------------------------------
// Memory only.
// ---------------------------------------------------------------------

/// Which of 200 calls fail under `fail_fraction(fraction, seed)`.
async fn failures(fraction: f64, seed: u64) -> Vec<bool> {
    let (backend, faults) = faulty(&support::Memory::new());
    faults.fail_fraction(fraction, seed);
    let mut failed = Vec::new();
    for op in OPS.iter().cycle().take(200) {
        failed.push(call(&backend, *op, Generation::fresh()).await.is_err());
    }
    let count = failed.iter().filter(|f| **f).count() as u64;
    assert_eq!(faults.counts().failed, count, "every failure counted");
    failed
}

#[tokio::test]
async fn fail_fraction_repeats_its_pattern_for_a_seed() {
    let first = failures(0.3, 42).await;
    assert_eq!(failures(0.3, 42).await, first, "same seed, same failures");
    assert_ne!(failures(0.3, 43).await, first, "another seed, others");
    let failed = first.iter().filter(|f| **f).count();
    assert!((30..=90).contains(&failed), "about 30% of 200: {failed}");

    // The bounds, and what is clamped to them.
    for (fraction, always) in [
        (0.0, false),
        (-1.0, false),
        (f64::NAN, false),
        (1.0, true),
        (2.5, true),
    ] {
        for seed in [1, 2, 3] {
            let pattern = failures(fraction, seed).await;
            assert!(
                pattern.iter().all(|f| *f == always),
                "fail_fraction({fraction}, {seed})"
            );
        }
    }
}

/// One step of the counting script: the faults to set, the call to make,
/// and what the counters must add.
struct Step {
    set: Setter,
    op: Op,
    adds: Tally,
}

fn step(set: Setter, op: Op, adds: [u64; 6]) -> Step {
    let [failed, delayed, hung, corrupted, evicted, injected] = adds;
    Step {
        set,
        op,
        adds: Tally {
            calls: 1,
            failed,
            delayed,
            hung,
            corrupted,
            evicted,
            injected,
        },
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn counts_add_up() {
    // [failed, delayed, hung, corrupted, evicted, injected]
    let script = [
        step(|_| {}, Op::Get, [0, 0, 0, 0, 0, 0]),
        step(|f| f.fail_next(1), Op::Incr, [1, 0, 0, 0, 0, 1]),
        step(|f| f.latency(MS), Op::Add, [0, 1, 0, 0, 0, 1]),
        // Two faults on one call: each counted, one call injected.
        step(|f| f.fail_next(1), Op::Get, [1, 1, 0, 0, 0, 1]),
        step(|f| f.hang(MS), Op::Intend, [0, 1, 1, 0, 0, 1]),
        step(|f| f.latency(Duration::ZERO), Op::Get, [0, 0, 1, 0, 0, 1]),
        step(Faults::heal, Op::Get, [0, 0, 0, 0, 0, 0]),
        step(|f| f.corrupt(true), Op::Get, [0, 0, 0, 1, 0, 1]),
        step(|_| {}, Op::Incr, [0, 0, 0, 1, 0, 1]),
        // Corruption only touches what reads answer.
        step(|_| {}, Op::Add, [0, 0, 0, 0, 0, 0]),
        step(Faults::heal, Op::Delete, [0, 0, 0, 0, 0, 0]),
        step(|f| f.evict_next(), Op::Get, [0, 0, 0, 0, 1, 1]),
        step(|f| f.missing(true), Op::Get, [0, 0, 0, 0, 1, 1]),
        // A one-off eviction while every call evicts: one eviction.
        step(|f| f.evict_next(), Op::Incr, [0, 0, 0, 0, 1, 1]),
        step(|f| f.missing(false), Op::Unlock, [0, 0, 0, 0, 0, 0]),
    ];
    let (backend, faults) = faulty(&support::Memory::new());
    let mut total = Tally::default();
    for (i, Step { set, op, adds }) in script.iter().enumerate() {
        set(&faults);
        let before = Tally::of(&faults);
        let _ = call(&backend, *op, Generation::fresh()).await;
        assert_eq!(Tally::of(&faults).since(before), *adds, "step {i}: {op:?}");
        total = Tally::of(&faults);
    }
    assert_eq!(total.calls, script.len() as u64);
    assert!(total.injected <= total.calls);
    let faulted = script.iter().filter(|s| s.adds.injected > 0).count() as u64;
    assert_eq!(total.injected, faulted, "calls that met a fault");
}

// ---------------------------------------------------------------------
// Under the blocking synchronizer, from a plain thread.
// ---------------------------------------------------------------------

fn blocking_scenario<B: BlockingBackend>(backend: FaultyBackend<B>) {
    let faults = backend.faults();
    let sync = BlockingSynchronizer::new(backend, key());
    let g = sync.refresh().unwrap();

    faults.fail_next(2);
    assert!(sync.is_expired());
    assert!(sync.mark_updated().is_err());
    assert!(!sync.is_expired(), "passes after the two failures");

    let latency = Duration::from_millis(30);
    faults.latency(latency);
    let start = std::time::Instant::now();
    let bumped = sync.mark_updated().unwrap();
    assert!(start.elapsed() >= latency);
    assert_eq!(sync.check().observed(), Some(bumped));
    assert_ne!(bumped, g);

    faults.hang(Duration::from_millis(20));
    assert_eq!(sync.check().shared, Observed::Unavailable);
    faults.heal();
    sync.record(bumped);
    assert!(!sync.is_expired());

    let counts = faults.counts();
    assert_eq!((counts.failed, counts.hung), (2, 1));
    assert_eq!(counts.delayed, 3, "{counts:?}");
}

/// Runs the scenario on its own plain thread, so no test runtime is near.
fn on_a_plain_thread<B: BlockingBackend>(backend: FaultyBackend<B>) {
    std::thread::spawn(move || {
        assert!(
            tokio::runtime::Handle::try_current().is_err(),
            "a plain thread, with no runtime"
        );
        blocking_scenario(backend)
    })
    .join()
    .expect("the blocking synchronizer panicked");
}

#[test]
fn blocking_synchronizer_with_fail_next_and_latency_on_memory() {
    on_a_plain_thread(faulty(&support::Memory::new()).0);
}

#[test]
fn blocking_synchronizer_with_fail_next_and_latency_on_redis() {
    let redis = support::Redis::new();
    let backend = BlockingRedisBackend::with_config(&redis.server.url(), support::fast_config())
        .expect("valid URL");
    on_a_plain_thread(FaultyBackend::new(backend));
}

/// Built with `new_blocking`, latency blocks the thread even inside a
/// runtime, whose timer a blocking synchronizer never drives (a tokio sleep
/// there would never wake).
#[test]
fn new_blocking_works_under_a_blocking_synchronizer_inside_a_runtime() {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _inside = runtime.enter();
        blocking_scenario(FaultyBackend::new_blocking(gensync::MemoryBackend::new()));
        let _ = done_tx.send(());
    });
    // A tokio sleep here would never wake: fail instead of hanging.
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocking synchronizer hung or panicked");
}

// ---------------------------------------------------------------------
// The exported synchronizer mock.
// ---------------------------------------------------------------------

#[tokio::test]
async fn a_mocked_synchronizer_drives_a_reloader_through_one_load() {
    let observed = Generation::fresh();
    // The mock keeps what it was told to record, so checks after the load
    // find the process fresh.
    let recorded = Arc::new(AtomicU64::new(0));
    let local = {
        let recorded = Arc::clone(&recorded);
        move || Generation::new(recorded.load(SeqCst))
    };

    let mut sync = MockGenerationSynchronizer::new();
    sync.expect_key().return_const(key());
    sync.expect_sync_gen().returning(local.clone());
    sync.expect_check().times(3).returning(move || Check {
        local: local(),
        shared: Observed::Value(observed),
    });
    sync.expect_record()
        .with(mockall::predicate::eq(observed))
        .times(1)
        .returning({
            let recorded = Arc::clone(&recorded);
            move |g| recorded.store(g.get(), SeqCst)
        });
    sync.expect_fetch_or_create().never();
    sync.expect_refresh().never();

    let loads = Arc::new(AtomicU64::new(0));
    let reloader = Reloader::builder(sync, {
        let loads = Arc::clone(&loads);
        move || {
            let run = loads.fetch_add(1, SeqCst) + 1;
            async move { Ok::<_, Infallible>(format!("load {run}")) }
        }
    })
    .build(String::from("initial"))
    .unwrap();

    let first = reloader.check().await;
    assert_eq!(*first, "load 1");
    assert_eq!(first.generation(), Some(observed));
    assert_eq!(
        recorded.load(SeqCst),
        observed.get(),
        "recorded the check's"
    );
    for _ in 0..2 {
        assert!(reloader.check().await.ptr_eq(&first), "no second load");
    }
    assert_eq!(loads.load(SeqCst), 1);
    let m = reloader.metrics();
    assert_eq!(
        (
            m.checks,
            m.expired,
            m.loader_runs,
            m.reloads,
            m.stale_served
        ),
        (3, 1, 1, 1, 0)
    );
}

/// Episodes end on any answer, not only a check's: a process that only
/// writes logs the first failure of each outage as an error.
#[tokio::test]
async fn a_writer_that_never_checks_logs_each_outage_as_an_error() {
    let (backend, faults) = faulty(&support::Memory::new());
    let sync = Synchronizer::new(backend, key());
    let logs = support::LogCapture::default();
    let _guard = logs.install();
    for _outage in 0..2 {
        faults.fail_next(1);
        sync.mark_updated().await.unwrap_err();
        sync.mark_updated().await.unwrap();
    }
    let text = logs.text();
    let failures = logs.lines_with("backend call failed");
    assert_eq!(failures.len(), 2, "{text}");
    for line in failures {
        assert!(
            line.contains("ERROR"),
            "each outage starts with an error: {line}"
        );
    }
    assert_eq!(text.matches("backend answering again").count(), 2, "{text}");
}
