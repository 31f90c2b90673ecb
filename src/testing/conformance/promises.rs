//! The promises, one `async fn` each, every one run on a fresh [`Store`].
//!
//! Moved here from the crate's own `tests/behaviour.rs`, which now runs
//! them through [`backend_conformance!`](crate::backend_conformance).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Store;
use crate::backend::{Backend, Stored};
use crate::generation::Generation;
use crate::key::Key;
use crate::synchronizer::{
    GenerationSynchronizer, Observed, Synchronizer, WriterLock, DEFAULT_TTL,
};

/// The one key every promise uses.
pub fn key() -> Key {
    Key::new(["behaviour", "settings"]).expect("a valid key")
}

/// Two processes adopt one value and see each other's bumps; a bump records
/// nothing.
pub async fn two_synchronizers_see_each_others_bumps(store: impl Store) {
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

/// A clear expires every process, and the next refresh creates a new value.
pub async fn clear_expires_everyone(store: impl Store) {
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

/// A key evicted and created again within a millisecond is still a change
/// to a process that held the old one.
pub async fn a_key_recreated_at_once_is_still_a_change(store: impl Store) {
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

/// Garbage at the key reads as corrupt (expired), and a bump repairs it
/// with a fresh value.
pub async fn garbage_reads_expired_and_mark_updated_repairs_it(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    let writer = Synchronizer::new(store.process(), key());
    reader.refresh().await.unwrap();
    // The last one is a valid generation that cannot be incremented.
    for raw in ["garbage", "-5", "0", "", "9223372036854775807"] {
        store.write_raw(&key(), raw);
        let check = reader.check().await;
        if raw.is_empty() {
            // Redis's bounded read (`GETRANGE`) answers an empty string
            // for a missing key too: either way, expired.
            assert!(
                matches!(check.shared, Observed::Corrupt | Observed::Missing),
                "{:?}",
                check.shared
            );
        } else if raw.len() < 19 {
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

/// A refresh replaces garbage at the key too.
pub async fn a_refresh_replaces_garbage_too(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    store.write_raw(&key(), "not a number");
    let g = reader.refresh().await.unwrap();
    assert!(!reader.is_expired().await);
    assert_eq!(reader.check().await.observed(), Some(g));
}

/// Sixteen processes creating the key at once all adopt one value.
pub async fn concurrent_creators_agree_on_one_value(store: impl Store) {
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

/// Twenty concurrent bumps each return their own value, the stored one
/// grows by at least twenty, and the last bump's value is kept.
pub async fn concurrent_bumps_are_all_counted(store: impl Store) {
    Synchronizer::new(store.process(), key())
        .refresh()
        .await
        .unwrap();
    let stored = || async { store.process().get(&key()).await.unwrap() };
    let Stored::Value(first) = stored().await else {
        panic!("no generation stored")
    };
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = Synchronizer::new(store.process(), key());
            tokio::spawn(async move { s.mark_updated().await.unwrap() })
        })
        .collect();
    let mut values = HashSet::new();
    for t in tasks {
        values.insert(t.await.unwrap());
    }
    assert_eq!(values.len(), 20, "each bump returned its own value");
    // What is stored only grows, by at least one a bump (what a bump
    // returns is the number shown for it, mixed with the server's identity).
    let Stored::Value(last) = stored().await else {
        panic!("no generation stored")
    };
    assert!(last.get() >= first.get() + 20, "{first} -> {last}");
    // The value kept is the last bump's: one of those returned.
    let kept = Synchronizer::new(store.process(), key()).read().await;
    let Ok(Stored::Value(kept)) = kept else {
        panic!("{kept:?}")
    };
    assert!(values.contains(&kept), "{kept} is no bump's");
}

/// The writers' lease is held, renewed and released only by its token, a
/// release answers the same when retried, fences grow with each take, and
/// the lease lives beside the key.
pub async fn the_writers_lease_is_owned_by_its_token_and_fences_grow(store: impl Store) {
    let a = Synchronizer::new(store.process(), key());
    let b = Synchronizer::new(store.process(), key());
    let (mine, theirs) = (Generation::fresh(), Generation::fresh());
    let ttl = Duration::from_secs(30);
    let first = a.try_lock(mine, ttl).await.unwrap().expect("free");
    assert_eq!(b.try_lock(theirs, ttl).await.unwrap(), None, "held");
    assert!(!b.renew(theirs, ttl).await.unwrap(), "not theirs to renew");
    assert!(!b.unlock(theirs).await.unwrap(), "not theirs to release");
    assert!(a.renew(mine, ttl).await.unwrap());
    // Taking it again while holding it is no error: a retried call.
    let again = a.try_lock(mine, ttl).await.unwrap().expect("still mine");
    assert!(again > first, "{again} > {first}");
    assert!(a.unlock(mine).await.unwrap());
    // A release sent twice (a retry after a lost reply) answers the same.
    assert!(a.unlock(mine).await.unwrap(), "released by its own token");
    let next = b.try_lock(theirs, ttl).await.unwrap().expect("free again");
    assert!(next > again, "{next} > {again}");
    // The lease lives beside the key, not at it.
    assert_eq!(a.check().await.shared, Observed::Missing);
}

/// A writer's intent alone expires no process.
pub async fn an_intent_alone_is_no_change(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    let writer = Synchronizer::new(store.process(), key());
    reader.refresh().await.unwrap();
    writer
        .mark_intent(Generation::fresh(), Duration::from_secs(30))
        .await
        .unwrap();
    assert!(!reader.is_expired().await, "an intent alone is no change");
}

/// How long the intents below last: long enough for the calls made while
/// one is pending, short enough to wait out.
const LEASE: Duration = Duration::from_millis(600);

/// Waits until the key lapsed, for at most `bound`.
async fn lapses_within(reader: &Synchronizer<impl Backend>, bound: Duration) -> bool {
    let until = Instant::now() + bound;
    while Instant::now() < until {
        if reader.check().await.shared == Observed::Missing {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A dead writer's intent still lapses the key after other writers bumped
/// and published.
pub async fn a_pending_intent_survives_other_bumps(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    let dead = Synchronizer::new(store.process(), key());
    let other = Synchronizer::new(store.process(), key());
    reader.refresh().await.unwrap();
    // A writer records its intent, saves, and dies before its bump; then
    // an operator bumps and another writer publishes.
    dead.mark_intent(Generation::fresh(), LEASE).await.unwrap();
    other.mark_updated().await.unwrap();
    let token = Generation::fresh();
    other.try_lock(token, LEASE * 10).await.unwrap().unwrap();
    other.mark_intent(token, LEASE * 10).await.unwrap();
    other.mark_updated_by(token).await.unwrap();
    other.unlock(token).await.unwrap();
    // The dead writer's intent still lapses the key, so every process
    // reloads what it saved.
    assert!(
        lapses_within(&reader, LEASE * 5).await,
        "the key outlived a dead writer's intent"
    );
}

/// A key created while a writer's intent is pending lapses with the intent.
pub async fn a_key_created_while_an_intent_is_pending_lapses_with_it(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    let dead = Synchronizer::new(store.process(), key());
    dead.mark_intent(Generation::fresh(), LEASE).await.unwrap();
    // Missing until a reader creates it, after the writer's save.
    reader.refresh().await.unwrap();
    assert!(lapses_within(&reader, LEASE * 5).await);
}

/// An intent cuts the key's life to the lease, and the writer's own bump
/// gives it its full life back.
pub async fn a_writers_own_bump_ends_its_intent(store: impl Store) {
    let reader = Synchronizer::new(store.process(), key());
    let writer = Synchronizer::new(store.process(), key());
    reader.refresh().await.unwrap();
    let token = Generation::fresh();
    writer.mark_intent(token, LEASE).await.unwrap();
    assert!(
        store.ttl(&key()).is_some_and(|t| t <= LEASE),
        "cut to the lease"
    );
    let bumped = writer.mark_updated_by(token).await.unwrap();
    let left = store.ttl(&key());
    assert!(
        left.is_some_and(|t| t > DEFAULT_TTL / 2),
        "the key lives a year again once its only writer bumped: {left:?}"
    );
    assert_eq!(reader.check().await.observed(), Some(bumped));
}

/// A writer's bump onto a missing key creates it for its full life, not
/// capped by the writer's intent.
pub async fn a_writers_bump_onto_a_missing_key_ends_its_intent_too(store: impl Store) {
    let writer = Synchronizer::new(store.process(), key());
    let token = Generation::fresh();
    writer.mark_intent(token, LEASE).await.unwrap();
    // The key is gone when the writer bumps: its bump creates it.
    writer.mark_updated_by(token).await.unwrap();
    let left = store.ttl(&key());
    assert!(
        left.is_some_and(|t| t > DEFAULT_TTL / 2),
        "created for a year, not capped by the writer's own intent: {left:?}"
    );
}
