//! Writers never lose a change: the lease holds through a slow save, a
//! writer that lost its lease is told so and its stale save refused, and a
//! rollback of the server hands out no value a process recorded before.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::backend::Backend;
use gensync::reload::{fenced, PublishError, Reloader, ReloaderBuilder};
use gensync::testing::{Faults, FaultyBackend, FencedStore};
use gensync::{Generation, Key, MemoryBackend, Synchronizer};
use tokio::sync::{Notify, Semaphore};

fn key() -> Key {
    Key::new(["writes", "settings"]).unwrap()
}

/// The default lease, which the scenarios below outlast on purpose.
const LEASE: Duration = Duration::from_secs(5);

/// The feature names, fenced as a careful database would be.
type Store = FencedStore<Vec<String>>;

/// How a writer's saves behave: at once, or held until the test says.
#[derive(Default)]
struct Pace {
    /// Time a save takes before it reaches the store.
    slow: Mutex<Duration>,
    /// When set, a save waits for a permit here, after saying it started.
    gate: Option<(Arc<Semaphore>, Arc<Notify>)>,
}

/// One process: a reloader over `backend` whose saver writes `store`.
fn process<B: Backend>(
    backend: B,
    store: &Arc<Store>,
    pace: &Arc<Pace>,
) -> ReloaderBuilder<Vec<String>, Synchronizer<B>> {
    let (read, write, pace) = (Arc::clone(store), Arc::clone(store), Arc::clone(pace));
    Reloader::builder(Synchronizer::new(backend, key()), move || {
        let features = read.value();
        async move { Ok::<_, std::convert::Infallible>(features) }
    })
    .saver(fenced(move |features: &Vec<String>, fence| {
        let (store, pace, features) = (Arc::clone(&write), Arc::clone(&pace), features.clone());
        async move {
            let slow = *pace.slow.lock().unwrap();
            tokio::time::sleep(slow).await;
            if let Some((gate, started)) = &pace.gate {
                started.notify_one();
                gate.acquire().await.unwrap().forget();
            }
            store.save(features, fence)
        }
    }))
    .write_lock(LEASE, 40)
}

fn with(feature: &str) -> impl FnOnce(&Vec<String>) -> Vec<String> + Send + 'static {
    let feature = feature.to_owned();
    move |features| {
        let mut next = features.clone();
        next.push(feature);
        next
    }
}

/// Writer A's `update` saves for longer than the lease while B's starts:
/// A's lease is renewed, so B waits for it and both changes are kept.
#[tokio::test(start_paused = true)]
async fn a_save_slower_than_the_lease_loses_no_other_writers_update() {
    let store = Arc::new(Store::default());
    let backend = MemoryBackend::new();
    let slow = Arc::new(Pace::default());
    *slow.slow.lock().unwrap() = LEASE + Duration::from_secs(1);
    let a = process(backend.clone(), &store, &slow)
        .build(Vec::new())
        .unwrap();
    let b = process(backend, &store, &Arc::new(Pace::default()))
        .build(Vec::new())
        .unwrap();

    let first = tokio::spawn(async move { a.update(with("feature_a")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = tokio::spawn(async move { b.update(with("feature_b")).await });
    first.await.unwrap().expect("A's update");
    second.await.unwrap().expect("B's update");
    assert_eq!(store.value(), ["feature_a", "feature_b"]);
}

/// Writer A stalls past its lease (its renewals cannot reach the backend),
/// B publishes meanwhile; when A resumes, its save is refused by the fenced
/// store, A is told its lease was lost, and B's settings stay everywhere.
#[tokio::test(start_paused = true)]
async fn a_writer_stalled_past_its_lease_is_refused_and_told() {
    let store = Arc::new(Store::default());
    let shared = MemoryBackend::new();
    let stalled = FaultyBackend::new(shared.clone());
    let faults: Faults = stalled.faults();
    let gate = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
    let held = Arc::new(Pace {
        gate: Some(gate.clone()),
        ..Pace::default()
    });
    let a = process(stalled, &store, &held).build(Vec::new()).unwrap();
    let b = process(shared.clone(), &store, &Arc::new(Pace::default()))
        .build(Vec::new())
        .unwrap();
    let reader = process(shared, &store, &Arc::new(Pace::default()))
        .build(Vec::new())
        .unwrap();

    let writer_a = tokio::spawn(async move { a.publish(vec!["from_a".into()]).await });
    gate.1.notified().await;
    // A is in its save; it can no longer renew, and its lease lapses.
    faults.fail_all();
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    let newer = b.publish(vec!["from_b".into()]).await.expect("B publishes");
    faults.heal();
    gate.0.add_permits(1);

    let err = writer_a.await.unwrap().expect_err("A lost its lease");
    assert!(
        matches!(err, PublishError::LeaseLost { saved: false, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("lapsed"), "{err}");
    assert_eq!(store.value(), ["from_b"]);
    assert_eq!(store.refused().len(), 1, "A's save was refused");
    let served = reader.check().await;
    assert_eq!(*served, ["from_b"]);
    assert_eq!(served.generation(), Some(newer));
}

/// A writer whose lease was taken over while it worked, with a saver that
/// does not fence, is told so even though its save went through.
#[tokio::test(start_paused = true)]
async fn losing_the_lease_is_reported_whatever_the_saver_did() {
    let shared = MemoryBackend::new();
    let stalled = FaultyBackend::new(shared.clone());
    let faults = stalled.faults();
    let saved = Arc::new(Mutex::new(Vec::new()));
    let (gate, started) = (Arc::new(Semaphore::new(0)), Arc::new(Notify::new()));
    let writer = {
        let (saved, gate, started) = (Arc::clone(&saved), gate.clone(), started.clone());
        Reloader::builder(Synchronizer::new(stalled, key()), || async {
            Ok::<_, std::convert::Infallible>(0u64)
        })
        .saver(move |v: &u64| {
            let (saved, gate, started, v) = (saved.clone(), gate.clone(), started.clone(), *v);
            async move {
                started.notify_one();
                gate.acquire().await.unwrap().forget();
                saved.lock().unwrap().push(v);
                Ok::<_, std::convert::Infallible>(())
            }
        })
        .write_lock(LEASE, 40)
        .build(0)
        .unwrap()
    };
    let task = tokio::spawn(async move { writer.publish(1).await });
    started.notified().await;
    faults.fail_all();
    tokio::time::sleep(LEASE + Duration::from_secs(1)).await;
    // Another writer takes the lapsed lease.
    let other = Synchronizer::new(shared, key());
    gensync::synchronizer::WriterLock::try_lock(&other, Generation::fresh(), LEASE)
        .await
        .unwrap()
        .expect("the lease lapsed");
    faults.heal();
    gate.add_permits(1);
    let err = task.await.unwrap().expect_err("the lease was lost");
    assert!(
        matches!(err, PublishError::LeaseLost { saved: true, .. }),
        "{err}"
    );
    assert_eq!(*saved.lock().unwrap(), [1], "the saver ran");
}

/// Redis restarted from a snapshot older than the last bump: the next bump
/// must not hand out the value a reader recorded before the restart, and
/// the reader reads as expired once whatever the value.
#[tokio::test(start_paused = true)]
async fn a_rollback_reissues_no_recorded_generation() {
    let store = Arc::new(Store::default());
    let backend = MemoryBackend::new();
    let quick = Arc::new(Pace::default());
    let writer = process(backend.clone(), &store, &quick)
        .build(Vec::new())
        .unwrap();
    let reader = process(backend.clone(), &store, &quick)
        .build(Vec::new())
        .unwrap();
    writer.publish(vec!["v0".into()]).await.unwrap();
    reader.check().await;
    let snapshot = backend.save_point();

    let v1 = writer.publish(vec!["v1".into()]).await.unwrap();
    let seen = reader.check().await;
    assert_eq!(*seen, ["v1"]);
    assert_eq!(seen.generation(), Some(v1));

    backend.restore(&snapshot);
    // The source went on: v2 is saved and bumped on the rolled-back server.
    let v2 = writer.publish(vec!["v2".into()]).await.unwrap();
    assert_ne!(v2, v1, "a bump after the rollback repeats no value");
    assert_eq!(*reader.check().await, ["v2"], "the reader reloaded");
    assert_eq!(reader.metrics().stale_served, 0);
}

/// A saver that hangs while its process lives cannot hold the lease for
/// ever: the write is abandoned after `write_timeout`, and the next writer
/// gets the lease.
#[tokio::test(start_paused = true)]
async fn a_hung_saver_is_abandoned_and_the_lease_freed() {
    let backend = MemoryBackend::new();
    let hung = Reloader::builder(Synchronizer::new(backend.clone(), key()), || async {
        Ok::<_, std::convert::Infallible>(0u64)
    })
    .saver(|_: &u64| std::future::pending::<Result<(), std::convert::Infallible>>())
    .write_lock(LEASE, 40)
    .write_timeout(Duration::from_secs(20))
    .build(0)
    .unwrap();
    let store = Arc::new(Store::default());
    let next = process(backend, &store, &Arc::new(Pace::default()))
        .build(Vec::new())
        .unwrap();

    let stuck = tokio::spawn(async move { hung.publish(1).await });
    tokio::time::sleep(Duration::from_secs(10)).await;
    let err = next.publish(vec!["next".into()]).await.unwrap_err();
    assert!(
        matches!(err, PublishError::Locked { .. }),
        "held while working: {err}"
    );
    let err = stuck.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("abandoned"), "{err}");
    next.publish(vec!["next".into()])
        .await
        .expect("the lease was freed");
    assert_eq!(store.value(), ["next"]);
}

/// A caller that stops waiting (a request dropped mid-write) does not cut
/// the write off between its save and its bump: the write finishes, and
/// every process hears of it.
#[tokio::test(start_paused = true)]
async fn a_dropped_publish_still_finishes_its_write() {
    let store = Arc::new(Store::default());
    let backend = MemoryBackend::new();
    let slow = Arc::new(Pace::default());
    *slow.slow.lock().unwrap() = Duration::from_secs(2);
    let writer = process(backend.clone(), &store, &slow)
        .build(Vec::new())
        .unwrap();
    let reader = process(backend, &store, &Arc::new(Pace::default()))
        .build(Vec::new())
        .unwrap();
    assert!(reader.check().await.is_empty());

    let caller = tokio::spawn(async move { writer.publish(vec!["kept".into()]).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    caller.abort();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(store.value(), ["kept"]);
    assert_eq!(
        *reader.check().await,
        ["kept"],
        "announced, not left to lapse"
    );
}
