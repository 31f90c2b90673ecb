//! Waiting on what the servers say, with a deadline, for the topologies: a
//! failover is over when the servers agree it is, not after a guessed
//! sleep.

use std::io;
use std::time::{Duration, Instant};

use redis::FromRedisValue;

use super::RedisServer;

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(20);
/// How long one question may take: a killed or paused server must not
/// hold a wait past its deadline.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

/// Calls `check` until it returns `Ok`, or until `timeout` has passed; its
/// `Err` says what it saw, for the error on timing out.
pub(super) fn until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> io::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what}: not within {timeout:?}; last seen: {seen}"),
                ))
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Runs `talk` on a fresh connection to `server` (a server that died
/// since the last question must not leave a broken one behind), over TLS
/// if it listens only for TLS.
fn session<T>(
    server: &RedisServer,
    talk: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
) -> Result<T, String> {
    let url = server.url();
    let answer = || -> redis::RedisResult<T> {
        let mut connection = server.client()?.get_connection_with_timeout(ASK_TIMEOUT)?;
        connection.set_read_timeout(Some(ASK_TIMEOUT))?;
        connection.set_write_timeout(Some(ASK_TIMEOUT))?;
        talk(&mut connection)
    };
    answer().map_err(|e| format!("{url}: {e}"))
}

/// Sends `cmd` to `server`.
pub(super) fn ask<T: FromRedisValue>(server: &RedisServer, cmd: &redis::Cmd) -> Result<T, String> {
    session(server, |connection| cmd.query(connection))
}

/// Whether `server` says `role:master`.
pub(super) fn is_master(server: &RedisServer) -> Result<(), String> {
    let info: String = ask(server, redis::cmd("INFO").arg("replication"))?;
    if info.lines().any(|line| line.trim() == "role:master") {
        Ok(())
    } else {
        Err(format!("{} is not a master: {info}", server.url()))
    }
}

/// Whether the replica of the primary `server` acknowledged a write: a
/// replica that is `online` may not have loaded what it was sent yet, so
/// only an acknowledged write says a failover keeps what was written.
pub(super) fn replica_acked(server: &RedisServer) -> Result<(), String> {
    let acked: u32 = session(server, |connection| {
        redis::cmd("SET")
            .arg("gensync:testing:probe")
            .arg(1)
            .exec(connection)?;
        redis::cmd("WAIT").arg(1).arg(100).query(connection)
    })?;
    if acked == 1 {
        Ok(())
    } else {
        Err(format!(
            "{}: the replica has not acknowledged a write",
            server.url()
        ))
    }
}
