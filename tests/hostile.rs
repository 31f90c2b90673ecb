//! What another client may leave at the keys gensync uses, against a real
//! redis-server per test: a value of megabytes at the generation key, and a
//! writers' lease that never lapses or is not a string.

mod support;

use std::time::Duration;

use gensync::backend::Stored;
use gensync::synchronizer::{Observed, WriterLock};
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, Generation, GenerationSynchronizer, Key,
    Synchronizer,
};
use support::{LogCapture, Redis};

const LEASE: Duration = Duration::from_secs(5);

fn key() -> Key {
    Key::new(["hostile", "settings"]).unwrap()
}

/// Bytes the server has sent to all its clients so far.
fn bytes_sent(store: &Redis) -> u64 {
    let info: String = store.raw(redis::cmd("INFO").arg("stats"));
    info.lines()
        .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO stats names total_net_output_bytes")
}

/// Eight megabytes of digits: a number no generation can be.
fn planted() -> String {
    "1".repeat(8 << 20)
}

/// Well below the planted value; INFO's own replies fit many times over.
const READ_BUDGET: u64 = 256 << 10;

#[tokio::test]
async fn a_value_of_megabytes_is_never_sent_and_is_repaired_on_the_async_path() {
    let store = Redis::new();
    store.raw::<()>(redis::cmd("SET").arg(key().as_str()).arg(planted()));
    let sync = Synchronizer::new(support::Store::process(&store), key());

    let before = bytes_sent(&store);
    let check = sync.check().await;
    let sent = bytes_sent(&store) - before;
    assert_eq!(check.shared, Observed::Corrupt);
    assert!(sent < READ_BUDGET, "a read sent {sent} bytes");

    let repaired = sync.mark_updated().await.unwrap();
    assert_eq!(sync.check().await.observed(), Some(repaired));
}

#[test]
fn a_value_of_megabytes_is_never_sent_and_is_repaired_on_the_blocking_path() {
    let store = Redis::new();
    store.raw::<()>(redis::cmd("SET").arg(key().as_str()).arg(planted()));
    let backend = BlockingRedisBackend::open(&store.server.url()).unwrap();
    let sync = BlockingSynchronizer::new(backend, key());

    let before = bytes_sent(&store);
    let read = sync.read().unwrap();
    let sent = bytes_sent(&store) - before;
    assert_eq!(read, Stored::Corrupt);
    assert!(sent < READ_BUDGET, "a read sent {sent} bytes");

    let repaired = sync.mark_updated().unwrap();
    assert!(
        matches!(sync.read().unwrap(), Stored::Value(_)),
        "{repaired}"
    );
}

#[tokio::test]
async fn the_bound_admits_the_longest_generation_and_nothing_longer() {
    let store = Redis::new();
    let sync = Synchronizer::new(support::Store::process(&store), key());
    let longest = i64::MAX.to_string();
    for (raw, readable) in [(longest.clone(), true), (format!("{longest}0"), false)] {
        store.raw::<()>(redis::cmd("SET").arg(key().as_str()).arg(&raw));
        let read = sync.read().await.unwrap();
        assert_eq!(
            matches!(read, Stored::Value(_)),
            readable,
            "{raw}: {read:?}"
        );
    }
}

fn lock_key() -> String {
    key().companion("lock").as_str().to_owned()
}

#[tokio::test]
async fn a_lease_with_no_time_to_live_is_taken_over_and_named_in_the_log() {
    let store = Redis::new();
    store.raw::<()>(redis::cmd("SET").arg(lock_key()).arg("123"));
    let sync = Synchronizer::new(support::Store::process(&store), key());
    let logs = LogCapture::default();
    let _guard = logs.install();

    let token = Generation::fresh();
    assert!(sync.try_lock(token, LEASE).await.unwrap().is_some());
    let holder: String = store.raw(redis::cmd("GET").arg(lock_key()));
    assert_eq!(holder, token.to_string());
    let pttl: i64 = store.raw(redis::cmd("PTTL").arg(lock_key()));
    assert!(pttl > 0 && pttl <= 5000, "the lease lapses again: {pttl}");
    let warned = logs.lines_with("took over a writers' lease");
    assert_eq!(warned.len(), 1, "{}", logs.text());
    assert!(warned[0].contains(&lock_key()), "{}", warned[0]);

    // A live lease, which lapses, is still another writer's.
    let other = Synchronizer::new(support::Store::process(&store), key());
    assert_eq!(other.try_lock(Generation::fresh(), LEASE).await, Ok(None));
    assert!(sync.unlock(token).await.unwrap());
}

#[tokio::test]
async fn a_lease_of_another_type_is_taken_over_and_no_call_fails_on_it() {
    let store = Redis::new();
    let sync = Synchronizer::new(support::Store::process(&store), key());
    for planted in ["RPUSH", "SADD"] {
        // Fresh each time: a release is remembered for a minute.
        let token = Generation::fresh();
        store.raw::<()>(redis::cmd("DEL").arg(lock_key()));
        store.raw::<()>(redis::cmd(planted).arg(lock_key()).arg("x"));
        assert_eq!(sync.renew(token, LEASE).await, Ok(false), "{planted}");
        assert_eq!(sync.unlock(token).await, Ok(false), "{planted}");
        assert!(sync.try_lock(token, LEASE).await.unwrap().is_some());
        assert!(sync.renew(token, LEASE).await.unwrap(), "{planted}");
        assert!(sync.unlock(token).await.unwrap(), "{planted}");
    }
    // A fence no lease could have been given restarts at the server's clock.
    let fence_key = key().companion("fence");
    for planted in ["x", "-5", "99999999999999999999", "inf", "nan"] {
        store.raw::<()>(redis::cmd("SET").arg(fence_key.as_str()).arg(planted));
        let token = Generation::fresh();
        let fence = sync.try_lock(token, LEASE).await;
        assert!(matches!(fence, Ok(Some(_))), "{planted}: {fence:?}");
        assert!(sync.unlock(token).await.unwrap());
    }
}

#[test]
fn break_lock_deletes_whatever_lease_is_there() {
    let store = Redis::new();
    let backend = BlockingRedisBackend::open(&store.server.url()).unwrap();
    store.raw::<()>(
        redis::cmd("SET")
            .arg(lock_key())
            .arg("123")
            .arg("PX")
            .arg(3_600_000),
    );
    assert_eq!(backend.break_lock(&key()), Ok(true));
    let left: i64 = store.raw(redis::cmd("EXISTS").arg(lock_key()));
    assert_eq!(left, 0);
    assert_eq!(
        backend.break_lock(&key()),
        Ok(false),
        "nothing left to break"
    );
}

#[tokio::test]
async fn an_intents_key_of_another_type_is_replaced_and_no_write_fails_on_it() {
    let store = Redis::new();
    let sync = Synchronizer::new(support::Store::process(&store), key());
    let intents = key().companion("intents");
    let plant = || {
        store.raw::<()>(redis::cmd("DEL").arg(intents.as_str()));
        store.raw::<()>(redis::cmd("SET").arg(intents.as_str()).arg("x"));
    };
    plant();
    sync.mark_updated().await.unwrap();
    plant();
    let token = Generation::fresh();
    assert!(sync.try_lock(token, LEASE).await.unwrap().is_some());
    sync.mark_intent(token, LEASE).await.unwrap();
    plant();
    assert!(sync.renew(token, LEASE).await.unwrap());
    plant();
    sync.mark_updated_by(token).await.unwrap();
    let kind: String = store.raw(redis::cmd("TYPE").arg(intents.as_str()));
    assert!(matches!(kind.as_str(), "zset" | "none"), "{kind}");
}
