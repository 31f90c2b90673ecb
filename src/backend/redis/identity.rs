//! Which server answered, so a process can tell when its key's server
//! changed (a restart, a failover, a resharding) and read as expired once:
//! the `run_id` of the server each new connection reaches, and in a
//! Cluster, whose client reconnects without telling, the node each script
//! says ran it. Each change counts as a new epoch.
//!
//! The server's identity is also what generations are shown with
//! ([`Generation::on_server`](crate::Generation)): a hash of its `run_id`,
//! which every process reads alike, so all of them show one number for
//! one state, and a restarted server (maybe restored from an older
//! snapshot) shows other numbers. A process that comes back to a run it
//! left, or that cannot learn the `run_id`, shows numbers of its own
//! instead, unique to the epoch: nothing recorded before may match.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::{Cmd, RedisError, Value};

use super::deployment::slot;
use super::scripts::{denied_command, CLUSTER_GET_SCRIPT};
use crate::backend::seqlock::SeqWords;
use crate::generation::{identity_of, run_hash};
use crate::unpoisoned::lock;

/// Which servers answered, and how many times that changed.
pub(super) struct Identity {
    /// Whether this is a Cluster, whose scripts report their node.
    cluster: bool,
    /// The server the last new connection reached.
    last: Mutex<LastServer>,
    /// In a Cluster: the node that last answered for each slot.
    owners: Mutex<HashMap<u16, Owner>>,
    /// How many times the server behind a key changed. Moved only under
    /// the lock of what changed (`last` or `owners`), so an identity read
    /// under that lock is the epoch's.
    epoch: AtomicU64,
    /// Random, for the identities of epochs whose server cannot be named
    /// alike by every process.
    salt: u64,
    /// Whether an unknown identity was logged yet.
    told_unknown: AtomicBool,
    /// Outside a Cluster: the epoch and the identity shown in it, read on
    /// every check (push mode's too) without the lock.
    current: Current,
}

/// An epoch and its identity, read on every check without a lock (as
/// `SeenCell` keeps a tracker's read). Written only under
/// [`Identity::last`]'s lock.
#[derive(Default)]
struct Current(SeqWords<2>);

impl Current {
    fn write(&self, epoch: u64, shown: u64) {
        self.0.write([epoch, shown]);
    }

    /// `None` when a write raced the read.
    fn read(&self) -> Option<(u64, u64)> {
        self.0.read().map(|[epoch, shown]| (epoch, shown))
    }
}

/// How often a Cluster slot's answers also say the node's `run_id`, which
/// a restart in place changes (its node id stays): a restart is noticed
/// within this of the next read of the slot after it.
const RUN_ID_EVERY: Duration = Duration::from_millis(250);

/// The node that answers for a Cluster slot, as far as it has told.
struct Owner {
    node: String,
    run_id: Option<String>,
    /// When its `run_id` was last asked for (or when it is next due).
    asked: Instant,
    /// The runs this slot moved away from (their [`run_hash`]es).
    left: Vec<u64>,
    /// Until when its `run_id`, not told with the answer that named it,
    /// comes with the next answer (which asks for it): generations read
    /// meanwhile are read again rather than shown with a number of this
    /// process's own. Bounded, should no script ask.
    learning: Option<Instant>,
}

/// Which server the last new connection reached, as far as it could tell.
#[derive(Default)]
struct LastServer {
    /// Whether any connection has been made yet.
    met: bool,
    /// Its `run_id`, or `None` when `INFO` was refused or failed.
    run_id: Option<String>,
    /// The identity generations read from it are shown with.
    shown: u64,
    /// The runs connections moved away from (their [`run_hash`]es): one met
    /// again may hold data older than what was recorded on it before.
    left: HashSet<u64>,
}

impl Identity {
    /// No server met yet; `cluster` if scripts report their node.
    pub(super) fn new(cluster: bool) -> Self {
        Identity {
            cluster,
            last: Mutex::default(),
            owners: Mutex::default(),
            epoch: AtomicU64::new(0),
            salt: rand::random(),
            told_unknown: AtomicBool::new(false),
            current: Current::default(),
        }
    }

    /// The epoch, and the identity generations of `key` read in it are
    /// shown with ([`Backend::identity`](crate::backend::Backend::identity)).
    ///
    /// A hash of the `run_id` of the server holding the key, alike in
    /// every process. Where that would not do, a number of this process's
    /// own for the epoch: the server's run is unknown (`INFO` refused, the
    /// probe timed out, a Cluster slot not yet sampled), or this process
    /// left that run before and came back to it (the run may since have
    /// loaded older data, as a demoted primary resynced from a replica
    /// that missed a write, and a value recorded on it before must not
    /// match). On the first server, unknown, stored values are shown as
    /// they are (0), as every process without `+info` shows them.
    /// `None` while a Cluster slot's new owner's `run_id` comes with the
    /// next answer.
    pub(super) fn shown(&self, key: &[u8]) -> (u64, Option<u64>) {
        if self.cluster {
            let owners = lock(&self.owners);
            let epoch = self.epoch();
            let owner = owners.get(&slot(key));
            if owner
                .and_then(|o| o.learning)
                .is_some_and(|until| Instant::now() < until)
            {
                return (epoch, None);
            }
            let known = owner.and_then(|owner| {
                let run = run_hash(owner.run_id.as_deref()?);
                (!owner.left.contains(&run)).then_some(run)
            });
            return (epoch, Some(known.unwrap_or_else(|| self.own(epoch))));
        }
        // A write races this read only when the server just changed.
        for _ in 0..4 {
            if let Some((epoch, shown)) = self.current.read() {
                return (epoch, Some(shown));
            }
        }
        let server = lock(&self.last);
        (self.epoch(), Some(server.shown))
    }

    /// This process's own identity for `epoch`: 0 for the first, else a
    /// number no other epoch (or process) has.
    fn own(&self, epoch: u64) -> u64 {
        if epoch == 0 {
            return 0;
        }
        identity_of(self.salt ^ epoch.rotate_left(32), b"gensync-own")
    }

    /// What to send for `cmd`: in a Cluster, a script made to report the
    /// node that ran it ([`identified`]).
    pub(super) fn outgoing<'a>(&self, cmd: &'a Cmd) -> Outgoing<'a> {
        // A read is a plain `GETRANGE`, which cannot say its node: in a
        // Cluster it goes as the same read in a `no-writes` script.
        let scripted = self.cluster.then(|| read_as_script(cmd)).flatten();
        let cmd_or_script = scripted.as_ref().unwrap_or(cmd);
        let wrapped = self
            .cluster
            .then(|| script_args(cmd_or_script))
            .flatten()
            .and_then(|args| {
                let slot = slot(args[3]);
                identified(&args, self.run_id_due(slot)).map(|cmd| (cmd, slot))
            });
        match wrapped {
            Some((cmd, slot)) => Outgoing {
                cmd: Cow::Owned(cmd),
                slot: Some(slot),
            },
            None => Outgoing {
                cmd: scripted.map_or(Cow::Borrowed(cmd), Cow::Owned),
                slot: None,
            },
        }
    }

    /// The reply to `sent` as the command's own: in a Cluster, with the
    /// node's id taken off and recorded as the slot's owner.
    pub(super) fn incoming(
        &self,
        sent: &Outgoing<'_>,
        reply: Result<Value, RedisError>,
    ) -> Result<Value, RedisError> {
        let Some(slot) = sent.slot else {
            return reply;
        };
        let (ran, reply) = unwrap_identified(reply);
        if let Some(ran) = ran {
            self.answered(slot, ran);
        }
        reply
    }

    /// Whether a script on `slot` should also ask its node's `run_id`: when
    /// the slot's was last asked [`RUN_ID_EVERY`] ago or more (or never).
    /// Marked asked now, so calls at once do not all ask.
    fn run_id_due(&self, slot: u16) -> bool {
        let mut owners = lock(&self.owners);
        match owners.get_mut(&slot) {
            Some(owner) if owner.asked.elapsed() < RUN_ID_EVERY => false,
            Some(owner) => {
                owner.asked = Instant::now();
                // Its answer tells the run, or that it cannot be told.
                owner.learning = None;
                true
            }
            None => true,
        }
    }

    /// Records that the node `ran` answered for `slot`. A slot that moves
    /// to another node (a failover, a resharding) or whose node restarted
    /// (its `run_id` changed) may have gone back in time, so a change
    /// starts a new epoch; the first answer for a slot does not.
    pub(super) fn answered(&self, slot: u16, ran: Ran) {
        let mut owners = lock(&self.owners);
        let moved = match owners.get_mut(&slot) {
            None => false,
            Some(owner) if owner.node != ran.node => true,
            Some(owner) => {
                let restarted =
                    matches!((&owner.run_id, &ran.run_id), (Some(a), Some(b)) if a != b);
                if !restarted {
                    if ran.run_id.is_some() {
                        owner.run_id = ran.run_id;
                    }
                    return;
                }
                true
            }
        };
        let mut left = Vec::new();
        if let Some(before) = owners.remove(&slot) {
            left = before.left;
            left.extend(before.run_id.as_deref().map(run_hash));
        }
        if moved {
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        // A new owner's `run_id` is asked for at its next answer.
        let (asked, learning) = match ran.run_id {
            Some(_) => (Instant::now(), None),
            None => (
                Instant::now() - RUN_ID_EVERY,
                Some(Instant::now() + RUN_ID_EVERY),
            ),
        };
        owners.insert(
            slot,
            Owner {
                node: ran.node,
                run_id: ran.run_id,
                asked,
                left,
                learning,
            },
        );
    }

    /// Records the server a new connection reached: its `run_id`, or
    /// `None` when it could not tell. Redis can go back in time (a restart
    /// from an older snapshot, a promoted replica that missed a write), and
    /// a restarted or different server has a new `run_id`, so a change
    /// starts a new epoch. An unknown identity cannot vouch for sameness,
    /// so after the first connection it starts a new epoch too.
    pub(super) fn met(&self, run_id: Option<String>) -> u64 {
        let mut server = lock(&self.last);
        let first = !server.met;
        let changed = !first && (run_id.is_none() || run_id != server.run_id);
        if changed {
            // Only a run known to differ is one left: an unknown answer (an
            // `INFO` that timed out) may well be the same run, and taking
            // it for another would leave this process on numbers of its
            // own once it is met again, unlike every other process.
            if let (Some(old), Some(_)) = (server.run_id.as_deref(), run_id.as_deref()) {
                let old = run_hash(old);
                server.left.insert(old);
            }
            self.epoch.fetch_add(1, Ordering::Relaxed);
        }
        if first || changed {
            let epoch = self.epoch();
            server.shown = match run_id.as_deref().map(run_hash) {
                Some(run) if !server.left.contains(&run) => run,
                _ => self.own(epoch),
            };
            self.current.write(epoch, server.shown);
        }
        if run_id.is_none() && !self.told_unknown.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "gensync could not learn the Redis server's run_id (INFO server denied or \
                 timed out; the ACL rule to add is +info): generations are shown as stored \
                 until this process reconnects, then as numbers of its own, and an ETag \
                 kept across a restore of an older snapshot may match again"
            );
        }
        server.met = true;
        server.run_id = run_id;
        self.epoch()
    }

    /// The `run_id` of the server the latest new connection reached, if it
    /// told.
    pub(super) fn run_id(&self) -> Option<String> {
        lock(&self.last).run_id.clone()
    }

    /// How many times a new connection reached a different server than the
    /// one before it (or one that could not tell): 0 until the first change.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }
}

/// A command as sent, and the Cluster slot whose owner its reply names.
pub(super) struct Outgoing<'a> {
    pub(super) cmd: std::borrow::Cow<'a, Cmd>,
    slot: Option<u16>,
}

/// `INFO server replication`, sent on every new connection for the
/// server's identity ([`identity_from_info`]).
pub(super) fn identity_cmd() -> Cmd {
    let mut cmd = redis::cmd("INFO");
    cmd.arg("server").arg("replication");
    cmd
}

/// The identity in a reply to [`identity_cmd`]; `None` for an error (an
/// ACL that denies `INFO`, a timeout) or a reply without a `run_id`.
pub(super) fn read_run_id(reply: Result<Value, RedisError>) -> Option<String> {
    let text: String = redis::from_redis_value(reply.ok()?).ok()?;
    identity_from_info(&text)
}

/// Which server, and which history of its data, an `INFO server
/// replication` text names: `<run_id>:<master_replid>`. A restart changes
/// the `run_id`; a promotion changes the replication id, which a server
/// keeps across a demotion and back otherwise (its `run_id` does not
/// change when it resyncs older data from the primary that replaced it).
/// Just the `run_id` where no replication id is given.
pub(crate) fn identity_from_info(text: &str) -> Option<String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let run_id = field("run_id:")?;
    Some(match field("master_replid:") {
        Some(replid) => format!("{run_id}:{replid}"),
        None => run_id.to_owned(),
    })
}

/// `node`, the id of the node running the script; a denial of `CLUSTER
/// MYID` names it, as the scripts name theirs (`scripts.rs`).
macro_rules! node_id {
    () => {
        concat!(
            "local node = redis.pcall('CLUSTER', 'MYID')\n\
             if type(node) == 'table' and node.err then\n\
               if ",
            denied_command!("node"),
            " then\n\
                 return {err = 'NOPERM this user has no permissions to run the \\'cluster|myid\\' command (inside a gensync script)'}\n\
               end\n\
               return node\n\
             end\n"
        )
    };
}

/// The wrapper that makes a script also return the id of the Cluster node
/// that ran it: `{id, result}`. `CLUSTER MYID` is allowed in scripts and
/// costs next to nothing. A node keeps its id across a restart (it is in
/// `nodes.conf`), so now and then the id is followed by the `run_id`,
/// which a restart changes: `INFO` in a script costs as much as the rest
/// of it four times over (80k against 315k `EVAL`/s on one core), too much
/// for every read.
const IDENTIFIED: (&str, &str) = (
    "local function gensync_body()\n",
    concat!("\nend\n", node_id!(), "return {node, gensync_body()}"),
);
const IDENTIFIED_RUN: (&str, &str) = (
    "local function gensync_body()\n",
    concat!(
        "\nend\n",
        node_id!(),
        // Without `+info` the sample is skipped: the node id still
        // answers, and the read still runs.
        "local info = redis.pcall('INFO', 'server', 'replication')\n\
         local run = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''\n\
         local repl = type(info) == 'string' and string.match(info, 'master_replid:(%x+)')\n\
         if run ~= '' and repl then run = run .. ':' .. repl end\n\
         return {node .. ' ' .. run, gensync_body()}"
    ),
);

/// The script whose arguments are `args` (see [`script_args`]) made to
/// report which node ran it and, if `run`, that node's `run_id`. A
/// shebang line (a script's flags) stays first.
fn identified(args: &[&[u8]], run: bool) -> Option<Cmd> {
    let source = std::str::from_utf8(args[1]).ok()?;
    let (shebang, body) = match source.strip_prefix("#!") {
        Some(_) => source.split_once('\n')?,
        None => ("", source),
    };
    let shebang = if shebang.is_empty() {
        String::new()
    } else {
        format!("{shebang}\n")
    };
    let (head, tail) = if run { IDENTIFIED_RUN } else { IDENTIFIED };
    let mut wrapped = redis::cmd("EVAL");
    wrapped.arg(format!("{shebang}{head}{body}{tail}"));
    for arg in &args[2..] {
        wrapped.arg(*arg);
    }
    Some(wrapped)
}

/// `GETRANGE key start end` as the same read in a script
/// ([`CLUSTER_GET_SCRIPT`]); `None` for any other command.
fn read_as_script(cmd: &Cmd) -> Option<Cmd> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => bytes,
        _ => b"",
    });
    if !args.next()?.eq_ignore_ascii_case(b"GETRANGE") {
        return None;
    }
    let mut script = redis::cmd("EVAL");
    script.arg(CLUSTER_GET_SCRIPT).arg(1);
    for arg in args {
        script.arg(arg);
    }
    Some(script)
}

/// The arguments of `cmd` if it is a script with at least one key:
/// `EVAL`, the source, the number of keys, the first key, the rest.
fn script_args(cmd: &Cmd) -> Option<Vec<&[u8]>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .map(|a| match a {
            redis::Arg::Simple(bytes) => bytes,
            _ => b"",
        })
        .collect();
    let is_script = args.first()?.eq_ignore_ascii_case(b"EVAL");
    (is_script && args.len() >= 4 && args[2] != b"0").then_some(args)
}

/// Who ran an [`identified`] script: the node's id, and its `run_id` when
/// asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Ran {
    pub(super) node: String,
    pub(super) run_id: Option<String>,
}

impl Ran {
    fn parse(text: String) -> Ran {
        match text.split_once(' ') {
            Some((node, run)) => Ran {
                node: node.to_owned(),
                run_id: (!run.is_empty()).then(|| run.to_owned()),
            },
            None => Ran {
                node: text,
                run_id: None,
            },
        }
    }
}

/// Splits the reply of an [`identified`] script into the node's id and the
/// script's own reply.
fn unwrap_identified(reply: Result<Value, RedisError>) -> (Option<Ran>, Result<Value, RedisError>) {
    match reply {
        Ok(Value::Array(mut items)) if !items.is_empty() => {
            let id = redis::from_redis_value::<String>(items.remove(0))
                .ok()
                .map(Ran::parse);
            let inner = items.into_iter().next().unwrap_or(Value::Nil);
            (id, inner.extract_error())
        }
        Ok(other) => (
            None,
            Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "a Cluster script did not return its node's id",
                format!("{other:?}"),
            ))),
        ),
        Err(e) => (None, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use redis::{ErrorKind, ServerErrorKind};

    use super::*;

    /// The identity `seen` shows `key` with, which it must know.
    fn settled(seen: &Identity, key: &[u8]) -> u64 {
        seen.shown(key)
            .1
            .expect("an identity, not one being learnt")
    }

    #[test]
    fn the_epoch_counts_changes_of_server_after_the_first() {
        let seen = Identity::new(false);
        let id = |s: &str| Some(s.to_owned());
        seen.met(id("a"));
        seen.met(id("a"));
        assert_eq!(seen.epoch(), 0);
        seen.met(id("b"));
        seen.met(id("b"));
        assert_eq!(seen.epoch(), 1);
        seen.met(None);
        seen.met(None);
        assert_eq!(seen.epoch(), 3);
        seen.met(id("b"));
        assert_eq!(seen.epoch(), 4);

        let unknown = Identity::new(false);
        unknown.met(None);
        assert_eq!(unknown.epoch(), 0, "the first connection is no change");
    }

    #[test]
    fn a_cluster_slot_moves_the_epoch_when_its_node_or_the_node_s_run_changes() {
        let seen = Identity::new(true);
        let ran = |node: &str, run: Option<&str>| Ran {
            node: node.to_owned(),
            run_id: run.map(str::to_owned),
        };
        seen.answered(7, ran("a", Some("r1")));
        seen.answered(8, ran("b", Some("r9")));
        seen.answered(7, ran("a", None));
        seen.answered(7, ran("a", Some("r1")));
        assert_eq!(seen.epoch(), 0, "first answers, then the same node");
        seen.answered(7, ran("a", Some("r2")));
        assert_eq!(seen.epoch(), 1, "restarted in place: same node id");
        seen.answered(7, ran("c", None));
        assert_eq!(seen.epoch(), 2, "another node");
        seen.answered(7, ran("c", Some("r3")));
        seen.answered(8, ran("b", None));
        assert_eq!(seen.epoch(), 2, "a first run_id for a node is no change");
    }

    #[test]
    fn one_run_shows_one_identity_in_every_process_and_a_restart_another() {
        let id = |s: &str| Some(s.to_owned());
        let key = b"gensync:k";
        let (early, late) = (Identity::new(false), Identity::new(false));
        early.met(id("a"));
        let a = settled(&early, key);
        early.met(id("b"));
        late.met(id("b"));
        let b = settled(&early, key);
        assert_ne!(a, b, "a restart shows other numbers");
        assert_ne!(a, 0);
        assert_eq!(settled(&late, key), b, "however long each has run");
        assert_eq!(early.shown(key), (1, Some(b)), "the epoch still counts");
        assert_eq!(run_hash("b"), b, "the same in every version");
    }

    #[test]
    fn a_run_left_and_met_again_or_unknown_shows_numbers_never_shown_before() {
        let id = |s: &str| Some(s.to_owned());
        let key = b"gensync:k";
        let seen = Identity::new(false);
        seen.met(None);
        assert_eq!(settled(&seen, key), 0, "unknown at first: as stored");
        let mut shown = vec![0];
        for next in [id("a"), id("b"), id("a"), None, None, id("b")] {
            seen.met(next);
            let now = settled(&seen, key);
            assert!(!shown.contains(&now), "{now} shown in an earlier epoch");
            shown.push(now);
        }
        // Another process, which met only "a", names it alike.
        let other = Identity::new(false);
        other.met(id("a"));
        assert_eq!(settled(&other, key), shown[1]);
        assert_ne!(shown[3], shown[1], "back to a run left: its own number");
    }

    #[test]
    fn a_run_met_again_after_an_unknown_answer_is_shown_as_every_process_shows_it() {
        let id = |s: &str| Some(s.to_owned());
        let key = b"gensync:k";
        let seen = Identity::new(false);
        seen.met(id("a"));
        let before = settled(&seen, key);
        // A reconnect whose `INFO` timed out: its own number (it may be
        // another server), then the same run again.
        seen.met(None);
        let unknown = settled(&seen, key);
        assert!(![0, before].contains(&unknown));
        seen.met(id("a"));
        assert_eq!(
            settled(&seen, key),
            before,
            "shown as every process shows it"
        );
        assert_eq!(seen.epoch(), 2, "each change still reads as expired once");
    }

    #[test]
    fn a_cluster_key_shows_its_slot_owner_s_run() {
        let ran = |node: &str, run: Option<&str>| Ran {
            node: node.to_owned(),
            run_id: run.map(str::to_owned),
        };
        let (k, other) = (b"{t}:k".as_slice(), b"{u}:k".as_slice());
        let (p, q) = (Identity::new(true), Identity::new(true));
        p.answered(slot(k), ran("n1", Some("r1")));
        p.answered(slot(other), ran("n2", Some("r2")));
        q.answered(slot(k), ran("n1", Some("r1")));
        assert_eq!(settled(&p, k), run_hash("r1"));
        assert_eq!(q.shown(k), p.shown(k));
        assert_eq!(settled(&p, other), run_hash("r2"));
        p.answered(slot(k), ran("n1", Some("r3")));
        assert_eq!(p.shown(k), (1, Some(run_hash("r3"))), "restarted in place");
        p.answered(slot(k), ran("n4", Some("r1")));
        assert_eq!(p.shown(k).0, 2);
        let back = settled(&p, k);
        assert!(
            ![0, run_hash("r1"), run_hash("r3")].contains(&back),
            "back to a run the slot left: a number of its own"
        );
        assert_eq!(
            settled(&p, other),
            run_hash("r2"),
            "other slots keep theirs"
        );
    }

    #[test]
    fn a_slot_s_new_node_is_read_again_until_its_run_is_asked() {
        let ran = |node: &str, run: Option<&str>| Ran {
            node: node.to_owned(),
            run_id: run.map(str::to_owned),
        };
        let k = b"{t}:k".as_slice();
        let seen = Identity::new(true);
        seen.answered(slot(k), ran("n1", Some("r1")));
        // The answer that named the new node did not ask for its run.
        seen.answered(slot(k), ran("n2", None));
        assert_eq!(seen.shown(k), (1, None), "read again");
        assert!(seen.run_id_due(slot(k)), "the next answer asks");
        assert!(seen.shown(k).1.is_some(), "asked: no longer waits");
        seen.answered(slot(k), ran("n2", Some("r2")));
        assert_eq!(seen.shown(k), (1, Some(run_hash("r2"))));
    }

    #[test]
    fn the_run_id_is_read_from_info_server() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:4f1c\r\ntcp_port:6379\r\n";
        let reply = Ok(Value::BulkString(info.as_bytes().to_vec()));
        assert_eq!(read_run_id(reply).as_deref(), Some("4f1c"));
        let denied = RedisError::from((ErrorKind::Server(ServerErrorKind::NoPerm), "denied"));
        assert_eq!(read_run_id(Err(denied)), None);
        assert_eq!(
            read_run_id(Ok(Value::BulkString(b"# Server".to_vec()))),
            None
        );
        // With the replication section: a promotion changes the identity
        // of a server whose run goes on.
        let with_repl = |replid: &str| {
            format!("{info}\r\n# Replication\r\nrole:master\r\nmaster_replid:{replid}\r\n")
        };
        assert_eq!(
            identity_from_info(&with_repl("9a")).as_deref(),
            Some("4f1c:9a")
        );
        assert_ne!(
            identity_from_info(&with_repl("9a")),
            identity_from_info(&with_repl("9b"))
        );
    }

    #[test]
    fn scripts_are_wrapped_to_report_their_node() {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg("return 1").arg(1).arg("gensync:k").arg("x");
        let parsed = script_args(&cmd).unwrap();
        let wrapped = identified(&parsed, false).unwrap();
        let args: Vec<Vec<u8>> = wrapped
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => b.to_vec(),
                _ => vec![],
            })
            .collect();
        assert!(String::from_utf8_lossy(&args[1]).contains("return 1"));
        assert_eq!(
            &args[2..],
            [b"1".to_vec(), b"gensync:k".to_vec(), b"x".to_vec()]
        );
        assert!(script_args(&redis::cmd("PING")).is_none());
        let mut no_keys = redis::cmd("EVAL");
        no_keys.arg("return 1").arg(0);
        assert!(script_args(&no_keys).is_none());
        let with_run = identified(&parsed, true).unwrap();
        let sent = Identity::new(true).outgoing(&cmd);
        assert_eq!(sent.slot, Some(slot(b"gensync:k")));
        assert!(Identity::new(false).outgoing(&cmd).slot.is_none());
        let source = with_run.args_iter().nth(1).map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            _ => String::new(),
        });
        assert!(source.unwrap().contains("run_id"));

        let reply = Value::Array(vec![Value::BulkString(b"abc".to_vec()), Value::Int(7)]);
        let (id, inner) = unwrap_identified(Ok(reply));
        let ran = |run: Option<&str>| Ran {
            node: "abc".into(),
            run_id: run.map(str::to_owned),
        };
        assert_eq!((id, inner.unwrap()), (Some(ran(None)), Value::Int(7)));
        let reply = Value::Array(vec![Value::BulkString(b"abc 4f1c".to_vec())]);
        assert_eq!(unwrap_identified(Ok(reply)).0, Some(ran(Some("4f1c"))));
        let nil = Value::Array(vec![Value::BulkString(b"abc".to_vec())]);
        assert_eq!(unwrap_identified(Ok(nil)).1.unwrap(), Value::Nil);
    }
}
