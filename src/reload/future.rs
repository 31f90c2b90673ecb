//! The named futures of a check and of the middleware, so neither boxes
//! the inner service's future nor asks more of it than tower does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

#[cfg(feature = "layer")]
use pin_project_lite::pin_project;
#[cfg(feature = "layer")]
use tower_service::Service;

use super::snapshot::Snapshot;

/// A boxed future, for the parts of a check that run on a trait object.
pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of [`Reloader::check`](super::Reloader::check): resolves to the settings a request
/// should use.
///
/// The check runs as one boxed future: the synchronizer is a trait object
/// whose calls allocate anyway, and one box around the whole check costs
/// no more than one around the read alone.
/// A check answered without a read (push or interval mode, settings
/// current) is ready at once and allocates nothing.
#[must_use = "futures do nothing unless polled"]
pub struct CheckFuture<S> {
    check: Checking<S>,
}

enum Checking<S> {
    Ready(Option<Snapshot<S>>),
    Running(BoxFuture<Snapshot<S>>),
}

impl<S> CheckFuture<S> {
    pub(super) fn new(check: BoxFuture<Snapshot<S>>) -> Self {
        CheckFuture {
            check: Checking::Running(check),
        }
    }

    pub(super) fn ready(snapshot: Snapshot<S>) -> Self {
        CheckFuture {
            check: Checking::Ready(Some(snapshot)),
        }
    }

    /// The answer, when the check had it at once (no read to wait for).
    #[cfg_attr(not(feature = "layer"), allow(dead_code))]
    pub(super) fn now_or_later(self) -> Result<Snapshot<S>, Self> {
        match self.check {
            Checking::Ready(Some(snapshot)) => Ok(snapshot),
            check => Err(CheckFuture { check }),
        }
    }
}

impl<S> Unpin for CheckFuture<S> {}

impl<S> Future for CheckFuture<S> {
    type Output = Snapshot<S>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Snapshot<S>> {
        match &mut self.check {
            Checking::Ready(snapshot) => Poll::Ready(
                snapshot
                    .take()
                    .expect("a CheckFuture is not polled after it completed"),
            ),
            Checking::Running(check) => check.as_mut().poll(cx),
        }
    }
}

impl<S> fmt::Debug for CheckFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckFuture").finish_non_exhaustive()
    }
}

#[cfg(feature = "layer")]
pin_project! {
    /// The response future of [`SettingsReload`](super::SettingsReload):
    /// first the check, then the inner service's own future, unboxed.
    pub struct ResponseFuture<S, T, B>
    where
        S: Service<http::Request<B>>,
    {
        #[pin]
        state: State<S::Future, T, B>,
        // The clone that was polled ready: it takes the request once the
        // check is done. `None` when the request was handed over at once.
        inner: Option<S>,
    }
}

#[cfg(feature = "layer")]
pin_project! {
    #[project = StateProj]
    enum State<F, T, B> {
        Checking {
            check: CheckFuture<T>,
            request: Option<http::Request<B>>,
        },
        Calling {
            #[pin]
            future: F,
        },
    }
}

#[cfg(feature = "layer")]
impl<S, T, B> ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
{
    /// Waits for `check`, then hands `request` to `inner`.
    pub(super) fn checking(check: CheckFuture<T>, request: http::Request<B>, inner: S) -> Self {
        ResponseFuture {
            state: State::Checking {
                check,
                request: Some(request),
            },
            inner: Some(inner),
        }
    }

    /// The inner service's future for a request that had its settings at
    /// once.
    pub(super) fn called(future: S::Future) -> Self {
        ResponseFuture {
            state: State::Calling { future },
            inner: None,
        }
    }
}

#[cfg(feature = "layer")]
impl<S, T, B> Future for ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
    T: Send + Sync + 'static,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, request } => {
                    let snapshot = std::task::ready!(Pin::new(check).poll(cx));
                    let mut request = request
                        .take()
                        .expect("the request is taken once, when the check completes");
                    request.extensions_mut().insert(snapshot);
                    let future = this
                        .inner
                        .as_mut()
                        .expect("the inner service waits in every future that checks")
                        .call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}

#[cfg(feature = "layer")]
impl<S, T, B> fmt::Debug for ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { .. } => "checking the settings",
            State::Calling { .. } => "calling the inner service",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
