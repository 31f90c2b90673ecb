//! Push invalidation for many keys over one tracking session
//! ([`Backend::track_set`]): members fed by their readers, on a real
//! redis-server per test.

mod support;

use std::pin::pin;
use std::time::Duration;

use gensync::backend::{Backend, Stored, Ticket, Tracker, TrackerSet};
use gensync::{Key, RedisBackend, RedisConfig};
use support::stall::Stallable;
use support::tenants::{parent, tenant, tracked, PREFIX};
use support::{LogCapture, Redis};
use tokio::time::{timeout, Instant};

/// Heartbeats a loaded machine answers in time: a late one only makes a
/// member read again, but a test waiting on a vouch would wait longer.
const HEARTBEAT: Duration = Duration::from_millis(250);
/// Long enough that only a broken promise reaches it.
const PATIENCE: Duration = Duration::from_secs(10);

fn config() -> RedisConfig {
    support::patient_config().heartbeat(HEARTBEAT)
}

fn backend(redis: &Redis) -> RedisBackend {
    RedisBackend::with_config(&redis.server.url(), config()).unwrap()
}

/// Waits within the patience until `done` holds for `member`, woken by its
/// own signal.
async fn until(member: &Tracker, what: &str, mut done: impl FnMut(&Tracker) -> bool) {
    timeout(PATIENCE, async {
        loop {
            let changed = member.changed();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            if done(member) {
                return;
            }
            changed.await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within the patience"));
}

/// What a reader does: a ticket, then a read on its own connection, then
/// the read fed to the member with the backend's epoch.
async fn feed(backend: &RedisBackend, member: &Tracker, key: &Key) -> bool {
    let ticket = member.ticket();
    let stored = backend.get(key).await.unwrap();
    member.saw(ticket, stored, backend.epoch())
}

/// Reads and feeds `key` until its member vouches, and returns what it
/// vouches for. A read is sent again only when the last one was not kept
/// (the set not armed yet, a change racing it), or moved since.
async fn vouched(backend: &RedisBackend, member: &Tracker, key: &Key) -> Stored {
    timeout(PATIENCE, async {
        let mut kept: Option<Ticket> = None;
        loop {
            let changed = member.changed();
            let mut changed = pin!(changed);
            changed.as_mut().enable();
            if let Some((stored, _)) = member.vouched() {
                return stored;
            }
            if member.is_armed() && kept.is_none_or(|t| member.moved_since(t)) {
                let ticket = member.ticket();
                kept = match backend.get(key).await {
                    Ok(stored) => member
                        .saw(ticket, stored, backend.epoch())
                        .then_some(ticket),
                    Err(_) => None,
                };
            }
            // A read refused for its epoch, or failed, is retried at the
            // heartbeat's pace; everything else wakes the member.
            let _ = timeout(HEARTBEAT, changed).await;
        }
    })
    .await
    .expect("the member vouches within the patience")
}

/// The ids of the server's clients in tracking mode.
fn tracking_clients(redis: &Redis) -> Vec<String> {
    let clients: String = redis.raw(redis::cmd("CLIENT").arg("LIST"));
    clients
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('t'))
        })
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_one_member_invalidates_it_and_not_the_others() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let (a, b) = (set.member(&tenant("a")), set.member(&tenant("b")));
    redis.raw::<()>(redis::cmd("SET").arg(tenant("a").as_str()).arg(1));
    redis.raw::<()>(redis::cmd("SET").arg(tenant("b").as_str()).arg(2));
    assert!(matches!(vouched(&backend, &a, &tenant("a")).await, Stored::Value(g) if g.get() == 1));
    assert!(matches!(vouched(&backend, &b, &tenant("b")).await, Stored::Value(g) if g.get() == 2));
    let (ticket_a, ticket_b) = (a.ticket(), b.ticket());

    redis.raw::<i64>(redis::cmd("INCR").arg(tenant("a").as_str()));
    until(&a, "a's change pushed", |a| a.moved_since(ticket_a)).await;
    assert_eq!(a.vouched(), None, "a changed");
    // Pushes are handed on in order, and the one for `a` is in: none for
    // `b` came, nor will.
    assert!(!b.moved_since(ticket_b), "b did not change");
    assert!(matches!(vouched(&backend, &a, &tenant("a")).await, Stored::Value(g) if g.get() == 2));
    assert!(!b.moved_since(ticket_b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_change_invalidates_every_member() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let (a, b) = (set.member(&tenant("a")), set.member(&tenant("b")));
    vouched(&backend, &a, &tenant("a")).await;
    vouched(&backend, &b, &tenant("b")).await;
    let (ticket_a, ticket_b) = (a.ticket(), b.ticket());
    // An unrelated key under no prefix: nothing pushed, nothing moves.
    redis.raw::<()>(redis::cmd("SET").arg("elsewhere").arg(1));
    redis.raw::<()>(redis::cmd("SET").arg(parent().as_str()).arg(1));
    until(&a, "the parent's change pushed", |a| {
        a.moved_since(ticket_a)
    })
    .await;
    until(&b, "the parent's change pushed", |b| {
        b.moved_since(ticket_b)
    })
    .await;
    assert_eq!((a.vouched(), b.vouched()), (None, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_invalidates_every_member() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let (a, b) = (set.member(&tenant("a")), set.member(&tenant("b")));
    redis.raw::<()>(redis::cmd("SET").arg(tenant("a").as_str()).arg(1));
    vouched(&backend, &a, &tenant("a")).await;
    vouched(&backend, &b, &tenant("b")).await;
    let (ticket_a, ticket_b) = (a.ticket(), b.ticket());
    redis.raw::<()>(&mut redis::cmd("FLUSHALL"));
    until(&a, "the flush pushed", |a| a.moved_since(ticket_a)).await;
    until(&b, "the flush pushed", |b| b.moved_since(ticket_b)).await;
    assert!(a.is_armed() && b.is_armed(), "invalidated, not lost");
    assert_eq!(
        vouched(&backend, &a, &tenant("a")).await,
        Stored::Missing,
        "a fresh read vouches for the flushed key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_tracking_connection_loses_every_member_then_arms_again() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let (a, b) = (set.member(&tenant("a")), set.member(&tenant("b")));
    vouched(&backend, &a, &tenant("a")).await;
    vouched(&backend, &b, &tenant("b")).await;
    let old = a.ticket();
    let tracking = tracking_clients(&redis);
    assert_eq!(tracking.len(), 1, "one tracking connection");
    redis.raw::<i64>(redis::cmd("CLIENT").arg("KILL").arg("ID").arg(&tracking[0]));
    // Lost for a pause of at least a heartbeat before it dials again.
    until(&a, "the loss seen", |a| !a.is_armed()).await;
    assert!(!set.is_armed() && !b.is_armed(), "every member lost");
    assert_eq!((a.vouched(), b.vouched()), (None, None));

    // A change while nobody tracks: the read after re-arming sees it.
    redis.raw::<()>(redis::cmd("SET").arg(tenant("a").as_str()).arg(9));
    until(&a, "armed again", |a| a.is_armed()).await;
    assert!(
        !a.saw(old, Stored::Missing, backend.epoch()),
        "a read begun before the loss vouches for nothing"
    );
    assert!(matches!(vouched(&backend, &a, &tenant("a")).await, Stored::Value(g) if g.get() == 9));
    let tracking_again = tracking_clients(&redis);
    assert_eq!(tracking_again.len(), 1);
    assert_ne!(tracking_again, tracking, "a new connection");
}

/// A paused server misses its heartbeats: no member is vouched for, and
/// the session arms again once it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_vouches_for_no_member_then_arms_again() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let (a, b) = (set.member(&tenant("a")), set.member(&tenant("b")));
    vouched(&backend, &a, &tenant("a")).await;
    vouched(&backend, &b, &tenant("b")).await;
    redis.server.pause().unwrap();
    let paused = Instant::now();
    // What is asserted is the bound itself: no event marks it.
    tokio::time::sleep_until(paused + 2 * HEARTBEAT).await;
    assert_eq!(
        (a.vouched(), b.vouched()),
        (None, None),
        "no member vouched for past the bound of the last answered heartbeat"
    );
    redis.server.resume().unwrap();
    // The missed heartbeat lost the session; it arms again.
    vouched(&backend, &a, &tenant("a")).await;
}

/// The heartbeat bound alone ends what the members vouch for: with the
/// session stalled (its runtime held), no timeout of its connection fires
/// and no push is heard, yet no member is vouched for a bound after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_session_is_never_vouched_for_past_the_heartbeat_bound() {
    let redis = Redis::new();
    let backend = backend(&redis);
    // The readers' connection is made here, so it goes on answering while
    // the session's runtime is held.
    backend.ping().await.unwrap();
    let session = Stallable::new();
    let set = {
        let _on = session.handle().enter();
        tracked(&backend)
    };
    let a = set.member(&tenant("a"));
    vouched(&backend, &a, &tenant("a")).await;

    let stall = session.stall().await;
    let stalled = Instant::now();
    // A change the stalled session cannot hear of.
    redis.raw::<()>(redis::cmd("SET").arg(tenant("a").as_str()).arg(9));
    // What is asserted is the bound itself: no event marks it.
    tokio::time::sleep_until(stalled + 2 * HEARTBEAT).await;
    assert_eq!(
        a.vouched(),
        None,
        "no member vouched for past the bound of the last answered heartbeat"
    );
    drop(stall);
    assert!(matches!(vouched(&backend, &a, &tenant("a")).await, Stored::Value(g) if g.get() == 9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_from_another_server_is_refused() {
    let mut redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let a = set.member(&tenant("a"));
    vouched(&backend, &a, &tenant("a")).await;
    let before = backend.epoch();

    // Armed on the server of `before`: a read another server answered
    // (here, tagged with another epoch) is not kept.
    let ticket = a.ticket();
    let stored = backend.get(&tenant("a")).await.unwrap();
    assert!(!a.saw(ticket, stored, before + 1));

    // A restart: every member lost, then armed on the new server, whose
    // epoch the reader's own connection finds too.
    redis.server.restart().unwrap();
    until(&a, "the restart seen", |a| !a.is_armed()).await;
    until(&a, "armed on the restarted server", |a| a.is_armed()).await;
    let ticket = a.ticket();
    assert!(
        !a.saw(ticket, stored, before),
        "a read from the server before the restart"
    );
    assert_eq!(a.vouched(), None);
    assert_eq!(vouched(&backend, &a, &tenant("a")).await, Stored::Missing);
    assert_ne!(backend.epoch(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_created_after_arming_vouches_after_its_first_read() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let a = set.member(&tenant("a"));
    vouched(&backend, &a, &tenant("a")).await;

    let late = set.member(&tenant("late"));
    assert!(late.is_armed(), "armed as it is created");
    assert!(
        feed(&backend, &late, &tenant("late")).await,
        "its first read kept"
    );
    // The set's heartbeat already answers for it: no second read needed.
    until(&late, "the first read vouched", |t| t.vouched().is_some()).await;
    assert_eq!(late.vouched().map(|v| v.0), Some(Stored::Missing));
    let ticket = late.ticket();
    redis.raw::<()>(redis::cmd("SET").arg(tenant("late").as_str()).arg(3));
    until(&late, "its change pushed", |t| t.moved_since(ticket)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_set_ends_its_session() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let a = set.member(&tenant("a"));
    vouched(&backend, &a, &tenant("a")).await;
    assert_eq!(tracking_clients(&redis).len(), 1);
    drop(set);
    // Nothing invalidates it any more (the set goes once the session lets
    // go of it too, if it was looking).
    until(&a, "a member outliving its set lost", |a| !a.is_armed()).await;
    assert_eq!(a.vouched(), None);
    // The server tells no one a connection closed: ask it until it has.
    timeout(PATIENCE, async {
        while !tracking_clients(&redis).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the tracking connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_members_share_one_connection() {
    let redis = Redis::new();
    let backend = backend(&redis);
    let set = tracked(&backend);
    let keys: Vec<Key> = (0..1_000).map(|n| tenant(&n.to_string())).collect();
    let members: Vec<_> = keys.iter().map(|k| set.member(k)).collect();
    for (member, key) in members.iter().zip(&keys) {
        vouched(&backend, member, key).await;
    }
    assert_eq!(tracking_clients(&redis).len(), 1, "one tracking connection");
    let clients: String = redis.raw(redis::cmd("CLIENT").arg("LIST"));
    assert_eq!(
        clients.lines().count(),
        3,
        "this test's, the reader's and the tracking one: {clients}"
    );
    let tickets: Vec<_> = members.iter().map(|m| m.ticket()).collect();
    redis.raw::<()>(redis::cmd("SET").arg(keys[500].as_str()).arg(1));
    until(&members[500], "its change pushed", |m| {
        m.moved_since(tickets[500])
    })
    .await;
    let moved: Vec<usize> = (0..1_000)
        .filter(|&n| members[n].moved_since(tickets[n]))
        .collect();
    assert_eq!(moved, [500], "only the changed member moved");
}

#[tokio::test(flavor = "current_thread")]
async fn a_server_that_will_not_track_vouches_for_nothing_and_says_so_once() {
    let redis = Redis::from_server(
        gensync::testing::RedisServer::start_with_args(["--rename-command", "CLIENT", ""]).unwrap(),
    );
    let logs = LogCapture::default();
    let _guard = logs.install();
    let backend = backend(&redis);
    let set = TrackerSet::new(vec![PREFIX.into()], vec![]);
    let a = set.member(&tenant("a"));
    let refused = a.changed();
    let mut refused = pin!(refused);
    refused.as_mut().enable();
    assert!(backend.track_set(&set), "started: the refusal comes later");
    // The session tells every member it is lost once it gives up.
    timeout(PATIENCE, refused)
        .await
        .expect("the refusal within the patience");
    assert!(!set.is_armed() && !a.is_armed());
    assert!(!feed(&backend, &a, &tenant("a")).await, "no read is kept");
    assert_eq!(a.vouched(), None);
    assert_eq!(
        logs.lines_with("will not track").len(),
        1,
        "{}",
        logs.text()
    );
}
