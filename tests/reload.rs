//! The reloader and its tower middleware: single flight, the reload fence,
//! failing and panicking loaders, backoff, bounded waits, and writers.

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::backend::Backend;
use gensync::reload::{
    BlockingReloader, CheckMode, Freshness, PublishError, Reloader, ReloaderBuilder,
    SettingsReloadLayer, Snapshot,
};
use gensync::synchronizer::WriterLock;
use gensync::testing::FaultyBackend;
use gensync::{Generation, GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
use support::Store;
use tokio::sync::{Notify, Semaphore};
use tower::{Service, ServiceBuilder, ServiceExt};

fn key() -> Key {
    Key::new(["reload", "settings"]).unwrap()
}

/// The source of truth: a version number, and how often it was read.
#[derive(Default)]
struct Source {
    version: AtomicU64,
    loads: AtomicU64,
}

impl Source {
    /// A source holding `version`.
    fn at(version: u64) -> Arc<Source> {
        let source = Arc::new(Source::default());
        source.version.store(version, SeqCst);
        source
    }
}

fn builder<B: Backend>(backend: B, source: &Arc<Source>) -> ReloaderBuilder<u64, Synchronizer<B>> {
    let read = Arc::clone(source);
    let write = Arc::clone(source);
    Reloader::builder(Synchronizer::new(backend, key()), move || {
        let source = Arc::clone(&read);
        async move {
            source.loads.fetch_add(1, SeqCst);
            // Let other tasks run mid-load, so bumps can land during it.
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(source.version.load(SeqCst))
        }
    })
    .saver(move |v: &u64| {
        write.version.store(*v, SeqCst);
        async { Ok::<_, Infallible>(()) }
    })
}

/// A loader held at a gate: each load waits for a permit, so tests decide
/// exactly when loads finish.
struct GatedLoader {
    source: Arc<Source>,
    gate: Arc<Semaphore>,
    started: Arc<Notify>,
}

impl GatedLoader {
    fn new(source: &Arc<Source>) -> Self {
        GatedLoader {
            source: Arc::clone(source),
            gate: Arc::new(Semaphore::new(0)),
            started: Arc::new(Notify::new()),
        }
    }

    fn builder<B: Backend>(&self, backend: B) -> ReloaderBuilder<u64, Synchronizer<B>> {
        let (source, gate, started) = (
            Arc::clone(&self.source),
            Arc::clone(&self.gate),
            Arc::clone(&self.started),
        );
        Reloader::builder(Synchronizer::new(backend, key()), move || {
            let (source, gate, started) = (source.clone(), gate.clone(), started.clone());
            async move {
                source.loads.fetch_add(1, SeqCst);
                let version = source.version.load(SeqCst);
                started.notify_one();
                gate.acquire().await.unwrap().forget();
                Ok::<_, Infallible>(version)
            }
        })
    }
}

#[tokio::test]
async fn a_burst_of_expired_requests_runs_the_loader_once() {
    let source = Source::at(7);
    let loader = GatedLoader::new(&source);
    let reloader = loader.builder(MemoryBackend::new()).build(0).unwrap();

    let requests: Vec<_> = (0..100)
        .map(|_| {
            let r = reloader.clone();
            tokio::spawn(async move { *r.check().await })
        })
        .collect();
    loader.started.notified().await;
    // Every request is now either waiting on the load or about to join it.
    loader.gate.add_permits(1);
    for request in requests {
        assert_eq!(request.await.unwrap(), 7);
    }
    assert_eq!(source.loads.load(SeqCst), 1);
    let m = reloader.metrics();
    assert_eq!((m.loader_runs, m.reloads, m.stale_served), (1, 1, 0));
}

/// A request whose load has read version 1 and is held at the gate, while
/// a writer saves version 2 and bumps. Returns the request's task.
async fn update_during_a_load() -> (
    Arc<Source>,
    GatedLoader,
    Reloader<u64>,
    tokio::task::JoinHandle<u64>,
) {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let loader = GatedLoader::new(&source);
    let reader = loader.builder(backend.clone()).build(0).unwrap();
    let first = tokio::spawn({
        let r = reader.clone();
        async move { *r.check().await }
    });
    loader.started.notified().await;
    source.version.store(2, SeqCst);
    Synchronizer::new(backend, key())
        .mark_updated()
        .await
        .unwrap();
    (source, loader, reader, first)
}

#[tokio::test]
async fn a_bump_during_a_load_causes_one_more_reload_not_a_lost_update() {
    let (source, loader, reader, first) = update_during_a_load().await;
    loader.gate.add_permits(1);
    assert_eq!(first.await.unwrap(), 1, "the request that started first");

    // The fence: the recorded generation is the pre-load one, so the next
    // check is expired and reloads version 2.
    loader.gate.add_permits(1);
    assert_eq!(*reader.check().await, 2);
    assert_eq!(source.loads.load(SeqCst), 2);
    loader.gate.add_permits(1);
    assert_eq!(*reader.check().await, 2);
    assert_eq!(source.loads.load(SeqCst), 2, "fresh now: no third load");
}

#[tokio::test]
async fn a_request_never_joins_a_load_that_started_before_the_update() {
    let (_source, loader, reader, early) = update_during_a_load().await;
    // This request starts after the update: the load in flight read
    // version 1, so it must wait for a second load.
    let late = tokio::spawn({
        let r = reader.clone();
        async move { *r.check().await }
    });
    loader.gate.add_permits(1);
    assert_eq!(early.await.unwrap(), 1);
    tokio::time::timeout(Duration::from_secs(10), loader.started.notified())
        .await
        .expect("the late request started a second load");
    loader.gate.add_permits(1);
    assert_eq!(late.await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failing_loader_keeps_the_old_settings_and_backs_off() {
    let fail = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let backend = MemoryBackend::new();
    let (f, n) = (Arc::clone(&fail), Arc::clone(&runs));
    let reloader = Reloader::builder(Synchronizer::new(backend.clone(), key()), move || {
        let (f, n) = (f.clone(), n.clone());
        async move {
            let run = n.fetch_add(1, SeqCst) + 1;
            if f.load(SeqCst) {
                Err(std::io::Error::other("database is down"))
            } else {
                Ok(run)
            }
        }
    })
    .backoff(Duration::from_millis(100), Duration::from_secs(1))
    .build(0)
    .unwrap();
    assert_eq!(*reloader.check().await, 1);

    fail.store(true, SeqCst);
    let writer = Synchronizer::new(backend, key());
    writer.mark_updated().await.unwrap();
    // Ten seconds of checks every 10 ms: 1,000 expired checks.
    for _ in 0..1000 {
        assert_eq!(*reloader.check().await, 1, "the last good settings");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Tries at 0, 0.1, 0.3, 0.7, 1.5 s, then every second: about 14.
    let failed = runs.load(SeqCst) - 1;
    assert!((10..=16).contains(&failed), "{failed} loads in 10 s");
    let m = reloader.metrics();
    assert_eq!(m.reload_failures, failed);
    assert_eq!(m.stale_served, 1000);

    fail.store(false, SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recovered = *reloader.check().await;
    assert!(recovered > 1, "recovers once the loader does");
    assert_eq!(*reloader.check().await, recovered, "and stays fresh");
}

#[tokio::test]
async fn a_panicking_loader_is_survived() {
    let panic_now = Arc::new(AtomicBool::new(true));
    let p = Arc::clone(&panic_now);
    let reloader = Reloader::builder(Synchronizer::new(MemoryBackend::new(), key()), move || {
        let p = p.clone();
        async move {
            if p.load(SeqCst) {
                panic!("loader bug");
            }
            Ok::<_, Infallible>(5u64)
        }
    })
    .backoff(Duration::from_millis(1), Duration::from_millis(1))
    .build(0)
    .unwrap();
    assert_eq!(
        *reloader.check().await,
        0,
        "answered with the initial settings"
    );
    assert_eq!(reloader.metrics().reload_failures, 1);

    panic_now.store(false, SeqCst);
    // Past the 1 ms backoff, the reloader loads again.
    assert_eq!(*reloader.reload_now().await.unwrap(), 5);
    assert_eq!(*reloader.check().await, 5);
}

#[tokio::test(start_paused = true)]
async fn a_slow_load_is_waited_for_only_up_to_the_bound() {
    let source = Source::at(3);
    let loader = GatedLoader::new(&source);
    let reloader = loader
        .builder(MemoryBackend::new())
        .max_wait(Duration::from_millis(200))
        .build(0)
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(*reloader.check().await, 0, "served the last good settings");
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert_eq!(reloader.metrics().stale_served, 1);

    // The load went on without the request; once it lands, all is fresh.
    let mut updates = reloader.subscribe();
    loader.gate.add_permits(1);
    updates.changed().await.unwrap();
    assert_eq!(*reloader.check().await, 3);
    assert_eq!(source.loads.load(SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hung_loader_times_out() {
    let reloader = Reloader::builder(Synchronizer::new(MemoryBackend::new(), key()), || {
        std::future::pending::<Result<u64, Infallible>>()
    })
    .load_timeout(Duration::from_secs(2))
    .max_wait(Duration::from_secs(60))
    .build(9)
    .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(*reloader.check().await, 9);
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert_eq!(reloader.metrics().reload_failures, 1);
}

/// A reloader on version 1 of a source, over a backend that fails on
/// command, with a fixed backoff.
async fn on_faulty_backend(
    backoff: Duration,
) -> (Arc<Source>, FaultyBackend<MemoryBackend>, Reloader<u64>) {
    let source = Source::at(1);
    let backend = FaultyBackend::new(MemoryBackend::new());
    let reloader = builder(backend.clone(), &source)
        .backoff(backoff, backoff)
        .build(0)
        .unwrap();
    assert_eq!(*reloader.check().await, 1);
    (source, backend, reloader)
}

#[tokio::test(start_paused = true)]
async fn while_the_backend_is_down_the_loader_runs_once_per_backoff_window() {
    let (source, backend, reloader) = on_faulty_backend(Duration::from_millis(500)).await;
    let faults = backend.faults();

    faults.fail_all();
    source.version.store(2, SeqCst);
    let loads_before = source.loads.load(SeqCst);
    // 5 s of requests, 100 a tick every 10 ms: 50,000 checks.
    for _ in 0..500 {
        for _ in 0..100 {
            reloader.check().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loads = source.loads.load(SeqCst) - loads_before;
    assert!(
        (9..=11).contains(&loads),
        "{loads} loads in 5 s of 500 ms windows"
    );
    let m = reloader.metrics();
    assert_eq!(m.backend_errors, 50_000);
    // Loads during the outage still pick up the source's changes.
    assert_eq!(*reloader.current(), 2);

    faults.heal();
    tokio::time::sleep(Duration::from_millis(500)).await;
    source.version.store(3, SeqCst);
    Synchronizer::new(backend.inner().clone(), key())
        .mark_updated()
        .await
        .unwrap();
    assert_eq!(*reloader.check().await, 3, "converges after recovery");
}

/// The backoff is for a cache server that is down. Once it answers with
/// a generation again, an update must not wait out a window that the
/// outage grew.
#[tokio::test(start_paused = true)]
async fn after_an_outage_an_update_is_loaded_at_once_whatever_the_backoff() {
    let (source, backend, reloader) = on_faulty_backend(Duration::from_secs(30)).await;
    let faults = backend.faults();

    faults.fail_all();
    reloader.check().await;
    // A load during the outage cannot record a generation: backoff begins.
    assert_eq!(reloader.metrics().backend_errors, 1);
    assert_eq!(reloader.metrics().loader_runs, 2);
    faults.heal();

    source.version.store(2, SeqCst);
    Synchronizer::new(backend.inner().clone(), key())
        .mark_updated()
        .await
        .unwrap();
    assert_eq!(*reloader.check().await, 2, "served the update at once");
    assert_eq!(reloader.metrics().stale_served, 0);
}

/// How many times the loader runs over `span` of checks every 10 ms.
async fn loads_over(reloader: &Reloader<u64>, source: &Source, span: Duration) -> u64 {
    let before = source.loads.load(SeqCst);
    let end = tokio::time::Instant::now() + span;
    while tokio::time::Instant::now() < end {
        reloader.check().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    source.loads.load(SeqCst) - before
}

/// An outage that ended (the backend answered for as long as the longest
/// backoff) leaves its grown backoff behind: the next one starts again
/// from the initial pause. A flapping backend keeps its backoff:
/// `operator.rs`'s `a_flapping_redis_does_not_reload_on_every_flap`.
#[tokio::test(start_paused = true)]
async fn each_outage_backs_off_from_the_initial_pause() {
    let source = Source::at(1);
    let backend = FaultyBackend::new(MemoryBackend::new());
    let reloader = builder(backend.clone(), &source)
        .backoff(Duration::from_millis(100), Duration::from_millis(800))
        .build(0)
        .unwrap();
    assert_eq!(*reloader.check().await, 1);
    let faults = backend.faults();
    let start = Duration::from_millis(350);

    faults.fail_all();
    // At 0, 100 and 300 ms.
    let first = loads_over(&reloader, &source, start).await;
    assert!(first >= 3, "{first} loads in the first {start:?}");
    // Long enough for the backoff to reach its maximum.
    loads_over(&reloader, &source, Duration::from_secs(3)).await;
    faults.heal();
    reloader.check().await;
    // Answering for as long as the longest backoff: the outage is over.
    tokio::time::sleep(Duration::from_millis(800)).await;
    reloader.check().await;

    faults.fail_all();
    let second = loads_over(&reloader, &source, start).await;
    assert_eq!(
        second, first,
        "the second outage's first {start:?} loaded as often as the first's"
    );
}

#[tokio::test]
async fn subscribers_hear_of_each_reload_with_old_and_new() {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let reloader = builder(backend.clone(), &source).build(0).unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&heard);
    reloader.on_reload(move |old, new| h.lock().unwrap().push((**old, **new)));
    reloader.on_reload(|_, _| panic!("a broken listener"));
    let mut updates = reloader.subscribe();

    reloader.check().await;
    assert!(updates.has_changed().unwrap());
    assert_eq!(**updates.borrow_and_update(), 1);
    reloader.publish(2).await.unwrap();
    reloader.check().await;
    assert_eq!(**updates.borrow_and_update(), 2);
    assert_eq!(*heard.lock().unwrap(), vec![(0, 1), (1, 2)]);
}

#[test]
fn listeners_may_register_remove_and_panic_without_stopping_reloads() {
    // On a thread of its own, so a deadlock fails this test instead of
    // hanging the runtime that would have to shut down around it.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = done.send(rt.block_on(listeners_that_change_listeners()));
    });
    let heard = finished
        .recv_timeout(Duration::from_secs(20))
        .expect("two reloads finished: no listener blocked them");
    // The self-removing listener heard the first reload only; the one
    // registered during the first reload heard the second.
    assert_eq!(heard, vec![(0, 1), (1, 2)]);
}

async fn listeners_that_change_listeners() -> Vec<(u64, u64)> {
    let source = Source::at(1);
    let reloader = builder(MemoryBackend::new(), &source).build(0).unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    // Registers a new listener on each reload, from inside a listener.
    let (r, h) = (reloader.clone(), Arc::clone(&heard));
    reloader.on_reload(move |_, new| {
        let (h, version) = (Arc::clone(&h), **new);
        r.on_reload(move |_, new| h.lock().unwrap().push((version, **new)));
    });
    // Removes itself on its first call.
    let once = Arc::new(Mutex::new(None));
    let (r, o, h) = (reloader.clone(), Arc::clone(&once), Arc::clone(&heard));
    let id = reloader.on_reload(move |_, new| {
        h.lock().unwrap().push((0, **new));
        let id = o
            .lock()
            .unwrap()
            .expect("registered before the first reload");
        assert!(r.remove_listener(id), "still registered at its first call");
    });
    *once.lock().unwrap() = Some(id);
    reloader.on_reload(|_, _| panic!("a broken listener"));

    assert_eq!(*reloader.reload_now().await.unwrap(), 1);
    source.version.store(2, SeqCst);
    assert_eq!(*reloader.reload_now().await.unwrap(), 2);
    assert!(!reloader.remove_listener(id), "removed by itself");
    assert_eq!(reloader.metrics().reloads, 2);
    let heard = heard.lock().unwrap().clone();
    heard
}

#[tokio::test]
async fn publish_saves_then_bumps_and_every_process_reloads() {
    let source = Arc::new(Source::default());
    let backend = MemoryBackend::new();
    let a = builder(backend.clone(), &source).build(0).unwrap();
    let b = builder(backend.clone(), &source).build(0).unwrap();
    a.check().await;
    b.check().await;
    let g = a.publish(42).await.unwrap();
    assert_eq!(source.version.load(SeqCst), 42);
    for r in [&a, &b] {
        let snapshot = r.check().await;
        assert_eq!(*snapshot, 42);
        assert_eq!(snapshot.generation(), Some(g));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_updates_from_many_processes_are_not_lost() {
    let source = Arc::new(Source::default());
    let backend = MemoryBackend::new();
    let processes: Vec<_> = (0..3)
        .map(|_| builder(backend.clone(), &source).build(0).unwrap())
        .collect();
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let r = processes[i % 3].clone();
            tokio::spawn(async move { r.update(|v| v + 1).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(source.version.load(SeqCst), 30, "every increment survived");
    for r in &processes {
        assert_eq!(*r.check().await, 30);
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_lock_is_a_clear_error_and_nothing_is_saved() {
    let source = Arc::new(Source::default());
    let backend = MemoryBackend::new();
    let reloader = builder(backend.clone(), &source)
        .write_lock(Duration::from_secs(30), 5)
        .build(0)
        .unwrap();
    let other = Synchronizer::new(backend, key());
    assert!(other
        .try_lock(Generation::fresh(), Duration::from_secs(30))
        .await
        .unwrap()
        .is_some());
    let err = reloader.publish(1).await.unwrap_err();
    assert!(
        matches!(err, PublishError::Locked { tries: 5, .. }),
        "{err}"
    );
    let said = err.to_string();
    assert!(
        said.contains("another writer held the writers' lease"),
        "{err}"
    );
    // The lease's own key, and how to break it, are named.
    assert!(said.contains(key().companion("lock").as_str()), "{err}");
    assert!(said.contains("gensync break-lock"), "{err}");
    assert_eq!(source.version.load(SeqCst), 0, "nothing saved");
}

#[tokio::test(start_paused = true)]
async fn a_dead_writers_lock_lapses_and_the_next_writer_goes_on() {
    let source = Arc::new(Source::default());
    let backend = MemoryBackend::new();
    let reloader = builder(backend.clone(), &source)
        .write_lock(Duration::from_secs(2), 40)
        .build(0)
        .unwrap();
    let dead = Synchronizer::new(backend, key());
    assert!(dead
        .try_lock(Generation::fresh(), Duration::from_secs(2))
        .await
        .unwrap()
        .is_some());
    reloader.publish(5).await.unwrap();
    assert_eq!(source.version.load(SeqCst), 5);
}

#[tokio::test(start_paused = true)]
async fn a_writer_that_dies_between_save_and_bump_still_reaches_everyone() {
    let source = Source::at(1);
    let backend = MemoryBackend::new();
    let reader = builder(backend.clone(), &source).build(0).unwrap();
    assert_eq!(*reader.check().await, 1);

    // The writer's steps, stopped after the save: lock, intent, save.
    let lock_ttl = Duration::from_secs(5);
    let writer = Synchronizer::new(backend, key());
    let token = Generation::fresh();
    assert!(writer.try_lock(token, lock_ttl).await.unwrap().is_some());
    writer.mark_intent(token, lock_ttl).await.unwrap();
    source.version.store(2, SeqCst);
    // ...and it dies here, before mark_updated.

    assert_eq!(*reader.check().await, 1, "nothing told the reader yet");
    tokio::time::advance(lock_ttl).await;
    assert_eq!(
        *reader.check().await,
        2,
        "the intent lapsed: the reader reloaded"
    );
}

#[tokio::test]
async fn a_failed_save_publishes_nothing() {
    let backend = MemoryBackend::new();
    let reloader = Reloader::builder(Synchronizer::new(backend.clone(), key()), || async {
        Ok::<_, Infallible>(1u64)
    })
    .saver(|_: &u64| async { Err(std::io::Error::other("disk full")) })
    .build(0)
    .unwrap();
    reloader.check().await;
    let before = Synchronizer::new(backend, key()).check().await.observed();
    let err = reloader.publish(2).await.unwrap_err();
    assert!(matches!(err, PublishError::Save(_)), "{err}");
    assert!(err.to_string().contains("disk full"));
    assert_eq!(
        reloader.synchronizer().check().await.observed(),
        before,
        "no bump"
    );
}

#[tokio::test]
async fn publishing_without_a_saver_is_a_clear_error() {
    let reloader = Reloader::builder(Synchronizer::new(MemoryBackend::new(), key()), || async {
        Ok::<_, Infallible>(1u64)
    })
    .build(0)
    .unwrap();
    let err = reloader.publish(2).await.unwrap_err();
    assert!(matches!(err, PublishError::NoSaver), "{err}");
}

#[test]
fn bad_settings_are_refused_at_build() {
    let make = || {
        Reloader::builder(Synchronizer::new(MemoryBackend::new(), key()), || async {
            Ok::<_, Infallible>(1u64)
        })
    };
    for (what, builder) in [
        ("max_wait", make().max_wait(Duration::ZERO)),
        ("load_timeout", make().load_timeout(Duration::ZERO)),
        (
            "backoff",
            make().backoff(Duration::from_secs(2), Duration::from_secs(1)),
        ),
        ("write_lock", make().write_lock(Duration::from_secs(1), 0)),
    ] {
        let err = builder.build(0).expect_err(what).to_string();
        assert!(err.starts_with("invalid setting: "), "{what}: {err}");
    }
}

#[test]
fn the_blocking_reloader_works_from_plain_threads() {
    let source = Source::at(4);
    let backend = MemoryBackend::new();
    let reader = BlockingReloader::new(builder(backend.clone(), &source), 0).unwrap();
    let writer = BlockingReloader::new(builder(backend, &source), 0).unwrap();
    assert_eq!(*reader.check(), 4);
    let g = writer.publish(5).unwrap();
    let snapshot = reader.check();
    assert_eq!((*snapshot, snapshot.generation()), (5, Some(g)));
    writer.update(|v| v * 10).unwrap();
    assert_eq!(*reader.check(), 50);
}

/// A service that answers with the settings version the middleware gave it.
fn echo_service(
    reloader: Reloader<u64>,
) -> impl Service<http::Request<()>, Response = u64, Error = Infallible, Future: Send> + Clone {
    ServiceBuilder::new()
        .layer(SettingsReloadLayer::new(reloader))
        .service_fn(|req: http::Request<()>| async move {
            let snapshot = req.extensions().get::<Snapshot<u64>>().expect("a snapshot");
            Ok::<_, Infallible>(**snapshot)
        })
}

/// Many requests in flight against several processes while writers publish:
/// no request that starts after a publish returned sees older settings.
async fn no_request_sees_settings_older_than_a_completed_update(store: impl Store) {
    const PROCESSES: usize = 3;
    const PUBLISHES: u64 = 40;
    const IN_FLIGHT: usize = 64;
    let source = Arc::new(Source::default());
    let processes: Vec<_> = (0..PROCESSES)
        .map(|_| {
            builder(store.process(), &source)
                .max_wait(Duration::from_secs(30))
                .build(0)
                .unwrap()
        })
        .collect();
    let completed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // A permit per served request, so the writer can wait for requests to
    // run between its publishes instead of racing through them alone.
    let served_permits = Arc::new(Semaphore::new(0));

    let readers: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let service = echo_service(processes[i % PROCESSES].clone());
            let (completed, done) = (Arc::clone(&completed), Arc::clone(&done));
            let permits = Arc::clone(&served_permits);
            tokio::spawn(async move {
                let mut served = 0u64;
                while !done.load(SeqCst) {
                    let floor = completed.load(SeqCst);
                    let seen = service
                        .clone()
                        .oneshot(http::Request::new(()))
                        .await
                        .unwrap();
                    assert!(
                        seen >= floor,
                        "served version {seen} after {floor} was published"
                    );
                    served += 1;
                    permits.add_permits(1);
                    // As a request that came over a socket would: on the
                    // in-memory backend a check never waits, and 64 loops
                    // that never yield would starve every other task on
                    // the two workers, the writes' own tasks included.
                    tokio::task::yield_now().await;
                }
                served
            })
        })
        .collect();
    for version in 1..=PUBLISHES {
        served_permits
            .acquire_many(IN_FLIGHT as u32)
            .await
            .unwrap()
            .forget();
        let writer = &processes[version as usize % PROCESSES];
        writer.publish(version).await.unwrap();
        completed.fetch_max(version, SeqCst);
    }
    done.store(true, SeqCst);
    let mut served = 0;
    for r in readers {
        served += r.await.unwrap();
    }
    let mut loads = 0;
    for p in &processes {
        assert_eq!(*p.check().await, PUBLISHES);
        let m = p.metrics();
        assert_eq!(m.stale_served, 0);
        assert_eq!(m.reload_failures, 0);
        loads += m.loader_runs;
    }
    assert!(
        loads <= 2 * PROCESSES as u64 * (PUBLISHES + 1),
        "{loads} loads for {PUBLISHES} publishes in {PROCESSES} processes"
    );
    assert!(served > loads, "{served} requests, {loads} loads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_on_memory_no_request_sees_older_settings() {
    no_request_sees_settings_older_than_a_completed_update(support::Memory::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_on_redis_no_request_sees_older_settings() {
    no_request_sees_settings_older_than_a_completed_update(support::Redis::new()).await;
}

/// Checks `reloader` from `clients` tasks, each every few milliseconds,
/// until `until`. Returns how many checks there were and how many of them
/// had to wait (their first poll was not ready: they waited on a read or
/// a load) and asserts every answer was `want`.
async fn check_from_clients(
    reloader: &Reloader<u64>,
    clients: usize,
    until: tokio::time::Instant,
    want: u64,
) -> (u64, u64) {
    use std::future::Future;

    let (checks, waited) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (reloader, checks, waited) =
                (reloader.clone(), Arc::clone(&checks), Arc::clone(&waited));
            tokio::spawn(async move {
                while tokio::time::Instant::now() < until {
                    let mut check = reloader.check();
                    let first = std::pin::Pin::new(&mut check)
                        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()));
                    let settings = match first {
                        std::task::Poll::Ready(settings) => settings,
                        std::task::Poll::Pending => {
                            waited.fetch_add(1, SeqCst);
                            check.await
                        }
                    };
                    checks.fetch_add(1, SeqCst);
                    assert_eq!(*settings, want, "the last good settings");
                    // Pacing only: a request every few milliseconds.
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a client");
    }
    (checks.load(SeqCst), waited.load(SeqCst))
}

/// Interval mode on a Redis that stops answering (SIGSTOP): a failed read
/// is the interval's read. Over the outage the backend sees at most one
/// read per interval, only the check that makes it waits (and, once, the
/// checks that arrive while the read that finds the outage is out), every
/// answer is the last good settings, and the outage is logged once.
#[tokio::test]
async fn in_interval_mode_an_outage_costs_one_read_and_one_waiting_check_per_interval() {
    let redis = support::Redis::new();
    // Passes every call through, counting them.
    let backend = FaultyBackend::new(redis.fast_process());
    let faults = backend.faults();
    let source = Source::at(1);
    let every = Duration::from_millis(400);
    let reloader = builder(backend, &source)
        .mode(gensync::reload::CheckMode::Interval(every))
        .build(0)
        .unwrap();
    assert_eq!(*reloader.check().await, 1);
    let logs = support::LogCapture::default();
    let _capture = logs.install();

    redis.server.pause().expect("SIGSTOP");
    let (calls, metrics) = (faults.counts().calls, reloader.metrics());
    let intervals = 6;
    let clients = 3;
    let until = tokio::time::Instant::now() + every * intervals;
    let (checks, waited) = check_from_clients(&reloader, clients, until, 1).await;
    let reads = faults.counts().calls - calls;
    let errors = reloader.metrics().backend_errors - metrics.backend_errors;
    redis.server.resume().expect("SIGCONT");

    let intervals = u64::from(intervals);
    assert!(checks > 100, "{checks} checks");
    assert!(
        (1..=intervals + 1).contains(&reads),
        "{reads} reads in {intervals} intervals"
    );
    let onset = clients as u64 - 1;
    assert!(
        waited <= intervals + 1 + onset,
        "{waited} of {checks} checks waited in {intervals} intervals"
    );
    assert!(
        errors <= intervals + 1 + onset,
        "{errors} backend errors in {intervals} intervals"
    );
    // One error for the outage, and at most one warning for the loads it
    // leaves unrecorded: nothing per interval or per request.
    let errors = logs.lines_with(" ERROR ");
    assert_eq!(errors.len(), 1, "{}", logs.text());
    assert!(errors[0].contains("backend call failed"), "{}", errors[0]);
    assert!(logs.lines_with(" WARN ").len() <= 1, "{}", logs.text());

    // Once Redis answers again, the next interval's read finds it.
    let writer = Synchronizer::new(redis.process(), key());
    source.version.store(2, SeqCst);
    writer.mark_updated().await.expect("a bump");
    let recovered = tokio::time::Instant::now() + Duration::from_secs(10);
    while *reloader.check().await != 2 {
        assert!(tokio::time::Instant::now() < recovered, "never recovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A failed read stands for the outage only while it is recent: after an
/// idle spell, checks that arrive while the next read is out wait for it,
/// and see an update made once Redis answered again.
#[tokio::test]
async fn in_interval_mode_checks_after_an_idle_spell_wait_for_the_read_in_flight() {
    let redis = support::Redis::new();
    let source = Source::at(1);
    let every = Duration::from_millis(200);
    let reloader = builder(redis.fast_process(), &source)
        .mode(gensync::reload::CheckMode::Interval(every))
        .build(0)
        .unwrap();
    assert_eq!(*reloader.check().await, 1);
    tokio::time::sleep(every).await;
    redis.server.pause().expect("SIGSTOP");
    assert_eq!(*reloader.check().await, 1, "the read failed: last good");
    redis.server.resume().expect("SIGCONT");
    source.version.store(2, SeqCst);
    Synchronizer::new(redis.process(), key())
        .mark_updated()
        .await
        .expect("a bump");
    // The idle spell: no request for three intervals.
    tokio::time::sleep(every * 3).await;
    // Spawned together: the first sends the read, the rest find it out.
    let checks: Vec<_> = (0..5).map(|_| tokio::spawn(reloader.check())).collect();
    let mut answers = Vec::new();
    for check in checks {
        answers.push(*check.await.expect("a check"));
    }
    assert_eq!(answers, [2; 5], "every check saw the update");
}

/// Interval mode in healthy times: checks that arrive while the interval's
/// read is out take that read (it was sent within the interval), rather
/// than each burst costing a second read.
#[tokio::test(start_paused = true)]
async fn in_interval_mode_a_burst_at_the_end_of_an_interval_costs_one_read() {
    let source = Source::at(1);
    let backend = FaultyBackend::new(MemoryBackend::new());
    let faults = backend.faults();
    let every = Duration::from_millis(500);
    let reloader = builder(backend, &source)
        .mode(gensync::reload::CheckMode::Interval(every))
        .build(0)
        .unwrap();
    assert_eq!(*reloader.check().await, 1);
    tokio::time::sleep(every).await;
    // A read that takes a while, so the burst finds it out.
    faults.latency(Duration::from_millis(20));
    let before = faults.counts().calls;
    let burst: Vec<_> = (0..50).map(|_| tokio::spawn(reloader.check())).collect();
    for check in burst {
        assert_eq!(*check.await.expect("a check"), 1);
    }
    assert_eq!(faults.counts().calls - before, 1, "one read for the burst");
}

/// Each answer says what it is: read for the check, vouched for without a
/// read (interval mode within its interval), or the last good settings
/// when the reload failed, the one counted as stale.
#[tokio::test]
async fn an_answer_says_whether_it_was_read_vouched_or_stale() {
    let fail = Arc::new(AtomicBool::new(false));
    let source = Source::at(1);
    let (f, s) = (Arc::clone(&fail), Arc::clone(&source));
    let backend = MemoryBackend::new();
    let loader = move || {
        let (f, s) = (Arc::clone(&f), Arc::clone(&s));
        async move {
            if f.load(SeqCst) {
                Err(std::io::Error::other("database is down"))
            } else {
                Ok(s.version.load(SeqCst))
            }
        }
    };
    let strict = Reloader::builder(Synchronizer::new(backend.clone(), key()), loader.clone())
        .build(0)
        .unwrap();
    let interval = Reloader::builder(Synchronizer::new(backend.clone(), key()), loader)
        .mode(CheckMode::Interval(Duration::from_secs(3600)))
        .build(0)
        .unwrap();

    let first = strict.answer().await;
    assert_eq!((*first.snapshot, first.freshness), (1, Freshness::Read));
    let again = strict.answer().await;
    assert_eq!((*again.snapshot, again.freshness), (1, Freshness::Read));
    assert_eq!(interval.answer().await.freshness, Freshness::Read);
    let within = interval.answer().await;
    assert_eq!(
        (*within.snapshot, within.freshness),
        (1, Freshness::Vouched)
    );

    source.version.store(2, SeqCst);
    fail.store(true, SeqCst);
    Synchronizer::new(backend, key())
        .mark_updated()
        .await
        .unwrap();
    let stale = strict.answer().await;
    assert_eq!((*stale.snapshot, stale.freshness), (1, Freshness::Stale));
    assert!(!stale.freshness.is_current());
    assert_eq!(
        strict.metrics().stale_served,
        1,
        "counted as the metrics count it"
    );
    let vouched = interval.answer().await;
    assert_eq!(
        (*vouched.snapshot, vouched.freshness),
        (1, Freshness::Vouched),
        "within its interval, interval mode vouches without a read"
    );

    fail.store(false, SeqCst);
    let recovered = strict.reload_now().await.unwrap();
    assert_eq!(*recovered, 2);
    let current = strict.answer().await;
    assert_eq!((*current.snapshot, current.freshness), (2, Freshness::Read));
}

/// The blocking reloader's answer is the reloader's.
#[test]
fn a_blocking_answer_says_it_was_read() {
    let source = Source::at(5);
    let blocking = BlockingReloader::new(builder(MemoryBackend::new(), &source), 0).unwrap();
    let answer = blocking.answer();
    assert_eq!((*answer.snapshot, answer.freshness), (5, Freshness::Read));
}
