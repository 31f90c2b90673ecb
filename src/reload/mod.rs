//! Settings that reload in every process when any process changes them.
//!
//! A [`Reloader`] owns a synchronizer, a [`SettingsLoader`] and the current
//! [`Snapshot`] of the settings. [`SettingsReloadLayer`] runs its check
//! before every request of a tower (or axum) service and hands the request
//! the snapshot. [`BlockingReloader`] does the same for code with no async
//! runtime. Writers call [`Reloader::publish`] or [`Reloader::update`].

mod blocking;
mod layer;
mod metrics;
mod reloader;
mod snapshot;
mod source;

pub use self::blocking::BlockingReloader;
pub use self::layer::{ResponseFuture, SettingsReload, SettingsReloadLayer};
pub use self::metrics::ReloadMetrics;
pub use self::reloader::{PublishError, Reloader, ReloaderBuilder};
pub use self::snapshot::Snapshot;
pub use self::source::{blocking_loader, BoxError, SettingsLoader, SettingsSaver};
