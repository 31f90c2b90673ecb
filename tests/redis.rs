//! The Redis backend against a real redis-server that each test starts,
//! pauses, kills and restarts itself.

mod support;

use std::time::{Duration, Instant};

use gensync::backend::BackendErrorKind;
use gensync::backend::Stored;
use gensync::synchronizer::{Observed, WriterLock, DEFAULT_TTL};
use gensync::testing::RedisServer;
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, Error, GenerationSynchronizer, Key, RedisBackend,
    RedisConfig, Synchronizer,
};
use support::{fast_config, LogCapture, Redis, Store, RECONNECT_DELAY};

/// Slack on top of a call's bound for scheduling on a busy 2-core machine.
const MARGIN: Duration = Duration::from_millis(250);

fn key() -> Key {
    Key::new(["redis", "settings"]).unwrap()
}

fn blocking(url: &str) -> BlockingSynchronizer<BlockingRedisBackend> {
    blocking_with(url, fast_config())
}

fn blocking_with(url: &str, config: RedisConfig) -> BlockingSynchronizer<BlockingRedisBackend> {
    let backend = BlockingRedisBackend::with_config(url, config).unwrap();
    BlockingSynchronizer::new(backend, key())
}

#[tokio::test]
async fn a_list_at_the_key_reads_expired_and_is_repaired() {
    let store = Redis::new();
    let reader = Synchronizer::new(store.process(), key());
    reader.refresh().await.unwrap();
    store.evict(&key());
    store.raw::<()>(redis::cmd("RPUSH").arg(key().as_str()).arg("x"));

    let check = reader.check().await;
    assert_eq!(check.shared, Observed::Corrupt);
    assert!(check.is_expired());

    let writer = Synchronizer::new(store.process(), key());
    let repaired = writer.mark_updated().await.unwrap();
    let kind: String = store.raw(redis::cmd("TYPE").arg(key().as_str()));
    assert_eq!(kind, "string");
    assert_eq!(reader.check().await.observed(), Some(repaired));
}

#[tokio::test]
async fn increments_keep_every_bit_of_a_63_bit_generation() {
    // Lua numbers are doubles; 2^53 + 1 would come back rounded.
    let store = Redis::new();
    store.write_raw(&key(), "9007199254740993");
    let writer = Synchronizer::new(store.process(), key());
    let bumped = writer.mark_updated().await.unwrap();
    let stored: u64 = store.raw(redis::cmd("GET").arg(key().as_str()));
    let step = stored - 9007199254740993;
    assert!((1..=1 << 40).contains(&step), "a step of {step}");
    // What the bump returned is the stored value as shown: a rounded one
    // would show another number.
    assert_eq!(
        writer.read().await,
        Ok(gensync::backend::Stored::Value(bumped)),
        "read back exactly"
    );
}

#[tokio::test]
async fn the_key_lives_a_year_by_default_and_bumps_renew_a_custom_ttl() {
    let store = Redis::new();
    let sync = Synchronizer::new(store.process(), key());
    sync.refresh().await.unwrap();
    let pttl: i64 = store.raw(redis::cmd("PTTL").arg(key().as_str()));
    assert!(
        pttl > (DEFAULT_TTL - Duration::from_secs(60)).as_millis() as i64,
        "{pttl}"
    );

    let ttl = Duration::from_secs(30);
    let sync = Synchronizer::new(store.process(), key())
        .with_ttl(ttl)
        .unwrap();
    store.raw::<()>(redis::cmd("PEXPIRE").arg(key().as_str()).arg(1000));
    sync.mark_updated().await.unwrap();
    let pttl: i64 = store.raw(redis::cmd("PTTL").arg(key().as_str()));
    assert!(
        pttl > 25_000 && pttl <= 30_000,
        "a bump renews the TTL: {pttl}"
    );
}

#[tokio::test]
async fn an_intent_cuts_the_ttl_and_its_writers_bump_restores_it() {
    let store = Redis::new();
    let sync = Synchronizer::new(store.process(), key());
    sync.refresh().await.unwrap();
    let token = gensync::Generation::fresh();
    sync.mark_intent(token, Duration::from_secs(5))
        .await
        .unwrap();
    let pttl: i64 = store.raw(redis::cmd("PTTL").arg(key().as_str()));
    assert!(pttl > 0 && pttl <= 5_000, "cut to the lock's: {pttl}");
    sync.mark_updated().await.unwrap();
    let pttl: i64 = store.raw(redis::cmd("PTTL").arg(key().as_str()));
    assert!(pttl > 0 && pttl <= 5_000, "kept by another bump: {pttl}");
    sync.mark_updated_by(token).await.unwrap();
    let pttl: i64 = store.raw(redis::cmd("PTTL").arg(key().as_str()));
    assert!(pttl > 5_000, "restored by the writer's bump: {pttl}");
}

#[tokio::test]
async fn a_paused_server_reads_expired_within_the_timeout() {
    let store = Redis::new();
    let sync = Synchronizer::new(store.fast_process(), key());
    sync.refresh().await.unwrap();
    assert!(!sync.is_expired().await);
    let bound = fast_config().call_bound();

    store.server.pause().unwrap();
    // Once over the open connection, once more after it was dropped (a new
    // connection to a stopped server: TCP accepts, nothing answers).
    for attempt in 0..2 {
        let started = Instant::now();
        let check = sync.check().await;
        let took = started.elapsed();
        assert_eq!(check.shared, Observed::Unavailable, "attempt {attempt}");
        assert!(check.is_expired());
        assert!(took <= bound + MARGIN, "attempt {attempt} took {took:?}");
    }
    // A writer learns its bump failed, within the bound too.
    let started = Instant::now();
    let err = sync.mark_updated().await.unwrap_err();
    assert!(started.elapsed() <= bound + MARGIN);
    assert!(
        matches!(&err, Error::Backend(e) if e.kind() == BackendErrorKind::Timeout),
        "{err}"
    );

    store.server.resume().unwrap();
    // Two connects failed in a row (the reader's, the writer's): the
    // second earned a pause of up to twice the delay.
    tokio::time::sleep(RECONNECT_DELAY * 2).await;
    assert!(
        !sync.is_expired().await,
        "back to fresh once the server answers and the reconnect delay is over"
    );
}

#[test]
fn a_paused_server_costs_the_blocking_path_at_most_the_timeout() {
    let store = Redis::new();
    let sync = blocking(&store.server.url());
    sync.refresh().unwrap();
    assert!(!sync.is_expired());
    let bound = fast_config().call_bound();

    store.server.pause().unwrap();
    for attempt in 0..2 {
        let started = Instant::now();
        assert!(sync.is_expired(), "attempt {attempt}");
        let took = started.elapsed();
        assert!(took <= bound + MARGIN, "attempt {attempt} took {took:?}");
    }
    store.server.resume().unwrap();
    assert!(!sync.is_expired());
}

/// A reply that came too late stays owed on its pooled connection; the
/// next command there must not take it for its own.
#[test]
fn a_late_reply_is_never_read_as_the_next_commands() {
    let store = Redis::new();
    let sync = blocking_with(&store.server.url(), fast_config().pool_size(1));
    sync.refresh().unwrap();
    let g: u64 = store.raw(redis::cmd("GET").arg(key().as_str()));

    store.server.pause().unwrap();
    assert_eq!(
        sync.check().shared,
        Observed::Unavailable,
        "the GET timed out"
    );
    store.server.resume().unwrap();
    // On the one connection, the owed GET reply arrives before the bump's.
    let bumped = sync.mark_updated().unwrap();
    // The owed reply would read back as `g` itself.
    let stored: u64 = store.raw(redis::cmd("GET").arg(key().as_str()));
    let step = stored.wrapping_sub(g);
    assert!((1..=1 << 40).contains(&step), "{g} -> {stored}");
    assert_eq!(sync.check().observed(), Some(bumped));
}

#[tokio::test]
async fn a_killed_server_reads_expired_and_recovers_after_restart() {
    let mut store = Redis::new();
    let reader = Synchronizer::new(store.process(), key());
    let writer = Synchronizer::new(store.process(), key());
    reader.refresh().await.unwrap();
    writer.refresh().await.unwrap();

    store.server.kill();
    for _ in 0..3 {
        let check = reader.check().await;
        assert_eq!(check.shared, Observed::Unavailable);
        assert!(check.is_expired());
    }
    // Its connection was cut, or (once the cut was noticed) refused: either
    // way the message names the server and asks whether it is running.
    let err = writer.mark_updated().await.unwrap_err();
    let text = err.to_string();
    match err {
        Error::Backend(e) if e.kind() == BackendErrorKind::Disconnected => {
            assert!(text.starts_with("Redis at redis://127.0.0.1:"), "{text}")
        }
        Error::Backend(e) if e.kind() == BackendErrorKind::Unreachable => {
            assert!(
                text.starts_with("could not reach Redis at redis://127.0.0.1:"),
                "{text}"
            )
        }
        other => panic!("a killed server read as {other:?}"),
    }
    assert!(text.contains("running"), "{text}");

    store.server.restart().unwrap();
    // The same clients, no restart: once their reconnect delay has passed,
    // they find the key gone, so both read expired, then agree again.
    tokio::time::sleep(RECONNECT_DELAY).await;
    assert_eq!(reader.check().await.shared, Observed::Missing);
    let g = reader.refresh().await.unwrap();
    assert_eq!(writer.refresh().await.unwrap(), g);
    writer.mark_updated().await.unwrap();
    assert!(reader.is_expired().await);
}

#[test]
fn the_blocking_path_recovers_after_a_restart() {
    let mut store = Redis::new();
    let reader = blocking(&store.server.url());
    let writer = blocking(&store.server.url());
    reader.refresh().unwrap();
    writer.refresh().unwrap();

    store.server.kill();
    assert!(reader.is_expired());
    assert!(writer.mark_updated().is_err());

    store.server.restart().unwrap();
    assert_eq!(reader.check().shared, Observed::Missing);
    let g = reader.refresh().unwrap();
    assert_eq!(writer.refresh().unwrap(), g);
    writer.mark_updated().unwrap();
    assert!(reader.is_expired());
}

#[tokio::test]
async fn async_and_blocking_paths_share_one_key() {
    let store = Redis::new();
    let url = store.server.url();
    let asynchronous = Synchronizer::new(store.process(), key());
    let g = asynchronous.refresh().await.unwrap();
    let bumped = tokio::task::spawn_blocking(move || {
        let sync = blocking(&url);
        assert_eq!(sync.refresh().unwrap(), g);
        sync.mark_updated().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(asynchronous.check().await.observed(), Some(bumped));
}

#[tokio::test]
async fn unix_socket_urls_work_on_both_paths() {
    let server = RedisServer::start().unwrap();
    let url = server.unix_url();
    assert!(url.starts_with("redis+unix://"), "{url}");
    let sync = Synchronizer::new(RedisBackend::open(&url).unwrap(), key());
    let g = sync.refresh().await.unwrap();
    let seen = tokio::task::spawn_blocking(move || blocking(&url).refresh().unwrap())
        .await
        .unwrap();
    assert_eq!(seen, g);
}

#[tokio::test]
async fn a_wrong_password_is_a_clear_error_that_never_shows_the_password() {
    let server = RedisServer::start_with_password("right-pw-1234").unwrap();
    let bad_url = format!("redis://:wrong-pw-5678@127.0.0.1:{}", server.port());
    let logs = LogCapture::default();
    let _guard = logs.install();

    let backend = RedisBackend::with_config(&bad_url, fast_config()).unwrap();
    let err = backend.ping().await.unwrap_err();
    assert!(err.kind() == BackendErrorKind::Auth, "{err:?}");
    let sync = Synchronizer::new(backend, key());
    assert!(sync.is_expired().await);
    let err = sync.refresh().await.unwrap_err();

    // A connect timeout a stalled machine cannot reach, so the refusal is
    // what the pool reports, not a connect still under way at its deadline.
    let patient = fast_config().connect_timeout(Duration::from_secs(1));
    let blocking_err = blocking_with(&bad_url, patient).mark_updated().unwrap_err();
    assert!(
        matches!(&blocking_err, Error::Backend(e) if e.kind() == BackendErrorKind::Auth),
        "{blocking_err:?}"
    );
    let text = format!(
        "{err}\n{err:?}\n{blocking_err}\n{blocking_err:?}\n{}",
        logs.text()
    );
    assert!(text.contains("refused access"), "{text}");
    assert!(text.contains("redis://:***@127.0.0.1"), "{text}");
    assert!(!text.contains("wrong-pw"), "{text}");
    assert!(!text.contains("right-pw"), "{text}");
    assert!(logs.text().contains(key().as_str()), "the key is logged");

    // The right password works.
    let good = Synchronizer::new(RedisBackend::open(&server.url()).unwrap(), key());
    good.refresh().await.unwrap();
    assert!(!good.is_expired().await);
}

/// A stand-in server, for a sequence real Redis cannot be made to follow
/// on cue: the first connection is refused its password, every later one
/// is accepted and never answered.
fn refuses_once_then_hangs() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://:wrong-pw@{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            if n == 0 {
                let _ = conn.read(&mut [0; 1024]);
                // One error per command the client may have pipelined.
                let _ = conn.write_all(&b"-WRONGPASS invalid username-password pair\r\n".repeat(4));
            } else {
                held.push(conn);
            }
        }
    });
    url
}

/// r2d2 retries a failed connect after half the connect timeout at most,
/// so a checkout can end with a retry hanging. The refusal that came
/// during the checkout is still what the caller is told.
#[test]
fn a_refusal_during_the_checkout_outranks_a_retry_still_hanging() {
    let url = refuses_once_then_hangs();
    let config = fast_config().connect_timeout(Duration::from_secs(1));
    let backend = BlockingRedisBackend::with_config(&url, config).unwrap();
    let err = backend.ping().unwrap_err();
    assert!(err.kind() == BackendErrorKind::Auth, "{err:?}");
    assert!(!err.to_string().contains("wrong-pw"), "{err}");
}

/// A server that refuses every connection (here a wrong password) would
/// otherwise be sent a new connection per check.
#[tokio::test]
async fn a_refusing_server_is_dialled_once_per_reconnect_delay_not_per_check() {
    let server = RedisServer::start_with_password("right-pw-1234").unwrap();
    let mut admin = server.connection().unwrap();
    let bad_url = format!("redis://:wrong-pw-5678@127.0.0.1:{}", server.port());
    let delay = Duration::from_millis(500);
    let config = fast_config().reconnect_delay(delay);
    let sync = Synchronizer::new(RedisBackend::with_config(&bad_url, config).unwrap(), key());

    let before = support::connections_received(&mut admin);
    let started = Instant::now();
    for _ in 0..200 {
        assert!(sync.is_expired().await);
    }
    let dials = support::connections_received(&mut admin) - before;
    // One dial per delay the loop spanned (one, unless the machine stalled).
    let windows = u64::try_from(started.elapsed().as_millis() / delay.as_millis()).unwrap() + 1;
    assert!(
        (1..=windows).contains(&dials),
        "{dials} connections for 200 checks in {windows} delay(s)"
    );

    // Once the delay has passed, the next check dials again.
    tokio::time::sleep(delay).await;
    assert!(sync.is_expired().await);
    assert_eq!(
        support::connections_received(&mut admin) - before,
        dials + 1
    );
}

#[tokio::test]
async fn an_unreachable_server_says_what_to_check() {
    let url = format!("redis://127.0.0.1:{}", support::closed_port());
    let backend = RedisBackend::with_config(&url, fast_config()).unwrap();
    let err = backend.ping().await.unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("could not reach Redis at {url}: ")),
        "{err}"
    );
    assert!(err.ends_with("is the server running?"), "{err}");

    let err = blocking(&url).mark_updated().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("could not reach Redis at {url}: ")),
        "{err}"
    );
}

#[tokio::test]
async fn every_backend_failure_is_logged_once_per_episode_with_the_key() {
    let mut store = Redis::new();
    let sync = Synchronizer::new(store.process(), key());
    sync.refresh().await.unwrap();
    store.server.kill();

    let logs = LogCapture::default();
    let _guard = logs.install();
    for _ in 0..3 {
        assert!(sync.is_expired().await);
    }
    let text = logs.text();
    let failures = logs.lines_with("backend call failed");
    assert_eq!(failures.len(), 3, "an event per failure: {text}");
    assert!(failures[0].contains("ERROR"), "{}", failures[0]);
    for line in &failures[1..] {
        assert!(line.contains("DEBUG"), "repeats are quiet: {line}");
    }
    for line in failures {
        assert!(line.contains(key().as_str()), "{line}");
        assert!(line.contains("redis://127.0.0.1:"), "{line}");
    }
    assert!(
        text.contains("expired=true"),
        "expiry decisions are debug events: {text}"
    );

    store.server.restart().unwrap();
    tokio::time::sleep(RECONNECT_DELAY).await;
    sync.is_expired().await;
    assert!(
        logs.text().contains("backend answering again"),
        "{}",
        logs.text()
    );
}

/// How the server gets rid of a client's connections behind its back.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// `CLIENT KILL TYPE normal` from the test's own connection.
    Kill,
    /// `CONFIG SET timeout 1`, then idle until the server has closed them.
    IdleTimeout,
}

/// Clients connected to the server, the test's own connection included.
fn connected_clients(store: &Redis) -> u64 {
    let info: String = store.raw(redis::cmd("INFO").arg("clients"));
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("INFO clients has connected_clients")
}

/// Closes every connection but the test's own one, server side, and
/// returns once the server says they are gone.
fn cut_connections(store: &Redis, cut: Cut) {
    assert!(connected_clients(store) > 1, "nothing to cut");
    match cut {
        Cut::Kill => {
            // SKIPME is on by default: the test's connection survives.
            store.raw::<()>(redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal"));
        }
        Cut::IdleTimeout => {
            store.raw::<()>(redis::cmd("CONFIG").arg("SET").arg("timeout").arg(1));
            // Polling keeps the test's own connection from idling out; the
            // server checks idle clients a few times a second and closes
            // those idle for more than a whole second.
            let deadline = Instant::now() + Duration::from_secs(10);
            while connected_clients(store) > 1 {
                assert!(Instant::now() < deadline, "the server kept idle clients");
                std::thread::sleep(Duration::from_millis(50));
            }
            store.raw::<()>(redis::cmd("CONFIG").arg("SET").arg("timeout").arg(0));
        }
    }
    assert_eq!(connected_clients(store), 1, "{cut:?} left clients behind");
}

async fn async_path_survives(cut: Cut) {
    let store = Redis::new();
    let reader = Synchronizer::new(store.process(), key());
    let writer = Synchronizer::new(store.process(), key());
    let g = reader.refresh().await.unwrap();
    assert_eq!(writer.refresh().await.unwrap(), g);
    let logs = LogCapture::default();
    let _guard = logs.install();

    cut_connections(&store, cut);
    let check = reader.check().await;
    assert_eq!(check.observed(), Some(g), "{cut:?}: {:?}", check.shared);
    let before: u64 = store.raw(redis::cmd("GET").arg(key().as_str()));
    writer.mark_updated().await.unwrap();
    let after: u64 = store.raw(redis::cmd("GET").arg(key().as_str()));
    assert!(
        (1..=1 << 40).contains(&after.wrapping_sub(before)),
        "{before} -> {after}"
    );
    assert!(reader.is_expired().await);
    let text = logs.text();
    assert!(!text.contains("ERROR"), "{cut:?}: {text}");
}

fn blocking_path_survives(cut: Cut) {
    let store = Redis::new();
    let url = store.server.url();
    let reader = blocking_with(&url, support::patient_config());
    let writer = blocking_with(&url, support::patient_config());
    let g = reader.refresh().unwrap();
    assert_eq!(writer.refresh().unwrap(), g);
    let logs = LogCapture::default();
    let _guard = logs.install();

    cut_connections(&store, cut);
    let check = reader.check();
    assert_eq!(check.observed(), Some(g), "{cut:?}: {:?}", check.shared);
    let before: u64 = store.raw(redis::cmd("GET").arg(key().as_str()));
    writer.mark_updated().unwrap();
    let after: u64 = store.raw(redis::cmd("GET").arg(key().as_str()));
    assert!(
        (1..=1 << 40).contains(&after.wrapping_sub(before)),
        "{before} -> {after}"
    );
    assert!(reader.is_expired());
    let text = logs.text();
    assert!(!text.contains("ERROR"), "{cut:?}: {text}");
}

/// A connection the server closed while it sat idle is found dead on its
/// next use; that call is made again on a new connection, not failed.
#[tokio::test]
async fn a_killed_connection_is_replaced_within_the_call_on_the_async_path() {
    async_path_survives(Cut::Kill).await;
}

#[tokio::test]
async fn an_idle_timeout_is_replaced_within_the_call_on_the_async_path() {
    async_path_survives(Cut::IdleTimeout).await;
}

#[test]
fn a_killed_connection_is_replaced_within_the_call_on_the_blocking_path() {
    blocking_path_survives(Cut::Kill);
}

#[test]
fn an_idle_timeout_is_replaced_within_the_call_on_the_blocking_path() {
    blocking_path_survives(Cut::IdleTimeout);
}

/// Waits, boundedly, until the server answers `PING` on a connection of
/// its own.
fn wait_for_ping(server: &RedisServer) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pong = server
            .connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        match pong {
            Ok(_) => return,
            Err(e) => assert!(Instant::now() < deadline, "no PONG: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Readers are answered the last connect error for the reconnect delay,
/// which spares a refusing server; a writer must not be: its error has to
/// be true when it is reported.
#[tokio::test]
async fn a_writer_is_not_failed_with_a_refusal_from_before_the_restart() {
    let mut store = Redis::new();
    // A delay far longer than the test: a cached refusal would be answered
    // for all of it.
    let config = support::patient_config().reconnect_delay(Duration::from_secs(60));
    let backend = RedisBackend::with_config(&store.server.url(), config).unwrap();
    let writer = Synchronizer::new(backend.clone(), key());
    writer.refresh().await.unwrap();

    store.server.kill();
    // The dead connection, then a refused connect; then that refusal again,
    // without a dial, as readers are answered.
    assert!(backend.ping().await.is_err());
    let err = backend.ping().await.unwrap_err();
    assert!(err.kind() == BackendErrorKind::Unreachable, "{err:?}");

    store.server.restart().unwrap();
    wait_for_ping(&store.server);
    let err = backend.ping().await.unwrap_err();
    assert!(
        err.kind() == BackendErrorKind::Unreachable,
        "readers still wait out the delay: {err:?}"
    );
    let bumped = writer.mark_updated().await;
    assert!(bumped.is_ok(), "{bumped:?}");
    // As stored: a check would mix it with the restarted server's epoch.
    assert_eq!(writer.read().await.ok(), bumped.ok().map(Stored::Value));
}

/// The blocking path's pool would otherwise dial a refusing server again
/// and again inside every checkout, and keep dialling between them.
#[test]
fn a_refusing_server_is_dialled_once_per_reconnect_delay_on_the_blocking_path() {
    let server = RedisServer::start_with_password("right-pw-1234").unwrap();
    let mut admin = server.connection().unwrap();
    let bad_url = format!("redis://:wrong-pw-5678@127.0.0.1:{}", server.port());
    let delay = Duration::from_millis(500);
    let sync = blocking_with(&bad_url, fast_config().reconnect_delay(delay));

    let before = support::connections_received(&mut admin);
    let started = Instant::now();
    for _ in 0..50 {
        assert!(sync.is_expired());
    }
    let dials = support::connections_received(&mut admin) - before;
    let windows = u64::try_from(started.elapsed().as_millis() / delay.as_millis()).unwrap() + 1;
    assert!(
        (1..=windows).contains(&dials),
        "{dials} connections for 50 checks in {windows} delay(s)"
    );
    // Answering the refusal again costs a reader nothing.
    assert!(
        started.elapsed() < delay,
        "50 checks took {:?}",
        started.elapsed()
    );

    // Once the delay has passed, the next check dials again, once.
    std::thread::sleep(delay);
    let before = support::connections_received(&mut admin);
    let err = sync.read().unwrap_err();
    assert!(
        matches!(&err, Error::Backend(e) if e.kind() == BackendErrorKind::Auth),
        "{err:?}"
    );
    assert_eq!(support::connections_received(&mut admin) - before, 1);

    // A writer is not answered the refusal it did not see: it dials,
    // within the delay, and is told what the server says now.
    let before = support::connections_received(&mut admin);
    let err = sync.mark_updated().unwrap_err();
    assert!(
        matches!(&err, Error::Backend(e) if e.kind() == BackendErrorKind::Auth),
        "{err:?}"
    );
    let dials = support::connections_received(&mut admin) - before;
    assert!(
        (1..=2).contains(&dials),
        "{dials} connections for one write"
    );

    // And between calls, nothing dials at all.
    let before = support::connections_received(&mut admin);
    std::thread::sleep(delay * 2);
    assert_eq!(support::connections_received(&mut admin) - before, 0);
}
