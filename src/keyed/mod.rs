//! Settings per key (per tenant, per site, per customer's flag set), each
//! with its own generation, kept current with bounded memory.
//!
#![cfg_attr(feature = "layer", doc = "```")]
#![cfg_attr(not(feature = "layer"), doc = "```ignore")]
//! use std::collections::HashMap;
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//!
//! use gensync::keyed::{KeyRejection, KeyedReloadLayer, KeyedReloader};
//! use gensync::reload::Snapshot;
//! use gensync::backend::Fence;
//! use gensync::{Key, MemoryBackend};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The source of truth: each tenant's settings.
//!     let db = Arc::new(Mutex::new(HashMap::from([("acme".to_owned(), "theme=light".to_owned())])));
//!     let (read, write) = (db.clone(), db.clone());
//!
//!     let tenants = KeyedReloader::builder(
//!         MemoryBackend::new(), // RedisBackend across processes
//!         Key::new(["tenants"])?,
//!         |tenant: &String| tenant.clone(),
//!         move |tenant: String| {
//!             let db = read.clone();
//!             async move {
//!                 db.lock().unwrap().get(&tenant).cloned().ok_or("no such tenant")
//!             }
//!         },
//!     )
//!     .saver(move |tenant: String, settings: &String, _fence: Fence| {
//!         write.lock().unwrap().insert(tenant, settings.clone());
//!         async { Ok::<_, Infallible>(()) }
//!     })
//!     .capacity(10_000)
//!     .build()?;
//!
//!     // The tenant comes from a header; a request without one gets a 400.
//!     let service = ServiceBuilder::new()
//!         .layer(KeyedReloadLayer::new(tenants.clone(), |request: &http::Request<()>| {
//!             request
//!                 .headers()
//!                 .get("x-tenant")
//!                 .and_then(|v| v.to_str().ok())
//!                 .map(str::to_owned)
//!                 .ok_or_else(|| KeyRejection::bad_request("send the tenant in x-tenant"))
//!         }))
//!         .service(service_fn(|request: http::Request<()>| async move {
//!             let settings = request.extensions().get::<Snapshot<String>>().unwrap();
//!             Ok::<_, Infallible>(http::Response::new(settings.settings().clone()))
//!         }));
//!
//!     let ask = |tenant: &str| {
//!         http::Request::builder().header("x-tenant", tenant).body(()).unwrap()
//!     };
//!     let answer = service.clone().oneshot(ask("acme")).await?;
//!     assert_eq!(answer.body(), "theme=light");
//!
//!     // A writer changes one tenant; only that tenant reloads.
//!     tenants.publish(&"acme".to_owned(), "theme=dark".to_owned()).await?;
//!     let answer = service.clone().oneshot(ask("acme")).await?;
//!     assert_eq!(answer.body(), "theme=dark");
//!
//!     let unknown = service.clone().oneshot(ask("nobody")).await?;
//!     assert_eq!(unknown.status(), 503);
//!     let anonymous = service.oneshot(http::Request::new(())).await?;
//!     assert_eq!(anonymous.status(), 400);
//!     Ok(())
//! }
//! ```
//!
//! A [`KeyedReloader`] keeps one [`Reloader`](crate::reload::Reloader) per
//! key in use, made on first use, so each key keeps every promise of a
//! single reloader (the reload fence, recording only after a successful
//! load, the last good settings through any failure). Keys live in a cache
//! bounded by [`capacity`](KeyedReloaderBuilder::capacity) (`moka`); a key
//! dropped from it is loaded again on its next use, so memory stays flat
//! under any number of distinct keys.
//!
//! - **One load per key.** Concurrent first requests for a key share one
//!   load. A failed first load is remembered for a backoff (doubling, as a
//!   reloader's) during which requests are told at once that the key is
//!   unavailable; a later request tries again.
//! - **Keys are independent.** Each key's reads are coalesced on their own,
//!   so a request for one key never waits on another's load.
//! - **Reads go out together.** The reads of every key that wait at the
//!   same moment go to the backend as one batch
//!   ([`Backend::get_many`](crate::backend::Backend::get_many): on Redis one
//!   bounded read-only script, per Cluster slot), the parent read once for
//!   all. One batch is in flight at a time; a read that arrives meanwhile
//!   waits for the next, sent when it returns, so a check is still only
//!   answered by a read that began after it arrived. A batch reads at most
//!   512 keys.
//! - **A parent generation.** Every key's check reads the set's own key
//!   ([`KeyedReloader::parent`]) with the key's, in one round trip (on the
//!   same Redis Cluster slot: member keys carry the set's key as their hash
//!   tag). Bumping it reloads every key once, on its next use, without
//!   touching any key. A missing parent (never made, lapsed with a dead
//!   writer's intent, flushed) reads as a missing key: the first check or
//!   write that finds it so creates it with a fresh value, so each of its
//!   lives has a number of its own.
//! - **Writers** publish or update one key under that key's writers' lease,
//!   with the fencing and intent rules of a single reloader.
//! - **Push mode** tracks every key and the parent on one connection (a
//!   backend that cannot track a set checks keys as in strict mode).
//!
//! [`KeyedReloadLayer`] is the middleware: a function from the request to
//! its key (a header, the host, a path segment), whose [`KeyRejection`]
//! answers a request it cannot name a key for.

// Rooms: `reloader.rs` is the handle and each key's first load,
// `batch.rs` the keys' reads sent together,
// `builder.rs` its configuration, `source.rs` the keyed loader and saver,
// `layer.rs` the middleware.

mod batch;
mod builder;
#[cfg(feature = "layer")]
mod layer;
mod reloader;
mod source;

pub use self::builder::{KeyedReloaderBuilder, DEFAULT_CAPACITY};
#[cfg(feature = "layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "layer")))]
pub use self::layer::{KeyRejection, KeyedReload, KeyedReloadLayer, KeyedResponseFuture};
pub use self::reloader::{KeyedError, KeyedReloader};
pub use self::source::{KeyedLoader, KeyedSaver};
