//! Sentinel and Cluster on real topologies on loopback: a primary, a
//! replica and three sentinels; three primaries with a replica each. Each
//! test starts and kills its own processes (`gensync::testing`).
//!
//! These are slow (a failover takes seconds): `bash scripts/test-fast.sh`
//! runs the suite without them.

mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use gensync::backend::{Backend, Stored};
use gensync::testing::{RedisCluster, SentinelGroup};
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, Generation, GenerationSynchronizer, Key,
    RedisBackend, RedisConfig, Synchronizer,
};

/// A failover's worst case on a loaded 2-core machine, with room to spare:
/// only a broken promise reaches it.
const FAILOVER: Duration = Duration::from_secs(30);
const TTL: Duration = Duration::from_secs(60);

fn config() -> RedisConfig {
    support::patient_config().heartbeat(Duration::from_millis(50))
}

fn key() -> Key {
    Key::parse("site:settings").unwrap()
}

/// Polls `check` until it holds, or fails the test naming `what`. For
/// processes outside the test (a failover), which send no signal.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + FAILOVER;
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `backend` holds at [`key`] as stored: a generation a synchronizer
/// shows mixes in the server's identity, which a failover changes.
fn stored(backend: &BlockingRedisBackend) -> Stored {
    // A blocking backend's calls finish without a runtime.
    futures_executor::block_on(backend.get(&key())).unwrap()
}

/// The identity (run id and replication id) of the server on `port`.
fn run_id(port: u16) -> String {
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("replication")
        .query(&mut conn)
        .unwrap();
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    format!("{}:{}", field("run_id:"), field("master_replid:"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_follows_a_failover_and_keeps_a_replicated_bump() {
    let mut group = SentinelGroup::start().unwrap();
    let replicated = config().wait_for_replicas(1, Duration::from_secs(2));
    let backend = RedisBackend::with_config(&group.url(), replicated).unwrap();
    let sync = Synchronizer::new(backend.clone(), key());
    sync.refresh().await.unwrap();
    assert!(!sync.is_expired().await);
    sync.mark_updated().await.unwrap();
    let bumped = backend.get(&key()).await.unwrap();
    let seen = sync.check().await;
    sync.record(seen.observed().unwrap());
    assert_eq!(
        backend.server_id(),
        Some(run_id(group.primary_port().unwrap()))
    );
    let epoch = backend.epoch();

    let old = group.kill_primary().unwrap();
    // Until a replica is promoted, every check reads as expired.
    assert!(sync.is_expired().await);
    let new = group.wait_for_failover(old, FAILOVER).unwrap();
    until("the backend reaches the promoted replica", || async {
        sync.read().await.is_ok()
    })
    .await;

    // Asked of the sentinels again: the new primary, a new epoch, and the
    // bump its WAIT said was replicated is there.
    assert_eq!(backend.server_id(), Some(run_id(new)));
    assert!(backend.epoch() > epoch);
    assert_eq!(backend.get(&key()).await.unwrap(), bumped);
    // Reconnected to a different primary: expired once, then current.
    assert!(sync.is_expired().await);
    sync.refresh().await.unwrap();
    assert!(!sync.is_expired().await);
    // The only replica is the new primary now: a bump that waits for one
    // is made, and its writer is told it was not replicated.
    not_replicated(sync.mark_updated().await);
}

#[test]
fn the_blocking_path_follows_a_sentinel_failover() {
    let mut group = SentinelGroup::start().unwrap();
    let backend = BlockingRedisBackend::with_config(
        &group.url(),
        config().wait_for_replicas(1, Duration::from_secs(2)),
    )
    .unwrap();
    let sync = BlockingSynchronizer::new(backend.clone(), key());
    sync.mark_updated().unwrap();
    let bumped = stored(&backend);
    let old = group.kill_primary().unwrap();
    let new = group.wait_for_failover(old, FAILOVER).unwrap();
    read_again(&sync);
    assert_eq!(stored(&backend), bumped);
    assert_eq!(backend.server_id(), Some(run_id(new)));
    // No replica is left to acknowledge the next bump, and its writer is
    // told so.
    not_replicated(sync.mark_updated());
}

/// What a bump that waited for a replica when none was left returned.
fn not_replicated(bumped: Result<Generation, gensync::Error>) {
    assert!(
        matches!(
            &bumped,
            Err(gensync::Error::Backend(e))
                if e.kind() == gensync::backend::BackendErrorKind::NotReplicated && e.acked() == Some(0)
        ),
        "{bumped:?}"
    );
}

/// The first read that succeeds once the deployment answers again.
fn read_again(sync: &BlockingSynchronizer<BlockingRedisBackend>) -> Stored {
    let deadline = Instant::now() + FAILOVER;
    loop {
        match sync.read() {
            Ok(stored) => return stored,
            Err(e) => assert!(Instant::now() < deadline, "never read again: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process of the fleet on `url`: its own connection.
fn process(url: &str) -> Synchronizer<RedisBackend> {
    Synchronizer::new(RedisBackend::with_config(url, config()).unwrap(), key())
}

/// Push tracking on `sync`, armed and vouching, with the ticket of its
/// latest read.
async fn armed(sync: &Synchronizer<RedisBackend>) -> std::sync::Arc<gensync::backend::Tracker> {
    let tracker = sync.track().expect("tracking starts");
    until("tracking is armed and vouches for a read", || async {
        tracker.is_armed() && sync.vouched().is_some()
    })
    .await;
    tracker
}

/// A bump by `writer` (retried while the deployment is failing over)
/// reaches `tracker`.
async fn a_bump_invalidates(
    writer: &Synchronizer<RedisBackend>,
    tracker: &gensync::backend::Tracker,
) {
    let ticket = tracker.ticket();
    until("a writer's bump succeeds", || async {
        writer.mark_updated().await.is_ok()
    })
    .await;
    until("the bump's invalidation reaches the tracker", || async {
        tracker.moved_since(ticket)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_tracking_is_armed_again_on_the_promoted_primary() {
    let mut group = SentinelGroup::start().unwrap();
    let (sync, writer) = (process(&group.url()), process(&group.url()));
    sync.refresh().await.unwrap();
    let tracker = armed(&sync).await;
    a_bump_invalidates(&writer, &tracker).await;

    let old = group.kill_primary().unwrap();
    until("tracking is lost with the primary", || async {
        !tracker.is_armed()
    })
    .await;
    assert_eq!(sync.vouched(), None);
    group.wait_for_failover(old, FAILOVER).unwrap();
    armed(&sync).await;
    a_bump_invalidates(&writer, &tracker).await;
}

/// A primary demoted without dying (`SENTINEL FAILOVER`) still answers,
/// but the writes go to the new one: tracking must leave it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_tracking_leaves_a_primary_demoted_alive() {
    let group = SentinelGroup::start().unwrap();
    let (sync, writer) = (process(&group.url()), process(&group.url()));
    sync.refresh().await.unwrap();
    let tracker = armed(&sync).await;
    let old = group.primary_port().unwrap();
    let (host, port) = group.sentinel_addrs()[0].clone();
    let mut sentinel = redis::Client::open(format!("redis://{host}:{port}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(group.master_name())
        .query(&mut sentinel)
        .unwrap();
    let new = group.wait_for_failover(old, FAILOVER).unwrap();
    assert_ne!(new, old);
    a_bump_invalidates(&writer, &tracker).await;
}

/// Keys on several shards, each with the writers' lease, intents and
/// fencing token beside it, and a keyed set's members with its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serves_every_operation_on_every_shard() {
    let cluster = RedisCluster::start().unwrap();
    let backend = RedisBackend::with_config(&cluster.url(), config()).unwrap();
    let blocking = BlockingRedisBackend::with_config(&cluster.url(), config()).unwrap();
    let keys = support::keys_on_every_shard(&cluster);
    let token = Generation::new(7).unwrap();
    for key in &keys {
        let sync = Synchronizer::new(backend.clone(), key.clone());
        let created = sync.refresh().await.unwrap();
        let bumped = sync.mark_updated().await.unwrap();
        assert_ne!(created, bumped);
        let blocking_sync = BlockingSynchronizer::new(blocking.clone(), key.clone());
        assert_eq!(blocking_sync.read().unwrap(), Stored::Value(bumped));

        // The lease's scripts touch the key's companions in one step: a
        // CROSSSLOT error here would mean they left its slot.
        let fence = backend.lock(key, token, TTL).await.unwrap();
        assert!(fence.is_some());
        assert!(backend.renew(key, token, TTL, TTL).await.unwrap());
        backend.intend(key, token, TTL, TTL).await.unwrap();
        let finished = backend.incr(key, 1, TTL, Some(token)).await.unwrap();
        assert!(matches!(finished, Stored::Value(_)));
        assert!(backend.unlock(key, token).await.unwrap());
    }
    let tenants = Key::parse("tenants").unwrap();
    let acme = tenants.member("acme").unwrap();
    for set_or_member in [&tenants, &acme] {
        Synchronizer::new(backend.clone(), set_or_member.clone())
            .mark_updated()
            .await
            .unwrap();
    }
    let (member, parent) = backend.get_with_parent(&acme, &tenants).await.unwrap();
    assert!(matches!(member, Stored::Value(_)));
    assert_eq!(
        (member, parent),
        (
            backend.get(&acme).await.unwrap(),
            backend.get(&tenants).await.unwrap()
        )
    );
    // Nothing learnt moves the epoch while every slot stays on its node.
    assert_eq!(backend.epoch(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_shard_failover_reads_expired_once_and_tracking_follows() {
    let mut cluster = RedisCluster::start().unwrap();
    let backend = RedisBackend::with_config(
        &cluster.url(),
        config().wait_for_replicas(1, Duration::from_secs(2)),
    )
    .unwrap();
    let sync = Synchronizer::new(backend.clone(), key());
    let writer = process(&cluster.url());
    sync.refresh().await.unwrap();
    sync.mark_updated().await.unwrap();
    let bumped = backend.get(&key()).await.unwrap();
    let seen = sync.check().await;
    sync.record(seen.observed().unwrap());
    let tracker = armed(&sync).await;
    let epoch = backend.epoch();

    let old = cluster.kill_primary_for(key().as_str()).unwrap();
    until("tracking is lost with the shard's primary", || async {
        !tracker.is_armed()
    })
    .await;
    cluster
        .wait_for_failover(key().as_str(), old, FAILOVER)
        .unwrap();
    until("the key is read from the promoted replica", || async {
        sync.read().await.is_ok()
    })
    .await;
    // The bump its WAIT said was replicated is there; the slot moved to
    // another node, so the epoch moved and the check reads expired once.
    assert_eq!(backend.get(&key()).await.unwrap(), bumped);
    assert!(backend.epoch() > epoch);
    assert!(sync.is_expired().await);
    sync.refresh().await.unwrap();
    assert!(!sync.is_expired().await);
    armed(&sync).await;
    a_bump_invalidates(&writer, &tracker).await;
}

/// A resharding moves the key's slot to another primary. The key is
/// deleted first, so the move carries no key and no write reaches the old
/// node's tracking: only the heartbeat, answered `MOVED` there, can tell
/// it. Push mode must stop vouching for the old answer, arm again on the
/// new owner, and the answers from another node move the epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharded_key_is_tracked_on_its_new_node() {
    let cluster = RedisCluster::start().unwrap();
    let backend = RedisBackend::with_config(&cluster.url(), config()).unwrap();
    let sync = Synchronizer::new(backend.clone(), key());
    let writer = process(&cluster.url());
    sync.refresh().await.unwrap();
    let tracker = armed(&sync).await;
    writer.clear().await.unwrap();
    until("push vouches for the key as missing", || async {
        sync.vouched() == Some(Stored::Missing)
    })
    .await;
    let epoch = backend.epoch();

    let from = cluster.primary_for(key().as_str()).unwrap();
    let to = *cluster
        .primaries()
        .unwrap()
        .iter()
        .find(|p| **p != from)
        .unwrap();
    let key_name = key().as_str().to_owned();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.move_slot(&key_name, to).unwrap();
        cluster
    })
    .await
    .unwrap();
    assert_eq!(cluster.primary_for(key().as_str()).unwrap(), to);
    writer.mark_updated().await.unwrap();
    until("push stops vouching for the key as missing", || async {
        sync.vouched() != Some(Stored::Missing)
    })
    .await;
    armed(&sync).await;
    a_bump_invalidates(&writer, &tracker).await;
    assert!(matches!(sync.read().await.unwrap(), Stored::Value(_)));
    assert!(
        backend.epoch() > epoch,
        "the slot's new node moved the epoch"
    );
}

#[test]
fn the_blocking_path_follows_a_cluster_shard_failover() {
    let mut cluster = RedisCluster::start().unwrap();
    let replicated = config().wait_for_replicas(1, Duration::from_secs(2));
    let backend = BlockingRedisBackend::with_config(&cluster.url(), replicated).unwrap();
    let plain = BlockingRedisBackend::with_config(&cluster.url(), config()).unwrap();
    let sync = BlockingSynchronizer::new(backend.clone(), key());
    // A bump and its WAIT reach the key's primary together.
    sync.mark_updated().unwrap();
    let bumped = stored(&backend);
    let old = cluster.kill_primary_for(key().as_str()).unwrap();
    cluster
        .wait_for_failover(key().as_str(), old, FAILOVER)
        .unwrap();
    // Its replica acknowledged it, so the promoted replica has it.
    read_again(&sync);
    assert_eq!(stored(&backend), bumped);
    not_replicated(sync.mark_updated());
    assert!(BlockingSynchronizer::new(plain, key())
        .mark_updated()
        .is_ok());
}

/// The command takes both forms: a bump through the sentinels and one
/// through the cluster, each read back by another run.
#[cfg(feature = "cli")]
#[test]
fn the_command_takes_sentinel_and_cluster_urls() {
    let group = SentinelGroup::start().unwrap();
    let cluster = RedisCluster::start().unwrap();
    let gensync = |url: &str, args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_gensync"))
            .env_remove("GENSYNC_URL")
            .env_remove("REDIS_URL")
            .args(["--url", url])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    for url in [group.url(), cluster.url()] {
        let bumped = gensync(&url, &["bump", "cli:settings"]);
        assert!(bumped.parse::<u64>().is_ok(), "{bumped}");
        assert_eq!(gensync(&url, &["get", "cli:settings"]), bumped);
        let member = gensync(&url, &["--member", "acme", "bump", "tenants"]);
        assert_eq!(
            gensync(&url, &["--member", "acme", "get", "tenants"]),
            member
        );
    }
}

/// What a wrong master name, a missing password and unreachable seeds are
/// reported as: each says what to check, none shows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_deployment_is_reported_with_what_to_check() {
    let group = SentinelGroup::start_with_password("s3cret-LeakPW").unwrap();
    let url = group.url();
    let wrong_master = url.replace("/gensync", "/nosuchmaster");
    let no_password = url.replacen(":s3cret-LeakPW@", "", 1);
    assert_ne!(no_password, url);
    let errors = [
        RedisBackend::open(&wrong_master)
            .unwrap()
            .ping()
            .await
            .unwrap_err(),
        RedisBackend::open(&no_password)
            .unwrap()
            .ping()
            .await
            .unwrap_err(),
        BlockingRedisBackend::open(&wrong_master)
            .unwrap()
            .ping()
            .unwrap_err(),
    ];
    for error in &errors {
        let text = error.to_string();
        eprintln!("{text}");
        assert!(!text.contains("LeakPW"), "{text}");
        assert!(!format!("{error:?}").contains("LeakPW"), "{error:?}");
    }
    let [wrong, unauthenticated, blocking_wrong] = errors;
    for wrong in [wrong, blocking_wrong] {
        let text = wrong.to_string();
        assert!(text.contains("no master named `nosuchmaster`"), "{text}");
    }
    assert!(
        unauthenticated.kind() == gensync::backend::BackendErrorKind::Auth,
        "{unauthenticated:?}"
    );
    assert!(RedisBackend::open(&url).unwrap().ping().await.is_ok());

    let unreachable = format!(
        "redis+cluster://:s3cret-LeakPW@127.0.0.1:{},127.0.0.1:{}",
        support::closed_port(),
        support::closed_port()
    );
    let error = RedisBackend::open(&unreachable)
        .unwrap()
        .ping()
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("LeakPW"), "{error}");
    assert!(
        error.kind() == gensync::backend::BackendErrorKind::Unreachable,
        "{error:?}"
    );
}

/// A paused sentinel (SIGSTOP: it accepts connections but never answers)
/// costs a lookup one response timeout, then the next sentinel is asked;
/// and the one that answered is asked first from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sentinel_is_passed_over() {
    let mut group = SentinelGroup::start().unwrap();
    group.sentinels_mut()[0].pause().unwrap();
    // Timeouts short enough that the first sentinel's silence shows.
    let config = RedisConfig::default()
        .connect_timeout(Duration::from_millis(500))
        .response_timeout(Duration::from_millis(200));
    let backend = RedisBackend::with_config(&group.url(), config.clone()).unwrap();
    let started = Instant::now();
    backend.ping().await.unwrap();
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(200),
        "asked the paused one first: {first:?}"
    );
    let blocking = BlockingRedisBackend::with_config(&group.url(), config).unwrap();
    let sync = BlockingSynchronizer::new(blocking, key());
    tokio::task::spawn_blocking(move || {
        // The pool waits one connect timeout for a connection, and the
        // lookup past the paused sentinel fits in it.
        sync.mark_updated().unwrap();
    })
    .await
    .unwrap();

    // A new connection asks the sentinel that answered: no wait.
    let mut admin = group.primary().unwrap().connection().unwrap();
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(&mut admin)
        .unwrap();
    assert!(killed > 0);
    let started = Instant::now();
    until("the backend reconnects", || async {
        backend.ping().await.is_ok()
    })
    .await;
    let again = started.elapsed();
    assert!(again < Duration::from_millis(200), "{again:?}");
    group.sentinels_mut()[0].resume().unwrap();
}

/// A keyed set's members are tracked in a Cluster on the node of the
/// set's hash tag: a change to one member, and to the parent, reaches its
/// readers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_set_is_tracked_on_the_node_of_its_hash_tag() {
    let cluster = RedisCluster::start().unwrap();
    let backend = RedisBackend::with_config(&cluster.url(), config()).unwrap();
    let tenants = Key::parse("tenants").unwrap();
    let acme = tenants.member("acme").unwrap();
    let set = gensync::backend::TrackerSet::new(
        vec![tenants.member_prefix()],
        vec![tenants.as_str().to_owned()],
    );
    assert!(backend.track_set(&set));
    let member = set.member(&acme);
    let writer = |key: &Key| Synchronizer::new(backend.clone(), key.clone());
    for changed in [&acme, &tenants] {
        let read = || async {
            let ticket = member.ticket();
            let stored = backend.get(&acme).await.unwrap();
            member.saw(ticket, stored, backend.epoch()) && member.vouched().is_some()
        };
        until("the member vouches for a read", read).await;
        let ticket = member.ticket();
        writer(changed).mark_updated().await.unwrap();
        until("the change reaches the member", || async {
            member.moved_since(ticket)
        })
        .await;
    }
}

/// Fails over, and back: each new connection asks the sentinels again, each
/// promoted server moves the epoch, and push tracking follows both times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_fails_over_and_back() {
    let mut group = SentinelGroup::start().unwrap();
    let backend = RedisBackend::with_config(&group.url(), config()).unwrap();
    let sync = Synchronizer::new(backend.clone(), key());
    let writer = process(&group.url());
    sync.refresh().await.unwrap();
    let tracker = armed(&sync).await;
    let mut epoch = backend.epoch();
    for round in 1..=2 {
        // The replica now: after round 1 the restarted node, unless the
        // sentinels failed over to it while it synced (a loaded machine).
        let replica = group.replica().unwrap().port();
        let old = group.kill_primary().unwrap();
        let new = group.wait_for_failover(old, FAILOVER).unwrap();
        assert_eq!(new, replica, "round {round}: the replica is promoted");
        until("the backend reaches the promoted primary", || async {
            sync.read().await.is_ok() && backend.server_id() == Some(run_id(new))
        })
        .await;
        assert!(backend.epoch() > epoch, "round {round}: a new server");
        epoch = backend.epoch();
        armed(&sync).await;
        a_bump_invalidates(&writer, &tracker).await;
        group.restart_as_replica(old, FAILOVER).unwrap();
    }
}

/// A bump whose shard's replica is paused cannot be acknowledged: on a
/// Cluster too, on both paths, its writer is told so (the `WAIT` runs on
/// the node that took the write, not on another whose replicas have
/// nothing to acknowledge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_bump_its_replica_did_not_take_is_not_replicated() {
    let cluster = RedisCluster::start().unwrap();
    let wait = config().wait_for_replicas(1, Duration::from_millis(300));
    let backend = RedisBackend::with_config(&cluster.url(), wait.clone()).unwrap();
    let blocking = BlockingRedisBackend::with_config(&cluster.url(), wait).unwrap();
    let primary = cluster.primary_for(key().as_str()).unwrap();
    let replica = cluster.replica_of(primary).unwrap();
    cluster.node(replica).unwrap().pause().unwrap();
    let async_bump = Synchronizer::new(backend, key()).mark_updated().await;
    let blocking_bump = tokio::task::spawn_blocking(move || {
        BlockingSynchronizer::new(blocking, key()).mark_updated()
    })
    .await
    .unwrap();
    cluster.node(replica).unwrap().resume().unwrap();
    not_replicated(async_bump);
    not_replicated(blocking_bump);
}
