//! Both Redis paths against a real redis-server, through their public
//! API: which server answered (the epoch), writes that wait for replicas,
//! the URL schemes accepted, and the cause an error keeps. Moved here from
//! the crate's own tests so the backend's code needs no test server.

mod support;

use std::error::Error as _;
use std::time::{Duration, Instant};

use futures_executor::block_on;
use gensync::backend::{Backend, BackendErrorKind, Stored};
use gensync::testing::RedisServer;
use gensync::{BackendError, BlockingRedisBackend, Generation, Key, RedisBackend, RedisConfig};

/// Timeouts a stalled test machine does not reach.
fn patient() -> RedisConfig {
    RedisConfig::default()
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
}

/// Closes every client connection but `admin`'s, server side.
fn kill_clients(admin: &mut redis::Connection) {
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(admin)
        .unwrap();
    assert!(killed > 0, "no connection to kill");
}

#[tokio::test]
async fn the_async_epoch_moves_when_the_server_does_not_when_the_connection_does() {
    let mut server = RedisServer::start().unwrap();
    let backend = RedisBackend::with_config(&server.url(), patient()).unwrap();
    for _ in 0..20 {
        backend.ping().await.unwrap();
    }
    assert_eq!(Backend::epoch(&backend), 0);

    let mut admin = server.connection().unwrap();
    let before = support::connections_received(&mut admin);
    kill_clients(&mut admin);
    backend.ping().await.unwrap();
    assert_eq!(
        support::connections_received(&mut admin) - before,
        1,
        "a new connection"
    );
    assert_eq!(Backend::epoch(&backend), 0, "the same server");

    server.restart().unwrap();
    backend.ping().await.unwrap();
    assert_eq!(Backend::epoch(&backend), 1, "a restarted server");
    for _ in 0..5 {
        backend.ping().await.unwrap();
    }
    assert_eq!(Backend::epoch(&backend), 1);
}

#[test]
fn the_blocking_epoch_moves_when_the_server_does_not_when_the_connection_does() {
    let mut server = RedisServer::start().unwrap();
    let backend = BlockingRedisBackend::with_config(&server.url(), patient()).unwrap();
    for _ in 0..20 {
        backend.ping().unwrap();
    }
    assert_eq!(Backend::epoch(&backend), 0);

    let mut admin = server.connection().unwrap();
    let before = support::connections_received(&mut admin);
    kill_clients(&mut admin);
    backend.ping().unwrap();
    assert_eq!(
        support::connections_received(&mut admin) - before,
        1,
        "a new connection"
    );
    assert_eq!(Backend::epoch(&backend), 0, "the same server");

    server.restart().unwrap();
    backend.ping().unwrap();
    assert_eq!(Backend::epoch(&backend), 1, "a restarted server");
    for _ in 0..5 {
        backend.ping().unwrap();
    }
    assert_eq!(Backend::epoch(&backend), 1);
}

/// With `INFO` denied, no connection can tell which server it reached:
/// each new one after the first counts as a new epoch, and none fails.
#[tokio::test]
async fn an_unknown_identity_makes_every_new_connection_a_new_epoch() {
    let server = RedisServer::start().unwrap();
    let mut admin = server.connection().unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-info")
        .query(&mut admin)
        .unwrap();
    let backend = RedisBackend::with_config(&server.url(), patient()).unwrap();
    let blocking = BlockingRedisBackend::with_config(&server.url(), patient()).unwrap();
    backend.ping().await.unwrap();
    blocking.ping().unwrap();
    assert_eq!(
        (Backend::epoch(&backend), Backend::epoch(&blocking)),
        (0, 0)
    );
    for epoch in 1..=2 {
        kill_clients(&mut admin);
        backend.ping().await.unwrap();
        blocking.ping().unwrap();
        assert_eq!(
            (Backend::epoch(&backend), Backend::epoch(&blocking)),
            (epoch, epoch)
        );
    }
}

/// A primary and a replica of it, once the replica acknowledges writes.
fn replicated() -> (RedisServer, RedisServer) {
    let primary = RedisServer::start().unwrap();
    let port = primary.port().to_string();
    let replica =
        RedisServer::start_with_args(["--replicaof", "127.0.0.1", port.as_str()]).unwrap();
    let mut admin = primary.connection().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut admin)
            .unwrap();
        // `state=online` comes before the replica has loaded what it
        // was sent and acknowledged anything; only an acknowledged
        // write says WAIT can be answered.
        if info.contains("connected_slaves:1") {
            let () = redis::cmd("SET")
                .arg("live:probe")
                .arg(1)
                .query(&mut admin)
                .unwrap();
            let acked: u32 = redis::cmd("WAIT")
                .arg(1)
                .arg(100)
                .query(&mut admin)
                .unwrap();
            if acked == 1 {
                return (primary, replica);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the replica never acknowledged a write: {info}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Slack for scheduling on a busy machine.
const MARGIN: Duration = Duration::from_millis(750);
const WAIT: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_secs(60);

fn stored(server: &RedisServer, key: &Key) -> Option<u64> {
    let mut conn = server.connection().unwrap();
    redis::cmd("GET")
        .arg(key.as_str())
        .query(&mut conn)
        .unwrap()
}

/// What a replicated write (`incr`) must come to while the
/// replica is paused, begun at `started`.
fn assert_not_replicated(err: BackendError, started: Instant) {
    let took = started.elapsed();
    assert_eq!(err.kind(), BackendErrorKind::NotReplicated, "{err:?}");
    assert_eq!(
        (err.acked(), err.wanted(), err.after()),
        (Some(0), Some(1), Some(WAIT)),
        "{err:?}"
    );
    assert!(took >= WAIT && took <= WAIT + MARGIN, "took {took:?}");
    let text = err.to_string();
    assert!(text.contains("only 0 of 1 replica"), "{text}");
    assert!(text.contains("failover"), "{text}");
}

#[tokio::test]
async fn async_replicated_writes_wait_for_the_replicas_asked_for() {
    let (primary, replica) = replicated();
    let key = Key::parse("live:replicated").unwrap();
    let g = Generation::new(41).unwrap();
    let config = patient().wait_for_replicas(1, WAIT);
    let backend = RedisBackend::with_config(&primary.url(), config).unwrap();
    let unasked = RedisBackend::with_config(&primary.url(), patient()).unwrap();

    assert!(backend.add_replicated(&key, g, TTL).await.unwrap());
    // Acknowledged means there already.
    assert_eq!(stored(&replica, &key), Some(41));

    replica.pause().unwrap();
    let started = Instant::now();
    let err = backend.incr(&key, 1, TTL, None).await.unwrap_err();
    let primary_has = stored(&primary, &key);
    // Off by default: the same write does not wait.
    let started_unasked = Instant::now();
    let bumped = unasked.incr(&key, 1, TTL, None).await;
    let took_unasked = started_unasked.elapsed();
    replica.resume().unwrap();

    assert_not_replicated(err, started);
    assert_eq!(primary_has, Some(42), "the write reached the primary");
    assert_eq!(bumped, Ok(Stored::Value(Generation::new(43).unwrap())));
    assert!(took_unasked < WAIT, "took {took_unasked:?}");
}

#[test]
fn blocking_replicated_writes_wait_for_the_replicas_asked_for() {
    let (primary, replica) = replicated();
    let key = Key::parse("live:replicated").unwrap();
    let g = Generation::new(41).unwrap();
    let config = patient().wait_for_replicas(1, WAIT);
    let backend = BlockingRedisBackend::with_config(&primary.url(), config).unwrap();
    let unasked = BlockingRedisBackend::with_config(&primary.url(), patient()).unwrap();

    assert!(block_on(backend.add_replicated(&key, g, TTL)).unwrap());
    assert_eq!(stored(&replica, &key), Some(41));

    replica.pause().unwrap();
    let started = Instant::now();
    let err = block_on(backend.incr(&key, 1, TTL, None)).unwrap_err();
    let primary_has = stored(&primary, &key);
    let started_unasked = Instant::now();
    let bumped = block_on(unasked.incr(&key, 1, TTL, None));
    let took_unasked = started_unasked.elapsed();
    replica.resume().unwrap();

    assert_not_replicated(err, started);
    assert_eq!(primary_has, Some(42), "the write reached the primary");
    assert_eq!(bumped, Ok(Stored::Value(Generation::new(43).unwrap())));
    assert!(took_unasked < WAIT, "took {took_unasked:?}");
    // The connection the replicated write used is still good.
    assert_eq!(
        block_on(backend.get(&key)),
        Ok(Stored::Value(Generation::new(43).unwrap()))
    );
}

/// `WAIT` holds its connection until the replicas answer; on the async
/// path, whose callers share a connection, reads must not queue behind
/// it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_for_replicas_does_not_hold_up_reads_on_the_async_path() {
    let (primary, replica) = replicated();
    let key = Key::parse("live:replicated").unwrap();
    let config = patient().wait_for_replicas(1, WAIT);
    let backend = RedisBackend::with_config(&primary.url(), config).unwrap();
    backend.ping().await.unwrap();

    replica.pause().unwrap();
    let writer = backend.clone();
    let write = tokio::spawn(async move {
        let key = Key::parse("live:replicated").unwrap();
        let g = Generation::new(41).unwrap();
        writer.add_replicated(&key, g, TTL).await
    });
    // Until the primary shows the write, the WAIT has not begun.
    let deadline = Instant::now() + WAIT;
    while stored(&primary, &key).is_none() {
        assert!(
            Instant::now() < deadline,
            "the write never reached the primary"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let read = backend.get(&key).await;
    let took = started.elapsed();
    let written = write.await.unwrap();
    replica.resume().unwrap();

    assert_eq!(read, Ok(Stored::Value(Generation::new(41).unwrap())));
    assert!(took < WAIT / 2, "the read waited {took:?} behind the WAIT");
    assert!(
        matches!(&written, Err(e) if e.kind() == BackendErrorKind::NotReplicated),
        "{written:?}"
    );
}

/// `valkey://` is `redis://` under another name, as the client library
/// reads it, on both paths; `valkey+unix://` is `redis+unix://`.
#[tokio::test]
async fn valkey_urls_reach_the_server() {
    let server = RedisServer::start().unwrap();
    let valkey = server.url().replacen("redis://", "valkey://", 1);
    assert!(valkey.starts_with("valkey://"), "{valkey}");
    let backend = RedisBackend::with_config(&valkey, patient()).unwrap();
    backend.ping().await.unwrap();
    assert!(backend.describe().contains("valkey://"), "{backend:?}");
    let blocking = BlockingRedisBackend::with_config(&valkey, patient()).unwrap();
    blocking.ping().unwrap();

    let key = Key::parse("live:valkey").unwrap();
    let g = Generation::new(7).unwrap();
    assert!(backend.add(&key, g, TTL).await.unwrap());
    assert_eq!(block_on(blocking.get(&key)), Ok(Stored::Value(g)));

    let socket = server
        .unix_url()
        .replacen("redis+unix://", "valkey+unix://", 1);
    assert!(socket.starts_with("valkey+unix://"), "{socket}");
    let over_socket = RedisBackend::with_config(&socket, patient()).unwrap();
    assert_eq!(over_socket.get(&key).await, Ok(Stored::Value(g)));
}

/// A failure keeps the client library's error as its source, and its kind
/// says what happened: here a port nothing listens on.
#[tokio::test]
async fn an_error_keeps_the_client_error_as_its_source() {
    let mut server = RedisServer::start().unwrap();
    let url = server.url();
    server.kill();
    let backend = RedisBackend::with_config(&url, patient()).unwrap();
    let blocking = BlockingRedisBackend::with_config(&url, patient()).unwrap();
    for err in [
        backend.ping().await.unwrap_err(),
        blocking.ping().unwrap_err(),
    ] {
        assert_eq!(err.kind(), BackendErrorKind::Unreachable, "{err:?}");
        let source = err.source().expect("a source");
        let redis = source
            .downcast_ref::<redis::RedisError>()
            .unwrap_or_else(|| panic!("the source is not the redis error: {source:?}"));
        assert!(redis.is_connection_refusal(), "{redis:?}");
        // The whole chain, down to the socket's error.
        let io = redis.source().map(ToString::to_string).unwrap_or_default();
        assert!(io.contains("refused"), "{io}");
    }
}
