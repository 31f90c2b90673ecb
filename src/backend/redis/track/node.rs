//! Where a tracking session runs and how its heartbeat proves it still
//! runs there: on one server; on the primary the sentinels name, which
//! must still say it is one (`ROLE`); in a Cluster, on the node that owns
//! the slot of what it tracks, which answers `MOVED` once it does not.

use redis::{ErrorKind, RedisError, Value};

use super::super::deployment::{is_primary, slot, Deployment};
use super::super::target::Target;
use super::fed::Fed;

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

/// What the heartbeat sends: `PING` to one server; `ROLE` to a Sentinel
/// primary, which must still be one (a demoted primary keeps answering,
/// but the writes go elsewhere); in a Cluster, a read of a key on the
/// tracked slot, answered `MOVED` once the node no longer owns it.
pub(super) fn heartbeat(target: &Target, fed: &Fed) -> redis::Cmd {
    match &target.deployment {
        Deployment::Single(_) => redis::cmd("PING"),
        Deployment::Sentinel(_) => redis::cmd("ROLE"),
        Deployment::Cluster(_) => {
            let mut cmd = redis::cmd("EXISTS");
            cmd.arg(fed.prefixes().first().copied().unwrap_or_default());
            cmd
        }
    }
}

/// Reads a heartbeat's reply: an error if it says the connection no
/// longer reaches the node the writes go to.
pub(super) fn heartbeat_answered(target: &Target, reply: Value) -> Result<(), RedisError> {
    if matches!(target.deployment, Deployment::Sentinel(_)) && !is_primary(reply) {
        return Err(RedisError::from((
            ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
            "READONLY",
            "the tracked server is no longer the primary".to_owned(),
        )));
    }
    Ok(())
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
        assert!(heartbeat_answered(&sentinel, primary).is_ok());
        assert!(heartbeat_answered(&sentinel, replica.clone()).is_err());
        // One server's heartbeat is a PING, whatever it answers.
        let single = Target::open("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        assert!(heartbeat_answered(&single, replica).is_ok());
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
        let probe = heartbeat(&cluster, &fed);
        assert_eq!(
            probe.args_iter().count(),
            2,
            "EXISTS and the key, so a node without the slot answers MOVED"
        );

        let tenants = Key::parse("tenants").unwrap();
        let set = crate::backend::TrackerSet::new(
            vec![tenants.member_prefix()],
            vec![tenants.as_str().to_owned()],
        );
        let fed = Fed::Set {
            prefixes: set.subscriptions().to_vec(),
            set: Arc::downgrade(&set),
        };
        assert_eq!(
            place(&cluster, &fed).unwrap(),
            Some(slot(tenants.as_str().as_bytes()))
        );
        let untagged = crate::backend::TrackerSet::new(vec!["gensync:a:".into()], vec![]);
        let fed = Fed::Set {
            prefixes: untagged.subscriptions().to_vec(),
            set: Arc::downgrade(&untagged),
        };
        assert!(place(&cluster, &fed).is_err(), "no one slot to track on");
        let single = Target::open("redis://127.0.0.1:1", RedisConfig::default()).unwrap();
        assert_eq!(place(&single, &fed).unwrap(), None);
    }
}
