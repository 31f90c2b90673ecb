//! The commands both paths send, and how their replies are read: each
//! [`Op`] pairs a command with the reader of its reply, once, so the async
//! and blocking backends cannot differ in what they store or report.

use std::time::Duration;

use redis::{Cmd, RedisError, Value};

use crate::backend::Stored;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

/// What the scripts share: the server's clock, `zset_or_none`, which
/// deletes an intents key of another type than a sorted set (another
/// client wrote it; left alone it would fail every write), and `settle`,
/// which gives the generation its full time to live or, while writers'
/// intents are pending, no more than until the earliest one lapses (lapsed
/// intents are dropped on the way). Scores and lapses are milliseconds of the server's
/// clock, so every client agrees on them.
macro_rules! prelude {
    () => {
        r"
if redis.replicate_commands then redis.replicate_commands() end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function zset_or_none(k)
  local t = redis.call('TYPE', k)['ok']
  if t ~= 'zset' and t ~= 'none' then redis.call('DEL', k) end
end
local function settle(gen, intents, now, full)
  zset_or_none(intents)
  redis.call('ZREMRANGEBYSCORE', intents, '-inf', now)
  local ttl = full
  local first = redis.call('ZRANGE', intents, 0, 0, 'WITHSCORES')
  if first[2] then
    local left = tonumber(first[2]) - now
    if left < ttl then ttl = left end
    local last = redis.call('ZRANGE', intents, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', intents, last[2])
  end
  if ttl < 1 then ttl = 1 end
  redis.call('PEXPIRE', gen, string.format('%.0f', ttl))
end
"
    };
}

/// The longest value a read of the generation accepts: `i64::MAX` has 19
/// digits, so anything longer is no generation, and a value of megabytes
/// planted at the key is never sent to the client.
pub(super) const LONGEST_GENERATION: usize = 19;

/// Reads the generation, bounded (KEYS: generation; ARGV: the longest value
/// accepted). Replies the value, nil when missing, or -2 for a value too
/// long or of another type than a string, which read as corrupt. One round
/// trip, and atomic: the length checked is the length of what is read.
const GET_SCRIPT: &str = r"
local n = redis.pcall('STRLEN', KEYS[1])
if type(n) ~= 'number' or n > tonumber(ARGV[1]) then return -2 end
return redis.call('GET', KEYS[1])
";

/// Creates the generation if absent (KEYS: generation, intents; ARGV:
/// value, ttl). Replies 1 when it did.
const ADD_SCRIPT: &str = concat!(
    prelude!(),
    r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
settle(KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[2]))
return 1
"
);

/// Ends the finishing writer's intent, adds a step to a valid generation
/// and settles the time to live, in one atomic step (KEYS: generation,
/// intents; ARGV: step, ttl, finishing token or ''). Replies -1 for a
/// missing key and -2 for a corrupt one (wrong type, longer than
/// [`LONGEST_GENERATION`] so never copied whole into Lua, not a positive
/// integer, or one the step would carry past `i64::MAX`), leaving both
/// alone for the caller to repair (its intent ended all the same: the
/// repair is its bump). The new value is read back as a string: Lua
/// numbers are doubles and would round a 63-bit generation.
const INCR_SCRIPT: &str = concat!(
    prelude!(),
    r"
zset_or_none(KEYS[2])
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[2], ARGV[3]) end
local len = redis.pcall('STRLEN', KEYS[1])
if type(len) == 'number' and len > 19 then return -2 end
local v = redis.pcall('GET', KEYS[1])
if v == false then return -1 end
if type(v) ~= 'string' or not string.match(v, '^[1-9]%d*$') then return -2 end
local n = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(n) ~= 'number' then return -2 end
settle(KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[2]))
return redis.call('GET', KEYS[1])
"
);

/// Takes the writers' lease for `ttl` if it is free or already the
/// caller's, and hands out the next fencing token (KEYS: lease, fence;
/// ARGV: token, ttl). The token is one more than the last, or the server's
/// clock in microseconds if that is more, so it keeps growing after the
/// server went back to an older snapshot (unless that server's clock is
/// behind: then fenced stores refuse writers until it catches up, which
/// is safe). Replies `{token, repaired}`, or nil while another writer holds
/// the lease. (Microseconds since 1970 fit a double exactly until 2255.)
///
/// A lease with no time to live, or not a string, is no writer's: every
/// lease a writer takes lapses. Another client wrote it (a stray `SET`),
/// and left alone it would stop every write for good, so it is taken over
/// (`repaired` is 1). A fence that is not a number, or not one a lease
/// could have been given (negative, or past 2^53, where doubles stop
/// counting exactly), restarts at the clock.
const LOCK_SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local holder = redis.pcall('GET', KEYS[1])
local repaired = 0
if type(holder) == 'table' then
  holder = false
  repaired = 1
elseif holder ~= false and holder ~= ARGV[1] and redis.call('PTTL', KEYS[1]) == -1 then
  holder = false
  repaired = 1
end
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return false
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = redis.pcall('GET', KEYS[2])
last = type(last) == 'string' and tonumber(last) or 0
if last ~= last or last < 0 or last >= 9007199254740992 then last = 0 end
local fence = string.format('%.0f', math.max(last + 1, now))
redis.call('SET', KEYS[2], fence)
return {fence, repaired}
";

/// Extends the caller's lease, and its pending intent with the key's time
/// to live (KEYS: lease, generation, intents; ARGV: token, ttl, key ttl).
/// Replies 1, or 0 when the lease is not the caller's.
const RENEW_SCRIPT: &str = concat!(
    prelude!(),
    r"
if redis.pcall('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
zset_or_none(KEYS[3])
if redis.call('ZSCORE', KEYS[3], ARGV[1]) then
  local now = now_ms()
  redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
  settle(KEYS[2], KEYS[3], now, tonumber(ARGV[3]))
end
return 1
"
);

/// Records a writer's intent and cuts the generation's time to live to it
/// (KEYS: generation, intents; ARGV: token, ttl, key ttl).
const INTEND_SCRIPT: &str = concat!(
    prelude!(),
    r"
local now = now_ms()
zset_or_none(KEYS[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
settle(KEYS[1], KEYS[2], now, tonumber(ARGV[3]))
return 1
"
);

/// Releases the lease while it is the caller's (KEYS: lease, released
/// mark; ARGV: token). It leaves a mark for a minute, so a release sent
/// twice (a retry on a connection that died after the first got through)
/// answers 1 again rather than "not yours".
const UNLOCK_SCRIPT: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('SET', KEYS[2], ARGV[1], 'PX', 60000)
  return 1
end
if redis.pcall('GET', KEYS[2]) == ARGV[1] then return 1 end
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
            cmd: script(GET_SCRIPT, &[key], &[LONGEST_GENERATION.to_string()]),
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

fn read_get(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    match reply {
        Ok(Value::Nil) => Ok(Stored::Missing),
        Ok(Value::BulkString(raw)) => Ok(stored_from_bytes(&raw)),
        Ok(Value::SimpleString(s)) => Ok(stored_from_bytes(s.as_bytes())),
        // The script's -2: too long, or not a string.
        Ok(_) => Ok(Stored::Corrupt),
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(Stored::Corrupt),
        Err(e) => Err(e),
    }
}

fn read_incr(reply: Result<Value, RedisError>) -> Result<Stored, RedisError> {
    Ok(match reply? {
        Value::Int(-1) => Stored::Missing,
        Value::BulkString(raw) => stored_from_bytes(&raw),
        _ => Stored::Corrupt,
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
            i64::MAX.to_string().len(),
            LONGEST_GENERATION,
            "the bound admits every generation and nothing longer"
        );
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
