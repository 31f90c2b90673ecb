//! Push mode on a Redis shared with other users: changes to the key that
//! the server sends no invalidation for (a lapse its active expiry has not
//! reached, `SWAPDB`, a replica's swapped load) and the ones it does (a
//! reload, `RESTORE`, `MIGRATE`) all reach push readers within the
//! heartbeat bound. One real redis-server (or two) per test.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gensync::backend::{Backend, Stored, Tracker};
use gensync::reload::{CheckMode, Reloader};
use gensync::synchronizer::WriterLock;
use gensync::testing::RedisServer;
use gensync::{Generation, Key, RedisBackend, RedisConfig, Synchronizer};
use support::tenants::{parent, tenant, tracked};
use support::Redis;
use tokio::time::{timeout, Instant};

const HEARTBEAT: Duration = Duration::from_millis(50);
/// Push mode vouches for nothing older than this.
const BOUND: Duration = Duration::from_millis(100);
/// A writer's lease, which its intent lapses with.
const LEASE: Duration = Duration::from_millis(500);
/// Long enough that only a broken promise reaches it.
const PATIENCE: Duration = Duration::from_secs(10);

fn key() -> Key {
    Key::new(["shared", "settings"]).unwrap()
}

fn config() -> RedisConfig {
    support::patient_config().heartbeat(HEARTBEAT)
}

/// The settings' source: a number the test moves, read by every loader.
#[derive(Clone, Default)]
struct Db(Arc<AtomicU64>);

fn push_reloader(url: &str, db: &Db) -> Reloader<u64> {
    let backend = RedisBackend::with_config(url, config()).unwrap();
    let db = db.clone();
    Reloader::builder(Synchronizer::new(backend, key()), move || {
        let v = db.0.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .mode(CheckMode::Push)
    .build(0)
    .unwrap()
}

async fn armed(reloader: &Reloader<u64>) {
    support::push_armed(reloader, PATIENCE).await;
}

/// Moves the source to `v`, makes `change` to the key, and asserts that a
/// check a heartbeat bound later serves `v`: heard, caught by the
/// heartbeat, or read because nothing vouched any more.
async fn reaches(reloader: &Reloader<u64>, db: &Db, v: u64, how: &str, change: impl FnOnce()) {
    armed(reloader).await;
    db.0.store(v, Ordering::SeqCst);
    change();
    let done = Instant::now();
    // What is asserted is the bound itself: no event marks it.
    tokio::time::sleep_until(done + BOUND).await;
    assert_eq!(
        *reloader.check().await,
        v,
        "a push reader served the old settings a heartbeat bound after {how}"
    );
}

/// 200,000 other keys to expire in an hour, as a cache shares the server:
/// Redis's active expiry then reaches a lapsed key only after seconds.
fn fill_with_ttl_keys(redis: &Redis) {
    redis.raw::<()>(
        redis::cmd("EVAL")
            .arg("for i = 1, 200000 do redis.call('SET', 'other:' .. i, 'x', 'EX', 3600) end")
            .arg(0),
    );
}

/// Runs `cmd` on a connection of its own to `server`, on database `db`.
fn on_db<T: redis::FromRedisValue>(server: &RedisServer, db: u32, cmd: &mut redis::Cmd) -> T {
    let mut conn = server.connection().unwrap();
    redis::cmd("SELECT").arg(db).query::<()>(&mut conn).unwrap();
    cmd.query(&mut conn).unwrap()
}

/// A writer records its intent, saves, and dies before its bump, on a
/// server holding 200,000 other keys with a time to live: its active
/// expiry reaches the lapsed key only after many seconds, yet push readers
/// reload within the lease (the heartbeat's read expires the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_change_reaches_push_readers_within_the_lease_among_many_ttl_keys() {
    let redis = Redis::new();
    fill_with_ttl_keys(&redis);
    let db = Db::default();
    let reloader = push_reloader(&redis.server.url(), &db);
    armed(&reloader).await;
    db.0.store(1, Ordering::SeqCst);
    let dead = Synchronizer::new(
        RedisBackend::with_config(&redis.server.url(), config()).unwrap(),
        key(),
    );
    dead.mark_intent(Generation::fresh(), LEASE).await.unwrap();
    let intended = Instant::now();
    // Saved, then gone: no bump.
    drop(dead);
    tokio::time::sleep_until(intended + LEASE + BOUND).await;
    assert_eq!(
        *reloader.check().await,
        1,
        "a push reader served the old settings a heartbeat bound after the intent lapsed"
    );
}

/// `SWAPDB` sends no invalidation; the heartbeat's read catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapdb_is_caught_by_the_heartbeat_within_the_bound() {
    let redis = Redis::new();
    let db = Db::default();
    // Set before tracking starts: tracking by prefix hears a change of
    // the key in every database.
    on_db::<()>(
        &redis.server,
        1,
        redis::cmd("SET").arg(key().as_str()).arg(77),
    );
    let reloader = push_reloader(&redis.server.url(), &db);
    reaches(&reloader, &db, 1, "SWAPDB", || {
        redis.raw::<()>(redis::cmd("SWAPDB").arg(0).arg(1));
    })
    .await;
}

/// A reader on another database than 0 tracks and reads there: a flush
/// of its database is heard, a swap of it caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_another_database_hears_its_flush_and_catches_its_swap() {
    let redis = Redis::new();
    let db = Db::default();
    // Set before tracking starts: tracking by prefix hears a change of
    // the key in every database.
    on_db::<()>(
        &redis.server,
        4,
        redis::cmd("SET").arg(key().as_str()).arg(77),
    );
    let reloader = push_reloader(&format!("{}/3", redis.server.url()), &db);
    reaches(&reloader, &db, 1, "FLUSHDB of database 3", || {
        on_db::<()>(&redis.server, 3, &mut redis::cmd("FLUSHDB"));
    })
    .await;
    reaches(&reloader, &db, 2, "SWAPDB 3 4", || {
        redis.raw::<()>(redis::cmd("SWAPDB").arg(3).arg(4));
    })
    .await;
    // A change on database 0 leaves database 3 as it was.
    reaches(&reloader, &db, 2, "a flush of database 0", || {
        on_db::<()>(&redis.server, 0, &mut redis::cmd("FLUSHDB"));
    })
    .await;
}

/// `DEBUG RELOAD NOSAVE` loads an older snapshot: heard (the server
/// flushes before loading).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_reload_is_heard() {
    let redis = Redis::from_server(
        RedisServer::start_with_args(["--enable-debug-command", "yes"]).unwrap(),
    );
    let db = Db::default();
    let reloader = push_reloader(&redis.server.url(), &db);
    armed(&reloader).await;
    redis.raw::<()>(&mut redis::cmd("SAVE"));
    reaches(&reloader, &db, 1, "a SET", || {
        redis.raw::<()>(redis::cmd("SET").arg(key().as_str()).arg(77));
    })
    .await;
    reaches(&reloader, &db, 2, "DEBUG RELOAD NOSAVE", || {
        redis.raw::<()>(redis::cmd("DEBUG").arg("RELOAD").arg("NOSAVE"));
    })
    .await;
}

/// `RESTORE ... REPLACE` of an older dump: heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_is_heard() {
    let redis = Redis::new();
    let db = Db::default();
    let reloader = push_reloader(&redis.server.url(), &db);
    armed(&reloader).await;
    let dump: Vec<u8> = redis.raw(redis::cmd("DUMP").arg(key().as_str()));
    reaches(&reloader, &db, 1, "a SET", || {
        redis.raw::<()>(redis::cmd("SET").arg(key().as_str()).arg(77));
    })
    .await;
    reaches(&reloader, &db, 2, "RESTORE REPLACE", || {
        redis.raw::<()>(
            redis::cmd("RESTORE")
                .arg(key().as_str())
                .arg(0)
                .arg(dump)
                .arg("REPLACE"),
        );
    })
    .await;
}

/// `MIGRATE` of the key from another server onto the reader's: heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_heard() {
    let redis = Redis::new();
    let other = Redis::new();
    let db = Db::default();
    let reloader = push_reloader(&redis.server.url(), &db);
    other.raw::<()>(redis::cmd("SET").arg(key().as_str()).arg(77));
    reaches(&reloader, &db, 1, "MIGRATE", || {
        other.raw::<()>(
            redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(redis.server.port())
                .arg(key().as_str())
                .arg(0)
                .arg(5000)
                .arg("REPLACE"),
        );
    })
    .await;
}

/// A server made a replica loads its primary's data into a swapped
/// database (`repl-diskless-load swapdb`): heard (the server announces a
/// flush), and the heartbeat's read would catch it besides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_swapdb_load_is_heard() {
    let redis = Redis::from_server(
        RedisServer::start_with_args(["--repl-diskless-load", "swapdb"]).unwrap(),
    );
    let primary = Redis::new();
    primary.raw::<()>(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync")
            .arg("yes"),
    );
    primary.raw::<()>(
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg(0),
    );
    primary.raw::<()>(redis::cmd("SET").arg(key().as_str()).arg(77));
    let db = Db::default();
    let reloader = push_reloader(&redis.server.url(), &db);
    armed(&reloader).await;
    db.0.store(1, Ordering::SeqCst);
    redis.raw::<()>(
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(primary.server.port()),
    );
    // The load's end is the change: waited for, then the bound.
    let loaded = timeout(PATIENCE, async {
        loop {
            let v: Option<u64> = redis.raw(redis::cmd("GET").arg(key().as_str()));
            if v == Some(77) {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the replica loaded its primary's data");
    tokio::time::sleep_until(loaded + BOUND).await;
    assert_eq!(
        *reloader.check().await,
        1,
        "a push reader served the old settings a heartbeat bound after a full resync"
    );
}

/// What a reader does until `member` vouches: a ticket, a read on its own
/// connection, the read fed back; returns what it vouches for.
async fn vouched(backend: &RedisBackend, member: &Tracker, key: &Key) -> Stored {
    timeout(PATIENCE, async {
        loop {
            let changed = member.changed();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some((stored, _)) = member.vouched() {
                return stored;
            }
            if member.is_armed() {
                let ticket = member.ticket();
                if let Ok(stored) = backend.get(key).await {
                    member.saw(ticket, stored, backend.epoch());
                }
            }
            let _ = timeout(HEARTBEAT, changed).await;
        }
    })
    .await
    .expect("the member vouches within the patience")
}

fn generation(n: u64) -> Stored {
    Stored::Value(Generation::new(n).unwrap())
}

/// A keyed writer's intent on one tenant, on a server with 200,000 other
/// keys to expire: the tenant's member stops vouching within the lease
/// (the session reads the lapse of every member that changed, and touches
/// it once due).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_change_to_a_member_reaches_its_readers_within_the_lease() {
    let redis = Redis::new();
    fill_with_ttl_keys(&redis);
    let backend = RedisBackend::with_config(&redis.server.url(), config()).unwrap();
    redis.raw::<()>(redis::cmd("SET").arg(tenant("a").as_str()).arg(3));
    let set = tracked(&backend);
    let a = set.member(&tenant("a"));
    assert_eq!(vouched(&backend, &a, &tenant("a")).await, generation(3));
    let dead = Synchronizer::new(backend.clone(), tenant("a"));
    dead.mark_intent(Generation::fresh(), LEASE).await.unwrap();
    let intended = Instant::now();
    drop(dead);
    // Its readers see the intent's cut (a change), and vouch again.
    assert_eq!(vouched(&backend, &a, &tenant("a")).await, generation(3));
    tokio::time::sleep_until(intended + LEASE + BOUND).await;
    assert_ne!(
        a.vouched().map(|(stored, _)| stored),
        Some(generation(3)),
        "a member vouched for a key a heartbeat bound past its lapse"
    );
    assert_eq!(vouched(&backend, &a, &tenant("a")).await, Stored::Missing);
}

/// The same, but the intent was recorded before this process tracked the
/// set, so no push of it ever reached the session: the member's lapse is
/// watched from the moment it joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_writers_intent_from_before_a_member_joined_still_reaches_it_within_the_lease() {
    let redis = Redis::new();
    fill_with_ttl_keys(&redis);
    let backend = RedisBackend::with_config(&redis.server.url(), config()).unwrap();
    for name in ["a", "b"] {
        redis.raw::<()>(redis::cmd("SET").arg(tenant(name).as_str()).arg(3));
        let dead = Synchronizer::new(backend.clone(), tenant(name));
        dead.mark_intent(Generation::fresh(), LEASE).await.unwrap();
    }
    let intended = Instant::now();
    let set = tracked(&backend);
    // `a` joins before the session is armed, `b` after.
    let a = set.member(&tenant("a"));
    assert_eq!(vouched(&backend, &a, &tenant("a")).await, generation(3));
    assert!(set.is_armed());
    let b = set.member(&tenant("b"));
    assert_eq!(vouched(&backend, &b, &tenant("b")).await, generation(3));
    tokio::time::sleep_until(intended + LEASE + BOUND).await;
    for (name, member) in [("a", &a), ("b", &b)] {
        assert_ne!(
            member.vouched().map(|(stored, _)| stored),
            Some(generation(3)),
            "member {name} vouched for a key a heartbeat bound past its lapse"
        );
        assert_eq!(
            vouched(&backend, member, &tenant(name)).await,
            Stored::Missing
        );
    }
}

/// `SWAPDB` of the database a set's members live in: caught through the
/// parent key, which the heartbeat reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapdb_under_a_set_is_caught_through_its_parent() {
    let redis = Redis::new();
    let backend = RedisBackend::with_config(&redis.server.url(), config()).unwrap();
    redis.raw::<()>(redis::cmd("SET").arg(parent().as_str()).arg(5));
    redis.raw::<()>(redis::cmd("SET").arg(tenant("a").as_str()).arg(3));
    // Set before tracking starts: tracking by prefix hears a change of
    // the key in every database.
    on_db::<()>(
        &redis.server,
        1,
        redis::cmd("SET").arg(tenant("a").as_str()).arg(77),
    );
    let set = tracked(&backend);
    let a = set.member(&tenant("a"));
    assert_eq!(vouched(&backend, &a, &tenant("a")).await, generation(3));
    redis.raw::<()>(redis::cmd("SWAPDB").arg(0).arg(1));
    let swapped = Instant::now();
    tokio::time::sleep_until(swapped + BOUND).await;
    assert_eq!(
        a.vouched(),
        None,
        "a member vouched for a value of the database swapped out"
    );
    assert_eq!(vouched(&backend, &a, &tenant("a")).await, generation(77));
}
