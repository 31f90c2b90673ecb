//! Where a tracking session runs and how its heartbeat proves it still
//! runs there: on one server; on the primary the sentinels name, which
//! must still say it is one (`ROLE`); in a Cluster, on the node that owns
//! the slot of what it tracks, which answers `MOVED` once it does not.
//!
//! A session that tracks one key also reads the key with every heartbeat
//! and compares it with what it vouches for. Some changes reach the key
//! with no invalidation: `SWAPDB`, a replica's load into a swapped
//! database, or a key past its time to live that the server has not got
//! round to expiring (on a server with many keys to expire that can take
//! seconds; reading it expires it). The read catches them within the
//! heartbeat bound, and it is a read only, so it passes a write pause and
//! needs no more than a reader's permissions.

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, Pipeline, RedisError, Value};

use super::fed::Fed;
use crate::backend::redis::commands::Op;
use crate::backend::redis::deployment::{is_primary, slot, Deployment};
use crate::backend::redis::target::Target;
use crate::backend::Stored;

/// In a Cluster, the one slot everything `fed` tracks lives on: tracking
/// sees only the writes of the node it runs on. A set whose prefixes
/// carry no common hash tag cannot be tracked there; its readers read.
pub(super) fn place(target: &Target, fed: &Fed) -> Result<Option<u16>, RedisError> {
    if !target.is_cluster() {
        return Ok(None);
    }
    let slots: Vec<Option<u16>> = fed
        .prefixes()
        .iter()
        .map(|p| match fed {
            Fed::Key { .. } => Some(slot(p.as_bytes())),
            // A prefix's keys share a slot only through its hash tag; a
            // parent is one exact key.
            Fed::Set { .. } => {
                tagged_slot(p).or_else(|| fed.is_parent(p).then(|| slot(p.as_bytes())))
            }
        })
        .collect();
    match slots.first() {
        Some(Some(first)) if slots.iter().all(|s| *s == Some(*first)) => Ok(Some(*first)),
        _ => Err(RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::CrossSlot),
            "CROSSSLOT",
            "the tracked prefixes do not share one Cluster slot (a set's keys need one hash tag)"
                .to_owned(),
        ))),
    }
}

/// The slot of a prefix that starts with a complete hash tag, whose keys
/// all share it.
fn tagged_slot(prefix: &str) -> Option<u16> {
    let close = prefix.strip_prefix('{')?.find('}')?;
    (close > 0).then(|| slot(prefix.as_bytes()))
}

/// The heartbeat of a session: one round trip, built once.
pub(super) struct Heartbeat {
    pipe: Pipeline,
    /// Whether the first reply is `ROLE`'s.
    role: bool,
    /// The reader of the compared key's value (see [`Fed::compared`]).
    read: Option<ReadStored>,
}

type ReadStored = fn(Result<Value, RedisError>) -> Result<Stored, RedisError>;

impl Heartbeat {
    /// What the heartbeat sends: `ROLE` first to a Sentinel primary, which
    /// must still be one (a demoted primary keeps answering, but the
    /// writes go elsewhere); then a read of the key it compares (one key,
    /// or a set's first parent), which in a Cluster is answered `MOVED`
    /// once the node no longer owns its slot; for a set without parents,
    /// `PING` to one server and, in a Cluster, `EXISTS` of its first
    /// prefix, for the same `MOVED`.
    pub(super) fn new(target: &Target, fed: &Fed) -> Self {
        let mut pipe = redis::pipe();
        // Each reply is read on its own: a read's `WRONGTYPE` is a
        // corrupt value, not a lost session.
        pipe.ignore_errors();
        let role = matches!(target.deployment, Deployment::Sentinel(_));
        if role {
            pipe.cmd("ROLE");
        }
        let mut read = None;
        match fed.compared() {
            Some(key) => {
                let get = Op::get(&key);
                pipe.add_command(get.cmd);
                read = Some(get.read);
            }
            None => match &target.deployment {
                Deployment::Single(_) => {
                    pipe.cmd("PING");
                }
                Deployment::Sentinel(_) => {}
                Deployment::Cluster(_) => {
                    pipe.cmd("EXISTS")
                        .arg(fed.prefixes().first().copied().unwrap_or_default());
                }
            },
        }
        Heartbeat { pipe, role, read }
    }

    /// Sends the heartbeat, with `extra` commands after it in the same
    /// round trip, and reads its replies: what the compared key holds now
    /// (if any), and the replies to `extra`; or an error, an error reply
    /// to `extra` included.
    pub(super) async fn send(
        &self,
        conn: &mut MultiplexedConnection,
        extra: impl Iterator<Item = redis::Cmd>,
    ) -> Result<(Option<Stored>, Vec<Value>), RedisError> {
        let mut pipe = None;
        for cmd in extra {
            pipe.get_or_insert_with(|| self.pipe.clone())
                .add_command(cmd);
        }
        let mut replies = pipe
            .as_ref()
            .unwrap_or(&self.pipe)
            .query_async::<Vec<Value>>(conn)
            .await?;
        let rest = replies.split_off(self.pipe.len().min(replies.len()));
        let rest = rest
            .into_iter()
            .map(Value::extract_error)
            .collect::<Result<_, _>>()?;
        Ok((self.answered(replies)?, rest))
    }

    /// Reads a heartbeat's own replies: an error if they say the
    /// connection no longer reaches the node the writes go to, or the read
    /// failed.
    fn answered(&self, replies: Vec<Value>) -> Result<Option<Stored>, RedisError> {
        let mut replies = replies.into_iter();
        if self.role && !is_primary(replies.next().unwrap_or(Value::Nil).extract_error()?) {
            return Err(RedisError::from((
                ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                "READONLY",
                "the tracked server is no longer the primary".to_owned(),
            )));
        }
        let last = replies.next().map(Value::extract_error);
        match (self.read, last) {
            (Some(read), Some(reply)) => read(reply).map(Some),
            (Some(_), None) => Err(RedisError::from((
                ErrorKind::Client,
                "a heartbeat answered without the key's value",
            ))),
            (None, reply) => reply.transpose().map(|_| None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::redis::RedisConfig;
    use crate::key::Key;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A primary demoted by hand (`REPLICAOF`) keeps its clients, and
    /// tracking there would hear of the new primary's writes only through
    /// replication, late: the Sentinel heartbeat reads `ROLE` and ends it.
    #[test]
    fn a_sentinel_heartbeat_answered_by_a_replica_ends_the_session() {
        let sentinel =
            Target::open("redis+sentinel://127.0.0.1:1/m", RedisConfig::default()).unwrap();
        let primary = Value::Array(vec![bulk("master"), Value::Int(10), Value::Array(vec![])]);
        let replica = Value::Array(vec![
            bulk("slave"),
            bulk("127.0.0.1"),
            Value::Int(6379),
            bulk("connected"),
            Value::Int(10),
        ]);
        let tenants = crate::backend::TrackerSet::new(vec!["gensync:t:".into()], vec![]);
        let set = Fed::set(&tenants);
        let beat = Heartbeat::new(&sentinel, &set);
        assert!(beat.answered(vec![primary.clone()]).is_ok());
        assert!(beat.answered(vec![replica.clone()]).is_err());
        // One server's heartbeat is a PING, whatever it answers.
        let single = Target::open("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        let beat = Heartbeat::new(&single, &set);
        assert!(beat.answered(vec![replica.clone()]).is_ok());

        // One key's heartbeat reads it too, after the role.
        let tracker = crate::backend::Tracker::new();
        let key = Fed::Key {
            key: Key::parse("site:settings").unwrap(),
            tracker: Arc::downgrade(&tracker),
        };
        let beat = Heartbeat::new(&sentinel, &key);
        let five = Stored::Value(crate::generation::Generation::new(5).unwrap());
        assert_eq!(beat.answered(vec![primary, bulk("5")]).unwrap(), Some(five));
        assert!(beat.answered(vec![replica, bulk("5")]).is_err());
    }

    /// A key's heartbeat is the key's read: what it holds, compared with
    /// what the session vouches for, and a refusal of the read is the
    /// session's end, not a value.
    #[test]
    fn a_key_heartbeat_reads_the_key() {
        let single = Target::open("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        let tracker = crate::backend::Tracker::new();
        let key = Fed::Key {
            key: Key::parse("site:settings").unwrap(),
            tracker: Arc::downgrade(&tracker),
        };
        let beat = Heartbeat::new(&single, &key);
        assert_eq!(beat.pipe.len(), 1, "one command per beat");
        assert_eq!(
            beat.answered(vec![Value::Nil]).unwrap(),
            Some(Stored::Missing)
        );
        let denied = redis::parse_redis_value(b"-NOPERM no permission\r\n").unwrap();
        assert!(matches!(denied, Value::ServerError(_)));
        assert!(beat.answered(vec![denied]).is_err());
        assert!(beat.answered(vec![]).is_err(), "no reply is no value");
    }

    /// In a Cluster the heartbeat reads the tracked slot, so a node that
    /// lost it answers `MOVED`; a set tracks only prefixes sharing one
    /// hash tag there.
    #[test]
    fn a_cluster_session_is_placed_on_the_slot_of_what_it_tracks() {
        let cluster = Target::open("redis+cluster://127.0.0.1:1", RedisConfig::default()).unwrap();
        let key = Key::parse("site:settings").unwrap();
        let tracker = crate::backend::Tracker::new();
        let fed = Fed::Key {
            key: key.clone(),
            tracker: Arc::downgrade(&tracker),
        };
        assert_eq!(
            place(&cluster, &fed).unwrap(),
            Some(slot(key.as_str().as_bytes()))
        );
        let probe = Heartbeat::new(&cluster, &fed);
        let sent: Vec<_> = probe.pipe.cmd_iter().collect();
        assert_eq!(sent.len(), 1, "one command per beat");
        assert!(
            sent[0]
                .args_iter()
                .any(|a| matches!(a, redis::Arg::Simple(k) if k == key.as_str().as_bytes())),
            "a read of the key, so a node without the slot answers MOVED"
        );

        let tenants = Key::parse("tenants").unwrap();
        let set = crate::backend::TrackerSet::new(
            vec![tenants.member_prefix()],
            vec![tenants.as_str().to_owned()],
        );
        let fed = Fed::set(&set);
        assert_eq!(
            place(&cluster, &fed).unwrap(),
            Some(slot(tenants.as_str().as_bytes()))
        );
        let untagged = crate::backend::TrackerSet::new(vec!["gensync:a:".into()], vec![]);
        let fed = Fed::set(&untagged);
        assert!(place(&cluster, &fed).is_err(), "no one slot to track on");
        let single = Target::open("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        assert_eq!(place(&single, &fed).unwrap(), None);
    }
}
