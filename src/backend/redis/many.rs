//! A read of many keys at once ([`Backend::get_many`]): one `no-writes`
//! script per Cluster slot (one in all on a single server or a Sentinel
//! primary), each key read as [`Op::get`] reads one, bounded in bytes.
//!
//! [`Backend::get_many`]: crate::backend::Backend::get_many

use std::collections::HashMap;

use super::aio::RedisBackend;
use super::commands::Op;
use super::deployment::slot;
use super::scripts::{denied_command, guard};
use crate::backend::Stored;
use crate::error::BackendError;
use crate::key::Key;

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

/// Reads `keys` in one script per slot (in a Cluster, where a script's
/// keys must share one; elsewhere one script for all), the slots' scripts
/// sent at once. Any one failing fails the read.
pub(super) async fn get_many(
    backend: &RedisBackend,
    keys: &[Key],
    cluster: bool,
) -> Result<Vec<Stored>, BackendError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    if !cluster {
        let all: Vec<&Key> = keys.iter().collect();
        return backend.run(Op::get_many(&all)).await;
    }
    // Each slot's keys, in order, with their places in `keys`.
    let mut slots: HashMap<u16, (Vec<&Key>, Vec<usize>)> = HashMap::new();
    for (at, key) in keys.iter().enumerate() {
        let group = slots.entry(slot(key.as_str().as_bytes())).or_default();
        group.0.push(key);
        group.1.push(at);
    }
    let reads = slots.into_values().map(|(keys, places)| async move {
        let stored = backend.run(Op::get_many(&keys)).await?;
        Ok::<_, BackendError>((places, stored))
    });
    let mut out = vec![Stored::Missing; keys.len()];
    for (places, stored) in join_all(reads)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
    {
        for (at, value) in places.into_iter().zip(stored) {
            out[at] = value;
        }
    }
    Ok(out)
}

/// Runs `futures` concurrently on this task, their outputs in order.
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, out) in pinned.iter_mut().zip(done.iter_mut()) {
            if out.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *out = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}
