//! The Lua scripts the writes send: each reads and writes the keys beside
//! a generation in one atomic step, and repairs what no gensync client
//! leaves there (a value too long, a lease that never lapses, a key of the
//! wrong type) instead of failing on it. A read is a plain `GETRANGE`, or
//! a script flagged `no-writes` where one round trip must read two keys,
//! so reads pass `CLIENT PAUSE WRITE` (how failovers pause a primary).
//!
//! Only a value actually read and found malformed is repaired: any error a
//! command inside a script gets (an ACL denial, `OOM`, a `BUSY`) fails the
//! whole script, the denial renamed so it names the command to allow.

/// The Lua condition that `$reply`, the error reply of a command inside a
/// script, is the ACL's denial of the command: Redis 7.0 says "can't run
/// this command", 7.2 "ACL failure in script". Every script that names a
/// denial asks this.
macro_rules! denied_command {
    ($reply:literal) => {
        concat!(
            "(string.find(",
            $reply,
            ".err, 'can\\'t run this command', 1, true) or string.find(",
            $reply,
            ".err, 'ACL failure in script', 1, true))"
        )
    };
}
pub(super) use denied_command;

/// What every script shares: `call`, `redis.call` with a denial named (in
/// a script, Redis reports only "can't run this command"), and `try`,
/// which answers `WRONG` for a key of another type instead of failing.
macro_rules! guard {
    () => {
        concat!(
            r"
local WRONG = {}
local function fail(r, name, ...)
  if string.find(r.err, 'can\'t access at least one of the keys', 1, true) then
    r = {err = 'NOPERM this user has no permissions to access one of the keys used as arguments (inside a gensync script)'}
  elseif ",
            denied_command!("r"),
            r" then
    local cmd = string.lower(name)
    if cmd == 'cluster' or cmd == 'client' then
      cmd = cmd .. '|' .. string.lower(tostring((...)))
    end
    r = {err = 'NOPERM this user has no permissions to run the \'' .. cmd ..
      '\' command (inside a gensync script)'}
  end
  error(r)
end
local function call(name, ...)
  local r = redis.pcall(name, ...)
  if type(r) == 'table' and r.err then fail(r, name, ...) end
  return r
end
local function try(name, ...)
  local r = redis.pcall(name, ...)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return WRONG end
    fail(r, name, ...)
  end
  return r
end
"
        )
    };
}

/// What the write scripts share besides [`guard`]: the server's clock,
/// `zset_or_none`, which deletes an intents key of another type than a
/// sorted set (another client wrote it; left alone it would fail every
/// write), and `settle`, which gives the generation its full time to live
/// or, while writers' intents are pending, no more than until the earliest
/// one lapses (`lapse`; lapsed intents are dropped on the way). Each script
/// reads before it writes, and writes the generation before its
/// bookkeeping: a command the ACL denies midway (a script is not undone)
/// then leaves a bump done or not begun, never an intent dropped without
/// its bump. Scores and lapses
/// are milliseconds of the server's clock, so every client agrees on them.
macro_rules! prelude {
    () => {
        concat!(
            "if redis.replicate_commands then redis.replicate_commands() end\n",
            guard!(),
            r"
local function now_ms()
  local t = call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function zset_or_none(k)
  local t = call('TYPE', k)['ok']
  if t ~= 'zset' and t ~= 'none' then call('DEL', k) end
end
local function lapse(intents, now, full)
  zset_or_none(intents)
  call('ZREMRANGEBYSCORE', intents, '-inf', now)
  local ttl = full
  local first = call('ZRANGE', intents, 0, 0, 'WITHSCORES')
  if first[2] then
    local left = tonumber(first[2]) - now
    if left < ttl then ttl = left end
    local last = call('ZRANGE', intents, -1, -1, 'WITHSCORES')
    call('PEXPIREAT', intents, last[2])
  end
  if ttl < 1 then ttl = 1 end
  return string.format('%.0f', ttl)
end
local function settle(gen, intents, now, full)
  call('PEXPIRE', gen, lapse(intents, now, full))
end
"
        )
    };
}

/// The longest value a read of the generation accepts: `i64::MAX` has 19
/// digits, so anything longer is no generation. A read asks for one byte
/// more (`GETRANGE key 0 19`): a 20th byte means "not a generation", and a
/// value of megabytes planted at the key is never sent to the client.
pub(super) const LONGEST_GENERATION: usize = 19;

/// The read of one generation as a Cluster sends it, so its node can be
/// named beside the reply (`identity.rs`): `GETRANGE` in a script flagged
/// `no-writes` (KEYS: generation; ARGV: start, end). A key of another type
/// fails it with `WRONGTYPE`, as the plain command would.
///
/// Written out rather than over `guard!`, whose closures cost a read about
/// a tenth more on the server.
pub(super) const CLUSTER_GET_SCRIPT: &str = concat!(
    r"#!lua flags=no-writes
local r = redis.pcall('GETRANGE', KEYS[1], ARGV[1], ARGV[2])
if type(r) == 'table' and r.err and ",
    denied_command!("r"),
    r" then
  return {err = 'NOPERM this user has no permissions to run the \'getrange\' command (inside a gensync script)'}
end
return r
"
);

/// Reads a generation and its set's parent generation, each bounded as a
/// read of one is (KEYS: generation, parent; ARGV: the longest value
/// accepted). Replies a pair of: the value, nil (false) when missing, or
/// -2 for a value too long, empty, or of another type than a string, which
/// read as corrupt. One round trip, atomic (the two keys share a Cluster
/// slot), and read-only: flagged `no-writes`, so it runs while writes are
/// paused, on a replica, and when the server is out of memory.
pub(super) const GET_WITH_PARENT_SCRIPT: &str = concat!(
    "#!lua flags=no-writes\n",
    guard!(),
    r"
local longest = tonumber(ARGV[1])
local function bounded(k)
  local v = try('GETRANGE', k, 0, longest)
  if v == WRONG or string.len(v) > longest then return -2 end
  if v == '' then
    if call('EXISTS', k) == 1 then return -2 end
    return false
  end
  return v
end
return {bounded(KEYS[1]), bounded(KEYS[2])}
"
);

/// Reads every key (KEYS) as `GETRANGE key 0 longest` (ARGV[1]) does, in
/// one step, replying one entry per key: the value, nil for a missing key,
/// or -2 where nothing a generation could be is stored (too long, an empty
/// string, another type), as the read of a key with its parent does. Not
/// `MGET`: it would send a value of megabytes whole, where this sends at
/// most `longest` + 1 bytes per key. One command in `INFO commandstats`
/// (the reads it runs are counted there too, under their own names, as
/// every script's are). A denied command fails the read, named.
pub(super) const GET_MANY_SCRIPT: &str = concat!(
    "#!lua flags=no-writes\n",
    guard!(),
    r"
local longest = tonumber(ARGV[1])
local out = {}
for i, k in ipairs(KEYS) do
  local v = try('GETRANGE', k, 0, longest)
  if v == WRONG or string.len(v) > longest then
    out[i] = -2
  elseif v == '' then
    if call('EXISTS', k) == 1 then out[i] = -2 else out[i] = false end
  else
    out[i] = v
  end
end
return out
"
);

/// Creates the generation if absent (KEYS: generation, intents; ARGV:
/// value, ttl). Replies 1 when it did. An empty string there, which a
/// plain read cannot tell from a missing key, is read and replaced.
pub(super) const ADD_SCRIPT: &str = concat!(
    prelude!(),
    r"
if try('GETRANGE', KEYS[1], 0, 0) ~= '' then return 0 end
call('SET', KEYS[1], ARGV[1], 'PX', lapse(KEYS[2], now_ms(), tonumber(ARGV[2])))
return 1
"
);

/// Ends the finishing writer's intent, adds a step to a valid generation
/// and settles the time to live, in one atomic step (KEYS: generation,
/// intents; ARGV: step, ttl, finishing token or ''). Replies -1 for a
/// missing key and -2 for a corrupt one (wrong type, empty, longer than
/// [`LONGEST_GENERATION`] so never copied whole into Lua, not a positive
/// integer, or one the step would carry past `i64::MAX`), leaving both
/// alone for the caller to repair (its intent ended all the same: the
/// repair is its bump). The new value is read back as a string: Lua
/// numbers are doubles and would round a 63-bit generation.
pub(super) const INCR_SCRIPT: &str = concat!(
    prelude!(),
    r"
zset_or_none(KEYS[2])
local function finish()
  if ARGV[3] ~= '' then call('ZREM', KEYS[2], ARGV[3]) end
end
local v = try('GETRANGE', KEYS[1], 0, 19)
if v == '' and call('EXISTS', KEYS[1]) == 0 then
  finish()
  return -1
end
if v == WRONG or v == '' or string.len(v) > 19 or not string.match(v, '^[1-9]%d*$') then
  finish()
  return -2
end
local n = redis.pcall('INCRBY', KEYS[1], ARGV[1])
if type(n) == 'table' then
  if not (string.find(n.err, 'overflow', 1, true) or string.find(n.err, 'out of range', 1, true)) then
    fail(n, 'INCRBY')
  end
  finish()
  return -2
end
finish()
settle(KEYS[1], KEYS[2], now_ms(), tonumber(ARGV[2]))
return call('GETRANGE', KEYS[1], 0, 19)
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
pub(super) const LOCK_SCRIPT: &str = concat!(
    "if redis.replicate_commands then redis.replicate_commands() end\n",
    guard!(),
    r"
local holder = try('GET', KEYS[1])
local repaired = 0
if holder == WRONG then
  holder = false
  repaired = 1
elseif holder ~= false and holder ~= ARGV[1] and call('PTTL', KEYS[1]) == -1 then
  holder = false
  repaired = 1
end
if holder ~= false and holder ~= ARGV[1] then return false end
local t = call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = try('GET', KEYS[2])
last = type(last) == 'string' and tonumber(last) or 0
if last ~= last or last < 0 or last >= 9007199254740992 then last = 0 end
local fence = string.format('%.0f', math.max(last + 1, now))
call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
call('SET', KEYS[2], fence)
return {fence, repaired}
"
);

/// Extends the caller's lease, and its pending intent with the key's time
/// to live (KEYS: lease, generation, intents; ARGV: token, ttl, key ttl).
/// Replies 1, or 0 when the lease is not the caller's.
pub(super) const RENEW_SCRIPT: &str = concat!(
    prelude!(),
    r"
if try('GET', KEYS[1]) ~= ARGV[1] then return 0 end
call('PEXPIRE', KEYS[1], ARGV[2])
zset_or_none(KEYS[3])
if call('ZSCORE', KEYS[3], ARGV[1]) then
  local now = now_ms()
  call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
  settle(KEYS[2], KEYS[3], now, tonumber(ARGV[3]))
end
return 1
"
);

/// Records a writer's intent and cuts the generation's time to live to it
/// (KEYS: generation, intents; ARGV: token, ttl, key ttl).
pub(super) const INTEND_SCRIPT: &str = concat!(
    prelude!(),
    r"
local now = now_ms()
zset_or_none(KEYS[2])
call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
settle(KEYS[1], KEYS[2], now, tonumber(ARGV[3]))
return 1
"
);

/// Releases the lease while it is the caller's (KEYS: lease, released
/// mark; ARGV: token). It leaves a mark for a minute, so a release sent
/// twice (a retry on a connection that died after the first got through)
/// answers 1 again rather than "not yours".
pub(super) const UNLOCK_SCRIPT: &str = concat!(
    guard!(),
    r"
if try('GET', KEYS[1]) == ARGV[1] then
  call('DEL', KEYS[1])
  call('SET', KEYS[2], ARGV[1], 'PX', 60000)
  return 1
end
if try('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
"
);
