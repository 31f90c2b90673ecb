//! Redis going back in time, for real: a restart from a snapshot older than
//! the last bump, and a replica promoted after missing a bump. No process
//! may stay on old settings, and no bump may hand out a value a process
//! recorded before. And the number shown for a state across such changes:
//! one in every process (and the CLI), never one shown for another state.

mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gensync::backend::BackendErrorKind;
use gensync::reload::{PublishError, Reloader};
use gensync::testing::RedisServer;
use gensync::{Error, Generation, Key, RedisBackend, RedisConfig, Synchronizer};
use support::patient_config;

fn key() -> Key {
    Key::new(["rollback", "settings"]).unwrap()
}

/// The source of truth every process reads: a version number.
type Source = Arc<AtomicU64>;

/// One process over `url`: a reloader whose loader reads `source` and
/// whose saver writes it.
fn process(url: &str, config: RedisConfig, source: &Source) -> Reloader<u64> {
    let backend = RedisBackend::with_config(url, config).expect("a valid URL");
    let (read, write) = (Arc::clone(source), Arc::clone(source));
    Reloader::builder(Synchronizer::new(backend, key()), move || {
        let version = read.load(SeqCst);
        async move { Ok::<_, std::convert::Infallible>(version) }
    })
    .saver(move |v: &u64| {
        write.store(*v, SeqCst);
        async { Ok::<_, std::convert::Infallible>(()) }
    })
    .build(0)
    .expect("a reloader")
}

/// The reader's first answered check after the server changed: it must
/// read as expired, whatever the value. (An unanswered one reads as expired
/// anyway and proves nothing.)
async fn first_answered_check_is_expired(reader: &Reloader<u64>) {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let check = reader.synchronizer().check().await;
        if check.shared != gensync::synchronizer::Observed::Unavailable {
            assert!(
                check.is_expired(),
                "read as current after the change: {check:?}"
            );
            return;
        }
        assert!(Instant::now() < until, "the server never answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn admin(server: &RedisServer) -> redis::Connection {
    server.connection().expect("an admin connection")
}

/// A server, a writer and a reader that loaded v1, and a snapshot on disk
/// holding v1's generation, which a restart goes back to.
async fn snapshot_after_v1() -> (RedisServer, Reloader<u64>, Reloader<u64>) {
    let server = RedisServer::start().unwrap();
    let source = Source::default();
    let writer = process(&server.url(), patient_config(), &source);
    let reader = process(&server.url(), patient_config(), &source);
    writer.publish(1).await.unwrap();
    assert_eq!(*reader.check().await, 1);
    let _: () = redis::cmd("SAVE").query(&mut admin(&server)).unwrap();
    (server, writer, reader)
}

/// The restarted server loads the snapshot taken before the last bump; the
/// reader, which loaded that bump's settings, reads as expired once and
/// reloads what the source holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_lost_in_a_restart_still_reaches_every_reader() {
    let (mut server, writer, reader) = snapshot_after_v1().await;
    // v2 is saved and bumped, but the reader does not check before the
    // server dies, and the bump is not in the snapshot.
    writer.publish(2).await.unwrap();
    server.restart().unwrap();

    first_answered_check_is_expired(&reader).await;
    assert_eq!(*reader.check().await, 2, "reloaded after the restart");
    assert!(!reader.synchronizer().is_expired().await, "and current");
    assert_eq!(reader.metrics().stale_served, 0);
}

/// After the restart from an older snapshot, the next bump must not hand
/// out the value the reader recorded before: it would read as current and
/// keep the old settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bump_after_a_restart_from_an_older_snapshot_repeats_no_value() {
    let (mut server, writer, reader) = snapshot_after_v1().await;
    let before = writer.publish(2).await.unwrap();
    assert_eq!(*reader.check().await, 2, "recorded the bump");
    server.restart().unwrap();

    let after = writer.publish(3).await.unwrap();
    assert_ne!(after, before, "a repeat of a recorded generation");
    assert_eq!(*reader.check().await, 3);
}

/// A symbolic link the processes connect through, as a name a failover
/// points elsewhere.
struct Alias(PathBuf);

impl Alias {
    fn to(dir: &Path, target: &Path) -> Alias {
        let alias = Alias(dir.join("primary.sock"));
        alias.point_at(target);
        alias
    }

    /// Re-points the alias in one rename, as a DNS or proxy switch would.
    fn point_at(&self, target: &Path) {
        let next = self.0.with_extension("next");
        let _ = std::fs::remove_file(&next);
        std::os::unix::fs::symlink(target, &next).unwrap();
        std::fs::rename(&next, &self.0).unwrap();
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.0.display())
    }
}

fn info(server: &RedisServer, section: &str) -> String {
    redis::cmd("INFO")
        .arg(section)
        .query(&mut admin(server))
        .unwrap()
}

/// Waits until `ready` holds, for at most `bound`.
fn wait_until(bound: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let until = Instant::now() + bound;
    while !ready() {
        assert!(Instant::now() < until, "{what} within {bound:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A replica that missed the last bump is promoted when the primary dies:
/// the writer was told its bump was not replicated (it asked to wait for a
/// replica), and the reader that never saw the bump reloads anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_promoted_after_missing_a_bump_leaves_no_reader_behind() {
    let mut primary = RedisServer::start().unwrap();
    let replica = RedisServer::start_with_args([
        "--replicaof".to_owned(),
        "127.0.0.1".to_owned(),
        primary.port().to_string(),
    ])
    .unwrap();
    wait_until(Duration::from_secs(10), "the replica in sync", || {
        info(&replica, "replication").contains("master_link_status:up")
    });
    let links = tempfile::tempdir().unwrap();
    let alias = Alias::to(links.path(), &primary.socket_path());
    let source = Source::default();
    let replicated = patient_config().wait_for_replicas(1, Duration::from_millis(300));
    let writer = process(&alias.url(), replicated, &source);
    let reader = process(&alias.url(), patient_config(), &source);

    writer.publish(1).await.expect("replicated");
    assert_eq!(*reader.check().await, 1);

    // A partition cuts the replica off (it stops following: a paused one
    // would still find the stream in its socket's buffer when resumed), so
    // v2's bump reaches the primary only, and the writer is told so.
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut admin(&replica))
        .unwrap();
    let err = writer.publish(2).await.expect_err("not replicated");
    assert!(
        matches!(
            &err,
            PublishError::Bump {
                source: Error::Backend(e),
                ..
            } if e.kind() == BackendErrorKind::NotReplicated
        ),
        "{err}"
    );
    // The primary dies; the cut-off replica takes over under the same name.
    primary.kill();
    alias.point_at(&replica.socket_path());

    // The promoted replica still holds the generation the reader recorded;
    // the reader reloads anyway, and serves what the source holds.
    first_answered_check_is_expired(&reader).await;
    assert_eq!(*reader.check().await, 2);
    assert!(!reader.synchronizer().is_expired().await);
}

/// After a failover the new primary may hold the writer's lease but not its
/// intent (two scripts, replicated in order, and the failover fell between
/// them). A writer that learns the server changed records its intent
/// again before it saves, so if it then dies the key still lapses and every
/// reader loads its save.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_lost_the_intent_still_lets_a_dead_writers_save_through() {
    let server = RedisServer::start().unwrap();
    let source = Source::default();
    let reader = process(&server.url(), patient_config(), &source);
    assert_eq!(*reader.check().await, 0);

    let lease = Duration::from_secs(1);
    let backend = gensync::testing::FaultyBackend::new(
        RedisBackend::with_config(&server.url(), patient_config()).unwrap(),
    );
    let faults = backend.faults();
    let (loading, release) = (
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let (saved, write) = (Arc::new(tokio::sync::Notify::new()), Arc::clone(&source));
    let writer = {
        let (read, loading, release) = (Arc::clone(&source), loading.clone(), release.clone());
        let saved = saved.clone();
        Reloader::builder(Synchronizer::new(backend, key()), move || {
            let (read, loading, release) = (read.clone(), loading.clone(), release.clone());
            async move {
                loading.notify_one();
                release.notified().await;
                Ok::<_, std::convert::Infallible>(read.load(SeqCst))
            }
        })
        .saver(move |v: &u64| {
            write.store(*v, SeqCst);
            saved.notify_one();
            // Then the writer dies before its bump.
            std::future::pending::<Result<(), std::convert::Infallible>>()
        })
        .write_lock(lease, 40)
        .write_timeout(Duration::from_secs(30))
        .build(0)
        .unwrap()
    };
    let writing = tokio::spawn(async move { writer.update(|v| v + 1).await });
    loading.notified().await;
    // The failover: the writer's backend reaches "another" server, which
    // has the lease but lost the intent; the load outlasts the first lapse.
    let _: i64 = redis::cmd("DEL")
        .arg(key().companion("intents").as_str())
        .query(&mut admin(&server))
        .unwrap();
    faults.new_server();
    tokio::time::sleep(lease + lease / 2).await;
    // The key lapsed with the first intent: the reader reloads (v0, the
    // save has not landed) and re-creates it, for a year.
    assert_eq!(*reader.check().await, 0);
    release.notify_one();
    saved.notified().await;
    faults.fail_all();

    let until = Instant::now() + lease * 4;
    while *reader.check().await != 1 {
        assert!(
            Instant::now() < until,
            "the dead writer's save never reached the reader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writing.abort();
}

/// The key as the CLI names it.
const KEY: &str = "rollback:settings";

/// What `gensync ARGS` against `server` printed: a generation.
fn cli(server: &RedisServer, args: &[&str]) -> Generation {
    let run = support::cli::run(
        support::cli::gensync()
            .arg("--url")
            .arg(server.url())
            .args(args),
    );
    assert_eq!(run.code, Some(0), "gensync {args:?}: {}", run.all());
    run.stdout.trim().parse().expect("a generation on stdout")
}

/// The generation `process` shows once it serves `state`: what its
/// snapshot says (and so its HTTP answers and logs).
async fn shown(process: &Reloader<u64>, state: u64) -> Generation {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = process.check().await;
        if let (true, Some(generation)) = (*snapshot == state, snapshot.generation()) {
            return generation;
        }
        assert!(
            Instant::now() < until,
            "never served {state} with a generation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two processes, one running since before a restart and one started
/// after it, the writer, and the CLI show one number for one state, both
/// for a service's write and for the CLI's bump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_state_shows_one_number_in_every_process_however_long_each_has_run() {
    let mut server = RedisServer::start().unwrap();
    let source = Source::default();
    let writer = process(&server.url(), patient_config(), &source);
    let early = process(&server.url(), patient_config(), &source);
    let put = writer.publish(1).await.unwrap();
    assert_eq!(shown(&early, 1).await, put);
    assert_eq!(cli(&server, &["get", KEY]), put);

    server.restart().unwrap();
    let put = writer.publish(2).await.unwrap();
    let late = process(&server.url(), patient_config(), &source);
    for (name, process) in [("writer", &writer), ("early", &early), ("late", &late)] {
        assert_eq!(shown(process, 2).await, put, "{name} after the restart");
    }
    assert_eq!(cli(&server, &["get", KEY]), put, "the CLI's get");

    let bumped = cli(&server, &["bump", KEY]);
    assert_ne!(bumped, put);
    for (name, process) in [("writer", &writer), ("early", &early), ("late", &late)] {
        assert_eq!(
            shown(process, 2).await,
            bumped,
            "{name} after the CLI's bump"
        );
    }
    assert_eq!(cli(&server, &["get", KEY]), bumped);
}

/// Every number shown so far, and the state it was shown for: a number
/// shown for two states would let a client's ETag match the wrong one.
#[derive(Default)]
struct Shown(HashMap<Generation, u64>);

impl Shown {
    fn saw(&mut self, who: &str, generation: Generation, state: u64) {
        let first = *self.0.entry(generation).or_insert(state);
        assert_eq!(
            first, state,
            "{who} shows {generation} for state {state}, shown before for state {first}"
        );
    }
}

/// After a restart from a snapshot older than the last bump, the server
/// holds the stored value of an older state again; what the processes show
/// for the state they now serve is no number shown before for another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_older_snapshot_shows_no_number_shown_before_for_another_state() {
    let mut server = RedisServer::start().unwrap();
    let source = Source::default();
    let writer = process(&server.url(), patient_config(), &source);
    let reader = process(&server.url(), patient_config(), &source);
    let mut seen = Shown::default();
    seen.saw("the writer's answer", writer.publish(1).await.unwrap(), 1);
    seen.saw("the reader", shown(&reader, 1).await, 1);
    seen.saw("the CLI", cli(&server, &["get", KEY]), 1);
    let _: () = redis::cmd("SAVE").query(&mut admin(&server)).unwrap();
    seen.saw("the writer's answer", writer.publish(2).await.unwrap(), 2);
    seen.saw("the reader", shown(&reader, 2).await, 2);

    // Back to the snapshot: the key holds state 1's stored value again,
    // while the source holds state 2.
    server.restart().unwrap();
    let late = process(&server.url(), patient_config(), &source);
    for (name, process) in [("the reader", &reader), ("a later process", &late)] {
        seen.saw(name, shown(process, 2).await, 2);
    }
    seen.saw("the CLI", cli(&server, &["get", KEY]), 2);
    seen.saw("the writer's answer", writer.publish(3).await.unwrap(), 3);
    for (name, process) in [("the reader", &reader), ("a later process", &late)] {
        seen.saw(name, shown(process, 3).await, 3);
    }
}

/// A primary demoted, resynced from a server holding older data, and
/// promoted again keeps its `run_id`, yet holds an older state's stored
/// value: what every process shows for the state it now serves is no
/// number shown before for another (the replication id, which a
/// promotion changes, is part of the server's identity).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_failed_back_with_older_data_shows_no_number_shown_before() {
    let server = RedisServer::start().unwrap();
    let other = RedisServer::start().unwrap();
    let run_id = || {
        info(&server, "server")
            .lines()
            .find(|l| l.starts_with("run_id:"))
            .map(str::to_owned)
    };
    let before = run_id();
    let source = Source::default();
    let writer = process(&server.url(), patient_config(), &source);
    let mut seen = Shown::default();
    seen.saw("the writer's answer", writer.publish(1).await.unwrap(), 1);
    // The other server holds state 1's stored value, as a replica that
    // missed the next write would.
    let stored: String = redis::cmd("GET")
        .arg(key().as_str())
        .query(&mut admin(&server))
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(key().as_str())
        .arg(&stored)
        .query(&mut admin(&other))
        .unwrap();
    seen.saw("the writer's answer", writer.publish(2).await.unwrap(), 2);

    // Demoted under the other, resynced from it, promoted again.
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(other.port())
        .query(&mut admin(&server))
        .unwrap();
    wait_until(Duration::from_secs(10), "the resync", || {
        info(&server, "replication").contains("master_link_status:up")
    });
    let _: () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query(&mut admin(&server))
        .unwrap();
    assert_eq!(run_id(), before, "the same run");
    let resynced: String = redis::cmd("GET")
        .arg(key().as_str())
        .query(&mut admin(&server))
        .unwrap();
    assert_eq!(resynced, stored, "state 1's stored value again");

    let late = process(&server.url(), patient_config(), &source);
    seen.saw("a later process", shown(&late, 2).await, 2);
    seen.saw("the CLI", cli(&server, &["get", KEY]), 2);
}

/// A member of a keyed reloader's set shows its generation mixed with the
/// set's own: `gensync --member ID get SET` prints that number, after a
/// bump of the member and after one of the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_a_members_number_as_the_keyed_service_shows_it() {
    let server = RedisServer::start().unwrap();
    let service = gensync::keyed::KeyedReloader::builder(
        RedisBackend::with_config(&server.url(), patient_config()).unwrap(),
        Key::parse("tenants").unwrap(),
        |tenant: &String| tenant.clone(),
        |_tenant: String| async { Ok::<_, std::convert::Infallible>(1u64) },
    )
    .mode(gensync::reload::CheckMode::Strict)
    .build()
    .unwrap();
    let tenant = "acme".to_owned();
    let member = ["--member", "acme"];
    let served = || async {
        let snapshot = service.check(&tenant).await.expect("the tenant's settings");
        snapshot.generation().expect("a generation")
    };
    // The set's own generation first, so there is one to mix in.
    cli(&server, &["bump", "tenants"]);
    let first = served().await;
    assert_eq!(
        cli(&server, &[&member[..], &["get", "tenants"]].concat()),
        first
    );

    let bumped = cli(&server, &[&member[..], &["bump", "tenants"]].concat());
    assert_ne!(bumped, first);
    assert_eq!(
        served().await,
        bumped,
        "the CLI's bump prints what is served"
    );
    assert_eq!(
        cli(&server, &[&member[..], &["get", "tenants"]].concat()),
        bumped
    );

    cli(&server, &["bump", "tenants"]);
    let after_set = served().await;
    assert_ne!(after_set, bumped, "a bump of the set is a change");
    assert_eq!(
        cli(&server, &[&member[..], &["get", "tenants"]].concat()),
        after_set
    );
}

/// A user without `+info` on `server` (ACLs live in memory: again after
/// each restart), and the URL that logs in as it.
fn without_info(server: &RedisServer) -> String {
    let _: () = redis::cmd("ACL")
        .arg(
            &[
                "SETUSER", "noinfo", "on", "nopass", "~*", "&*", "+@all", "-info",
            ][..],
        )
        .query(&mut admin(server))
        .unwrap();
    server.url().replacen("redis://", "redis://noinfo:any@", 1)
}

/// Without `+info` no process can name its server: before any reconnection
/// every process and the CLI show the stored value, and after a restart
/// from an older snapshot a running process still reads as expired once and
/// shows a number of its own, never one shown for another state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_info_a_restart_from_an_older_snapshot_still_expires_every_reader() {
    let mut server = RedisServer::start().unwrap();
    let url = without_info(&server);
    let source = Source::default();
    let writer = process(&url, patient_config(), &source);
    let reader = process(&url, patient_config(), &source);
    let mut seen = Shown::default();
    let put = writer.publish(1).await.unwrap();
    seen.saw("the writer's answer", put, 1);
    assert_eq!(
        shown(&reader, 1).await,
        put,
        "alike before any reconnection"
    );
    let run = support::cli::run(support::cli::gensync().args(["--url", &url, "get", KEY]));
    assert_eq!(run.stdout.trim(), put.to_string(), "{}", run.all());
    let stored: String = redis::cmd("GET")
        .arg(key().as_str())
        .query(&mut admin(&server))
        .unwrap();
    assert_eq!(stored, put.to_string(), "shown as stored: no identity");
    let _: () = redis::cmd("SAVE").query(&mut admin(&server)).unwrap();
    seen.saw("the writer's answer", writer.publish(2).await.unwrap(), 2);
    seen.saw("the reader", shown(&reader, 2).await, 2);

    server.restart().unwrap();
    without_info(&server);
    first_answered_check_is_expired(&reader).await;
    seen.saw("the reader", shown(&reader, 2).await, 2);
    seen.saw("the writer's answer", writer.publish(3).await.unwrap(), 3);
    seen.saw("the reader", shown(&reader, 3).await, 3);
}

/// In a Cluster the identity is that of the key's slot owner, learnt from
/// its answers: a process that ran before a shard's failover, one started
/// after it, and the writer show one number for the state after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_one_state_shows_one_number_across_a_shard_failover() {
    let mut cluster = gensync::testing::RedisCluster::start().unwrap();
    let source = Source::default();
    let writer = process(&cluster.url(), patient_config(), &source);
    let early = process(&cluster.url(), patient_config(), &source);
    let put = writer.publish(1).await.unwrap();
    assert_eq!(shown(&early, 1).await, put);

    let old = cluster.kill_primary_for(key().as_str()).unwrap();
    cluster
        .wait_for_failover(key().as_str(), old, Duration::from_secs(30))
        .unwrap();
    // Writes may fail while the client learns the new node.
    let until = Instant::now() + Duration::from_secs(30);
    let put = loop {
        match writer.publish(2).await {
            Ok(put) => break put,
            Err(e) => assert!(Instant::now() < until, "no write after the failover: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let late = process(&cluster.url(), patient_config(), &source);
    for (name, process) in [("writer", &writer), ("early", &early), ("late", &late)] {
        assert_eq!(shown(process, 2).await, put, "{name} after the failover");
    }
}
