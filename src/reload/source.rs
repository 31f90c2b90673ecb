//! Where settings come from and go to: the user's source of truth.

use std::fmt;
use std::future::Future;

use async_trait::async_trait;

use crate::fence::Fence;

pub use crate::synchronizer::{BoxError, StaleFence};

/// Loads the settings from their source of truth (a file, a database).
///
/// Implemented for async closures returning `Result<S, E>`:
///
/// ```
/// use gensync::reload::SettingsLoader;
///
/// fn takes_loader(_: impl SettingsLoader<String>) {}
/// takes_loader(|| async { Ok::<_, std::io::Error>(String::from("theme=dark")) });
/// ```
#[async_trait]
pub trait SettingsLoader<S>: Send + Sync + 'static {
    /// Reads the current settings.
    async fn load(&self) -> Result<S, BoxError>;
}

#[async_trait]
impl<S, F, Fut, E> SettingsLoader<S> for F
where
    S: Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    async fn load(&self) -> Result<S, BoxError> {
        self().await.map_err(Into::into)
    }
}

/// Saves settings to their source of truth, for
/// [`Reloader::publish`](super::Reloader::publish).
///
/// Each save runs under the writers' lease and is handed the lease's
/// [`Fence`] token. A store that keeps the greatest token it accepted beside
/// the data and refuses smaller ones (answering [`StaleFence`]) cannot lose
/// a newer change to a writer that stalled past its lease: write the saver
/// with [`fenced`] then.
///
/// Implemented for closures taking `&S` and returning a future of
/// `Result<(), E>`, which ignore the token.
#[async_trait]
pub trait SettingsSaver<S>: Send + Sync + 'static {
    /// Writes `settings` so that the next load reads them, unless the store
    /// has accepted a greater `fence` already.
    async fn save(&self, settings: &S, fence: Fence) -> Result<(), BoxError>;
}

#[async_trait]
impl<S, F, Fut, E> SettingsSaver<S> for F
where
    S: Send + Sync + 'static,
    F: Fn(&S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError> + 'static,
{
    async fn save(&self, settings: &S, _fence: Fence) -> Result<(), BoxError> {
        self(settings).await.map_err(Into::into)
    }
}

/// A saver written as a closure that takes the lease's fencing token too,
/// to store it beside the settings and refuse older ones.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use gensync::reload::{fenced, SettingsSaver, StaleFence};
/// use gensync::backend::Fence;
///
/// // The store: the settings and the greatest token it accepted.
/// let store = Arc::new(Mutex::new((String::new(), Fence::new(0))));
/// let saver = fenced(move |settings: &String, fence: Fence| {
///     let store = Arc::clone(&store);
///     let settings = settings.clone();
///     async move {
///         let mut held = store.lock().unwrap();
///         if fence < held.1 {
///             return Err(StaleFence { offered: fence, accepted: held.1 });
///         }
///         *held = (settings, fence);
///         Ok(())
///     }
/// });
/// # fn takes_saver(_: impl SettingsSaver<String>) {}
/// # takes_saver(saver);
/// ```
pub fn fenced<S, F, Fut, E>(save: F) -> Fenced<F>
where
    S: Send + Sync + 'static,
    F: Fn(&S, Fence) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError> + 'static,
{
    Fenced(save)
}

/// A saver that takes the fencing token; see [`fenced`].
#[derive(Clone)]
pub struct Fenced<F>(F);

impl<F> fmt::Debug for Fenced<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fenced").finish_non_exhaustive()
    }
}

#[async_trait]
impl<S, F, Fut, E> SettingsSaver<S> for Fenced<F>
where
    S: Send + Sync + 'static,
    F: Fn(&S, Fence) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError> + 'static,
{
    async fn save(&self, settings: &S, fence: Fence) -> Result<(), BoxError> {
        (self.0)(settings, fence).await.map_err(Into::into)
    }
}

/// Wraps a blocking function (reading a file, querying with a blocking
/// client) as a loader that runs it on tokio's blocking thread pool, so it
/// never stalls the async workers.
///
/// ```
/// use gensync::reload::{blocking_loader, SettingsLoader};
///
/// fn takes_loader(_: impl SettingsLoader<String>) {}
/// takes_loader(blocking_loader(|| std::fs::read_to_string("settings.json")));
/// ```
pub fn blocking_loader<S, F, E>(load: F) -> impl SettingsLoader<S>
where
    S: Send + 'static,
    F: Fn() -> Result<S, E> + Send + Sync + 'static,
    E: Into<BoxError> + 'static,
{
    let load = std::sync::Arc::new(load);
    move || {
        let load = std::sync::Arc::clone(&load);
        async move {
            match tokio::task::spawn_blocking(move || load().map_err(Into::into)).await {
                Ok(result) => result,
                Err(e) => Err(BoxError::from(format!("the blocking loader stopped: {e}"))),
            }
        }
    }
}

/// Wraps a blocking function (writing a file, a blocking database client) as
/// a saver that runs it on tokio's blocking thread pool. Needed with
/// [`BlockingReloader`](super::BlockingReloader) too: a saver that blocks
/// the runtime's thread would also stop the renewals of the writers' lease,
/// which run beside it.
///
/// ```
/// use gensync::reload::{blocking_saver, SettingsSaver};
///
/// fn takes_saver(_: impl SettingsSaver<String>) {}
/// takes_saver(blocking_saver(|settings: &String, _fence| {
///     std::fs::write("settings.txt", settings)
/// }));
/// ```
pub fn blocking_saver<S, F, E>(save: F) -> impl SettingsSaver<S>
where
    S: Clone + Send + Sync + 'static,
    F: Fn(&S, Fence) -> Result<(), E> + Send + Sync + 'static,
    E: Into<BoxError> + 'static,
{
    let save = std::sync::Arc::new(save);
    fenced(move |settings: &S, fence| {
        let (save, settings) = (std::sync::Arc::clone(&save), settings.clone());
        async move {
            match tokio::task::spawn_blocking(move || save(&settings, fence).map_err(Into::into))
                .await
            {
                Ok(result) => result,
                Err(e) => Err(BoxError::from(format!("the blocking saver stopped: {e}"))),
            }
        }
    })
}
