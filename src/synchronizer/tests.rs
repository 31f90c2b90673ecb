//! The synchronizer's rules, against a scripted backend.

use std::sync::{Arc, Mutex};

use mockall::predicate::always;
use mockall::Sequence;

use super::*;
use crate::backend::MockBackend;

fn key() -> Key {
    Key::new(["unit", "settings"]).unwrap()
}

fn down() -> BackendError {
    BackendError::Unreachable {
        target: "Redis at redis://127.0.0.1:1".into(),
        reason: "Connection refused (os error 111)".into(),
    }
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
    let mut backend = MockBackend::new();
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
        let mut backend = MockBackend::new();
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
    let mut backend = MockBackend::new();
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
    let mut backend = MockBackend::new();
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
    let mut backend = MockBackend::new();
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
    let mut backend = MockBackend::new();
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
    let mut backend = MockBackend::new();
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
    let mut backend = MockBackend::new();
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
        let mut backend = MockBackend::new();
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

// mark_updated

#[tokio::test]
async fn mark_updated_increments_and_leaves_the_local_value_alone() {
    let mut backend = MockBackend::new();
    backend
        .expect_incr()
        .withf(|_, ttl| *ttl == DEFAULT_TTL)
        .times(1)
        .returning(|_, _| Ok(Stored::Value(g(78))));
    backend.expect_add().never();
    let sync = sync(backend);
    sync.record(g(77));
    assert_eq!(sync.mark_updated().await.unwrap(), g(78));
    assert_eq!(sync.sync_gen(), Some(g(77)));
}

#[tokio::test]
async fn mark_updated_repairs_a_missing_key_with_a_fresh_value() {
    let mut backend = MockBackend::new();
    backend
        .expect_incr()
        .times(1)
        .returning(|_, _| Ok(Stored::Missing));
    backend.expect_delete().never();
    backend
        .expect_add()
        .with(always(), always(), mockall::predicate::eq(DEFAULT_TTL))
        .times(1)
        .returning(|_, _, _| Ok(true));
    let got = sync(backend).mark_updated().await.unwrap();
    assert!(got.get() >= 1 << 32, "not a small INCR-like value: {got}");
}

#[tokio::test]
async fn mark_updated_repairs_a_corrupt_value() {
    let mut seq = Sequence::new();
    let mut backend = MockBackend::new();
    backend
        .expect_incr()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Stored::Corrupt));
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
    let got = sync(backend).mark_updated().await.unwrap();
    assert!(got.get() >= 1 << 32);
}

#[tokio::test]
async fn mark_updated_bumps_a_key_another_process_created_meanwhile() {
    let mut seq = Sequence::new();
    let mut backend = MockBackend::new();
    backend
        .expect_incr()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Stored::Missing));
    backend
        .expect_add()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(false));
    backend
        .expect_incr()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _| Ok(Stored::Value(g(1 << 40))));
    assert_eq!(sync(backend).mark_updated().await.unwrap(), g(1 << 40));
}

#[tokio::test]
async fn mark_updated_reports_every_backend_error() {
    type Script = fn(&mut MockBackend);
    let scripts: [(&str, Script); 3] = [
        ("incr", |b| {
            b.expect_incr().returning(|_, _| Err(down()));
        }),
        ("delete", |b| {
            b.expect_incr().returning(|_, _| Ok(Stored::Corrupt));
            b.expect_delete().returning(|_| Err(down()));
        }),
        ("add", |b| {
            b.expect_incr().returning(|_, _| Ok(Stored::Missing));
            b.expect_add().returning(|_, _, _| Err(down()));
        }),
    ];
    for (failing, script) in scripts {
        let mut backend = MockBackend::new();
        script(&mut backend);
        let err = sync(backend).mark_updated().await.unwrap_err();
        assert_eq!(err, Error::Backend(down()), "{failing}");
    }
}

#[tokio::test]
async fn mark_updated_gives_up_after_bounded_tries() {
    let mut backend = MockBackend::new();
    backend
        .expect_incr()
        .times(3)
        .returning(|_, _| Ok(Stored::Missing));
    backend.expect_add().times(3).returning(|_, _, _| Ok(false));
    let err = sync(backend).mark_updated().await.unwrap_err();
    assert!(matches!(err, Error::Contended { tries: 3, .. }), "{err}");
}

// clear and settings

#[tokio::test]
async fn clear_deletes_and_reports_errors() {
    let mut backend = MockBackend::new();
    backend.expect_delete().times(1).returning(|_| Ok(()));
    sync(backend).clear().await.unwrap();

    let mut backend = MockBackend::new();
    backend.expect_delete().times(1).returning(|_| Err(down()));
    assert_eq!(
        sync(backend).clear().await.unwrap_err(),
        Error::Backend(down())
    );
}

#[tokio::test]
async fn the_configured_ttl_reaches_every_write() {
    let ttl = Duration::from_secs(60);
    let mut backend = MockBackend::new();
    backend
        .expect_add()
        .withf(move |_, _, t| *t == ttl)
        .times(1)
        .returning(|_, _, _| Ok(true));
    backend
        .expect_incr()
        .withf(move |_, t| *t == ttl)
        .times(1)
        .returning(|_, _| Ok(Stored::Value(g(9))));
    let sync = sync(backend).with_ttl(ttl).unwrap();
    sync.refresh().await.unwrap();
    sync.mark_updated().await.unwrap();
}

#[test]
fn a_ttl_under_a_millisecond_is_refused() {
    let err = Synchronizer::new(MockBackend::new(), key())
        .with_ttl(Duration::from_micros(10))
        .unwrap_err();
    assert!(err.to_string().contains("at least 1 ms"), "{err}");
}

#[tokio::test]
async fn the_key_is_passed_to_the_backend() {
    let mut backend = MockBackend::new();
    backend
        .expect_get()
        .withf(|k| k.as_str() == "gensync:unit:settings")
        .times(1)
        .returning(|_| Ok(Stored::Missing));
    sync(backend).check().await;
}

#[tokio::test]
async fn read_reports_what_is_stored_and_the_backends_error() {
    let mut backend = MockBackend::new();
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
