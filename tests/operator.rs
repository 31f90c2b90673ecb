//! What an operator sees must match what the service does: log lines,
//! counters and the generation a snapshot claims.

mod support;

use std::sync::{Arc, Mutex};

use gensync::reload::Reloader;
use gensync::testing::FaultyBackend;
use gensync::{GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
use support::LogCapture;

fn key() -> Key {
    Key::new(["operator", "settings"]).unwrap()
}

/// A settings source that can break: the loader answers what it holds.
type Source = Arc<Mutex<Result<u64, String>>>;

fn reloader(backend: FaultyBackend<MemoryBackend>, source: &Source) -> Reloader<u64> {
    let source = Arc::clone(source);
    Reloader::builder(Synchronizer::new(backend, key()), move || {
        let held = source.lock().unwrap().clone();
        async move { held.map_err(std::io::Error::other) }
    })
    .build(0)
    .unwrap()
}

/// A Redis blip, then, with Redis answering again and nothing to reload, a
/// broken settings source and a bump: the broken source is a new trouble,
/// logged as an error with its own message, not "failed again" at debug.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_broken_source_after_a_redis_blip_is_logged_as_an_error() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let memory = MemoryBackend::new();
    let backend = FaultyBackend::new(memory.clone());
    let faults = backend.faults();
    let source: Source = Arc::new(Mutex::new(Ok(1)));
    let service = reloader(backend, &source);
    assert_eq!(*service.check().await, 1);

    faults.fail_all();
    service.check().await;
    faults.heal();
    assert_eq!(
        *service.check().await,
        1,
        "Redis answers with the generation recorded: nothing to reload"
    );

    *source.lock().unwrap() = Err("settings.json: expected value at line 1 column 2".into());
    Synchronizer::new(memory, key())
        .mark_updated()
        .await
        .unwrap();
    assert_eq!(*service.check().await, 1, "the last good settings");
    assert_eq!(service.metrics().reload_failures, 1);
    let errors = logs.lines_with("ERROR");
    assert!(
        errors.iter().any(|l| l.contains("line 1 column 2")),
        "the broken source was not logged as an error: {errors:?}\n{}",
        logs.text()
    );
}

/// While Redis does not answer, a load still reads the source: the
/// settings in service are then the source's, with no generation known to
/// match them. The log, the counters and the snapshot all say so, and none
/// says the reload failed.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_load_during_an_outage_is_told_as_what_it_is() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let backend = FaultyBackend::new(MemoryBackend::new());
    let faults = backend.faults();
    let source: Source = Arc::new(Mutex::new(Ok(1)));
    let service = reloader(backend, &source);
    let first = service.check().await;
    assert!(first.generation().is_some());

    *source.lock().unwrap() = Ok(2);
    faults.fail_all();
    let served = service.check().await;
    assert_eq!(*served, 2, "the source was read");
    assert_eq!(
        served.generation(),
        None,
        "no generation is known to match these settings"
    );
    let m = service.metrics();
    assert_eq!((m.reloads, m.reload_failures), (2, 0));
    assert_eq!(
        service.synchronizer().sync_gen(),
        first.generation(),
        "nothing new recorded"
    );
    let text = logs.text();
    assert!(!text.contains("reload failed"), "{text}");
    let warned = logs.lines_with("WARN");
    assert!(
        warned
            .iter()
            .any(|l| l.contains("without a shared generation")),
        "{text}"
    );

    // Redis answers with the generation recorded before: no bump came
    // since, so the settings read during the outage are current, and get
    // that generation, without another load.
    faults.heal();
    let served = service.check().await;
    assert_eq!(*served, 2);
    assert_eq!(served.generation(), first.generation());
    assert_eq!(service.metrics().loader_runs, 2);
}

/// While Redis stays down the outage is one warning, however many loads
/// it takes; a broken source meanwhile is an error of its own.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_outage_is_one_warning_and_a_broken_source_in_it_an_error() {
    let logs = LogCapture::default();
    let _guard = logs.install();
    let backend = FaultyBackend::new(MemoryBackend::new());
    let faults = backend.faults();
    let source: Source = Arc::new(Mutex::new(Ok(1)));
    let service = reloader(backend, &source);
    service.check().await;

    faults.fail_all();
    for _ in 0..5 {
        service.check().await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(service.metrics().loader_runs >= 4, "loads went on");
    let warned = logs.lines_with("without a shared generation");
    assert_eq!(warned.len(), 1, "{}", logs.text());

    *source.lock().unwrap() = Err("settings.json: expected value at line 3".into());
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    service.check().await;
    let errors = logs.lines_with("ERROR");
    assert!(
        errors.iter().any(|l| l.contains("line 3")),
        "{}",
        logs.text()
    );
}

/// A Redis that answers one call in two: no reload per flap. Loads stay
/// within the backoff, and the generation recorded keeps the answered
/// checks fresh.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_flapping_redis_does_not_reload_on_every_flap() {
    let backend = FaultyBackend::new(MemoryBackend::new());
    let faults = backend.faults();
    let source: Source = Arc::new(Mutex::new(Ok(1)));
    let service = reloader(backend, &source);
    service.check().await;
    let before = service.metrics().loader_runs;
    for _ in 0..100 {
        faults.fail_next(1);
        service.check().await;
        service.check().await;
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let loads = service.metrics().loader_runs - before;
    assert!(loads <= 5, "{loads} loads in one second of flapping");
}
