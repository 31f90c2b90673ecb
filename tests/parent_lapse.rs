//! A keyed set's parent generation that vanishes (its writers' intents
//! lapse, a flush) and comes back: a strict check that began after a
//! parent write returned Ok serves settings at least that new, however
//! many times the parent went and came back in between. A parent that
//! read as missing once was folded as "no parent", a number that came
//! back each time the parent went again.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gensync::backend::Fence;
use gensync::keyed::KeyedReloader;
use gensync::reload::{fenced, CheckMode, Reloader};
use gensync::testing::RedisServer;
use gensync::{GenerationSynchronizer, Key, MemoryBackend, RedisBackend, Synchronizer};
use tokio::time::Instant;

/// A keyed reloader in strict mode whose every tenant is served the
/// parent's version in `source`.
fn keyed(
    backend: impl gensync::backend::Backend + 'static,
    set: &Key,
    source: &Arc<AtomicU64>,
) -> KeyedReloader<String, u64> {
    let source = Arc::clone(source);
    KeyedReloader::builder(
        backend,
        set.clone(),
        |tenant: &String| tenant.clone(),
        move |_tenant: String| {
            let v = source.load(Ordering::SeqCst);
            async move { Ok::<_, Infallible>(v) }
        },
    )
    .mode(CheckMode::Strict)
    .build()
    .unwrap()
}

#[tokio::test]
async fn a_parent_that_vanishes_twice_never_makes_an_older_load_current() {
    let backend = MemoryBackend::new();
    let set = Key::new(["tenants"]).unwrap();
    let source = Arc::new(AtomicU64::new(1));
    let reader = keyed(backend.clone(), &set, &source);
    let parent = Synchronizer::new(backend.clone(), set.clone());
    let tenant = "acme".to_owned();

    parent.mark_updated().await.unwrap();
    assert_eq!(*reader.check(&tenant).await.unwrap(), 1);

    // The parent vanishes (a lapse, a flush); the reader loads meanwhile,
    // and makes the parent anew, so its load is current again.
    parent.clear().await.unwrap();
    let served = reader.check(&tenant).await.unwrap();
    assert_eq!(*served, 1);
    assert!(served.generation().is_some(), "served as current");

    // A site-wide change, told Ok; then the parent vanishes again.
    source.store(2, Ordering::SeqCst);
    parent.mark_updated().await.unwrap();
    parent.clear().await.unwrap();

    let answer = reader.answer(&tenant).await.unwrap();
    assert_eq!(
        *answer.snapshot, 2,
        "a check after the change's Ok serves it (said {:?})",
        answer.freshness
    );
}

/// Waits until `key` is gone from `server`: the parent lapsing with the
/// earliest pending intent.
async fn lapsed(server: &RedisServer, key: &Key) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut admin = server.connection().unwrap();
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key.as_str())
            .query(&mut admin)
            .unwrap();
        if !exists {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never lapsed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn incrby(server: &RedisServer, user: &str, rule: &str) {
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(rule)
        .query::<()>(&mut server.connection().unwrap())
        .unwrap();
}

/// The soak's run: `INCRBY` denied to the writer, its bumps fail after
/// their saves and leave their intents, so the parent lapses with the
/// first; a write then finds it missing and creates it (told Ok); it
/// lapses again with the next intent. A keyed strict reader (the keyed
/// reader's documented ACL: it cannot create the parent) serves that
/// write after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_write_told_ok_while_incrby_is_denied_is_served_after_the_parent_lapses() {
    const LEASE: Duration = Duration::from_millis(600);
    let server = RedisServer::start().expect("redis-server");
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("reader")
        .arg("on")
        .arg(">pw")
        .arg("resetkeys")
        .arg("~gensync:*")
        .arg("~{gensync:*")
        .arg("-@all")
        .arg("+eval")
        .arg("+getrange")
        .arg("+exists")
        .arg("+info")
        .query::<()>(&mut server.connection().unwrap())
        .unwrap();
    let set = Key::new(["tenants"]).unwrap();
    let source = Arc::new(AtomicU64::new(0));
    let saved = Arc::clone(&source);
    let writer = Reloader::builder(
        Synchronizer::new(RedisBackend::open(&server.url()).unwrap(), set.clone()),
        {
            let source = Arc::clone(&source);
            move || {
                let v = source.load(Ordering::SeqCst);
                async move { Ok::<_, Infallible>(v) }
            }
        },
    )
    .saver(fenced(move |v: &u64, _fence: Fence| {
        saved.store(*v, Ordering::SeqCst);
        async { Ok::<_, Infallible>(()) }
    }))
    .write_lock(LEASE, 5)
    .build(0)
    .unwrap();
    let reader_url = server.url().replacen("://", "://reader:pw@", 1);
    let reader = keyed(RedisBackend::open(&reader_url).unwrap(), &set, &source);
    let tenant = "acme".to_owned();
    // The tenant's own key, made by a process that may (the reader may not).
    Synchronizer::new(
        RedisBackend::open(&server.url()).unwrap(),
        reader.key_of(&tenant).unwrap(),
    )
    .fetch_or_create()
    .await
    .unwrap();

    writer.update(|v| v + 1).await.expect("v1");
    assert_eq!(*reader.check(&tenant).await.unwrap(), 1);

    incrby(&server, "default", "-incrby");
    for v in [2, 3] {
        let e = writer
            .update(|v| v + 1)
            .await
            .expect_err("INCRBY is denied");
        assert_eq!(e.saved(), Some(true), "v{v}: {e}");
        if v == 2 {
            // The next write comes half a lease later: its intent
            // outlives the first one's.
            tokio::time::sleep(LEASE / 2).await;
        }
    }
    lapsed(&server, &set).await;
    assert_eq!(*reader.check(&tenant).await.unwrap(), 3);

    writer
        .update(|v| v + 1)
        .await
        .expect("v4: the parent is missing, and a create needs no INCRBY");
    lapsed(&server, &set).await;
    let answer = reader.answer(&tenant).await.unwrap();
    assert_eq!(
        *answer.snapshot, 4,
        "a strict check after v4's Ok serves it (said {:?})",
        answer.freshness
    );
    incrby(&server, "default", "+incrby");
}
