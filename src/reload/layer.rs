//! The tower middleware: check before every request, hand the request the
//! settings snapshot.

use std::fmt;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
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

impl<T> fmt::Debug for SettingsReloadLayer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettingsReloadLayer")
            .field("reloader", &self.reloader)
            .finish()
    }
}

impl<S, T> Layer<S> for SettingsReloadLayer<T> {
    type Service = SettingsReload<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        SettingsReload::new(inner, self.reloader.clone())
    }
}

/// Middleware that brings the settings up to date before calling the inner
/// service, and puts the [`Snapshot`](super::Snapshot) it got into the
/// request's extensions (in axum: `Extension<Snapshot<T>>`).
///
/// A backend or loader failure never fails the request: it is served with
/// the last good settings. Requests must be served inside a tokio runtime
/// (as axum and hyper do), where the reloader runs its loads.
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

impl<S: fmt::Debug, T> fmt::Debug for SettingsReload<S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettingsReload")
            .field("inner", &self.inner)
            .field("reloader", &self.reloader)
            .finish()
    }
}

impl<S, T> SettingsReload<S, T> {
    /// Wraps `inner`.
    pub fn new(inner: S, reloader: Reloader<T>) -> Self {
        SettingsReload { inner, reloader }
    }

    /// A layer that wraps services in this middleware.
    pub fn layer(reloader: Reloader<T>) -> SettingsReloadLayer<T> {
        SettingsReloadLayer::new(reloader)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, T, B> Service<http::Request<B>> for SettingsReload<S, T>
where
    S: Service<http::Request<B>> + Clone,
    T: Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, T, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let check = match self.reloader.check().now_or_later() {
            // Answered without a read (push or interval mode): the service
            // that was polled ready takes the request now, and neither it
            // nor the request moves into the future.
            Ok(snapshot) => {
                request.extensions_mut().insert(snapshot);
                return ResponseFuture::called(self.inner.call(request));
            }
            Err(check) => check,
        };
        // The clone is not ready; the service that was polled ready is the
        // one that must take this request once the check is done.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::checking(check, request, inner)
    }
}
