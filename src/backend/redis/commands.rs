//! The commands both paths send, and how their replies are read: each
//! [`Op`] pairs a command with the reader of its reply, once, so the async
//! and blocking backends cannot differ in what they store or report.

use std::time::Duration;

use redis::{Cmd, RedisError, Value};

use crate::backend::Stored;
use crate::generation::Generation;
use crate::key::Key;

/// Bumps a valid generation and resets its time to live, in one atomic step.
/// Replies -1 for a missing key and -2 for a corrupt one (wrong type, not a
/// positive integer, or at the top of the range), leaving both alone. The
/// new value is read back as a string: Lua numbers are doubles and would
/// round a 63-bit generation.
const INCR_SCRIPT: &str = r"
local v = redis.pcall('GET', KEYS[1])
if v == false then return -1 end
if type(v) ~= 'string' or not string.match(v, '^[1-9]%d*$') then return -2 end
local n = redis.pcall('INCR', KEYS[1])
if type(n) ~= 'number' then return -2 end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return redis.call('GET', KEYS[1])
";

/// Deletes a key only while it holds the caller's token.
const DELETE_IF_SCRIPT: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// One backend operation: the command to send and the reader of its reply.
/// Each path only runs it, on a connection of its own kind.
pub(super) struct Op<T> {
    pub(super) cmd: Cmd,
    pub(super) read: fn(Result<Value, RedisError>) -> Result<T, RedisError>,
}

impl Op<Stored> {
    /// [`Backend::get`](crate::backend::Backend::get).
    pub(super) fn get(key: &Key) -> Self {
        Op {
            cmd: get_cmd(key),
            read: read_get,
        }
    }

    /// [`Backend::incr`](crate::backend::Backend::incr).
    pub(super) fn incr(key: &Key, ttl: Duration) -> Self {
        Op {
            cmd: incr_cmd(key, ttl),
            read: read_incr,
        }
    }
}

impl Op<bool> {
    /// [`Backend::add`](crate::backend::Backend::add).
    pub(super) fn add(key: &Key, generation: Generation, ttl: Duration) -> Self {
        Op {
            cmd: add_cmd(key, generation, ttl),
            read: read_add,
        }
    }

    /// [`Backend::expire`](crate::backend::Backend::expire).
    pub(super) fn expire(key: &Key, ttl: Duration) -> Self {
        Op {
            cmd: expire_cmd(key, ttl),
            read: read_flag,
        }
    }

    /// [`Backend::delete_if`](crate::backend::Backend::delete_if).
    pub(super) fn delete_if(key: &Key, expected: Generation) -> Self {
        Op {
            cmd: delete_if_cmd(key, expected),
            read: read_flag,
        }
    }
}

impl Op<()> {
    /// [`Backend::delete`](crate::backend::Backend::delete).
    pub(super) fn delete(key: &Key) -> Self {
        Op {
            cmd: delete_cmd(key),
            read: read_delete,
        }
    }

    /// `PING`, for the backends' start-up checks.
    pub(super) fn ping() -> Self {
        Op {
            cmd: redis::cmd("PING"),
            read: |reply| reply.map(drop),
        }
    }
}

// The six commands, built once for both paths.

fn get_cmd(key: &Key) -> Cmd {
    let mut cmd = redis::cmd("GET");
    cmd.arg(key.as_str());
    cmd
}

fn add_cmd(key: &Key, generation: Generation, ttl: Duration) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(key.as_str())
        .arg(generation.get())
        .arg("NX")
        .arg("PX")
        .arg(ttl_millis(ttl));
    cmd
}

fn incr_cmd(key: &Key, ttl: Duration) -> Cmd {
    eval_cmd(INCR_SCRIPT, key, ttl_millis(ttl))
}

fn delete_cmd(key: &Key) -> Cmd {
    let mut cmd = redis::cmd("DEL");
    cmd.arg(key.as_str());
    cmd
}

fn expire_cmd(key: &Key, ttl: Duration) -> Cmd {
    let mut cmd = redis::cmd("PEXPIRE");
    cmd.arg(key.as_str()).arg(ttl_millis(ttl));
    cmd
}

fn delete_if_cmd(key: &Key, expected: Generation) -> Cmd {
    eval_cmd(DELETE_IF_SCRIPT, key, expected.get())
}

/// `EVAL script 1 key arg`: one key, one numeric argument.
fn eval_cmd(script: &str, key: &Key, arg: u64) -> Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(1).arg(key.as_str()).arg(arg);
    cmd
}

fn ttl_millis(ttl: Duration) -> u64 {
    // PX 0 is an error in Redis; a sub-millisecond TTL rounds up.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

// Their replies, read once for both paths.

fn stored_from_bytes(raw: &[u8]) -> Stored {
    Generation::parse_stored(raw).map_or(Stored::Corrupt, Stored::Value)
}

fn read_get(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    match reply {
        Ok(Value::Nil) => Ok(Stored::Missing),
        Ok(Value::BulkString(raw)) => Ok(stored_from_bytes(&raw)),
        Ok(Value::SimpleString(s)) => Ok(stored_from_bytes(s.as_bytes())),
        Ok(_) => Ok(Stored::Corrupt),
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(Stored::Corrupt),
        Err(e) => Err(e),
    }
}

fn read_add(reply: Result<Value, RedisError>) -> Result<bool, RedisError> {
    Ok(!matches!(reply?, Value::Nil))
}

fn read_incr(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    Ok(match reply? {
        Value::Int(-1) => Stored::Missing,
        Value::BulkString(raw) => stored_from_bytes(&raw),
        _ => Stored::Corrupt,
    })
}

fn read_delete(reply: Result<Value, RedisError>) -> Result<(), RedisError> {
    reply.map(drop)
}

/// PEXPIRE and the delete-if script both reply 1 when they acted.
fn read_flag(reply: Result<Value, RedisError>) -> Result<bool, RedisError> {
    Ok(matches!(reply?, Value::Int(1)))
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
        assert_eq!(read_incr(Ok(Value::Int(-1))).unwrap(), Stored::Missing);
        assert_eq!(read_incr(Ok(Value::Int(-2))).unwrap(), Stored::Corrupt);
        assert!(read_add(Ok(Value::Okay)).unwrap());
        assert!(!read_add(Ok(Value::Nil)).unwrap());
    }
}
