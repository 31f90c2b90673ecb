//! Keep a fleet of processes agreeing on which version of shared state is
//! current.
//!
//! A shared *generation* lives in a cache server (Redis, or process memory
//! for one process). Each process records the generation it last loaded
//! and reloads its copy of the state (site settings, feature flags) when the
//! shared one has moved. A writer saves the new state, then bumps the
//! generation, and every process reloads on its next check.
//!
//! Most programs want a [`Reloader`]: it owns the settings, checks the
//! generation before each request ([`SettingsReloadLayer`], a tower and
//! axum middleware), and hands each request one consistent [`Snapshot`].
//!
#![cfg_attr(feature = "layer", doc = "```")]
#![cfg_attr(not(feature = "layer"), doc = "```ignore")]
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//!
//! use gensync::{Key, MemoryBackend, Reloader, SettingsReloadLayer, Snapshot, Synchronizer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The source of truth: a database, a file. Here, a string in memory.
//!     let db = Arc::new(Mutex::new(String::from("theme=light")));
//!     let (read, write) = (db.clone(), db.clone());
//!
//!     // One generation per settings object; RedisBackend across processes.
//!     let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["site", "settings"])?);
//!     let reloader = Reloader::builder(sync, move || {
//!         let db = read.clone();
//!         async move { Ok::<_, Infallible>(db.lock().unwrap().clone()) }
//!     })
//!     .saver(move |settings: &String| {
//!         *write.lock().unwrap() = settings.clone();
//!         async { Ok::<_, Infallible>(()) }
//!     })
//!     .build(String::new())?;
//!
//!     // Every request is checked first, and sees one consistent snapshot.
//!     let service = ServiceBuilder::new()
//!         .layer(SettingsReloadLayer::new(reloader.clone()))
//!         .service(service_fn(|request: http::Request<()>| async move {
//!             let settings = request.extensions().get::<Snapshot<String>>().unwrap();
//!             Ok::<_, Infallible>(settings.settings().clone())
//!         }));
//!
//!     let answer = service.clone().oneshot(http::Request::new(())).await?;
//!     assert_eq!(answer, "theme=light");
//!
//!     // A writer in any process saves and bumps; the next request reloads.
//!     reloader.publish(String::from("theme=dark")).await?;
//!     let answer = service.oneshot(http::Request::new(())).await?;
//!     assert_eq!(answer, "theme=dark");
//!     Ok(())
//! }
//! ```
//!
//! [`reload`] has the rest: loaders and savers, writers' leases,
//! listeners, metrics. [`keyed`] keeps settings per key (per tenant, per
//! site), each with its own generation.
//!
//! # How fresh, at what cost
//!
//! A [`Reloader`] checks in one of three [modes](CheckMode): strict (the
//! default; reads coalesced, a request sees every bump completed before it
//! began), push (Redis pushes each change, a check costs no round trip
//! between changes, freshness bounded by the heartbeat), or interval (at
//! most one read per interval).
//!
//! # Checking and recording by hand
//!
//! Under the reloader, a [`Synchronizer`] checks the shared generation
//! against the one this process recorded; code that keeps its own state
//! can use it directly:
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
//! `rediss://` with the `tls` feature (and `valkey://`, `valkeys://`,
//! `valkey+unix://` as their other names); a primary found through Sentinel,
//! `redis+sentinel://host:port,host:port/master-name`, and a Cluster,
//! `redis+cluster://host:port,host:port` (both also over TLS, and built
//! from their parts by [`RedisUrl`]). Failovers are followed, and a
//! process reads as expired once after its key's server changed.
//!
//! Another store plugs in through [`backend::Backend`]; [`backend`] has
//! the pieces a backend is made of.
//!
//! # Features
//!
//! | Feature | Default | What it adds |
//! |---|---|---|
//! | `redis` | yes | [`RedisBackend`], [`BlockingRedisBackend`], [`RedisConfig`], [`RedisUrl`] (the `redis` crate) |
//! | `layer` | yes | [`SettingsReloadLayer`] and the keyed layer (`tower-layer`, `tower-service`, `http`) |
//! | `keyed` | no | [`keyed`]: settings per key, in a bounded `moka` cache |
//! | `tls` | no | `rediss://`, through rustls (implies `redis`) |
//! | `metrics` | no | the reloader's counters and histograms, through the `metrics` facade |
//! | `cli` | no | the `gensync` operator command (implies `redis`) |
//! | `testing` | no | [`testing`]: the backend conformance suite, a failing backend and mocks; with `redis`, a throwaway redis-server per test |
//!
//! With no default features, gensync is the in-memory backend, the
//! synchronizer and the reloader, and compiles neither `redis` nor `moka`.
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
//! [`BlockingReloader`] keeps settings current from plain threads (it runs
//! its own small runtime, over the same [`RedisBackend`]);
//! [`BlockingSynchronizer`] over [`BlockingRedisBackend`] reads, bumps and
//! clears a generation with no runtime at all.
//!
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]
// The crate docs link the items of every feature; a build without some
// of them documents the rest.
#![cfg_attr(
    not(all(
        feature = "redis",
        feature = "layer",
        feature = "keyed",
        feature = "testing"
    )),
    allow(rustdoc::broken_intra_doc_links)
)]

pub mod backend;
mod error;
mod fence;
pub mod generation;
pub mod key;
#[cfg(feature = "keyed")]
#[cfg_attr(docsrs, doc(cfg(feature = "keyed")))]
pub mod keyed;
pub mod reload;
pub mod synchronizer;
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod unpoisoned;

// The root is the user's story: keys and generations, the synchronizer,
// the backends, the reloader and its middleware. A backend author's
// pieces live in `backend`; the low-level ones in their own modules.
pub use crate::backend::MemoryBackend;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use crate::backend::{BlockingRedisBackend, RedisBackend, RedisConfig, RedisUrl};
pub use crate::error::{BackendError, Error};
pub use crate::generation::Generation;
pub use crate::key::{Key, KeyError};
#[cfg(feature = "layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "layer")))]
pub use crate::reload::SettingsReloadLayer;
pub use crate::reload::{BlockingReloader, CheckMode, Reloader, Snapshot};
pub use crate::synchronizer::{BlockingSynchronizer, GenerationSynchronizer, Synchronizer};

// The README's Rust examples compile as doctests, so they cannot drift
// from the API. They use every default feature and `keyed`.
#[cfg(all(doctest, feature = "redis", feature = "layer", feature = "keyed"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
