//! The synchronizer's rules, against a scripted backend: checks, creation
//! and reads here; bumps and the other writes in `tests/writers.rs`, which
//! shares the script helpers below.

use std::sync::{Arc, Mutex};

use mockall::Sequence;

use super::*;
use crate::backend::MockBackend;

mod writes;

fn key() -> Key {
    Key::new(["unit", "settings"]).unwrap()
}

fn down() -> BackendError {
    BackendError::Unreachable {
        target: "Redis at redis://127.0.0.1:1".into(),
        reason: "Connection refused (os error 111)".into(),
    }
}

/// A scripted backend on one server all along (its epoch never moves).
fn mock() -> MockBackend {
    let mut backend = MockBackend::new();
    backend.expect_epoch().return_const(0u64);
    backend.expect_identity().return_const((0u64, Some(0u64)));
    backend
}

fn sync(backend: MockBackend) -> Synchronizer<MockBackend> {
    Synchronizer::new(backend, key())
}

fn g(value: u64) -> Generation {
    Generation::new(value).unwrap()
}

// check / is_expired

#[tokio::test]
async fn equal_shared_generation_is_fresh() {
    let mut backend = mock();
    backend.expect_get().returning(|_| Ok(Stored::Value(g(77))));
    let sync = sync(backend);
    sync.record(g(77));
    let check = sync.check().await;
    assert_eq!(check.shared, Observed::Value(g(77)));
    assert!(!check.is_expired());
    assert!(!sync.is_expired().await);
}

#[tokio::test]
async fn anything_but_the_local_generation_is_expired() {
    for (stored, observed) in [
        (Ok(Stored::Value(g(78))), Observed::Value(g(78))),
        (Ok(Stored::Missing), Observed::Missing),
        (Ok(Stored::Corrupt), Observed::Corrupt),
        (Err(down()), Observed::Unavailable),
    ] {
        let mut backend = mock();
        backend.expect_get().return_once(move |_| stored);
        let sync = sync(backend);
        sync.record(g(77));
        let check = sync.check().await;
        assert_eq!(check.shared, observed);
        assert!(check.is_expired(), "{observed:?} must read as expired");
        assert_eq!(check.local, Some(g(77)));
    }
}

#[tokio::test]
async fn nothing_recorded_is_expired_even_when_the_key_exists() {
    let mut backend = mock();
    backend.expect_get().returning(|_| Ok(Stored::Value(g(77))));
    let sync = sync(backend);
    let check = sync.check().await;
    assert!(check.is_expired());
    assert_eq!(check.observed(), Some(g(77)));
}

// fetch-or-create and refresh

#[tokio::test]
async fn refresh_stores_the_value_it_created() {
    let created = Arc::new(Mutex::new(None));
    let mut backend = mock();
    let seen = Arc::clone(&created);
    backend
        .expect_add()
        .withf(|_, _, ttl| *ttl == DEFAULT_TTL)
        .times(1)
        .returning(move |_, generation, _| {
            *seen.lock().unwrap() = Some(generation);
            Ok(true)
        });
    let sync = sync(backend);
    let got = sync.refresh().await.unwrap();
    assert_eq!(Some(got), *created.lock().unwrap());
    assert_eq!(sync.sync_gen(), Some(got));
}

#[tokio::test]
async fn refresh_adopts_the_value_another_process_created() {
    let mut backend = mock();
    backend.expect_add().times(1).returning(|_, _, _| Ok(false));
    backend
        .expect_get()
        .times(1)
        .returning(|_| Ok(Stored::Value(g(4242))));
    let sync = sync(backend);
    assert_eq!(sync.refresh().await.unwrap(), g(4242));
    assert_eq!(sync.sync_gen(), Some(g(4242)));
}

#[tokio::test]
async fn fetch_or_create_retries_when_the_key_vanishes_in_between() {
    let mut seq = Sequence::new();
    let mut backend = mock();
    backend
        .expect_add()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(false));
    backend
        .expect_get()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Stored::Missing));
    backend
        .expect_add()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    let sync = sync(backend);
    let got = sync.fetch_or_create().await.unwrap();
    assert!(got.get() >= 1 << 32, "a fresh value, not {got}");
    assert_eq!(sync.sync_gen(), None, "fetch_or_create records nothing");
}

#[tokio::test]
async fn fetch_or_create_gives_up_after_bounded_tries() {
    let mut backend = mock();
    backend.expect_add().times(3).returning(|_, _, _| Ok(false));
    backend
        .expect_get()
        .times(3)
        .returning(|_| Ok(Stored::Missing));
    let sync = sync(backend);
    let err = sync.refresh().await.unwrap_err();
    assert!(matches!(err, Error::Contended { tries: 3, .. }), "{err}");
    assert!(
        sync.sync_gen().is_some(),
        "a candidate is recorded even on error"
    );
}

#[tokio::test]
async fn fetch_or_create_replaces_a_corrupt_value() {
    let mut seq = Sequence::new();
    let mut backend = mock();
    backend
        .expect_add()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(false));
    backend
        .expect_get()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(Stored::Corrupt));
    backend
        .expect_delete()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    backend
        .expect_add()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    let sync = sync(backend);
    let got = sync.refresh().await.unwrap();
    assert_eq!(sync.sync_gen(), Some(got));
}

#[tokio::test]
async fn refresh_records_a_fresh_candidate_on_every_backend_error() {
    type Script = fn(&mut MockBackend);
    let scripts: [(&str, Script); 3] = [
        ("add", |b| {
            b.expect_add().returning(|_, _, _| Err(down()));
        }),
        ("get", |b| {
            b.expect_add().returning(|_, _, _| Ok(false));
            b.expect_get().returning(|_| Err(down()));
        }),
        ("delete", |b| {
            b.expect_add().returning(|_, _, _| Ok(false));
            b.expect_get().returning(|_| Ok(Stored::Corrupt));
            b.expect_delete().returning(|_| Err(down()));
        }),
    ];
    for (failing, script) in scripts {
        let mut backend = mock();
        script(&mut backend);
        let sync = sync(backend);
        sync.record(g(5));
        let err = sync.refresh().await.unwrap_err();
        assert_eq!(err, Error::Backend(down()), "{failing}");
        let local = sync.sync_gen().expect("a value is always recorded");
        assert_ne!(local, g(5), "{failing}: the stale value must not stay");
        assert!(local.get() >= 1 << 32, "{failing}: a fresh candidate");
    }
}

// read, the key, and a change of server

#[tokio::test]
async fn after_a_change_of_server_the_same_value_reads_as_a_change() {
    let epoch = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut backend = MockBackend::new();
    let e = Arc::clone(&epoch);
    backend
        .expect_epoch()
        .returning(move || e.load(std::sync::atomic::Ordering::SeqCst));
    let e = Arc::clone(&epoch);
    // A process-local count as the identity, as a backend that cannot
    // name its servers alike in every process.
    backend.expect_identity().returning(move |_| {
        let epoch = e.load(std::sync::atomic::Ordering::SeqCst);
        (epoch, Some(epoch))
    });
    backend.expect_get().returning(|_| Ok(Stored::Value(g(77))));
    let sync = sync(backend);
    let first = sync.check().await.observed().unwrap();
    assert_eq!(first, g(77), "one server all along: values as stored");
    sync.record(first);
    assert!(!sync.is_expired().await);
    epoch.store(1, std::sync::atomic::Ordering::SeqCst);
    let check = sync.check().await;
    assert!(check.is_expired(), "expired once after the server changed");
    sync.record(check.observed().unwrap());
    assert!(!sync.is_expired().await, "and current again once reloaded");
    // What an operator reads is what a check observes.
    assert_eq!(
        sync.read().await,
        Ok(Stored::Value(check.observed().unwrap()))
    );
}

#[tokio::test]
async fn the_key_is_passed_to_the_backend() {
    let mut backend = mock();
    backend
        .expect_get()
        .withf(|k| k.as_str() == "gensync:unit:settings")
        .times(1)
        .returning(|_| Ok(Stored::Missing));
    sync(backend).check().await;
}

#[tokio::test]
async fn read_reports_what_is_stored_and_the_backends_error() {
    let mut backend = mock();
    let mut seq = Sequence::new();
    for reply in [Ok(Stored::Value(g(77))), Ok(Stored::Corrupt), Err(down())] {
        backend
            .expect_get()
            .times(1)
            .in_sequence(&mut seq)
            .return_once(move |_| reply);
    }
    let sync = sync(backend);
    assert_eq!(sync.read().await, Ok(Stored::Value(g(77))));
    assert_eq!(sync.read().await, Ok(Stored::Corrupt));
    assert_eq!(sync.read().await, Err(Error::Backend(down())));
    assert_eq!(sync.sync_gen(), None, "a read records nothing");
}

/// A backend whose server's identity comes with its next answer (a
/// Cluster slot that just moved), then is 7.
fn learning_then_7(backend: &mut MockBackend) {
    backend.expect_epoch().return_const(0u64);
    let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    backend.expect_identity().returning(move |_| {
        let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        (0, (n > 0).then_some(7))
    });
}

#[tokio::test]
async fn an_identity_being_learnt_is_read_again_not_shown() {
    let mut backend = MockBackend::new();
    learning_then_7(&mut backend);
    backend
        .expect_get()
        .times(2)
        .returning(|_| Ok(Stored::Value(g(77))));
    let check = sync(backend).check().await;
    assert_eq!(check.observed(), Some(g(77).on_server(7)));
}

#[tokio::test]
async fn a_bump_is_shown_with_the_identity_its_server_then_tells() {
    let mut backend = MockBackend::new();
    learning_then_7(&mut backend);
    backend
        .expect_incr()
        .returning(|_, _, _, _| Ok(Stored::Value(g(80))));
    // The read that learns the identity.
    backend
        .expect_get()
        .times(1)
        .returning(|_| Ok(Stored::Value(g(80))));
    let bumped = sync(backend).mark_updated().await.unwrap();
    assert_eq!(bumped, g(80).on_server(7));
}
