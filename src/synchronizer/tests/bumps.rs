//! The synchronizer's bumps against a scripted backend: bumps and their
//! repairs, clear (a bump's opposite), and the time to live every write
//! carries.

use std::sync::{Arc, Mutex};

use mockall::predicate::always;
use mockall::Sequence;

use super::*;
use crate::synchronizer::WriterLock;

// mark_updated

#[tokio::test]
async fn mark_updated_increments_and_leaves_the_local_value_alone() {
    let mut backend = mock();
    backend
        .expect_incr()
        .withf(|_, step, ttl, finished| *step >= 1 && *ttl == DEFAULT_TTL && finished.is_none())
        .times(1)
        .returning(|_, _, _, _| Ok(Stored::Value(g(78))));
    backend.expect_add_replicated().never();
    let sync = sync(backend);
    sync.record(g(77));
    assert_eq!(sync.mark_updated().await.unwrap(), g(78));
    assert_eq!(sync.sync_gen(), Some(g(77)));
}

#[tokio::test]
async fn mark_updated_repairs_a_missing_key_with_a_fresh_value() {
    let mut backend = mock();
    backend
        .expect_incr()
        .times(1)
        .returning(|_, _, _, _| Ok(Stored::Missing));
    backend.expect_delete().never();
    backend
        .expect_add_replicated()
        .with(always(), always(), mockall::predicate::eq(DEFAULT_TTL))
        .times(1)
        .returning(|_, _, _| Ok(true));
    let got = sync(backend).mark_updated().await.unwrap();
    assert!(got.get() >= 1 << 32, "not a small INCR-like value: {got}");
}

#[tokio::test]
async fn mark_updated_repairs_a_corrupt_value() {
    let mut seq = Sequence::new();
    let mut backend = mock();
    backend
        .expect_incr()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(Stored::Corrupt));
    backend
        .expect_delete()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    backend
        .expect_add_replicated()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(true));
    let got = sync(backend).mark_updated().await.unwrap();
    assert!(got.get() >= 1 << 32);
}

#[tokio::test]
async fn mark_updated_bumps_a_key_another_process_created_meanwhile() {
    let mut seq = Sequence::new();
    let mut backend = mock();
    backend
        .expect_incr()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(Stored::Missing));
    backend
        .expect_add_replicated()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _| Ok(false));
    backend
        .expect_incr()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, _, _, _| Ok(Stored::Value(g(1 << 40))));
    assert_eq!(sync(backend).mark_updated().await.unwrap(), g(1 << 40));
}

#[tokio::test]
async fn mark_updated_reports_every_backend_error() {
    type Script = fn(&mut MockBackend);
    let scripts: [(&str, Script); 3] = [
        ("incr", |b| {
            b.expect_incr().returning(|_, _, _, _| Err(down()));
        }),
        ("delete", |b| {
            b.expect_incr().returning(|_, _, _, _| Ok(Stored::Corrupt));
            b.expect_delete().returning(|_| Err(down()));
        }),
        ("add_replicated", |b| {
            b.expect_incr().returning(|_, _, _, _| Ok(Stored::Missing));
            b.expect_add_replicated().returning(|_, _, _| Err(down()));
        }),
    ];
    for (failing, script) in scripts {
        let mut backend = mock();
        script(&mut backend);
        let err = sync(backend).mark_updated().await.unwrap_err();
        assert_eq!(err, Error::Backend(down()), "{failing}");
    }
}

#[tokio::test]
async fn mark_updated_gives_up_after_bounded_tries() {
    let mut backend = mock();
    backend
        .expect_incr()
        .times(3)
        .returning(|_, _, _, _| Ok(Stored::Missing));
    backend
        .expect_add_replicated()
        .times(3)
        .returning(|_, _, _| Ok(false));
    let err = sync(backend).mark_updated().await.unwrap_err();
    assert!(matches!(err, Error::Contended { tries: 3, .. }), "{err}");
}

// clear and settings

#[tokio::test]
async fn clear_deletes_and_reports_errors() {
    let mut backend = mock();
    backend.expect_delete().times(1).returning(|_| Ok(()));
    sync(backend).clear().await.unwrap();

    let mut backend = mock();
    backend.expect_delete().times(1).returning(|_| Err(down()));
    assert_eq!(
        sync(backend).clear().await.unwrap_err(),
        Error::Backend(down())
    );
}

#[tokio::test]
async fn the_configured_ttl_reaches_every_write() {
    let ttl = Duration::from_secs(60);
    let mut backend = mock();
    backend
        .expect_add()
        .withf(move |_, _, t| *t == ttl)
        .times(1)
        .returning(|_, _, _| Ok(true));
    backend
        .expect_incr()
        .withf(move |_, _, t, _| *t == ttl)
        .times(2)
        .returning(|_, _, _, _| Ok(Stored::Value(g(9))));
    // A writer's lease and intent are their own length; the key's time to
    // live follows them up to the configured one.
    let lease = Duration::from_secs(5);
    backend
        .expect_intend()
        .withf(move |_, _, l, t| *l == lease && *t == ttl)
        .times(1)
        .returning(|_, _, _, _| Ok(()));
    backend
        .expect_renew()
        .withf(move |_, _, l, t| *l == lease && *t == ttl)
        .times(1)
        .returning(|_, _, _, _| Ok(true));
    let sync = sync(backend).with_ttl(ttl).unwrap();
    sync.refresh().await.unwrap();
    sync.mark_updated().await.unwrap();
    let token = g(5);
    sync.mark_intent(token, lease).await.unwrap();
    assert!(sync.renew(token, lease).await.unwrap());
    sync.mark_updated_by(token).await.unwrap();
}

#[tokio::test]
async fn a_bump_steps_by_a_random_amount_and_a_writers_bump_names_it() {
    let steps = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&steps);
    let mut backend = mock();
    backend
        .expect_incr()
        .times(64)
        .returning(move |_, step, _, finished| {
            seen.lock().unwrap().push((step, finished));
            Ok(Stored::Value(g(9)))
        });
    let sync = sync(backend);
    for _ in 0..63 {
        sync.mark_updated().await.unwrap();
    }
    sync.mark_updated_by(g(5)).await.unwrap();
    let steps = steps.lock().unwrap();
    assert!(steps.iter().all(|(s, _)| (1..=1 << 40).contains(s)));
    let distinct: std::collections::HashSet<_> = steps.iter().map(|(s, _)| s).collect();
    assert!(distinct.len() > 60, "steps are drawn at random: {steps:?}");
    assert!(steps[..63].iter().all(|(_, f)| f.is_none()));
    assert_eq!(steps[63].1, Some(g(5)));
}

#[test]
fn a_ttl_under_a_millisecond_is_refused() {
    let err = Synchronizer::new(mock(), key())
        .with_ttl(Duration::from_micros(10))
        .unwrap_err();
    assert!(err.to_string().contains("at least 1 ms"), "{err}");
}
