//! The failover rows: the fleet on a Sentinel group (a primary, a replica,
//! three sentinels) or on a cluster (three shards with a replica each). A
//! writer whose bumps wait for a replica (`WAIT`) publishes, and right
//! after it is told ok, the primary that holds the key is killed (SIGKILL)
//! while the fleet serves its load. The writer goes on publishing through
//! the failover, and each answer it gets goes into a ledger.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gensync::backend::Backend;
use gensync::backend::BackendErrorKind;
use gensync::reload::{CheckMode, PublishError, Reloader};
use gensync::testing::{shown_on, RedisCluster, RedisServer, SentinelGroup};
use gensync::{Error, Generation, GenerationSynchronizer, Key, RedisBackend, Synchronizer};

use crate::fleet::Db;
use crate::fleet::{vouching, Deployment, Options, HEARTBEAT};
use crate::harness::{ensure, key, until, MARGIN, POLL};
use crate::rows::healthy_trial_on;
use crate::trial::Row;
use gensync::testing::fast_config;

/// How long the writer's bumps wait for a replica's acknowledgement.
const WAIT: Duration = Duration::from_millis(500);
/// How long the writer's publish may hold its lease.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// A failover's worst case on a loaded 2-core machine (the launchers give
/// the sentinels' down-after and the cluster's node timeout 1 s), with
/// room to spare: only a broken promise reaches it.
const FAILOVER_WITHIN: Duration = Duration::from_secs(20);
/// The writer's pace through the failover: one publish, then this pause.
const WRITE_EVERY: Duration = Duration::from_millis(20);

pub async fn sentinel_primary_killed(mode: CheckMode) -> Result<Row, String> {
    let group = SentinelGroup::start().map_err(|e| format!("could not start the group: {e}"))?;
    primary_killed(mode, Deployment::Sentinel(group)).await
}

pub async fn cluster_primary_killed(mode: CheckMode) -> Result<Row, String> {
    let cluster = RedisCluster::start().map_err(|e| format!("could not start the cluster: {e}"))?;
    primary_killed(mode, Deployment::Cluster(cluster)).await
}

/// A reader of a key on another shard than the fleet's, over a client of
/// its own: it reads until stopped, and reports its reads and failures.
struct Bystander {
    stop: Arc<AtomicBool>,
    reading: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Bystander {
    /// On a cluster, a reader of a key another shard serves, its key
    /// created; none elsewhere.
    async fn start(redis: &Deployment) -> Result<Option<Bystander>, String> {
        let Deployment::Cluster(cluster) = redis else {
            return Ok(None);
        };
        let owner = |key: &Key| {
            cluster
                .primary_for(key.as_str())
                .map_err(|e| format!("the owner of {key}: {e}"))
        };
        let ours = owner(&key())?;
        let mut other = None;
        for i in 0..64 {
            let candidate = Key::new(["fault-matrix", "bystander", &i.to_string()])
                .map_err(|e| e.to_string())?;
            if owner(&candidate)? != ours {
                other = Some(candidate);
                break;
            }
        }
        let other = other.ok_or("no key of 64 is on another shard")?;
        let backend = RedisBackend::with_config(&cluster.url(), fast_config())
            .map_err(|e| format!("the bystander's backend: {e}"))?;
        let sync = Synchronizer::new(backend, other);
        sync.refresh()
            .await
            .map_err(|e| format!("the bystander's first read: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let reading = {
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let (mut reads, mut failures) = (0, Vec::new());
                while !stop.load(SeqCst) {
                    match sync.read().await {
                        Ok(_) => reads += 1,
                        Err(e) => failures.push(e.to_string()),
                    }
                    tokio::time::sleep(POLL).await;
                }
                (reads, failures)
            })
        };
        Ok(Some(Bystander { stop, reading }))
    }

    /// Stops it: every read must have succeeded.
    async fn judge(self) -> Result<String, String> {
        self.stop.store(true, SeqCst);
        let (reads, failures) = self
            .reading
            .await
            .map_err(|e| format!("the bystander's task: {e}"))?;
        ensure(failures.is_empty() && reads > 0, || {
            format!(
                "a key on another shard was not read throughout the failover: {reads} reads \
                 answered, {} failed (first: {:?})",
                failures.len(),
                failures.first()
            )
        })?;
        Ok(format!(
            "a key on another shard was read {reads} times from the kill to convergence, none failed"
        ))
    }
}

/// What a publish told its writer.
#[derive(Clone, Debug)]
enum Told {
    Ok(Generation),
    /// The bump was made, but no replica acknowledged it in time.
    NotReplicated,
    Failed(String),
}

/// One publish by the waiting writer: the version it saved (or tried to),
/// what it was told, and whether it began after the kill.
#[derive(Debug)]
struct Attempt {
    version: u64,
    told: Told,
    after_kill: bool,
}

type Ledger = Arc<Mutex<Vec<Attempt>>>;

fn told(outcome: Result<Generation, PublishError>) -> Told {
    let not_replicated =
        |e: &Error| matches!(e, Error::Backend(e) if e.kind() == BackendErrorKind::NotReplicated);
    match outcome {
        Ok(generation) => Told::Ok(generation),
        Err(PublishError::Start(e) | PublishError::Bump { source: e, .. })
            if not_replicated(&e) =>
        {
            Told::NotReplicated
        }
        Err(e) => Told::Failed(e.to_string()),
    }
}

/// The identity of `server` (its `run_id` and replication id): a
/// generation the fleet shows mixes in the identity of the server it was
/// read from.
fn run_id(server: &RedisServer) -> Result<String, String> {
    gensync::testing::server_identity(server).map_err(|e| format!("INFO server: {e}"))
}

/// Publishes the next version through `writer` and writes down what it
/// was told.
async fn publish(db: &Db, writer: &Reloader<u64>, ledger: &Ledger, after_kill: bool) -> Told {
    let version = db.version() + 1;
    let outcome = told(writer.publish(version).await);
    ledger.lock().unwrap().push(Attempt {
        version,
        told: outcome.clone(),
        after_kill,
    });
    outcome
}

/// The rows' course: a replicated publish told ok, the primary killed at
/// once, the fleet followed until it serves that publish (or a later one)
/// from the promoted replica, and the ledger checked against what the new
/// primary holds.
async fn primary_killed(mode: CheckMode, redis: Deployment) -> Result<Row, String> {
    let mut t = healthy_trial_on(redis, Options::in_mode(mode)).await?;
    // The instances' bumps (the healthy phases' publishes) do not wait for
    // a replica; this writer's do.
    let replicated = fast_config().wait_for_replicas(1, WAIT);
    let (writer, _) = t.fleet.writer(t.opts(), replicated, WRITE_TIMEOUT)?;
    let epochs: Vec<u64> = t
        .fleet
        .instances
        .iter()
        .map(|i| i.backend.epoch())
        .collect();
    // The generations the fleet held before the writer's bump: the new
    // primary holding one of them would mean the bump was lost.
    let held_before = t.fleet.recorded();
    let old_run = run_id(t.fleet.redis.primary()?)?;
    t.fault(false);
    let ledger = Ledger::default();

    let first = publish(&t.fleet.db, &writer, &ledger, false).await;
    let Told::Ok(bumped) = first else {
        return Err(format!(
            "the writer's publish before the kill, with its replica up, was told {first:?}"
        ));
    };
    let target = t.fleet.db.version();
    let bystander = Bystander::start(&t.fleet.redis).await?;
    let replica = t.fleet.redis.replica()?.port();
    let old = t.fleet.redis.kill_primary()?;
    let killed = Instant::now();
    t.tracking_lost();
    t.all_read_unavailable("right after the primary was killed")
        .await?;
    // The replica, the one a failover can promote, holds the bump its WAIT
    // acknowledged. Read before anything else can write there: the writer
    // is not writing yet, and the instances' reads do not write a key that
    // is there.
    let on_replica = t
        .fleet
        .redis
        .stored_on(replica)?
        .map(|g| shown_on(g, &old_run));
    ensure(on_replica == Some(bumped), || {
        format!(
            "the publish told ok was lost: its WAIT said a replica had it, and the replica on \
             {replica} holds {on_replica:?}, not {bumped}"
        )
    })?;
    if t.opts().mode.pushes() {
        // Tracking went with the primary: no instance vouches past the
        // heartbeat bound. Once it stopped, the sampler's watch ends (an
        // instance may then vouch again, on the promoted replica), and
        // re-arming is timed from here.
        let reloaders = t.fleet.reloaders();
        until(
            HEARTBEAT * 2 + MARGIN,
            || !reloaders.iter().any(vouching),
            || "push: an instance still vouched after its primary was killed".to_owned(),
        )
        .await?;
        t.tracking_back();
    }

    // The writer goes on through the failover until a bump lands on the
    // promoted replica, which has no replica of its own to acknowledge it.
    let writing = {
        let (db, writer, ledger) = (Arc::clone(&t.fleet.db), writer.clone(), Arc::clone(&ledger));
        tokio::spawn(async move {
            let deadline = Instant::now() + FAILOVER_WITHIN;
            loop {
                let outcome = publish(&db, &writer, &ledger, true).await;
                if matches!(outcome, Told::NotReplicated) || Instant::now() >= deadline {
                    return outcome;
                }
                tokio::time::sleep(WRITE_EVERY).await;
            }
        })
    };

    let converge = t.converge_current(target, killed, FAILOVER_WITHIN).await?;
    if let Some(bystander) = bystander {
        let seen = bystander.judge().await?;
        t.note(seen);
    }
    // Returns at once if the promotion is done: the fleet reads from a
    // live primary, and only the replica could have become one.
    let new = t.fleet.redis.wait_for_failover(old, FAILOVER_WITHIN)?;
    ensure(new == replica, || {
        format!("the node on {new} was promoted, not the replica on {replica}")
    })?;
    for (i, (before, instance)) in epochs.iter().zip(&t.fleet.instances).enumerate() {
        let after = instance.backend.epoch();
        ensure(after > *before, || {
            format!("instance {i}'s epoch stayed {before} (now {after}) across the failover")
        })?;
    }
    let last = tokio::time::timeout(FAILOVER_WITHIN, writing)
        .await
        .map_err(|_| "the writer's publishes through the failover never ended".to_owned())?
        .map_err(|e| format!("the writer's task: {e}"))?;
    ensure(matches!(last, Told::NotReplicated), || {
        format!(
            "the writer was never told its bump was not replicated after the failover; last told {last:?}"
        )
    })?;
    t.heal();

    // Nothing the writer was told ok about was lost (checked on the replica
    // above for the publish before the kill): the new primary holds the last
    // generation a publish was told ok for, or one a later publish's bump
    // made there (told it was not replicated, or failed after its bump),
    // never one from before.
    let stored = t.fleet.stored()?;
    // As shown on the old primary (the publish before the kill) or on the
    // new one (publishes after the failover).
    let new_run = run_id(t.fleet.redis.primary()?)?;
    let as_shown: Vec<Generation> = (stored.iter())
        .flat_map(|g| [shown_on(*g, &old_run), shown_on(*g, &new_run)])
        .collect();
    let attempts = std::mem::take(&mut *ledger.lock().unwrap());
    let last_ok = attempts
        .iter()
        .rposition(|a| matches!(a.told, Told::Ok(_)))
        .ok_or("no publish was told ok")?;
    let Told::Ok(last_ok_generation) = attempts[last_ok].told else {
        unreachable!("the position of an ok publish");
    };
    let superseded = attempts[last_ok + 1..]
        .iter()
        .any(|a| !matches!(a.told, Told::Ok(_)));
    let earlier: Vec<Generation> = (attempts[..last_ok].iter())
        .filter_map(|a| match a.told {
            Told::Ok(g) => Some(g),
            _ => None,
        })
        .chain(held_before)
        .collect();
    ensure(
        as_shown.contains(&last_ok_generation)
            || (superseded
                && !as_shown.is_empty()
                && !as_shown.iter().any(|g| earlier.contains(g))),
        || {
            format!(
                "a publish told ok was lost: the new primary holds {stored:?}, the last publish \
                 told ok (version {}) bumped to {last_ok_generation} (before the kill: {bumped}); \
                 ledger: {attempts:?}",
                attempts[last_ok].version
            )
        },
    )?;
    let served = t.fleet.instances.iter().map(|i| *i.reloader.current());
    let oldest = served.min().unwrap_or_default();
    ensure(oldest >= attempts[last_ok].version, || {
        format!(
            "an instance serves version {oldest}, older than version {} a publish was told ok for",
            attempts[last_ok].version
        )
    })?;

    let after: Vec<&Attempt> = attempts.iter().filter(|a| a.after_kill).collect();
    let count = |f: fn(&Told) -> bool| after.iter().filter(|a| f(&a.told)).count();
    t.note(format!(
        "primary on port {old} killed, replica on {new} promoted; every instance served version \
         {target} (the last publish told ok, replicated) as current {converge:.1?} after the kill; \
         the writer's {} publishes after the kill: {} told ok, {} not replicated, {} failed; \
         the promoted primary holds {}; the first failure said: {}",
        after.len(),
        count(|t| matches!(t, Told::Ok(_))),
        count(|t| matches!(t, Told::NotReplicated)),
        count(|t| matches!(t, Told::Failed(_))),
        if stored == Some(last_ok_generation) {
            "the generation of the last publish told ok"
        } else {
            "a later bump's generation (one told it was not replicated)"
        },
        after
            .iter()
            .find_map(|a| match &a.told {
                Told::Failed(e) => Some(e.as_str()),
                _ => None,
            })
            .unwrap_or("–"),
    ));
    // The last healthy phase publishes through the instances, whose bumps
    // do not wait for a replica: none is left.
    t.finish(converge).await
}
