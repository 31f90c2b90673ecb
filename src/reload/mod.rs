//! Settings that reload in every process when any process changes them.
//!
//! The [crate's docs](crate) open with a reloader behind the tower layer.
//! Without the layer, a program checks when it needs the settings, and
//! hears of each reload:
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//!
//! use gensync::{Key, MemoryBackend, Reloader, Synchronizer};
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // The source of truth: the enabled feature flags.
//!     let db = Arc::new(Mutex::new(vec![String::from("search")]));
//!     let (read, write) = (db.clone(), db.clone());
//!
//!     let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["flags"])?);
//!     let reloader = Reloader::builder(sync, move || {
//!         let db = read.clone();
//!         async move { Ok::<_, Infallible>(db.lock().unwrap().clone()) }
//!     })
//!     .saver(move |flags: &Vec<String>| {
//!         *write.lock().unwrap() = flags.clone();
//!         async { Ok::<_, Infallible>(()) }
//!     })
//!     .build(Vec::new())?;
//!
//!     // Every reload, in order; `subscribe()` gives the newest instead.
//!     reloader.on_reload(|old, new| {
//!         println!("flags: {:?} -> {:?}", old.settings(), new.settings());
//!     });
//!     assert_eq!(reloader.check().await.settings(), &["search"]);
//!
//!     // Read, change and save under the writers' lease, then tell every
//!     // process: concurrent updates from several processes are not lost.
//!     reloader.update(|flags| [flags.clone(), vec![String::from("beta")]].concat()).await?;
//!     assert_eq!(reloader.check().await.settings(), &["search", "beta"]);
//!     Ok(())
//! }
//! ```
//!
//! A [`Reloader`] owns a synchronizer, a [`SettingsLoader`] and the current
//! [`Snapshot`] of the settings. [`SettingsReloadLayer`] runs its check
//! before every request of a tower (or axum) service and hands the request
//! the snapshot. [`BlockingReloader`] does the same for code with no async
//! runtime. Writers call [`Reloader::publish`] or [`Reloader::update`].
//!
//! The reloader needs a tokio runtime: each load runs on a task of its own,
//! so a request that gives up waiting cancels nothing.

// Rooms, from the top down: `reloader.rs` is the handle (checks),
// `publish.rs` its writes through the synchronizer's writer, `builder.rs`
// builds it over `core.rs`, the state every clone shares and the one room
// where loads run; `flight.rs` is the single-flight state machine (with
// its invariants), `load.rs` one bounded load, `config.rs` the settings
// both builders share, `backoff.rs` the pause after failures, `mode.rs`
// the check modes and all they do, `checking.rs` one check's steps and
// its named futures, `spread.rs` the loads put off after a
// change (spread loads), `reads.rs` the coalesced reads of the
// generation, `listeners.rs` the reload fan-out, `layer.rs` and
// `future.rs` the tower middleware and the named futures, `metrics.rs`
// the counters and their export.
mod answer;
mod backoff;
mod blocking;
mod builder;
mod checking;
mod config;
mod core;
mod flight;
#[cfg(feature = "layer")]
mod future;
#[cfg(feature = "layer")]
mod layer;
mod listeners;
mod load;
mod metrics;
mod mode;
mod publish;
mod reads;
mod reloader;
mod snapshot;
mod source;
mod spread;

pub use self::answer::{Answer, Freshness};
#[cfg(feature = "keyed")]
pub(crate) use self::backoff::Backoff;
pub use self::blocking::BlockingReloader;
pub use self::builder::ReloaderBuilder;
pub use self::checking::{AnswerFuture, CheckFuture};
#[cfg(feature = "keyed")]
pub(crate) use self::config::Config;
#[cfg(feature = "layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "layer")))]
pub use self::future::ResponseFuture;
#[cfg(all(feature = "keyed", feature = "layer"))]
pub(crate) use self::future::{Checked, Steps};
#[cfg(feature = "layer")]
#[cfg_attr(docsrs, doc(cfg(feature = "layer")))]
pub use self::layer::{SettingsReload, SettingsReloadLayer};
pub use self::listeners::ListenerId;
#[cfg(feature = "keyed")]
pub(crate) use self::load::load_within;
#[cfg(feature = "keyed")]
pub(crate) use self::metrics::Counters;
pub use self::metrics::ReloadMetrics;
pub use self::mode::{CheckMode, ParseCheckModeError};
pub use self::reloader::Reloader;
pub use self::snapshot::Snapshot;
pub use self::source::{
    blocking_loader, blocking_saver, fenced, BoxError, Fenced, SettingsLoader, SettingsSaver,
    StaleFence,
};
pub use crate::synchronizer::PublishError;
