//! The keyed rows: a fault injected into the redis-server while each
//! instance serves many tenants (hot and cold, more than it keeps) and
//! writers update random tenants and change the site; the promises of
//! that fault checked per tenant, on top of those `KeyedTrial::finish`
//! checks for every keyed row.

use std::time::{Duration, Instant};

use gensync::reload::CheckMode;
use gensync::testing::RedisServer;

use crate::fleet::Options;
use crate::harness::{ensure, until, INSTANCES, IN_FLIGHT, MARGIN};
use crate::keyed_trial::KeyedTrial;
use crate::trial::Row;
use gensync::testing::{fast_config, RECONNECT_DELAY};

/// How long the server is down, or stopped.
const OUTAGE: Duration = Duration::from_millis(1500);
/// FLUSHALLs in the flush row, and the time between two.
const FLUSHES: usize = 4;
const BETWEEN_FLUSHES: Duration = Duration::from_millis(200);
/// How long every tenant may take to converge once a fault is gone.
const CONVERGE_WITHIN: Duration = Duration::from_secs(5);

/// The most a keyed request may take: a first load of its tenant (a read,
/// then a fetch-or-create when the read failed), shared with the request
/// that began it, then its own check (the read in flight and the next),
/// and `max_wait` for a reload, plus the margin.
fn latency_bound(opts: &Options) -> Duration {
    fast_config().call_bound() * 4 + opts.max_wait + MARGIN
}

async fn healthy_trial(mode: CheckMode) -> Result<KeyedTrial, String> {
    let server = RedisServer::start().map_err(|e| format!("could not start redis-server: {e}"))?;
    let opts = Options::in_mode(mode);
    let opts = Options {
        latency_bound: Some(latency_bound(&opts)),
        ..opts
    };
    let mut trial = KeyedTrial::start(server, opts).await?;
    trial.healthy().await?;
    Ok(trial)
}

/// Recovery may wait out the clients' reconnect delay before a write is
/// accepted; converge is timed from the fault's removal all the same.
fn recovery_bound() -> Duration {
    RECONNECT_DELAY + fast_config().call_bound() + CONVERGE_WITHIN
}

/// While Redis is unusable: every instance counted backend errors, reads
/// a tenant as expired, and no writer was told ok.
async fn outage(t: &mut KeyedTrial, what: &str) -> Result<(), String> {
    let before = t.metrics();
    t.all_read_unavailable(&format!("once the server was {what}"))
        .await?;
    let told = t.log.told_ok();
    t.start_writers();
    tokio::time::sleep(OUTAGE).await;
    t.all_read_unavailable("at the end of the outage").await?;
    let told = t.log.told_ok() - told;
    ensure(told == 0, || {
        format!("{told} writes were told ok while the server was {what}")
    })?;
    for (i, (b, a)) in before.iter().zip(t.metrics()).enumerate() {
        ensure(a.backend_errors > b.backend_errors, || {
            format!("instance {i} counted no backend error during the outage")
        })?;
    }
    Ok(())
}

pub async fn server_killed(mode: CheckMode) -> Result<Row, String> {
    let mut t = healthy_trial(mode).await?;
    t.fault(false);
    t.fleet.server.kill();
    outage(&mut t, "down").await?;
    t.fleet
        .server
        .restart()
        .map_err(|e| format!("restart: {e}"))?;
    let converge = t.recover(recovery_bound()).await?;
    t.finish(converge).await
}

pub async fn server_paused(mode: CheckMode) -> Result<Row, String> {
    let mut t = healthy_trial(mode).await?;
    t.fault(false);
    let served = t.served();
    t.fleet.server.pause().map_err(|e| format!("pause: {e}"))?;
    outage(&mut t, "paused").await?;
    // The requests in flight were answered again and again, not held.
    let served = t.served() - served;
    let bound = t.opts().latency_bound();
    let rounds = (OUTAGE.as_millis() / bound.as_millis()) as u64;
    ensure(served >= IN_FLIGHT as u64 * rounds.max(1), || {
        format!("only {served} requests were answered during the {OUTAGE:?} pause")
    })?;
    t.fleet
        .server
        .resume()
        .map_err(|e| format!("resume: {e}"))?;
    let converge = t.recover(recovery_bound()).await?;
    t.finish(converge).await
}

/// FLUSHALL again and again while the writers write: every member key,
/// every writers' lease and the parent go at once. Redis answers
/// throughout, so freshness is judged throughout. Each flush is seen by
/// every instance (an expired check and a reload).
pub async fn flushed(mode: CheckMode) -> Result<Row, String> {
    let mut t = healthy_trial(mode).await?;
    t.fault(true);
    t.start_writers();
    let mut slowest = Duration::ZERO;
    for round in 0..FLUSHES {
        let before = t.metrics();
        redis::cmd("FLUSHALL")
            .query::<()>(&mut t.fleet.server.connection().map_err(|e| e.to_string())?)
            .map_err(|e| format!("FLUSHALL: {e}"))?;
        let flushed = Instant::now();
        let seen = || {
            let after = t.metrics();
            (0..INSTANCES).all(|i| {
                after[i].expired > before[i].expired && after[i].reloads > before[i].reloads
            })
        };
        until(CONVERGE_WITHIN, seen, || {
            format!(
                "after FLUSHALL {round}, an instance did not read a tenant as expired and reload"
            )
        })
        .await?;
        slowest = slowest.max(flushed.elapsed());
        tokio::time::sleep(BETWEEN_FLUSHES).await;
    }
    let converge = t.recover(CONVERGE_WITHIN).await?;
    t.note(format!(
        "each of {FLUSHES} FLUSHALLs was seen (an expired check and a reload) by every instance \
         within {slowest:.1?}"
    ));
    t.finish(converge).await
}
