//! The keyed middleware: derives each request's key, brings that key's
//! settings up to date and hands the request its snapshot.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{header, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::reloader::{KeyedError, KeyedReloader};
use crate::reload::{Checked, Snapshot, Steps};

/// Why a request's key could not be derived: the answer the request gets
/// (a 4xx status and a message for the client), with no settings checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRejection {
    status: StatusCode,
    message: String,
}

impl KeyRejection {
    /// A rejection answered with `status` (a client error: 4xx) and
    /// `message`. Any other status is answered as 400.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let status = if status.is_client_error() {
            status
        } else {
            StatusCode::BAD_REQUEST
        };
        KeyRejection {
            status,
            message: message.into(),
        }
    }

    /// A 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        KeyRejection::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        KeyRejection::new(StatusCode::NOT_FOUND, message)
    }

    /// The status the request is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message the request is answered with.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Wraps services in [`KeyedReload`].
pub struct KeyedReloadLayer<K, S, F> {
    reloader: KeyedReloader<K, S>,
    key: F,
}

impl<K, S, F: Clone> Clone for KeyedReloadLayer<K, S, F> {
    fn clone(&self) -> Self {
        KeyedReloadLayer {
            reloader: self.reloader.clone(),
            key: self.key.clone(),
        }
    }
}

impl<K, S, F> fmt::Debug for KeyedReloadLayer<K, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedReloadLayer")
            .field("reloader", &self.reloader)
            .finish_non_exhaustive()
    }
}

impl<K, S, F> KeyedReloadLayer<K, S, F> {
    /// A layer that checks, for each request, the settings of the key
    /// `key` derives from it (a header, the host, a path segment).
    pub fn new(reloader: KeyedReloader<K, S>, key: F) -> Self {
        KeyedReloadLayer { reloader, key }
    }
}

impl<Svc, K, S, F: Clone> Layer<Svc> for KeyedReloadLayer<K, S, F> {
    type Service = KeyedReload<Svc, K, S, F>;

    fn layer(&self, inner: Svc) -> Self::Service {
        KeyedReload {
            inner,
            reloader: self.reloader.clone(),
            key: self.key.clone(),
        }
    }
}

/// Middleware that derives each request's key, brings that key's settings
/// up to date and puts their [`Snapshot`](crate::reload::Snapshot) in the
/// request's extensions (in axum: `Extension<Snapshot<S>>`).
///
/// A request whose key cannot be derived is answered with the key
/// function's [`KeyRejection`]; one whose key's settings never loaded gets
/// 503 Service Unavailable with `Retry-After` (the loader's error goes to
/// the log, not to the client). Neither reaches the inner service.
pub struct KeyedReload<Svc, K, S, F> {
    inner: Svc,
    reloader: KeyedReloader<K, S>,
    key: F,
}

impl<Svc: Clone, K, S, F: Clone> Clone for KeyedReload<Svc, K, S, F> {
    fn clone(&self) -> Self {
        KeyedReload {
            inner: self.inner.clone(),
            reloader: self.reloader.clone(),
            key: self.key.clone(),
        }
    }
}

impl<Svc: fmt::Debug, K, S, F> fmt::Debug for KeyedReload<Svc, K, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedReload")
            .field("inner", &self.inner)
            .field("reloader", &self.reloader)
            .finish_non_exhaustive()
    }
}

impl<Svc, K, S, F, B, ResBody> Service<http::Request<B>> for KeyedReload<Svc, K, S, F>
where
    Svc: Service<http::Request<B>, Response = http::Response<ResBody>> + Clone,
    K: Clone + Hash + Eq + Send + Sync + 'static,
    S: Send + Sync + 'static,
    F: Fn(&http::Request<B>) -> Result<K, KeyRejection>,
    ResBody: From<String>,
{
    type Response = http::Response<ResBody>;
    type Error = Svc::Error;
    type Future = KeyedResponseFuture<Svc, S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let key = match (self.key)(&request) {
            Ok(key) => key,
            Err(rejection) => {
                return KeyedResponseFuture::answered(plain(rejection.status, rejection.message))
            }
        };
        // The clone is not ready; the service that was polled ready is the
        // one that must take this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let reloader = self.reloader.clone();
        let check = Box::pin(async move { reloader.check(&key).await });
        KeyedResponseFuture::checking(check, request, inner)
    }
}

/// A key's check, boxed: it may load the key first, through the cache.
type KeyCheck<S> = Pin<Box<dyn Future<Output = Result<Snapshot<S>, KeyedError>> + Send>>;

pin_project! {
    /// The response future of [`KeyedReload`]: the key's check (which may
    /// load it first, through the cache), then the inner service's own
    /// future, unboxed; or the answer to a request that gets no settings.
    pub struct KeyedResponseFuture<Svc, S, B>
    where
        Svc: Service<http::Request<B>>,
    {
        #[pin]
        steps: Steps<Svc, KeyCheck<S>, B>,
    }
}

impl<Svc, S, B> KeyedResponseFuture<Svc, S, B>
where
    Svc: Service<http::Request<B>>,
{
    fn answered(answer: Svc::Response) -> Self {
        KeyedResponseFuture {
            steps: Steps::answered(answer),
        }
    }

    fn checking(check: KeyCheck<S>, request: http::Request<B>, inner: Svc) -> Self {
        KeyedResponseFuture {
            steps: Steps::checking(check, request, inner),
        }
    }
}

/// A key's check ends with its settings, or the answer for a key that has
/// none to serve.
impl<S, ResBody> Checked<http::Response<ResBody>> for Result<Snapshot<S>, KeyedError>
where
    S: Send + Sync + 'static,
    ResBody: From<String>,
{
    type Settings = S;

    fn settings(self) -> Result<Snapshot<S>, http::Response<ResBody>> {
        self.map_err(|e| unavailable(&e))
    }
}

impl<Svc, S, B, ResBody> Future for KeyedResponseFuture<Svc, S, B>
where
    Svc: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S: Send + Sync + 'static,
    ResBody: From<String>,
{
    type Output = Result<Svc::Response, Svc::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().steps.poll(cx)
    }
}

impl<Svc, S, B> fmt::Debug for KeyedResponseFuture<Svc, S, B>
where
    Svc: Service<http::Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedResponseFuture")
            .field("state", &self.steps.doing())
            .finish_non_exhaustive()
    }
}

/// The answer to a request whose key has no settings to serve: what a
/// client can act on, the details being in the log already.
fn unavailable<ResBody: From<String>>(e: &KeyedError) -> http::Response<ResBody> {
    match e {
        KeyedError::InvalidKey { .. } => plain(
            StatusCode::BAD_REQUEST,
            "this request names no valid settings key".into(),
        ),
        KeyedError::Unavailable { retry_in, .. } => {
            let mut answer = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "the settings for this request could not be loaded; try again shortly".into(),
            );
            let seconds = retry_in.as_secs() + u64::from(retry_in.subsec_nanos() > 0);
            answer
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.max(1).into());
            answer
        }
        // A check never writes.
        KeyedError::Publish(_) => plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()),
    }
}

fn plain<ResBody: From<String>>(status: StatusCode, message: String) -> http::Response<ResBody> {
    let mut answer = http::Response::new(ResBody::from(message));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}
