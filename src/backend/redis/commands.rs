//! The commands both paths send, and how their replies are read: each
//! [`Op`] pairs a command with the reader of its reply, once, so the async
//! and blocking backends cannot differ in what they store or report.

use std::time::Duration;

use redis::{Cmd, RedisError, Value};

use crate::backend::Stored;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

use super::scripts::{
    ADD_SCRIPT, GET_MANY_SCRIPT, GET_WITH_PARENT_SCRIPT, INCR_SCRIPT, INTEND_SCRIPT, LOCK_SCRIPT,
    LONGEST_GENERATION, RENEW_SCRIPT, UNLOCK_SCRIPT,
};

/// One backend operation: the command to send and the reader of its reply.
/// Each path only runs it, on a connection of its own kind.
pub(super) struct Op<T> {
    pub(super) cmd: Cmd,
    pub(super) read: fn(Result<Value, RedisError>) -> Result<T, RedisError>,
}

impl Op<Stored> {
    /// [`Backend::get`](crate::backend::Backend::get): `GETRANGE key 0
    /// 19`, a read-only command (it passes `CLIENT PAUSE WRITE` and needs
    /// no scripting permission) that sends at most one byte more than the
    /// longest generation, so a value of megabytes never crosses the wire.
    pub(super) fn get(key: &Key) -> Self {
        let mut cmd = redis::cmd("GETRANGE");
        cmd.arg(key.as_str()).arg(0).arg(LONGEST_GENERATION);
        Op {
            cmd,
            read: read_get,
        }
    }

    /// [`Backend::incr`](crate::backend::Backend::incr).
    pub(super) fn incr(key: &Key, step: u64, ttl: Duration, finished: Option<Generation>) -> Self {
        let finished = finished.map_or(String::new(), |g| g.to_string());
        Op {
            cmd: script(
                INCR_SCRIPT,
                &[key, &key.companion("intents")],
                &[step.to_string(), millis(ttl), finished],
            ),
            read: read_incr,
        }
    }
}

impl Op<(Stored, Stored)> {
    /// [`Backend::get_with_parent`](crate::backend::Backend::get_with_parent).
    pub(super) fn get_with_parent(key: &Key, parent: &Key) -> Self {
        Op {
            cmd: script(
                GET_WITH_PARENT_SCRIPT,
                &[key, parent],
                &[LONGEST_GENERATION.to_string()],
            ),
            read: read_get_pair,
        }
    }
}

impl Op<Vec<Stored>> {
    /// [`Backend::get_many`](crate::backend::Backend::get_many) of keys
    /// on one Cluster slot (any keys elsewhere): the bounded read script
    /// of `many.rs`, one command for them all.
    pub(super) fn get_many(keys: &[&Key]) -> Self {
        Op {
            cmd: script(GET_MANY_SCRIPT, keys, &[LONGEST_GENERATION.to_string()]),
            read: read_get_many,
        }
    }
}

impl Op<bool> {
    /// [`Backend::add`](crate::backend::Backend::add).
    pub(super) fn add(key: &Key, generation: Generation, ttl: Duration) -> Self {
        Op {
            cmd: script(
                ADD_SCRIPT,
                &[key, &key.companion("intents")],
                &[generation.to_string(), millis(ttl)],
            ),
            read: read_flag,
        }
    }

    /// [`Backend::renew`](crate::backend::Backend::renew).
    pub(super) fn renew(key: &Key, token: Generation, ttl: Duration, key_ttl: Duration) -> Self {
        Op {
            cmd: script(
                RENEW_SCRIPT,
                &[&key.companion("lock"), key, &key.companion("intents")],
                &[token.to_string(), millis(ttl), millis(key_ttl)],
            ),
            read: read_flag,
        }
    }

    /// [`Backend::unlock`](crate::backend::Backend::unlock).
    pub(super) fn unlock(key: &Key, token: Generation) -> Self {
        Op {
            cmd: script(
                UNLOCK_SCRIPT,
                &[&key.companion("lock"), &key.companion("released")],
                &[token.to_string()],
            ),
            read: read_flag,
        }
    }

    /// [`Backend::intend`](crate::backend::Backend::intend).
    pub(super) fn intend(key: &Key, token: Generation, ttl: Duration, key_ttl: Duration) -> Self {
        Op {
            cmd: script(
                INTEND_SCRIPT,
                &[key, &key.companion("intents")],
                &[token.to_string(), millis(ttl), millis(key_ttl)],
            ),
            read: read_flag,
        }
    }
}

impl Op<Taken> {
    /// [`Backend::lock`](crate::backend::Backend::lock).
    pub(super) fn lock(key: &Key, token: Generation, ttl: Duration) -> Self {
        Op {
            cmd: script(
                LOCK_SCRIPT,
                &[&key.companion("lock"), &key.companion("fence")],
                &[token.to_string(), millis(ttl)],
            ),
            read: read_taken,
        }
    }
}

/// The reply to [`Op::lock`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Taken {
    /// The lease's fencing token, or `None` while another writer holds it.
    fence: Option<Fence>,
    /// Whether a lease no writer could have left was taken over.
    repaired: bool,
}

impl Taken {
    /// The fence, saying so when a stray lease at `key`'s lock was
    /// replaced: someone should find the client that wrote it.
    pub(super) fn fence(self, key: &Key) -> Option<Fence> {
        if self.repaired {
            tracing::warn!(
                key = %key,
                lock = %key.companion("lock"),
                "gensync took over a writers' lease that had no time to live or was not a \
                 string: no gensync writer leaves one, so another client wrote it"
            );
        }
        self.fence
    }
}

impl Op<bool> {
    /// Deletes the writers' lease beside `key`, whoever holds it.
    pub(super) fn break_lock(key: &Key) -> Self {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key.companion("lock").as_str());
        Op {
            cmd,
            read: read_flag,
        }
    }
}

impl Op<()> {
    /// [`Backend::delete`](crate::backend::Backend::delete).
    pub(super) fn delete(key: &Key) -> Self {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(key.as_str());
        Op {
            cmd,
            read: read_done,
        }
    }

    /// `PING`, for the backends' start-up checks.
    pub(super) fn ping() -> Self {
        Op {
            cmd: redis::cmd("PING"),
            read: read_done,
        }
    }
}

/// `EVAL script numkeys keys... args...`.
fn script(source: &str, keys: &[&Key], args: &[String]) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(source).arg(keys.len());
    for key in keys {
        cmd.arg(key.as_str());
    }
    for arg in args {
        cmd.arg(arg.as_str());
    }
    cmd
}

fn millis(ttl: Duration) -> String {
    // PX 0 is an error in Redis; a sub-millisecond TTL rounds up.
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
        .to_string()
}

// Their replies, read once for both paths.

fn stored_from_bytes(raw: &[u8]) -> Stored {
    Generation::parse_stored(raw).map_or(Stored::Corrupt, Stored::Value)
}

/// Reads what `GETRANGE` or a read script replied. `GETRANGE` answers an
/// empty string for a missing key, and no gensync client stores an empty
/// one, so it reads as missing (the next create replaces it).
fn read_get(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    match reply {
        Ok(Value::Nil) => Ok(Stored::Missing),
        Ok(Value::BulkString(raw)) if raw.is_empty() => Ok(Stored::Missing),
        Ok(Value::BulkString(raw)) if raw.len() > LONGEST_GENERATION => Ok(Stored::Corrupt),
        Ok(Value::BulkString(raw)) => Ok(stored_from_bytes(&raw)),
        Ok(Value::SimpleString(s)) => Ok(stored_from_bytes(s.as_bytes())),
        // The pair script's -2: too long, empty, or not a string.
        Ok(Value::Int(-2)) => Ok(Stored::Corrupt),
        Ok(_) => Err(unexpected("an unexpected reply to a read")),
        // Read and found to be another type: the one error that is about
        // the value. Any other (a denial, a timeout) is the server's.
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(Stored::Corrupt),
        Err(e) => Err(e),
    }
}

fn read_get_pair(reply: Result<Value, RedisError>) -> Result<(Stored, Stored), RedisError> {
    match reply? {
        Value::Array(pair) => match <[Value; 2]>::try_from(pair) {
            Ok([own, parent]) => Ok((read_get(Ok(own))?, read_get(Ok(parent))?)),
            Err(_) => Err(unexpected("an unexpected reply to the read of a pair")),
        },
        _ => Err(unexpected("an unexpected reply to the read of a pair")),
    }
}

/// One reply per key, each read as [`read_get`] reads one.
fn read_get_many(reply: Result<Value, RedisError>) -> Result<Vec<Stored>, RedisError> {
    match reply? {
        Value::Array(replies) => replies.into_iter().map(|r| read_get(Ok(r))).collect(),
        _ => Err(unexpected("an unexpected reply to the read of many keys")),
    }
}

fn read_incr(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    Ok(match reply? {
        Value::Int(-1) => Stored::Missing,
        Value::Int(-2) => Stored::Corrupt,
        Value::BulkString(raw) => stored_from_bytes(&raw),
        _ => return Err(unexpected("an unexpected reply to a bump")),
    })
}

/// A command whose reply only says it was done.
fn read_done(reply: Result<Value, RedisError>) -> Result<(), RedisError> {
    reply.map(drop)
}

/// The scripts reply 1 when they acted.
fn read_flag(reply: Result<Value, RedisError>) -> Result<bool, RedisError> {
    Ok(matches!(reply?, Value::Int(1)))
}

fn read_taken(reply: Result<Value, RedisError>) -> Result<Taken, RedisError> {
    let (raw, repaired) = match reply? {
        Value::Nil => {
            return Ok(Taken {
                fence: None,
                repaired: false,
            })
        }
        Value::Array(parts) => match parts.as_slice() {
            [Value::BulkString(raw), Value::Int(repaired)] => (raw.clone(), *repaired == 1),
            _ => return Err(unexpected("an unexpected reply to the lease script")),
        },
        _ => return Err(unexpected("an unexpected reply to the lease script")),
    };
    let fence = std::str::from_utf8(&raw)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| unexpected("a fencing token that is not a number"))?;
    Ok(Taken {
        fence: Some(Fence::new(fence)),
        repaired,
    })
}

fn unexpected(what: &'static str) -> RedisError {
    RedisError::from((redis::ErrorKind::UnexpectedReturnType, what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_the_same_way_for_both_paths() {
        assert_eq!(read_get(Ok(Value::Nil)).unwrap(), Stored::Missing);
        assert_eq!(
            read_get(Ok(Value::BulkString(b"4294967297".to_vec()))).unwrap(),
            Stored::Value(Generation::new(4294967297).unwrap())
        );
        assert_eq!(
            read_get(Ok(Value::BulkString(b"x".to_vec()))).unwrap(),
            Stored::Corrupt
        );
        assert_eq!(read_get(Ok(Value::Int(-2))).unwrap(), Stored::Corrupt);
        assert_eq!(
            read_get(Ok(Value::BulkString(Vec::new()))).unwrap(),
            Stored::Missing
        );
        assert_eq!(
            read_get(Ok(Value::BulkString(b"12345678901234567890".to_vec()))).unwrap(),
            Stored::Corrupt,
            "a 20th byte is no generation"
        );
        let denied = RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm),
            "denied",
        ));
        assert!(
            read_get(Err(denied)).is_err(),
            "a denial is an error, never a corrupt value to repair"
        );
        assert_eq!(
            i64::MAX.to_string().len(),
            LONGEST_GENERATION,
            "the bound admits every generation and nothing longer"
        );
        assert_eq!(
            read_get_many(Ok(Value::Array(vec![
                Value::BulkString(b"4294967297".to_vec()),
                Value::Nil,
                Value::Int(-2),
            ])))
            .unwrap(),
            [
                Stored::Value(Generation::new(4294967297).unwrap()),
                Stored::Missing,
                Stored::Corrupt
            ],
            "each key's reply read as its own read's"
        );
        assert!(read_get_many(Ok(Value::Int(1))).is_err());
        assert_eq!(read_incr(Ok(Value::Int(-1))).unwrap(), Stored::Missing);
        assert_eq!(read_incr(Ok(Value::Int(-2))).unwrap(), Stored::Corrupt);
        assert!(read_flag(Ok(Value::Int(1))).unwrap());
        assert!(!read_flag(Ok(Value::Int(0))).unwrap());
        assert_eq!(read_taken(Ok(Value::Nil)).unwrap().fence, None);
        let taken = |repaired| {
            read_taken(Ok(Value::Array(vec![
                Value::BulkString(b"1733000000000001".to_vec()),
                Value::Int(repaired),
            ])))
            .unwrap()
        };
        assert_eq!(
            taken(0),
            Taken {
                fence: Some(Fence::new(1733000000000001)),
                repaired: false
            }
        );
        assert!(taken(1).repaired);
    }
}
