//! Push mode's connection: a RESP3 connection of its own on which the
//! server sends every change of the key (`CLIENT TRACKING ON BCAST PREFIX
//! <key>`), feeding a [`Tracker`]; or of every key under a set's prefixes,
//! feeding a [`TrackerSet`], whose members are read by others.
//!
//! Pushes are handed to the tracker by the connection's own reader, in the
//! order they arrived and before any later reply resolves, so an answered
//! `PING` or `GET` proves every invalidation the server queued before it has
//! already invalidated. The server queues a broadcast invalidation before it
//! writes the reply to the command that caused it, so a bump whose writer
//! has its reply is never missed by a heartbeat sent after that.
//!
//! Where a session runs (a Sentinel's primary, a Cluster slot's owner) and
//! what its heartbeat sends there is `track/node.rs`'s; what it feeds,
//! `track/fed.rs`'s; how a set's session watches its members' lapses,
//! `track/lapses.rs`'s.
//!
//! A heartbeat's reply renews the vouching for a heartbeat bound from when
//! it was sent, and nothing else does: a session that stalls (its runtime
//! starved, its connection slow to time out) stops vouching at the bound.
//!
//! The crate's experimental client-side cache is not used: there, an
//! invalidation can race the insert of a fresh reply, and a dead connection
//! keeps serving hits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, PushInfo, RedisError, Value};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};

use self::fed::Fed;
use self::node::{place, Heartbeat};
use super::commands::Op;
use super::conn::{node_async, owner_async};
use super::deployment::Deployment;
use super::identity::{identity_cmd, read_run_id, Ran};
use super::redial::{self, Redials};
use super::target::Target;
use crate::backend::{Tracker, TrackerSet};
use crate::error::{BackendError, BackendErrorKind};
use crate::key::Key;

mod fed;
mod lapses;
mod node;

/// Starts tracking `key` for `tracker` on the current runtime. `false`
/// outside one.
pub(super) fn spawn(target: Arc<Target>, key: Key, tracker: &Arc<Tracker>) -> bool {
    let fed = Fed::Key {
        key,
        tracker: Arc::downgrade(tracker),
    };
    start(target, fed, tracker.notifier())
}

/// Starts tracking every member of `set` on the current runtime, on one
/// connection. `false` outside one.
pub(super) fn spawn_set(target: Arc<Target>, set: &Arc<TrackerSet>) -> bool {
    start(target, Fed::set(set), set.notifier())
}

fn start(target: Arc<Target>, fed: Fed, notify: Arc<Notify>) -> bool {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return false;
    };
    runtime.spawn(run(target, fed, notify));
    true
}

/// How long after a refusal tracking is asked for again (at most; at
/// least half, drawn at random so a fleet does not ask together): an
/// operator may grant it (an ACL change) without restarting every process.
const ASK_AGAIN: Duration = Duration::from_secs(30);

/// How a tracking session ended.
enum Ended {
    /// Nobody reads through the tracker any more.
    Unwanted,
    /// The server will not track (no RESP3, `CLIENT TRACKING` unknown or
    /// denied): readers read for themselves, and tracking is asked for
    /// again only after [`ASK_AGAIN`].
    Refused(BackendError),
    /// The connection broke, missed a heartbeat, or a command on it failed
    /// once tracking was armed; `armed` says whether it got that far.
    Lost { error: BackendError, armed: bool },
}

/// What the last session's end has been told in the logs, so an episode
/// is one warning, not one per attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Told {
    Nothing,
    /// Not armed yet since start-up, and said so.
    Unarmed,
    Lost,
    Refused,
}

/// Sessions, one after the other, until what they feed is dropped.
async fn run(target: Arc<Target>, fed: Fed, notify: Arc<Notify>) {
    let key = &fed;
    let mut told = Told::Nothing;
    let mut redials = Redials::default();
    loop {
        let ended = session(&target, &fed, &notify, told).await;
        if !fed.lost() {
            return;
        }
        let wait = match ended {
            Ended::Unwanted => return,
            Ended::Refused(error) => {
                if told == Told::Refused {
                    tracing::debug!(key = %key, %error, "gensync push mode: tracking still refused");
                } else {
                    tracing::warn!(key = %key, %error, "gensync push mode: the server will not track the key; checking it on every request (strict) instead, and asking again within {ASK_AGAIN:?}");
                }
                told = Told::Refused;
                redial::pause(ASK_AGAIN, ASK_AGAIN, 0, redial::draw())
            }
            Ended::Lost { error, armed } => {
                if armed {
                    tracing::warn!(key = %key, %error, "gensync push mode: tracking connection lost; checking the key on every request (strict) until it is armed again");
                    told = Told::Lost;
                } else if told == Told::Nothing {
                    // Never armed yet: nothing was lost.
                    tracing::warn!(key = %key, %error, "gensync push mode: could not arm tracking; checking the key on every request (strict) until it is armed");
                    told = Told::Unarmed;
                } else {
                    tracing::debug!(key = %key, %error, "gensync push mode: tracking still down");
                    if told == Told::Refused {
                        told = Told::Lost;
                    }
                }
                // A server that is down, or refuses the credentials, is
                // not dialled in a tight loop: the pause doubles while
                // sessions fail before arming. It is drawn at random, so a
                // fleet that lost its server together (a restart) redials
                // spread, not in lockstep (see `RedisConfig::redial`).
                if armed {
                    redials.reset();
                }
                target.config.redial_pause(&mut redials)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Clears `live` when the session ends, so pushes a dropped connection
/// still delivers (its `Disconnection`) touch no later session.
struct Live(Arc<AtomicBool>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

async fn session(target: &Target, fed: &Fed, notify: &Notify, told: Told) -> Ended {
    let key = fed;
    let live = Live(Arc::new(AtomicBool::new(true)));
    let mut conn = match connect(target, fed, &live.0).await {
        Ok(conn) => conn,
        Err(e) => return ended(target, e, false),
    };
    let beat = Heartbeat::new(target, fed);
    let epoch = match place(target, fed) {
        Ok(Some(slot)) => {
            // The slot's owner only once the node says it still owns it:
            // the seed that named it may have been behind.
            let owner = async {
                beat.send(&mut conn, std::iter::empty()).await?;
                let node = redis::cmd("CLUSTER")
                    .arg("MYID")
                    .query_async::<String>(&mut conn)
                    .await?;
                let run_id = read_run_id(identity_cmd().query_async::<Value>(&mut conn).await);
                Ok::<_, RedisError>(Ran { node, run_id })
            };
            match owner.await {
                Ok(ran) => target.identity.answered(slot, ran),
                Err(e) => return ended(target, e, false),
            }
            target.identity.epoch()
        }
        _ => target.identity.met(read_run_id(
            identity_cmd().query_async::<Value>(&mut conn).await,
        )),
    };
    let mut tracking = redis::cmd("CLIENT");
    tracking.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in fed.prefixes() {
        tracking.arg("PREFIX").arg(prefix);
    }
    if let Err(e) = tracking.query_async::<()>(&mut conn).await {
        return ended(target, e, false);
    }
    // A set's heartbeats compare its first parent with what it held once
    // tracking was on (a key's, with the session's own reads).
    let mut parent = None;
    if let Fed::Set { .. } = fed {
        match beat.send(&mut conn, std::iter::empty()).await {
            Ok((holds, _)) => parent = holds,
            Err(e) => return ended(target, e, false),
        }
    }
    if !fed.arm(epoch) {
        return Ended::Unwanted;
    }
    if told == Told::Nothing {
        tracing::debug!(key = %key, "gensync push mode: tracking armed");
    } else if told == Told::Unarmed {
        tracing::info!(key = %key, "gensync push mode: tracking armed; checks cost no round trip between changes");
    } else {
        tracing::info!(key = %key, "gensync push mode: tracking armed again; checks cost no round trip between changes");
    }
    let config = &target.config;
    let mut every = tokio::time::interval(config.heartbeat);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // A set vouches with its first beat, at once; its next is placed at
    // random in the period, as a key's after its read.
    let mut phased = false;
    loop {
        let mut ticket = None;
        // What the session's last read found, which its heartbeats
        // compare with what the key holds then.
        let mut read = parent;
        if let Fed::Key { key, tracker } = fed {
            // Read the key: its reply also proves the pushes before it
            // arrived.
            let Some(t) = tracker.upgrade().map(|t| t.ticket()) else {
                return Ended::Unwanted;
            };
            let get = Op::get(key);
            let sent = Instant::now();
            let reply = get.cmd.query_async::<Value>(&mut conn).await;
            let stored = match (get.read)(reply) {
                Ok(stored) => stored,
                Err(e) => return ended(target, e, true),
            };
            match tracker.upgrade() {
                Some(tracker) => {
                    // The bound first, so a waiter woken by the kept read
                    // finds it vouched for.
                    tracker.vouch_until(sent, config.heartbeat_bound());
                    tracker.saw(t, stored, epoch);
                }
                None => return Ended::Unwanted,
            }
            ticket = Some(t);
            read = Some(stored);
            // The read renewed the vouch: the next beat is at most a
            // period away, at a random point of it, so sessions that read
            // together (armed together, or told of one bump) do not beat
            // in lockstep ever after.
            every.reset_after(redial::phase(config.heartbeat, redial::draw()));
        }
        // Heartbeats until something changes (for a set, until it is
        // dropped: its members are read by others).
        loop {
            let changed = notify.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match fed.moved_since(ticket) {
                Some(true) => break,
                Some(false) => {}
                None => return Ended::Unwanted,
            }
            if target.identity.epoch() != epoch {
                return Ended::Lost {
                    error: BackendError::new(
                        BackendErrorKind::Server,
                        &target.name,
                        "another connection reached a different server",
                    ),
                    armed: true,
                };
            }
            tokio::select! {
                _ = &mut changed => continue,
                _ = every.tick() => {}
            }
            let sent = Instant::now();
            let asked = fed.lapses_asked(sent);
            let extra = asked.iter().flat_map(|a| a.cmds());
            let (holds, rest) = match beat.send(&mut conn, extra).await {
                Ok(answered) => answered,
                Err(e) => return ended(target, e, true),
            };
            if let Some(asked) = asked {
                if !fed.lapses_answered(asked, sent, rest) {
                    return Ended::Unwanted;
                }
            }
            if read.is_some() && holds != read {
                // Changed with no invalidation (`SWAPDB`, a key past its
                // time to live that the server had not expired yet: the
                // read expired it). Invalidated before the bound is
                // renewed, so nothing vouches for the old value past it.
                // (A set's parent also differs after a pushed change of
                // it: its members are then invalidated twice.)
                tracing::debug!(key = %key, "gensync push mode: the heartbeat found a change the server did not announce");
                if !fed.invalidate() {
                    return Ended::Unwanted;
                }
                if let Fed::Key { .. } = fed {
                    break;
                }
                read = holds;
            }
            if !fed.vouch_until(sent, config.heartbeat_bound()) {
                return Ended::Unwanted;
            }
            if !phased {
                phased = true;
                if let Fed::Set { .. } = fed {
                    every.reset_after(redial::phase(config.heartbeat, redial::draw()));
                }
            }
        }
    }
}

/// A RESP3 connection whose pushes go to what it feeds while `live`: to
/// the one server, the primary the sentinels name, or the Cluster node
/// that owns what it feeds.
async fn connect(
    target: &Target,
    fed: &Fed,
    live: &Arc<AtomicBool>,
) -> Result<MultiplexedConnection, RedisError> {
    let (fed, live) = (fed.clone(), Arc::clone(live));
    let slot = place(target, &fed)?;
    let pushes = move |push: PushInfo| {
        if live.load(Ordering::SeqCst) {
            fed.pushed(&push);
        }
        Ok::<(), redis::aio::SendError>(())
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(target.config.connect_timeout))
        .set_response_timeout(Some(target.config.heartbeat))
        .set_push_sender(pushes);
    match (&target.deployment, slot) {
        (Deployment::Cluster(cluster), Some(slot)) => {
            owner_async(target, cluster, slot, &config).await
        }
        _ => node_async(target, &config, true).await,
    }
}

/// What a failure means. Before tracking is armed, an error reply to the
/// handshake or to `CLIENT TRACKING` that is not about credentials and not
/// transient is a refusal; anything else, and any failure once armed (a
/// `NOPERM` on the read, a `LOADING` after a restart, a `CLUSTERDOWN` from
/// a Cluster node that has not rejoined yet), is a loss, tried again soon.
fn ended(target: &Target, e: RedisError, armed: bool) -> Ended {
    let passing = e.kind() == ErrorKind::AuthenticationFailed
        || e.is_timeout()
        || matches!(
            e.code(),
            Some(
                "NOAUTH"
                    | "WRONGPASS"
                    | "LOADING"
                    | "BUSY"
                    | "MASTERDOWN"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
            )
        );
    let error = target.error(&e);
    if !armed && e.code().is_some() && !passing {
        Ended::Refused(error)
    } else {
        Ended::Lost { error, armed }
    }
}
