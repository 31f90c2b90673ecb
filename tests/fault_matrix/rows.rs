//! The rows: one fault each, injected into a real redis-server (or into the
//! loader or the writer) while the fleet serves requests, and the promises
//! of that fault checked on top of those `Trial::finish` checks for all.

use std::collections::HashSet;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use gensync::backend::BackendErrorKind;
use gensync::reload::{CheckMode, PublishError};
use gensync::testing::{FaultyBackend, RedisServer};
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, Error, GenerationSynchronizer, RedisBackend,
    Synchronizer,
};

use crate::fleet::{admin, Deployment, LoaderFaults, Options};
use crate::harness::{ensure, key, until, INITIAL, INSTANCES, IN_FLIGHT, MARGIN, POLL};
use crate::trial::{Row, Trial};
use gensync::testing::{fast_config, RECONNECT_DELAY};

/// How long the outages last.
const OUTAGE: Duration = Duration::from_millis(1500);
/// How long the server is stopped (SIGSTOP).
const PAUSE: Duration = Duration::from_secs(3);
/// How long each phase of the access row lasts.
const DENIED: Duration = Duration::from_secs(1);
/// How long a fleet may take to converge once a fault is gone.
pub const CONVERGE_WITHIN: Duration = Duration::from_secs(5);

fn server(started: std::io::Result<RedisServer>) -> Result<RedisServer, String> {
    started.map_err(|e| format!("could not start redis-server: {e}"))
}

async fn healthy_trial(opts: Options) -> Result<Trial, String> {
    healthy_trial_on(Deployment::Single(server(RedisServer::start())?), opts).await
}

/// A trial on `redis`, through its first healthy phase.
pub async fn healthy_trial_on(redis: Deployment, opts: Options) -> Result<Trial, String> {
    let mut trial = Trial::start(redis, opts).await?;
    trial.healthy().await?;
    Ok(trial)
}

/// A publish while Redis is unusable returns an error and saves nothing.
async fn writer_is_told(t: &Trial, when: &str) -> Result<(), String> {
    let saved = t.fleet.db.version();
    let published = t.publish().await;
    ensure(published.is_err() && t.fleet.db.version() == saved, || {
        format!("{when}, a publish returned {published:?}")
    })
}

/// The fault was just removed: closes its window, publishes the next
/// version and measures how long every instance takes to serve it, from
/// that moment.
async fn next_update_converges(t: &mut Trial) -> Result<Duration, String> {
    let healed = t.heal();
    // A client that failed to connect waits its reconnect delay before it
    // dials again, so a write right after the recovery may still be
    // refused: the writer retries, as an operator would, within a bound.
    // The bound is loose on purpose: it only ends a row that never
    // recovers; the converge time, taken from `healed`, is the measure.
    let deadline = Instant::now() + RECONNECT_DELAY + fast_config().call_bound() + CONVERGE_WITHIN;
    let version = loop {
        match t.publish().await {
            Ok(version) => break version,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    t.converge(version, healed, CONVERGE_WITHIN).await
}

pub async fn server_killed(mode: CheckMode) -> Result<Row, String> {
    let mut t = healthy_trial(Options::in_mode(mode)).await?;
    let began = t.fault(false);
    let before = t.metrics();
    t.fleet.server_mut().kill();
    t.tracking_lost();
    t.all_read_unavailable("once the server was killed").await?;
    writer_is_told(&t, "while the server was down").await?;
    t.hold(OUTAGE).await;
    t.all_read_unavailable("at the end of the outage").await?;
    t.outage_checks(&before, began)?;
    t.tracking_back();
    t.fleet
        .server_mut()
        .restart()
        .map_err(|e| format!("restart: {e}"))?;
    let converge = next_update_converges(&mut t).await?;
    t.finish(converge).await
}

pub async fn server_paused(mode: CheckMode) -> Result<Row, String> {
    // A stopped server answers nothing, and a load during an outage does
    // not call it: a request pays at most one backend call's bound.
    let bound = fast_config().call_bound() + MARGIN;
    let mut t = healthy_trial(Options {
        latency_bound: Some(bound),
        ..Options::in_mode(mode)
    })
    .await?;
    let began = t.fault(false);
    let (before, served_before) = (t.metrics(), t.served());
    t.fleet
        .server()
        .pause()
        .map_err(|e| format!("pause: {e}"))?;
    t.tracking_lost();
    t.hold(PAUSE - fast_config().call_bound()).await;
    t.all_read_unavailable("while the server was paused")
        .await?;
    t.outage_checks(&before, began)?;
    // Every request in flight was answered again and again, not held.
    let served = t.served() - served_before;
    let rounds = (PAUSE.as_millis() / bound.as_millis()) as u64;
    ensure(served >= IN_FLIGHT as u64 * rounds, || {
        format!("only {served} requests were answered during the {PAUSE:?} pause")
    })?;
    t.tracking_back();
    t.fleet
        .server()
        .resume()
        .map_err(|e| format!("resume: {e}"))?;
    let converge = next_update_converges(&mut t).await?;
    t.finish(converge).await
}

/// What a round does to the key behind the fleet's back.
#[derive(Clone, Copy, Debug)]
enum Damage {
    FlushAll,
    Evict,
    Text(&'static str),
    List,
    Hash,
}

impl Damage {
    /// One atomic step, so no reader sees a half-done change.
    fn pipeline(self) -> redis::Pipeline {
        let key = key();
        let key = key.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic();
        match self {
            Damage::FlushAll => pipe.cmd("FLUSHALL"),
            Damage::Evict => pipe.cmd("DEL").arg(key),
            Damage::Text(text) => pipe.cmd("SET").arg(key).arg(text),
            Damage::List => pipe.cmd("DEL").arg(key).cmd("RPUSH").arg(key).arg("x"),
            Damage::Hash => pipe
                .cmd("DEL")
                .arg(key)
                .cmd("HSET")
                .arg(key)
                .arg("f")
                .arg(1),
        };
        pipe
    }
}

pub async fn key_evicted(mode: CheckMode) -> Result<Row, String> {
    use Damage::*;
    damage_rounds(mode, &[FlushAll, Evict, FlushAll, Evict, FlushAll, Evict]).await
}

pub async fn key_corrupted(mode: CheckMode) -> Result<Row, String> {
    use Damage::*;
    damage_rounds(
        mode,
        &[
            Text("garbage"),
            Text("0"),
            Text("-42"),
            Text("18446744073709551616"),
            Text("0042"),
            List,
            Hash,
        ],
    )
    .await
}

/// Damages the key, then saves the next version and bumps, round after
/// round within a second or so (where seconds as generations would repeat
/// a value): every instance reads as expired and reloads, the bump's
/// generation is one no instance held, and the key ends valid for a year.
async fn damage_rounds(mode: CheckMode, damages: &[Damage]) -> Result<Row, String> {
    let mut t = healthy_trial(Options::in_mode(mode)).await?;
    // The writer is a separate process, as an operator's `gensync bump`
    // would be. Its wrapper injects nothing and counts calls: one means its
    // bump found a valid key, more that it re-created or repaired it.
    let backend = RedisBackend::with_config(&t.fleet.server().url(), fast_config())
        .map_err(|e| format!("writer: {e}"))?;
    let backend = FaultyBackend::new(backend);
    let calls = backend.faults();
    let writer = Synchronizer::new(backend, key());
    // The backend answers throughout, so freshness is judged throughout.
    t.fault(true);
    let (mut held, mut slowest, mut by_writer) = (HashSet::new(), Duration::ZERO, 0);
    for &damage in damages {
        held.extend(t.fleet.recorded());
        held.extend(t.fleet.stored()?);
        let before = t.metrics();
        damage
            .pipeline()
            .query::<()>(&mut t.fleet.admin()?)
            .map_err(|e| format!("{damage:?}: {e}"))?;
        let calls_before = calls.counts().calls;
        let (version, generation) = t
            .bump_by_hand(&writer)
            .await
            .map_err(|e| format!("after {damage:?}: {e}"))?;
        let bumped = Instant::now();
        by_writer += usize::from(calls.counts().calls - calls_before > 1);
        ensure(!held.contains(&generation), || {
            format!("ABA: after {damage:?} the bump made {generation}, a generation already held")
        })?;
        let took = t
            .converge(version, bumped, CONVERGE_WITHIN)
            .await
            .map_err(|e| format!("after {damage:?}: {e}"))?;
        slowest = slowest.max(took);
        t.fleet
            .key_is_repaired()
            .map_err(|e| format!("after {damage:?}: {e}"))?;
        for (i, (b, a)) in before.iter().zip(t.metrics()).enumerate() {
            ensure(a.expired > b.expired && a.reloads > b.reloads, || {
                format!("after {damage:?}, instance {i} did not read as expired and reload")
            })?;
        }
    }
    t.heal();
    t.note(format!(
        "the writer's own bump found the key damaged and re-created or repaired it in \
         {by_writer} of {} rounds (a reader's fetch-or-create repairs it too when first)",
        damages.len()
    ));
    t.finish(slowest).await
}

const ADMIN_PASSWORD: &str = "admin-pw-Zq81vT";
const APP_PASSWORD: &str = "app-pw-Lr42nX";
const WRONG_PASSWORD: &str = "wrong-pw-Hc97sD";
const PASSWORDS: &[&str] = &[ADMIN_PASSWORD, APP_PASSWORD, WRONG_PASSWORD];

fn acl_setuser(rules: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg("app").arg(rules);
    cmd
}

/// The instances log in as `app` with a password the server does not take,
/// then with one it takes for a user the ACL denies every command, then
/// the operator grants the commands.
pub async fn access_refused(mode: CheckMode) -> Result<Row, String> {
    let redis = server(RedisServer::start_with_password(ADMIN_PASSWORD))?;
    acl_setuser(&["on", &format!(">{APP_PASSWORD}"), "~*", "&*", "+@all"])
        .query::<()>(&mut admin(&redis)?)
        .map_err(|e| format!("ACL SETUSER: {e}"))?;
    let opts = Options {
        url: |server| format!("redis://app:{WRONG_PASSWORD}@127.0.0.1:{}", server.port()),
        secrets: PASSWORDS,
        debug_logs: true,
        ..Options::in_mode(mode)
    };
    let mut admin = admin(&redis)?;
    let mut t = Trial::start(Deployment::Single(redis), opts).await?;
    let began = t.fault(false);
    // Never armed: no password the server takes, then no command but the
    // handshake's.
    t.tracking_lost();
    for (i, instance) in t.fleet.instances.iter().enumerate() {
        let ping = instance.backend.ping().await.err().map(Error::from);
        refused_clearly(ping, &format!("instance {i}'s start-up ping"))?;
    }
    let before = t.metrics();
    let (accepted, _) = t.fleet.connections(&mut admin)?;
    t.hold(DENIED).await;
    let checks: u64 = (t.metrics().iter().zip(&before))
        .map(|(a, b)| a.checks - b.checks)
        .sum();
    let (accepted_after, _) = t.fleet.connections(&mut admin)?;
    t.note(format!(
        "with the wrong password: {} connections for {checks} checks in {DENIED:?}",
        accepted_after - accepted
    ));
    t.all_read_unavailable("with a wrong password").await?;
    t.outage_checks(&before, began)?;

    // The password is accepted now; every command but the handshake's is not.
    t.fleet.raw::<()>(&acl_setuser(&[
        "resetpass",
        &format!(">{WRONG_PASSWORD}"),
        "-@all",
        "+@connection",
    ]))?;
    let synchronizer = t.fleet.instances[0].reloader.synchronizer();
    let denied = synchronizer.fetch_or_create().await.err();
    denied_clearly(denied, "a fetch-or-create under the ACL")?;
    let (before, began) = (t.metrics(), Instant::now());
    t.hold(DENIED).await;
    t.all_read_unavailable("with the ACL denying").await?;
    t.outage_checks(&before, began)?;

    t.tracking_back();
    t.fleet.raw::<()>(&acl_setuser(&["+@all"]))?;
    let converge = next_update_converges(&mut t).await?;
    let logs = t.logs();
    // Debug events too, where each repeated failure is logged again.
    ensure(
        logs.contains("refused access")
            && logs.contains("redis://app:***@127.0.0.1")
            && logs.contains("backend call failed again"),
        || "the refusals were not logged (debug events included), URL redacted".to_owned(),
    )?;
    t.finish(converge).await
}

/// The error names the command the ACL denied and the rule to add, and
/// shows no password.
fn denied_clearly(error: Option<Error>, what: &str) -> Result<(), String> {
    let error = error.ok_or_else(|| format!("{what} succeeded"))?;
    let text = format!("{error} / {error:?}");
    ensure(
        matches!(&error, Error::Backend(e) if e.kind() == BackendErrorKind::Denied && e.rule().is_some_and(|rule| rule.starts_with('+')))
            && text.contains("ACL SETUSER"),
        || format!("{what} did not name the command the ACL denied: {error}"),
    )?;
    ensure(!PASSWORDS.iter().any(|pw| text.contains(pw)), || {
        format!("{what} showed a password: {text}")
    })
}

/// The error says access was refused, and shows no password.
fn refused_clearly(error: Option<Error>, what: &str) -> Result<(), String> {
    let error = error.ok_or_else(|| format!("{what} succeeded"))?;
    let text = format!("{error} / {error:?}");
    ensure(
        matches!(&error, Error::Backend(e) if e.kind() == BackendErrorKind::Auth)
            && error.to_string().contains("refused access"),
        || format!("{what} did not say access was refused: {error}"),
    )?;
    ensure(!PASSWORDS.iter().any(|pw| text.contains(pw)), || {
        format!("{what} showed a password: {text}")
    })
}

pub async fn refused_at_start(mode: CheckMode) -> Result<Row, String> {
    let mut redis = server(RedisServer::start())?;
    // Nothing listens on its port until the restart below.
    redis.kill();
    let mut t = Trial::start(Deployment::Single(redis), Options::in_mode(mode)).await?;
    let began = t.fault(false);
    t.tracking_lost();
    for (i, instance) in t.fleet.instances.iter().enumerate() {
        let ping = instance.backend.ping().await.err();
        let text = ping.map(|e| e.to_string()).unwrap_or_default();
        ensure(
            text.starts_with("could not reach Redis at redis://127.0.0.1:")
                && text.ends_with("is the server running?"),
            || format!("instance {i}'s start-up ping did not say Redis was unreachable: {text:?}"),
        )?;
    }
    writer_is_told(&t, "before Redis appeared").await?;
    let before = t.metrics();
    t.hold(OUTAGE).await;
    t.all_read_unavailable("before Redis appeared").await?;
    t.outage_checks(&before, began)?;
    // Serving since start-up: the initial settings, or the database's when
    // a load ran, but nothing recorded, so still expired.
    for (i, instance) in t.fleet.instances.iter().enumerate() {
        let current = instance.reloader.current();
        let serving = (*current, current.generation());
        ensure(
            [INITIAL, t.fleet.db.version()].contains(&serving.0) && serving.1.is_none(),
            || format!("instance {i} served {serving:?} before Redis appeared"),
        )?;
    }
    t.tracking_back();
    t.fleet
        .server_mut()
        .restart()
        .map_err(|e| format!("start: {e}"))?;
    let converge = next_update_converges(&mut t).await?;
    t.finish(converge).await
}

pub async fn loader_fails(mode: CheckMode) -> Result<Row, String> {
    loader_faults(mode, LoaderFaults::fail_next, 5).await
}

pub async fn loader_panics(mode: CheckMode) -> Result<Row, String> {
    loader_faults(mode, LoaderFaults::panic_next, 2).await
}

/// How much later than its backoff a loader retry may come.
const RETRY_SLACK: Duration = Duration::from_secs(1);

/// Each instance's loader fails (or panics) its next `times` loads after a
/// publish: the old settings are served and counted, retries wait out a
/// doubling backoff, and the instance recovers by itself.
async fn loader_faults(
    mode: CheckMode,
    inject: fn(&LoaderFaults, u32),
    times: u32,
) -> Result<Row, String> {
    let mut t = healthy_trial(Options::in_mode(mode)).await?;
    t.fault(false);
    let before = t.metrics();
    for instance in &t.fleet.instances {
        inject(&instance.loader, times);
    }
    let version = t.publish().await?;
    let pending = || -> u32 { t.fleet.instances.iter().map(|i| i.loader.pending()).sum() };
    until(
        CONVERGE_WITHIN,
        || pending() == 0,
        || format!("{} injected loader failures were never reached", pending()),
    )
    .await?;
    let failures: Vec<Vec<Instant>> = t
        .fleet
        .instances
        .iter()
        .map(|i| i.loader.failures())
        .collect();
    // Recovery starts at the last injected failure.
    let healed = failures.iter().flatten().max().copied();
    let healed = healed.ok_or("no injected failure happened")?;
    t.heal();
    let (first, cap) = t.opts().backoff;
    let converge = t.converge(version, healed, cap + CONVERGE_WITHIN).await?;
    for (i, (b, a)) in before.iter().zip(t.metrics()).enumerate() {
        ensure(a.stale_served > b.stale_served, || {
            format!("instance {i} served no counted stale answer while its loader failed")
        })?;
        // The failures, then the one load that worked: nothing more.
        let (failed, runs) = (
            a.reload_failures - b.reload_failures,
            a.loader_runs - b.loader_runs,
        );
        ensure(failed == u64::from(times) && runs == failed + 1, || {
            format!("instance {i}: {runs} loads and {failed} failures for {times} injected")
        })?;
        // Never sooner than the backoff: that is the promise. Not much
        // later either, with a second's slack for a stalled machine.
        let mut pause = first;
        for (k, gap) in failures[i].windows(2).map(|w| w[1] - w[0]).enumerate() {
            ensure(gap >= pause && gap <= pause + RETRY_SLACK, || {
                format!("instance {i}: retry {k} came {gap:?} after the failure before it; its backoff was {pause:?}")
            })?;
            pause = (pause * 2).min(cap);
        }
    }
    t.finish(converge).await
}

/// Threads on the blocking path, more than its pool holds connections.
const BLOCKING_THREADS: usize = 8;
const POOL_SIZE: u32 = 2;

/// What one blocking thread saw.
#[derive(Default)]
struct Hammered {
    calls: u64,
    expired: u64,
    slowest: Duration,
}

type BlockingSync = Arc<BlockingSynchronizer<BlockingRedisBackend>>;

/// The server's client slots are all taken: `maxclients` is lowered to the
/// one admin connection, and every other client is cut off, so the async
/// instances and the blocking pool alike can only try to reconnect and be
/// refused. On the blocking path, more threads than the pool holds wait
/// for a connection; each wait is bounded by the connect timeout.
pub async fn clients_exhausted(mode: CheckMode) -> Result<Row, String> {
    let mut t = healthy_trial(Options::in_mode(mode)).await?;
    let config = fast_config().pool_size(POOL_SIZE);
    let backend = BlockingRedisBackend::with_config(&t.fleet.server().url(), config.clone())
        .map_err(|e| format!("blocking backend: {e}"))?;
    let blocking: BlockingSync = Arc::new(BlockingSynchronizer::new(backend, key()));
    on_blocking_thread(&blocking, |s| s.refresh())
        .await?
        .map_err(|e| e.to_string())?;
    let mut admin = t.fleet.admin()?;
    let (_, rejected) = t.fleet.connections(&mut admin)?;
    let began = t.fault(false);
    let before = t.metrics();
    let killed: u64 = redis::pipe()
        .cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(1)
        .ignore()
        .cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query::<(u64,)>(&mut admin)
        .map_err(|e| format!("taking the client slots: {e}"))?
        .0;
    ensure(killed > INSTANCES as u64, || {
        format!("only {killed} clients were cut off")
    })?;
    t.tracking_lost();
    let threads = hammer(&blocking, OUTAGE);
    t.hold(OUTAGE).await;
    t.all_read_unavailable("with no client slot free").await?;
    t.outage_checks(&before, began)?;
    let rejected = t.fleet.connections(&mut admin)?.1 - rejected;
    let hammered = tokio::task::spawn_blocking(move || collect(threads))
        .await
        .map_err(|e| e.to_string())??;
    let bound = config.call_bound() + MARGIN;
    ensure(hammered.slowest <= bound, || {
        format!(
            "a blocking check waited {:?}, more than {bound:?}",
            hammered.slowest
        )
    })?;
    ensure(hammered.expired == hammered.calls, || {
        format!(
            "{} of {} blocking checks read as fresh with no connection to be had",
            hammered.calls - hammered.expired,
            hammered.calls
        )
    })?;
    let bump = on_blocking_thread(&blocking, |s| s.mark_updated()).await?;
    let bump = bump
        .err()
        .ok_or("a blocking bump succeeded with no connection to be had")?;

    t.tracking_back();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxclients")
        .arg(10_000)
        .query::<()>(&mut admin)
        .map_err(|e| format!("freeing the client slots: {e}"))?;
    let converge = next_update_converges(&mut t).await?;
    let recovered = on_blocking_thread(&blocking, |s| {
        let deadline = Instant::now() + CONVERGE_WITHIN;
        loop {
            match s.refresh() {
                Err(_) if Instant::now() < deadline => std::thread::sleep(POLL),
                done => return done,
            }
        }
    });
    recovered
        .await?
        .map_err(|e| format!("the blocking path did not recover: {e}"))?;
    t.note(format!(
        "Redis rejected {rejected} connections while its slots were taken; blocking path: {} \
         checks from {BLOCKING_THREADS} threads on a pool of {POOL_SIZE}, all expired, slowest \
         {:?}; its writer was told: {bump}",
        hammered.calls, hammered.slowest
    ));
    t.finish(converge).await
}

async fn on_blocking_thread<T: Send + 'static>(
    sync: &BlockingSync,
    call: impl FnOnce(&BlockingSynchronizer<BlockingRedisBackend>) -> T + Send + 'static,
) -> Result<T, String> {
    let sync = Arc::clone(sync);
    tokio::task::spawn_blocking(move || call(&sync))
        .await
        .map_err(|e| format!("blocking call: {e}"))
}

/// Checks from more threads than the pool holds, for `lasting`.
fn hammer(sync: &BlockingSync, lasting: Duration) -> mpsc::Receiver<Hammered> {
    let (tx, rx) = mpsc::channel();
    for _ in 0..BLOCKING_THREADS {
        let (sync, tx) = (Arc::clone(sync), tx.clone());
        std::thread::spawn(move || {
            let until = Instant::now() + lasting;
            let mut seen = Hammered::default();
            while Instant::now() < until {
                let started = Instant::now();
                seen.expired += u64::from(sync.is_expired());
                seen.slowest = seen.slowest.max(started.elapsed());
                seen.calls += 1;
            }
            let _ = tx.send(seen);
        });
    }
    rx
}

/// Every thread's report, or the deadlock that kept one from coming.
fn collect(threads: mpsc::Receiver<Hammered>) -> Result<Hammered, String> {
    let deadline = Instant::now() + CONVERGE_WITHIN;
    let mut all = Hammered::default();
    for n in 0..BLOCKING_THREADS {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = threads.recv_timeout(left).map_err(|_| {
            format!(
                "deadlock: {} blocking threads never finished",
                BLOCKING_THREADS - n
            )
        })?;
        all.calls += seen.calls;
        all.expired += seen.expired;
        all.slowest = all.slowest.max(seen.slowest);
    }
    Ok(all)
}

/// The writer hands its save to the database, then hangs before its bump
/// and is aborted. An operator bumps (as `gensync bump` would, from a
/// process of its own), and only then does the dead writer's save land, so
/// that bump cannot be what tells the fleet about it. The writer's intent,
/// recorded before the save, outlives the operator's bump: the key still
/// lapses within the lease, and every instance reloads the saved change.
/// (A bump that gave the key its full lifetime back would leave the fleet
/// on the old settings for a year.)
pub async fn writer_dies(mode: CheckMode) -> Result<Row, String> {
    let mut t = healthy_trial(Options::in_mode(mode)).await?;
    // No publish returns in this window, so freshness is still judged.
    t.fault(true);
    let old = t.fleet.db.version();
    let lease = t.opts().lock_ttl;
    // A writer process of its own; its write is abandoned once the key
    // lapsed and every instance converged.
    let (writer, cut_off) = t.fleet.writer(t.opts(), fast_config(), lease * 3)?;
    let handed = t.fleet.db.hold_next_save();
    let publishing = tokio::spawn(async move { writer.publish(old + 1).await });
    let (version, fence) = tokio::time::timeout(CONVERGE_WITHIN, handed)
        .await
        .map_err(|_| format!("the writer had not saved after {CONVERGE_WITHIN:?}"))?
        .map_err(|_| "the writer's save was dropped before it was handed over".to_owned())?;
    // The writer dies: from here nothing it sends reaches Redis.
    cut_off.fail_all();
    let died = Instant::now();
    let lapses_within_lease = |when: &str| -> Result<(), String> {
        let pttl = t.fleet.pttl()?;
        ensure(0 < pttl && pttl <= lease.as_millis() as i64, || {
            format!(
                "{when}, the dead writer's intent no longer cut the key's lifetime to the \
                 {lease:?} lease: PTTL {pttl} ms"
            )
        })
    };
    lapses_within_lease("once the writer died")?;

    let backend = RedisBackend::with_config(&t.fleet.server().url(), fast_config())
        .map_err(|e| format!("operator: {e}"))?;
    Synchronizer::new(backend, key())
        .mark_updated()
        .await
        .map_err(|e| format!("the operator's bump failed: {e}"))?;
    lapses_within_lease("after an operator's bump")?;
    // Every instance has loaded for the operator's bump, before the save
    // landed: from here only the key's lapse can bring them the change.
    t.settle().await?;
    for (i, instance) in t.fleet.instances.iter().enumerate() {
        let serving = *instance.reloader.current();
        ensure(serving == old, || {
            format!("instance {i} served {serving} before the dead writer's save landed, not {old}")
        })?;
    }
    t.fleet
        .db
        .store(version, fence)
        .map_err(|e| format!("the dead writer's save was refused: {e}"))?;
    // The key lapses within the lease of the writer's death; the margin
    // covers the requests that notice it and the reload.
    let converge = t.converge(version, died, lease + MARGIN).await?;
    let outcome = publishing
        .await
        .map_err(|e| format!("the writer's task: {e}"))?;
    ensure(outcome.is_err(), || {
        format!("the dead writer's publish returned {outcome:?}")
    })?;
    t.heal();
    t.finish(converge).await
}

/// Instance 0 publishes, and its save blocks its thread (a GC pause, a
/// SIGSTOP) past its lease: no renewal runs, as they share its task.
/// Instance 1 takes the lapsed lease and publishes a newer version. When
/// instance 0 resumes, the fenced database refuses its save, instance 0 is
/// told it lost its lease, and every instance serves instance 1's version.
pub async fn writer_stalled(mode: CheckMode) -> Result<Row, String> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    ensure(workers >= 2, || {
        format!("the stall blocks a worker thread, and this runtime has {workers}: none would be left for the load")
    })?;
    let mut t = healthy_trial(Options::in_mode(mode)).await?;
    let lease = t.opts().lock_ttl;
    let stale = t.fleet.db.version() + 1;
    let newer = stale + 1;
    let (started, resume) = t.fleet.db.stall_next_save();
    // Instance 0's publish returns nothing the fleet must serve, and
    // instance 1's is a healthy one: freshness is judged throughout.
    t.fault(true);
    let writer = t.fleet.instances[0].reloader.clone();
    let stalled = tokio::spawn(async move { writer.publish(stale).await });
    tokio::time::timeout(CONVERGE_WITHIN, started)
        .await
        .map_err(|_| format!("instance 0's save had not started after {CONVERGE_WITHIN:?}"))?
        .map_err(|_| "instance 0's save never stalled".to_owned())?;
    let stalled_at = Instant::now();
    // Bounded by instance 1's 40 tries for the lease, which outlast
    // instance 0's lapsing.
    t.publish_through(1, newer)
        .await
        .map_err(|e| format!("while instance 0 was stalled: {e}"))?;
    let published = Instant::now();
    let lasted = published - stalled_at;
    resume
        .send(())
        .map_err(|_| "instance 0's save was no longer stalled when resumed".to_owned())?;
    t.heal();
    // Instance 1 got the lease once instance 0's lapsed, not before; the
    // margin covers instance 0's last steps before its stall.
    ensure(lasted + MARGIN >= lease, || {
        format!(
            "instance 1 published {lasted:?} into instance 0's stall, within its {lease:?} lease"
        )
    })?;
    let outcome = tokio::time::timeout(CONVERGE_WITHIN, stalled)
        .await
        .map_err(|_| {
            format!("instance 0's publish had not returned {CONVERGE_WITHIN:?} after it resumed")
        })?
        .map_err(|e| format!("instance 0's publish: {e}"))?;
    ensure(
        matches!(outcome, Err(PublishError::LeaseLost { saved: false, .. })),
        || format!("instance 0, stalled past its lease, was told {outcome:?}"),
    )?;
    let refused = t.fleet.db.refused();
    ensure(refused.len() == 1, || {
        format!("the database refused {refused:?}, not instance 0's save alone")
    })?;
    let held = t.fleet.db.version();
    ensure(held == newer, || {
        format!("the database held version {held}, not instance 1's {newer}")
    })?;
    // Instance 0's intent lapsed with its lease, and left nothing behind.
    let pttl = t.fleet.pttl()?;
    ensure(pttl > 86_400_000, || {
        format!("after the stall the key lives only {pttl} ms, not a year")
    })?;
    let converge = t.converge(newer, published, CONVERGE_WITHIN).await?;
    t.note(format!(
        "instance 0's thread was blocked for {lasted:.1?} (lease {lease:?}); it was told: {}; \
         the database said: {}",
        outcome.err().map(|e| e.to_string()).unwrap_or_default(),
        refused[0]
    ));
    t.finish(converge).await
}
