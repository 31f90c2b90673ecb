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

/// Tracking: every change reaches the tracker before the call returns.
mod track {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn tracking(backend: &MemoryBackend) -> Arc<Tracker> {
        let tracker = Tracker::new();
        assert!(backend.track(&key(), &tracker));
        tracker
    }

    fn value(g: Generation) -> Option<(Stored, u64)> {
        Some((Stored::Value(g), 0))
    }

    #[tokio::test(start_paused = true)]
    async fn tracking_vouches_what_the_key_holds_until_the_instant_it_lapses() {
        let backend = MemoryBackend::new();
        let g = Generation::fresh();
        backend
            .add(&key(), g, Duration::from_secs(10))
            .await
            .unwrap();
        let t = tracking(&backend);
        assert_eq!(t.vouched(), value(g));
        tokio::time::advance(Duration::from_secs(10) - Duration::from_nanos(1)).await;
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Value(g));
        assert_eq!(t.vouched(), value(g), "still live, still vouched");
        tokio::time::advance(Duration::from_nanos(1)).await;
        // Before anything touches the store: nothing pushes a lapse.
        assert_eq!(t.vouched(), None, "lapsed: no longer vouched");
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
        assert_eq!(
            t.vouched(),
            Some((Stored::Missing, 0)),
            "the first call that finds it lapsed pushes that"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_bump_ends_the_vouch_before_it_returns_and_its_value_is_vouched_after() {
        let backend = MemoryBackend::new();
        let g = Generation::fresh();
        backend.add(&key(), g, HOUR).await.unwrap();
        let t = tracking(&backend);
        let before = t.ticket();
        let notifier = t.notifier();
        let woken = notifier.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let Stored::Value(bumped) = backend.incr(&key(), 5, HOUR, None).await.unwrap() else {
            panic!("the bump failed");
        };
        assert!(t.moved_since(before), "the bump invalidated");
        assert!(
            !t.saw(before, Stored::Value(g), 0),
            "a read begun before the bump vouches nothing"
        );
        assert!(
            tokio::time::timeout(Duration::ZERO, woken).await.is_ok(),
            "the tracker's waiters were woken"
        );
        assert_eq!(t.vouched(), value(bumped));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_an_eviction_or_garbage_ends_the_vouch_for_the_value() {
        let backend = MemoryBackend::new();
        let t = tracking(&backend);
        type Change = (&'static str, fn(&MemoryBackend));
        let change: [Change; 3] = [
            ("delete", |b| {
                futures_executor::block_on(b.delete(&key())).unwrap();
            }),
            ("evict", |b| assert!(b.evict(&key()))),
            ("garbage", |b| b.insert_raw(&key(), "not a generation")),
        ];
        for (what, change) in change {
            let g = Generation::fresh();
            backend.delete(&key()).await.unwrap();
            backend.add(&key(), g, HOUR).await.unwrap();
            assert_eq!(t.vouched(), value(g), "{what}: vouched before");
            let before = t.ticket();
            change(&backend);
            assert!(t.moved_since(before), "{what}: invalidated");
            let stored = backend.get(&key()).await.unwrap();
            assert_ne!(stored, Stored::Value(g), "{what}");
            assert_eq!(
                t.vouched(),
                Some((stored, 0)),
                "{what}: what a get reads now"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_restore_ends_the_vouch_and_vouches_the_old_value_in_the_new_epoch() {
        let backend = MemoryBackend::new();
        let old = Generation::fresh();
        backend.add(&key(), old, HOUR).await.unwrap();
        let point = backend.save_point();
        let Stored::Value(new) = backend.incr(&key(), 1, HOUR, None).await.unwrap() else {
            panic!("the bump failed");
        };
        let t = tracking(&backend);
        assert_eq!(t.vouched(), value(new));
        let before = t.ticket();
        backend.restore(&point);
        assert!(t.moved_since(before), "the restore invalidated");
        assert_eq!(backend.epoch(), 1);
        assert_eq!(t.vouched(), Some((Stored::Value(old), 1)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_intent_cuts_the_vouch_to_the_new_lapse_without_invalidating() {
        let backend = MemoryBackend::new();
        let g = Generation::fresh();
        backend.add(&key(), g, HOUR).await.unwrap();
        let t = tracking(&backend);
        let before = t.ticket();
        let lease = Duration::from_secs(5);
        backend
            .intend(&key(), Generation::fresh(), lease, HOUR)
            .await
            .unwrap();
        assert!(!t.moved_since(before), "the value did not change");
        tokio::time::advance(lease - Duration::from_nanos(1)).await;
        assert_eq!(t.vouched(), value(g));
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert_eq!(t.vouched(), None, "vouched no longer than the key lives");
        assert_eq!(backend.get(&key()).await.unwrap(), Stored::Missing);
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_with_no_lapse_is_vouched_until_it_changes() {
        let backend = MemoryBackend::new();
        let g = Generation::fresh();
        backend.insert_raw(&key(), g.to_string());
        let t = tracking(&backend);
        tokio::time::advance(Duration::from_secs(365 * 24 * 3600)).await;
        assert_eq!(t.vouched(), value(g));
        backend.delete(&key()).await.unwrap();
        assert_eq!(t.vouched(), Some((Stored::Missing, 0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_created_after_it_lapsed_is_vouched_again() {
        let backend = MemoryBackend::new();
        let ttl = Duration::from_secs(1);
        backend.add(&key(), Generation::fresh(), ttl).await.unwrap();
        let t = tracking(&backend);
        tokio::time::advance(2 * ttl).await;
        assert_eq!(t.vouched(), None);
        let g = Generation::fresh();
        assert!(backend.add(&key(), g, ttl).await.unwrap());
        assert_eq!(t.vouched(), value(g));
    }

    #[tokio::test(start_paused = true)]
    async fn every_tracker_of_a_key_is_told_and_dropped_ones_are_let_go() {
        let backend = MemoryBackend::new();
        let (a, b) = (tracking(&backend), tracking(&backend));
        let g = Generation::fresh();
        backend.add(&key(), g, HOUR).await.unwrap();
        assert_eq!(a.vouched(), value(g));
        assert_eq!(b.vouched(), value(g));
        drop((a, b));
        backend.delete(&key()).await.unwrap();
        let store = backend.store.lock().unwrap();
        assert!(store.watches.is_empty(), "{:?}", store.watches);
    }
}
