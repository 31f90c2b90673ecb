//! The memory backend's storage rules: time to live, increments, intents,
//! the lease and its fence, and one store shared by clones.

use super::*;

fn key() -> Key {
    Key::new(["memory", "test"]).unwrap()
}

#[tokio::test(start_paused = true)]
async fn honours_time_to_live() {
    let backend = MemoryBackend::new();
    let g = Generation::fresh();
    assert!(backend
        .add(&key(), g, Duration::from_secs(10))
        .await
        .unwrap());
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(backend.get(&key()).await.unwrap(), Stored::Value(g));
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
    // An expired key is absent for add, too.
    assert!(backend
        .add(&key(), g, Duration::from_secs(10))
        .await
        .unwrap());
}

#[tokio::test(start_paused = true)]
async fn incr_adds_the_step_and_resets_the_time_to_live() {
    let backend = MemoryBackend::new();
    let g = Generation::fresh();
    let ttl = Duration::from_secs(10);
    backend.add(&key(), g, ttl).await.unwrap();
    tokio::time::advance(Duration::from_secs(8)).await;
    let bumped = backend.incr(&key(), 7, ttl, None).await.unwrap();
    assert_eq!(bumped, Stored::Value(Generation::new(g.get() + 7).unwrap()));
    assert_eq!(backend.ttl(&key()), Some(ttl));
}

#[tokio::test]
async fn incr_leaves_missing_corrupt_and_overflowing_keys_alone() {
    let backend = MemoryBackend::new();
    let ttl = Duration::from_secs(10);
    assert_eq!(
        backend.incr(&key(), 1, ttl, None).await.unwrap(),
        Stored::Missing
    );
    assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
    for (raw, step) in [
        ("garbage", 1),
        ("9223372036854775807", 1),
        ("9223372036854775000", 1000),
    ] {
        backend.insert_raw(&key(), raw);
        assert_eq!(
            backend.incr(&key(), step, ttl, None).await.unwrap(),
            Stored::Corrupt,
            "{raw} + {step}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_pending_intent_caps_the_time_to_live_until_its_bump() {
    let backend = MemoryBackend::new();
    let (year, lease) = (Duration::from_secs(3600), Duration::from_secs(5));
    let (writer, other) = (Generation::fresh(), Generation::fresh());
    backend.intend(&key(), writer, lease, year).await.unwrap();
    // Created after the intent: it lives no longer than the intent.
    backend
        .add(&key(), Generation::fresh(), year)
        .await
        .unwrap();
    assert_eq!(backend.ttl(&key()), Some(lease));
    // Another writer's bump keeps the pending lapse.
    backend.incr(&key(), 1, year, Some(other)).await.unwrap();
    assert_eq!(backend.ttl(&key()), Some(lease));
    // The writer's own bump ends its intent.
    backend.incr(&key(), 1, year, Some(writer)).await.unwrap();
    assert_eq!(backend.ttl(&key()), Some(year));
}

#[tokio::test]
async fn the_lease_is_owned_by_its_token_and_its_fence_grows() {
    let backend = MemoryBackend::new();
    let ttl = Duration::from_secs(60);
    let (mine, theirs) = (Generation::fresh(), Generation::fresh());
    let first = backend.lock(&key(), mine, ttl).await.unwrap().unwrap();
    assert_eq!(backend.lock(&key(), theirs, ttl).await.unwrap(), None);
    assert!(!backend.unlock(&key(), theirs).await.unwrap());
    assert!(backend.unlock(&key(), mine).await.unwrap());
    let second = backend.lock(&key(), theirs, ttl).await.unwrap().unwrap();
    assert!(second > first, "{second} > {first}");
}

#[tokio::test]
async fn clones_share_one_store() {
    let a = MemoryBackend::new();
    let b = a.clone();
    let g = Generation::fresh();
    a.add(&key(), g, Duration::from_secs(10)).await.unwrap();
    assert_eq!(b.get(&key()).await.unwrap(), Stored::Value(g));
    assert!(b.evict(&key()));
    assert_eq!(a.get(&key()).await.unwrap(), Stored::Missing);
}
