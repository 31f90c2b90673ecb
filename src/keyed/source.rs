//! Where each key's settings come from and go to, and the adapters that
//! make one key's loader and saver out of them.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::fence::Fence;
use crate::reload::{BoxError, SettingsLoader, SettingsSaver};

/// Loads one key's settings from their source of truth.
///
/// Implemented for async closures taking the key:
///
/// ```
/// use gensync::keyed::KeyedLoader;
///
/// fn takes_loader(_: impl KeyedLoader<String, String>) {}
/// takes_loader(|tenant: String| async move {
///     Ok::<_, std::io::Error>(format!("settings of {tenant}"))
/// });
/// ```
#[async_trait]
pub trait KeyedLoader<K, S>: Send + Sync + 'static {
    /// Reads the current settings of `key`.
    async fn load(&self, key: K) -> Result<S, BoxError>;
}

#[async_trait]
impl<K, S, F, Fut, E> KeyedLoader<K, S> for F
where
    K: Send + 'static,
    S: Send + 'static,
    F: Fn(K) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<S, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    async fn load(&self, key: K) -> Result<S, BoxError> {
        self(key).await.map_err(Into::into)
    }
}

/// Saves one key's settings to their source of truth, for
/// [`KeyedReloader::publish`](super::KeyedReloader::publish), under that
/// key's writers' lease, with the lease's [`Fence`] (see
/// [`SettingsSaver`]).
///
/// Implemented for closures taking the key, the settings and the fence.
#[async_trait]
pub trait KeyedSaver<K, S>: Send + Sync + 'static {
    /// Writes `settings` for `key`, unless the store has accepted a greater
    /// `fence` for it already.
    async fn save(&self, key: K, settings: &S, fence: Fence) -> Result<(), BoxError>;
}

#[async_trait]
impl<K, S, F, Fut, E> KeyedSaver<K, S> for F
where
    K: Send + 'static,
    S: Send + Sync + 'static,
    F: Fn(K, &S, Fence) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send,
    E: Into<BoxError> + 'static,
{
    async fn save(&self, key: K, settings: &S, fence: Fence) -> Result<(), BoxError> {
        self(key, settings, fence).await.map_err(Into::into)
    }
}

/// One key's loader: the keyed loader, bound to the key.
pub(super) struct KeyLoader<K, S> {
    pub(super) loader: Arc<dyn KeyedLoader<K, S>>,
    pub(super) key: K,
}

#[async_trait]
impl<K, S> SettingsLoader<S> for KeyLoader<K, S>
where
    K: Clone + Send + Sync + 'static,
    S: Send + 'static,
{
    async fn load(&self) -> Result<S, BoxError> {
        self.loader.load(self.key.clone()).await
    }
}

/// One key's saver: the keyed saver, bound to the key.
pub(super) struct KeySaver<K, S> {
    pub(super) saver: Arc<dyn KeyedSaver<K, S>>,
    pub(super) key: K,
}

#[async_trait]
impl<K, S> SettingsSaver<S> for KeySaver<K, S>
where
    K: Clone + Send + Sync + 'static,
    S: Send + Sync + 'static,
{
    async fn save(&self, settings: &S, fence: Fence) -> Result<(), BoxError> {
        self.saver.save(self.key.clone(), settings, fence).await
    }
}
