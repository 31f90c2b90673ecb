//! Where settings come from and go to: the user's source of truth.

use std::future::Future;

use async_trait::async_trait;

/// The error a loader or saver returns: anything that can be displayed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
/// Implemented for closures taking `&S` and returning a future of
/// `Result<(), E>`.
#[async_trait]
pub trait SettingsSaver<S>: Send + Sync + 'static {
    /// Writes `settings` so that the next load reads them.
    async fn save(&self, settings: &S) -> Result<(), BoxError>;
}

#[async_trait]
impl<S, F, Fut, E> SettingsSaver<S> for F
where
    S: Send + Sync + 'static,
    F: Fn(&S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError> + 'static,
{
    async fn save(&self, settings: &S) -> Result<(), BoxError> {
        self(settings).await.map_err(Into::into)
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
