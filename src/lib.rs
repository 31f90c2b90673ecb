//! Keep a fleet of processes agreeing on which version of shared state is
//! current.
//!
//! A shared *generation* lives in a cache server (Redis, or process memory
//! for one process). Each process records the generation it last loaded
//! and reloads its copy of the state (site settings, feature flags) when the
//! shared one has moved. A writer saves the new state, then bumps the
//! generation, and every process reloads on its next check.
//!
//! ```
//! use gensync::{GenerationSynchronizer, Key, MemoryBackend, Synchronizer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), gensync::Error> {
//! // Two "processes" sharing one store (use RedisBackend across processes).
//! let backend = MemoryBackend::new();
//! let key = Key::new(["site", "settings"])?;
//! let reader = Synchronizer::new(backend.clone(), key.clone());
//! let writer = Synchronizer::new(backend, key);
//!
//! // The reader loads its state and records the generation it saw.
//! let check = reader.check().await;
//! assert!(check.is_expired());
//! let generation = match check.observed() {
//!     Some(g) => g,
//!     None => reader.fetch_or_create().await?,
//! };
//! // ... load the settings here ...
//! reader.record(generation);
//! assert!(!reader.is_expired().await);
//!
//! // A writer saves new settings, then tells everyone.
//! writer.mark_updated().await?;
//! assert!(reader.is_expired().await);
//! # Ok(()) }
//! ```
//!
//! # The rules
//!
//! - A reader never gets an error from a check: a backend error, a missing
//!   key or a corrupt value all read as *expired*, so a broken cache server
//!   cannot freeze a process on stale state.
//! - Record the generation the check observed *before* loading (the reload
//!   fence), not one read after: a bump during the load then causes one
//!   more reload instead of a lost update.
//! - Fresh generations are random 63-bit values, so a key evicted and
//!   re-created at once is still a change.
//! - [`mark_updated`](GenerationSynchronizer::mark_updated) returns an
//!   error when the bump failed: a writer must know its change did not
//!   propagate. It repairs missing and corrupt keys.
//! - Every backend call is bounded in time ([`RedisConfig`]), and a Redis
//!   password never appears in errors, `Debug` output or logs.
//!
//! # Backends
//!
//! - [`MemoryBackend`]: process memory, shared by its clones.
//! - [`RedisBackend`]: async, one multiplexed connection, for tokio code.
//! - [`BlockingRedisBackend`]: an `r2d2` pool, for [`BlockingSynchronizer`]
//!   in code with no runtime.
//!
//! URLs: `redis://[user:password@]host[:port][/db]`, `redis+unix:///path`,
//! `rediss://` with the `tls` feature; a primary found through Sentinel,
//! `redis+sentinel://host:port,host:port/master-name`, and a Cluster,
//! `redis+cluster://host:port,host:port` (both also over TLS, and built
//! from their parts by [`RedisUrl`]). Failovers are followed, and a
//! process reads as expired once after its key's server changed.
//!
//! # How fresh, at what cost
//!
//! A [`Reloader`](reload::Reloader) checks in one of three
//! [modes](reload::CheckMode): strict (the default; reads coalesced, a
//! request sees every bump completed before it began), push (Redis pushes
//! each change, a check costs no round trip between changes, freshness
//! bounded by the heartbeat), or interval (at most one read per interval).
//!
//! # Logs
//!
//! gensync logs through [`tracing`]: a line or two when an outage starts
//! and one when it ends, a line per failed reload or lost writers' lease.
//! A program sees them only with a subscriber installed, such as
//! `tracing_subscriber::fmt().with_env_filter(EnvFilter::new("info")).init()`.
//!
//! # Without an async runtime
//!
//! [`BlockingReloader`](reload::BlockingReloader) keeps settings current
//! from plain threads (it runs its own small runtime, over the same
//! [`RedisBackend`]); [`BlockingSynchronizer`] over [`BlockingRedisBackend`]
//! reads, bumps and clears a generation with no runtime at all.

#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod error;
mod fence;
mod generation;
mod key;
pub mod keyed;
pub mod reload;
mod synchronizer;
#[cfg(feature = "testing")]
pub mod testing;
mod unpoisoned;

pub use backend::{
    Backend, BlockingBackend, BlockingRedisBackend, MemoryBackend, RedactedUrl, RedisBackend,
    RedisConfig, RedisUrl, Stored, Ticket, Tracker, TrackerSet,
};
pub use error::{BackendError, BackendErrorKind, Error};
pub use fence::Fence;
pub use generation::{Generation, ParseGenerationError};
pub use key::{Key, KeyError, DEFAULT_NAMESPACE, MAX_KEY_LEN};
pub use synchronizer::{
    BlockingSynchronizer, Check, GenerationSynchronizer, Observed, Synchronizer, WriterLock,
    DEFAULT_TTL,
};

// The README's Rust examples compile as doctests, so they cannot drift
// from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
