//! The behavioural suite, run on the memory backend and on a real
//! redis-server (one per test).

#[macro_use]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gensync::{GenerationSynchronizer, Key, Observed, Synchronizer, WriterLock};
use support::Store;

fn key() -> Key {
    Key::new(["behaviour", "settings"]).unwrap()
}

async fn two_synchronizers_see_each_others_bumps(store: impl Store) {
    let a = Synchronizer::new(store.process(), key());
    let b = Synchronizer::new(store.process(), key());
    let ga = a.refresh().await.unwrap();
    let gb = b.refresh().await.unwrap();
    assert_eq!(ga, gb, "the second process adopts the first one's value");
    assert!(!a.is_expired().await && !b.is_expired().await);

    let bumped = b.mark_updated().await.unwrap();
    assert_ne!(bumped, ga);
    assert!(a.is_expired().await, "a sees b's bump");
    assert!(
        b.is_expired().await,
        "b reloads too: mark_updated records nothing"
    );
    assert_eq!(a.check().await.observed(), Some(bumped));

    a.record(bumped);
    assert!(!a.is_expired().await);
    a.mark_updated().await.unwrap();
    assert!(b.is_expired().await, "b sees a's bump");
}

async fn clear_expires_everyone(store: impl Store) {
    let syncs: Vec<_> = (0..3)
        .map(|_| Synchronizer::new(store.process(), key()))
        .collect();
    for s in &syncs {
        s.refresh().await.unwrap();
        assert!(!s.is_expired().await);
    }
    syncs[0].clear().await.unwrap();
    for s in &syncs {
        let check = s.check().await;
        assert_eq!(check.shared, Observed::Missing);
        assert!(check.is_expired());
    }
    // The next refresh creates a new value that differs from the old one.
    let old = syncs[1].sync_gen().unwrap();
    assert_ne!(syncs[1].refresh().await.unwrap(), old);
}

async fn a_key_recreated_at_once_is_still_a_change(store: impl Store) {
    let stale = Synchronizer::new(store.process(), key());
    let other = Synchronizer::new(store.process(), key());
    // At least 100 rounds, and on until one eviction and re-creation took
    // under a millisecond (a loaded machine may need more rounds for that).
    let mut within_a_millisecond = 0;
    for round in 0..3000 {
        if round >= 100 && within_a_millisecond > 0 {
            break;
        }
        stale.refresh().await.unwrap();
        let started = Instant::now();
        store.evict(&key());
        other.refresh().await.unwrap();
        if started.elapsed() < Duration::from_millis(1) {
            within_a_millisecond += 1;
        }
        assert!(
            stale.is_expired().await,
            "a stale holder must see the re-created key as a change"
        );
    }
    assert!(
        within_a_millisecond > 0,
        "no eviction and re-creation happened within one millisecond"
    );
}

async fn garbage_reads_expired_and_mark_updated_repairs_it(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    let writer = Synchronizer::new(store.process(), key());
    reader.refresh().await.unwrap();
    // The last one is a valid generation that cannot be incremented.
    for raw in ["garbage", "-5", "0", "", "9223372036854775807"] {
        store.write_raw(&key(), raw);
        let check = reader.check().await;
        if raw.len() < 19 {
            assert_eq!(check.shared, Observed::Corrupt, "{raw:?}");
        }
        assert!(check.is_expired(), "{raw:?}");

        let repaired = writer.mark_updated().await.unwrap();
        assert!(repaired.get() >= 1 << 32, "{raw:?}: a fresh value");
        assert_eq!(reader.check().await.observed(), Some(repaired), "{raw:?}");
        assert_eq!(reader.refresh().await.unwrap(), repaired);
        assert!(!reader.is_expired().await);
    }
}

async fn a_refresh_replaces_garbage_too(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    store.write_raw(&key(), "not a number");
    let g = reader.refresh().await.unwrap();
    assert!(!reader.is_expired().await);
    assert_eq!(reader.check().await.observed(), Some(g));
}

async fn concurrent_creators_agree_on_one_value(store: impl Store) {
    let syncs: Vec<_> = (0..16)
        .map(|_| Arc::new(Synchronizer::new(store.process(), key())))
        .collect();
    let tasks: Vec<_> = syncs
        .iter()
        .cloned()
        .map(|s| tokio::spawn(async move { s.refresh().await.unwrap() }))
        .collect();
    let mut values = HashSet::new();
    for t in tasks {
        values.insert(t.await.unwrap());
    }
    assert_eq!(
        values.len(),
        1,
        "every process adopted one value: {values:?}"
    );
}

async fn concurrent_bumps_are_all_counted(store: impl Store) {
    let first = Synchronizer::new(store.process(), key())
        .refresh()
        .await
        .unwrap();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = Synchronizer::new(store.process(), key());
            tokio::spawn(async move { s.mark_updated().await.unwrap() })
        })
        .collect();
    let mut values = HashSet::new();
    for t in tasks {
        values.insert(t.await.unwrap().get());
    }
    let expected: HashSet<u64> = (1..=20).map(|n| first.get() + n).collect();
    assert_eq!(values, expected, "each bump returned its own increment");
}

async fn the_writers_lock_is_owned_by_its_token(store: impl Store) {
    let a = Synchronizer::new(store.process(), key());
    let b = Synchronizer::new(store.process(), key());
    let (mine, theirs) = (gensync::Generation::fresh(), gensync::Generation::fresh());
    let ttl = Duration::from_secs(30);
    assert!(a.try_lock(mine, ttl).await.unwrap());
    assert!(!b.try_lock(theirs, ttl).await.unwrap(), "held");
    assert!(!b.unlock(theirs).await.unwrap(), "not theirs to release");
    assert!(a.unlock(mine).await.unwrap());
    assert!(b.try_lock(theirs, ttl).await.unwrap(), "free again");
    // The lock lives beside the key, not at it.
    assert_eq!(a.check().await.shared, Observed::Missing);
}

async fn an_intent_creates_a_missing_key_and_keeps_an_existing_one(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    let writer = Synchronizer::new(store.process(), key());
    writer.mark_intent(Duration::from_secs(30)).await.unwrap();
    let created = reader.check().await.observed().expect("created");
    reader.record(created);
    writer.mark_intent(Duration::from_secs(30)).await.unwrap();
    assert!(!reader.is_expired().await, "an intent alone is no change");
}

on_every_store!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    memory, redis:
    two_synchronizers_see_each_others_bumps,
    clear_expires_everyone,
    a_key_recreated_at_once_is_still_a_change,
    garbage_reads_expired_and_mark_updated_repairs_it,
    a_refresh_replaces_garbage_too,
    concurrent_creators_agree_on_one_value,
    the_writers_lock_is_owned_by_its_token,
    an_intent_creates_a_missing_key_and_keeps_an_existing_one,
    concurrent_bumps_are_all_counted,
);
