//! The tower middleware: check before every request, hand the request the
//! settings snapshot.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::reloader::Reloader;

/// Applies [`SettingsReload`] to a service.
///
/// ```
/// use std::convert::Infallible;
/// use gensync::reload::{Reloader, SettingsReloadLayer, Snapshot};
/// use gensync::{Key, MemoryBackend, Synchronizer};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sync = Synchronizer::new(MemoryBackend::new(), Key::new(["flags"])?);
/// let reloader = Reloader::builder(sync, || async { Ok::<_, std::io::Error>(42u32) }).build(0)?;
///
/// let service = ServiceBuilder::new()
///     .layer(SettingsReloadLayer::new(reloader))
///     .service(service_fn(|req: http::Request<()>| async move {
///         let settings = req.extensions().get::<Snapshot<u32>>().unwrap();
///         Ok::<_, Infallible>(**settings)
///     }));
/// assert_eq!(service.oneshot(http::Request::new(())).await?, 42);
/// # Ok(()) }
/// ```
pub struct SettingsReloadLayer<T> {
    reloader: Reloader<T>,
}

impl<T> SettingsReloadLayer<T> {
    /// A layer that checks `reloader` before each request.
    pub fn new(reloader: Reloader<T>) -> Self {
        SettingsReloadLayer { reloader }
    }
}

impl<T> Clone for SettingsReloadLayer<T> {
    fn clone(&self) -> Self {
        SettingsReloadLayer {
            reloader: self.reloader.clone(),
        }
    }
}

impl<S, T> Layer<S> for SettingsReloadLayer<T> {
    type Service = SettingsReload<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        SettingsReload {
            inner,
            reloader: self.reloader.clone(),
        }
    }
}

/// Middleware that brings the settings up to date before calling the inner
/// service, and puts the [`Snapshot`](super::Snapshot) it got into the
/// request's extensions (in axum: `Extension<Snapshot<T>>`).
///
/// A backend or loader failure never fails the request: it is served with
/// the last good settings.
pub struct SettingsReload<S, T> {
    inner: S,
    reloader: Reloader<T>,
}

impl<S: Clone, T> Clone for SettingsReload<S, T> {
    fn clone(&self) -> Self {
        SettingsReload {
            inner: self.inner.clone(),
            reloader: self.reloader.clone(),
        }
    }
}

impl<S, T> SettingsReload<S, T> {
    /// Wraps `inner`.
    pub fn new(inner: S, reloader: Reloader<T>) -> Self {
        SettingsReload { inner, reloader }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The response future of [`SettingsReload`].
pub type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<R, E>> + Send + 'static>>;

impl<S, T, B> Service<http::Request<B>> for SettingsReload<S, T>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    T: Send + Sync + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The clone is not ready; the service that was polled ready is the
        // one that must take this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let reloader = self.reloader.clone();
        Box::pin(async move {
            let snapshot = reloader.check().await;
            request.extensions_mut().insert(snapshot);
            inner.call(request).await
        })
    }
}
