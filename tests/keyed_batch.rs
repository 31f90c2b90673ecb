//! Keyed strict reads batched across tenants: the reads of every tenant
//! that wait at the same moment go to Redis as one command (one per
//! Cluster slot), and a check is still only answered by a read that began
//! after it arrived.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gensync::backend::{Backend, BackendErrorKind, Fence, Stored};
use gensync::keyed::KeyedReloader;
use gensync::reload::{CheckMode, Freshness};
use gensync::testing::{RedisCluster, RedisServer};
use gensync::{BackendError, Generation, GenerationSynchronizer, Key, RedisBackend, Synchronizer};
use tokio::sync::{watch, Notify};
use tokio::time::timeout;

/// A Redis backend whose multi-key reads a test can watch, hold in flight
/// after they read (so their answer predates what happens meanwhile) and
/// fail.
#[derive(Clone)]
struct Gated {
    inner: RedisBackend,
    gate: Arc<Gate>,
}

struct Gate {
    /// The number of keys of each multi-key read, in order.
    batches: Mutex<Vec<usize>>,
    /// While false, a multi-key read that has read waits before it answers.
    open: watch::Sender<bool>,
    /// Told when a held read has read and waits.
    holding: Notify,
    /// Multi-key reads fail while set, without reaching Redis.
    failing: AtomicBool,
}

impl Gated {
    fn new(url: &str) -> Self {
        Gated {
            inner: RedisBackend::open(url).expect("a Redis backend"),
            gate: Arc::new(Gate {
                batches: Mutex::default(),
                open: watch::Sender::new(true),
                holding: Notify::new(),
                failing: AtomicBool::new(false),
            }),
        }
    }

    fn batches(&self) -> Vec<usize> {
        self.gate.batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl Backend for Gated {
    async fn get_many(&self, keys: &[Key]) -> Result<Vec<Stored>, BackendError> {
        self.gate.batches.lock().unwrap().push(keys.len());
        if self.gate.failing.load(Ordering::SeqCst) {
            return Err(BackendError::new(
                BackendErrorKind::Unreachable,
                "gated",
                "the test failed this batch",
            ));
        }
        let read = self.inner.get_many(keys).await;
        let mut open = self.gate.open.subscribe();
        if !*open.borrow_and_update() {
            self.gate.holding.notify_one();
            open.wait_for(|open| *open).await.expect("the gate");
        }
        read
    }
    async fn get(&self, key: &Key) -> Result<Stored, BackendError> {
        self.inner.get(key).await
    }
    async fn add(&self, key: &Key, g: Generation, ttl: Duration) -> Result<bool, BackendError> {
        self.inner.add(key, g, ttl).await
    }
    async fn incr(
        &self,
        key: &Key,
        step: u64,
        ttl: Duration,
        finished: Option<Generation>,
    ) -> Result<Stored, BackendError> {
        self.inner.incr(key, step, ttl, finished).await
    }
    async fn delete(&self, key: &Key) -> Result<(), BackendError> {
        self.inner.delete(key).await
    }
    async fn lock(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
    ) -> Result<Option<Fence>, BackendError> {
        self.inner.lock(key, token, ttl).await
    }
    async fn renew(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<bool, BackendError> {
        self.inner.renew(key, token, ttl, key_ttl).await
    }
    async fn unlock(&self, key: &Key, token: Generation) -> Result<bool, BackendError> {
        self.inner.unlock(key, token).await
    }
    async fn intend(
        &self,
        key: &Key,
        token: Generation,
        ttl: Duration,
        key_ttl: Duration,
    ) -> Result<(), BackendError> {
        self.inner.intend(key, token, ttl, key_ttl).await
    }
    fn epoch(&self) -> u64 {
        self.inner.epoch()
    }
    fn identity(&self, key: &Key) -> (u64, Option<u64>) {
        self.inner.identity(key)
    }
}

/// Every tenant's settings.
type Source = Arc<Mutex<HashMap<String, u64>>>;

fn tenant(i: usize) -> String {
    format!("tenant-{i}")
}

/// A strict keyed reloader over `backend`, loading from `source`, saving
/// to it.
fn keyed(backend: impl Backend, source: &Source) -> KeyedReloader<String, u64> {
    let (read, write) = (Arc::clone(source), Arc::clone(source));
    KeyedReloader::builder(
        backend,
        Key::new(["tenants"]).unwrap(),
        |tenant: &String| tenant.clone(),
        move |tenant: String| {
            let value = read.lock().unwrap().get(&tenant).copied();
            async move { value.ok_or("no such tenant") }
        },
    )
    .saver(move |tenant: String, value: &u64, _fence: Fence| {
        write.lock().unwrap().insert(tenant, *value);
        async { Ok::<_, Infallible>(()) }
    })
    .mode(CheckMode::Strict)
    .capacity(10_000)
    .build()
    .expect("a keyed reloader")
}

fn source(tenants: usize) -> Source {
    Arc::new(Mutex::new((0..tenants).map(|i| (tenant(i), 1)).collect()))
}

/// The scripts clients sent `server` (the commands a script runs are
/// counted apart, under their own names).
fn scripts_sent(server: &RedisServer) -> u64 {
    support::command_calls(&mut server.connection().unwrap(), |name| {
        name.starts_with("eval")
    })
}

/// Waits until `done` holds.
async fn until(done: impl Fn() -> bool) {
    timeout(Duration::from_secs(10), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the awaited state was reached");
}

/// Lets every task of this (current-thread) runtime run until it waits:
/// the checks spawned before queue their reads, as none waits on I/O
/// before it queues.
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn concurrent_checks_of_many_tenants_cost_one_command_per_batch() {
    let server = RedisServer::start().expect("redis-server");
    let backend = Gated::new(&server.url());
    let source = source(300);
    let reloader = keyed(backend.clone(), &source);
    for i in 0..300 {
        assert_eq!(*reloader.check(&tenant(i)).await.unwrap(), 1);
    }

    // A batch in flight, held: the checks that arrive meanwhile all wait
    // for the next one.
    backend.gate.open.send_replace(false);
    let first = tokio::spawn({
        let reloader = reloader.clone();
        async move { reloader.answer(&tenant(0)).await.unwrap() }
    });
    backend.gate.holding.notified().await;
    let (batches, sent) = (backend.batches().len(), scripts_sent(&server));
    let counted = reloader.metrics().checks;
    let checks: Vec<_> = (1..300)
        .map(|i| {
            let reloader = reloader.clone();
            tokio::spawn(async move { reloader.answer(&tenant(i)).await.unwrap() })
        })
        .collect();
    until(|| reloader.metrics().checks >= counted + 299).await;
    settle().await;
    backend.gate.open.send_replace(true);
    assert_eq!(first.await.unwrap().freshness, Freshness::Read);
    for check in checks {
        let answer = timeout(Duration::from_secs(10), check)
            .await
            .expect("a check ends")
            .unwrap();
        assert_eq!((*answer.snapshot, answer.freshness), (1, Freshness::Read));
    }
    // 299 tenants and their parent, read once: 300 keys in at most 512,
    // one batch, one command.
    assert_eq!(
        backend.batches()[batches..],
        [300],
        "{:?}",
        backend.batches()
    );
    assert_eq!(scripts_sent(&server) - sent, 1, "one script for the batch");
}

#[tokio::test]
async fn a_batch_reads_at_most_512_keys_and_the_rest_wait_for_the_next() {
    let server = RedisServer::start().expect("redis-server");
    let backend = Gated::new(&server.url());
    let source = source(700);
    let reloader = keyed(backend.clone(), &source);
    for i in 0..700 {
        reloader.check(&tenant(i)).await.unwrap();
    }
    backend.gate.open.send_replace(false);
    let first = tokio::spawn({
        let reloader = reloader.clone();
        async move { reloader.check(&tenant(0)).await.unwrap() }
    });
    backend.gate.holding.notified().await;
    let batches = backend.batches().len();
    let checks: Vec<_> = (1..700)
        .map(|i| {
            let reloader = reloader.clone();
            tokio::spawn(async move { reloader.check(&tenant(i)).await.unwrap() })
        })
        .collect();
    settle().await;
    backend.gate.open.send_replace(true);
    first.await.unwrap();
    for check in checks {
        assert_eq!(*check.await.unwrap(), 1);
    }
    // 511 tenants with the parent, then the other 188 with it.
    assert_eq!(backend.batches()[batches..], [512, 189]);
}

#[tokio::test]
async fn a_check_is_never_answered_by_a_batch_that_began_before_it_arrived() {
    let server = RedisServer::start().expect("redis-server");
    let backend = Gated::new(&server.url());
    let source = source(2);
    let reloader = keyed(backend.clone(), &source);
    // Another instance, whose reads nothing holds, writes.
    let writer = keyed(RedisBackend::open(&server.url()).unwrap(), &source);
    assert_eq!(*reloader.check(&tenant(0)).await.unwrap(), 1);

    // A batch reads tenant 0 and is held in flight.
    backend.gate.open.send_replace(false);
    let before = tokio::spawn({
        let reloader = reloader.clone();
        async move { reloader.check(&tenant(0)).await.unwrap() }
    });
    backend.gate.holding.notified().await;

    // Tenant 0 changes; then a check of it arrives (a first load, its
    // reloader forgotten: it reads without waiting on the reloader's own
    // read in flight), while the batch that read the old value is still
    // in flight.
    let bumped = writer.publish(&tenant(0), 2).await.expect("the publish");
    reloader.forget(&tenant(0)).await;
    let loads = reloader.metrics().loader_runs;
    let after = tokio::spawn({
        let reloader = reloader.clone();
        async move { reloader.check(&tenant(0)).await.unwrap() }
    });
    // A first load counts its run, then reads: queued for the next batch
    // in the same poll.
    until(|| reloader.metrics().loader_runs > loads).await;
    backend.gate.open.send_replace(true);

    assert_eq!(*before.await.unwrap(), 1, "read before the bump");
    let after = after.await.unwrap();
    assert_eq!(
        after.generation(),
        Some(bumped),
        "the check that arrived after the bump recorded the generation \
         the batch in flight read before it"
    );
    assert_eq!(*after, 2);
}

#[tokio::test]
async fn a_failing_batch_fails_each_waiter_and_the_next_batch_works() {
    let server = RedisServer::start().expect("redis-server");
    let backend = Gated::new(&server.url());
    let source = source(20);
    let reloader = keyed(backend.clone(), &source);
    for i in 0..20 {
        reloader.check(&tenant(i)).await.unwrap();
    }
    backend.gate.failing.store(true, Ordering::SeqCst);
    let before = reloader.metrics();
    let failed: Vec<_> = (0..20)
        .map(|i| {
            let reloader = reloader.clone();
            tokio::spawn(async move { reloader.check(&tenant(i)).await.unwrap() })
        })
        .collect();
    for answer in failed {
        assert_eq!(*answer.await.unwrap(), 1);
    }
    // Each check saw the backend fail, as its own failed read would have,
    // and (anything wrong reading as expired) reloaded.
    let failing = reloader.metrics();
    assert_eq!(failing.backend_errors - before.backend_errors, 20);
    assert_eq!(failing.loader_runs - before.loader_runs, 20);

    backend.gate.failing.store(false, Ordering::SeqCst);
    for i in 0..20 {
        let answer = timeout(Duration::from_secs(10), reloader.answer(&tenant(i)))
            .await
            .expect("the next batch is sent")
            .unwrap();
        assert_eq!((*answer.snapshot, answer.freshness), (1, Freshness::Read));
    }
    let healed = reloader.metrics();
    assert_eq!(healed.backend_errors, failing.backend_errors, "read again");
    assert_eq!(healed.loader_runs, failing.loader_runs, "nothing changed");
}

/// The scripts every node of `cluster` was sent.
fn cluster_scripts_sent(cluster: &RedisCluster) -> u64 {
    cluster.nodes().iter().map(scripts_sent).sum()
}

#[tokio::test]
async fn in_a_cluster_a_read_of_many_keys_is_one_command_per_slot() {
    let cluster = RedisCluster::start().expect("a Redis Cluster");
    let backend = RedisBackend::open(&cluster.url()).unwrap();
    // Ten keys of three sets (each set's members share its slot), and
    // one key on its own.
    let mut keys = Vec::new();
    let mut written = Vec::new();
    for (i, set) in ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a"]
        .iter()
        .enumerate()
    {
        keys.push(Key::new([*set]).unwrap().member(&format!("k{i}")).unwrap());
    }
    keys.push(Key::new(["alone"]).unwrap());
    let slots: std::collections::HashSet<u16> = keys
        .iter()
        .map(|k| cluster.slot(k.as_str()).unwrap())
        .collect();
    assert_eq!(slots.len(), 4, "the keys are on four slots");
    for key in &keys[..9] {
        let sync = Synchronizer::new(backend.clone(), key.clone());
        sync.refresh().await.expect("created");
        let Stored::Value(g) = backend.get(key).await.unwrap() else {
            panic!("{key} was created");
        };
        written.push(Stored::Value(g));
    }
    // The tenth and the lone key are missing.
    written.extend([Stored::Missing, Stored::Missing]);
    // Learn every slot's owner first: its first script also asks the node
    // who it is.
    backend.get_many(&keys).await.unwrap();
    let before = cluster_scripts_sent(&cluster);
    let read = backend.get_many(&keys).await.expect("the read");
    assert_eq!(read, written, "each key's own value, in order");
    assert_eq!(
        cluster_scripts_sent(&cluster) - before,
        4,
        "one script per slot"
    );
}

#[tokio::test]
async fn a_read_of_many_keys_on_one_server_is_one_bounded_command() {
    let server = RedisServer::start().expect("redis-server");
    let backend = RedisBackend::open(&server.url()).unwrap();
    let mut conn = server.connection().unwrap();
    let keys: Vec<Key> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|k| Key::new([*k]).unwrap())
        .collect();
    let mut set = |key: &Key, value: String| {
        let _: () = redis::cmd("SET")
            .arg(key.as_str())
            .arg(value)
            .query(&mut conn)
            .unwrap();
    };
    set(&keys[0], "4294967297".into());
    // A value of a megabyte: read as corrupt without crossing the wire.
    set(&keys[1], "7".repeat(1 << 20));
    set(&keys[2], String::new());
    let _: () = redis::cmd("LPUSH")
        .arg(keys[3].as_str())
        .arg("x")
        .query(&mut conn)
        .unwrap();
    let before = scripts_sent(&server);
    let read = backend.get_many(&keys).await.expect("the read");
    assert_eq!(
        read,
        [
            Stored::Value(Generation::new(4294967297).unwrap()),
            Stored::Corrupt,
            Stored::Corrupt,
            Stored::Corrupt,
            Stored::Missing
        ]
    );
    assert_eq!(scripts_sent(&server) - before, 1);
}

#[tokio::test]
async fn a_batch_needs_only_the_keyed_readers_acl_and_names_a_denied_command() {
    let server = RedisServer::start().expect("redis-server");
    let parent = Key::new(["tenants"]).unwrap();
    let keys = vec![
        parent.member("acme").unwrap(),
        parent.member("globex").unwrap(),
        parent.clone(),
    ];
    let mut admin = server.connection().unwrap();
    let user = |denied: &str| {
        // SECURITY.md's keyed-reader line, less `denied`.
        let mut rules = vec![
            "app",
            "on",
            ">pw",
            "resetkeys",
            "~gensync:*",
            "~{gensync:*",
            "-@all",
        ];
        rules.extend(
            ["+eval", "+getrange", "+exists", "+info"]
                .into_iter()
                .filter(|rule| rule[1..] != *denied),
        );
        rules
    };
    let url = server.url().replacen("://", "://app:pw@", 1);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user(""))
        .query(&mut admin)
        .unwrap();
    let read = RedisBackend::open(&url).unwrap().get_many(&keys).await;
    assert_eq!(read.unwrap(), [Stored::Missing; 3]);

    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user("getrange"))
        .query(&mut admin)
        .unwrap();
    let error = RedisBackend::open(&url)
        .unwrap()
        .get_many(&keys)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), BackendErrorKind::Denied, "{error}");
    assert_eq!(error.rule(), Some("+getrange"), "{error}");
    assert!(error.to_string().contains("'getrange'"), "{error}");
}
