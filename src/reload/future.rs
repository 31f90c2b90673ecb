//! The named future of the middleware: a check ([`CheckFuture`], in
//! `checking.rs`), then the inner service's own future, so neither is
//! boxed nor asks more of the service than tower does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::checking::CheckFuture;
use super::snapshot::Snapshot;

pin_project! {
    /// The response future of [`SettingsReload`](super::SettingsReload):
    /// first the check, then the inner service's own future, unboxed.
    pub struct ResponseFuture<S, T, B>
    where
        S: Service<http::Request<B>>,
    {
        #[pin]
        steps: Steps<S, CheckFuture<T>, B>,
    }
}

impl<S, T, B> ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
{
    /// Waits for `check`, then hands `request` to `inner`.
    pub(super) fn checking(check: CheckFuture<T>, request: http::Request<B>, inner: S) -> Self {
        ResponseFuture {
            steps: Steps::checking(check, request, inner),
        }
    }

    /// The inner service's future for a request that had its settings at
    /// once.
    pub(super) fn called(future: S::Future) -> Self {
        ResponseFuture {
            steps: Steps::called(future),
        }
    }
}

impl<S, T, B> Future for ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
    T: Send + Sync + 'static,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().steps.poll(cx)
    }
}

impl<S, T, B> fmt::Debug for ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("state", &self.steps.doing())
            .finish_non_exhaustive()
    }
}

/// What a check a middleware waits on ends with: the settings for the
/// request, or (a check that can fail) the response to answer instead.
pub(crate) trait Checked<R> {
    /// The settings' type.
    type Settings: Send + Sync + 'static;

    /// The settings, or the answer without them.
    fn settings(self) -> Result<Snapshot<Self::Settings>, R>;
}

impl<T: Send + Sync + 'static, R> Checked<R> for Snapshot<T> {
    type Settings = T;

    fn settings(self) -> Result<Snapshot<T>, R> {
        Ok(self)
    }
}

pin_project! {
    /// A middleware's response, step by step, for both layers: the check
    /// (`C`), then the inner service's own future; or an answer given
    /// without it.
    pub(crate) struct Steps<S, C, B>
    where
        S: Service<http::Request<B>>,
    {
        #[pin]
        state: State<S, C, S::Future, S::Response, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, C, F, R, B> {
        // Answered without the inner service (a rejected request).
        Answered {
            answer: Option<R>,
        },
        Checking {
            check: C,
            request: Option<http::Request<B>>,
            // The clone that was polled ready: it takes the request once
            // the check is done.
            inner: Option<S>,
        },
        Calling {
            #[pin]
            future: F,
        },
    }
}

impl<S, C, B> Steps<S, C, B>
where
    S: Service<http::Request<B>>,
{
    /// Answers `answer`, calling nothing.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))] // a rejected key
    pub(crate) fn answered(answer: S::Response) -> Self {
        Steps {
            state: State::Answered {
                answer: Some(answer),
            },
        }
    }

    /// Waits for `check`, then hands `request` to `inner`.
    pub(crate) fn checking(check: C, request: http::Request<B>, inner: S) -> Self {
        Steps {
            state: State::Checking {
                check,
                request: Some(request),
                inner: Some(inner),
            },
        }
    }

    /// The inner service's future, for a request that had its settings at
    /// once.
    pub(crate) fn called(future: S::Future) -> Self {
        Steps {
            state: State::Calling { future },
        }
    }

    /// The step under way, for `Debug`.
    pub(crate) fn doing(&self) -> &'static str {
        match &self.state {
            State::Answered { .. } => "answering without the inner service",
            State::Checking { .. } => "checking the settings",
            State::Calling { .. } => "calling the inner service",
        }
    }
}

impl<S, C, B> Future for Steps<S, C, B>
where
    S: Service<http::Request<B>>,
    C: Future + Unpin,
    C::Output: Checked<S::Response>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Answered { answer } => {
                    return Poll::Ready(Ok(answer
                        .take()
                        .expect("a response future is not polled after it completed")));
                }
                StateProj::Checking {
                    check,
                    request,
                    inner,
                } => {
                    let snapshot = match std::task::ready!(Pin::new(check).poll(cx)).settings() {
                        Ok(snapshot) => snapshot,
                        Err(answer) => {
                            this.state.set(State::Answered { answer: None });
                            return Poll::Ready(Ok(answer));
                        }
                    };
                    let mut request = request
                        .take()
                        .expect("the request is taken once, when the check completes");
                    request.extensions_mut().insert(snapshot);
                    let future = inner
                        .take()
                        .expect("the inner service is taken once, when the check completes")
                        .call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}
