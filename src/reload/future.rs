//! The named futures of a check and of the middleware, so neither boxes
//! the inner service's future nor asks more of it than tower does.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower_service::Service;

use super::metrics::Stopwatch;
use super::reloader::{BoxFuture, Reloader};
use super::snapshot::Snapshot;
use crate::synchronizer::Check;

/// The future of [`Reloader::check`]: resolves to the settings a request
/// should use.
///
/// It reads the shared generation, and when the settings are current it
/// answers at once with no further allocation; only an expired check goes
/// on to join or start a reload.
#[must_use = "futures do nothing unless polled"]
pub struct CheckFuture<S> {
    step: Step<S>,
}

enum Step<S> {
    Reading {
        reloader: Reloader<S>,
        began: u64,
        stopwatch: Stopwatch,
        read: BoxFuture<Check>,
    },
    CatchingUp {
        reloader: Reloader<S>,
        stopwatch: Stopwatch,
        catch_up: BoxFuture<Snapshot<S>>,
    },
    Done,
}

impl<S: Send + Sync + 'static> CheckFuture<S> {
    pub(super) fn new(reloader: Reloader<S>, began: u64, read: BoxFuture<Check>) -> Self {
        CheckFuture {
            step: Step::Reading {
                reloader,
                began,
                stopwatch: Stopwatch::start(),
                read,
            },
        }
    }
}

impl<S: Send + Sync + 'static> Future for CheckFuture<S> {
    type Output = Snapshot<S>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Snapshot<S>> {
        // Every field is Unpin (handles and boxed futures).
        let step = &mut self.get_mut().step;
        loop {
            match step {
                Step::Reading {
                    reloader,
                    began,
                    read,
                    ..
                } => {
                    let check = ready!(read.as_mut().poll(cx));
                    let slow = match reloader.after_read(check, *began) {
                        Ok(snapshot) => return Poll::Ready(finish(step, snapshot)),
                        Err(slow) => slow,
                    };
                    let Step::Reading {
                        reloader,
                        stopwatch,
                        ..
                    } = std::mem::replace(step, Step::Done)
                    else {
                        unreachable!("matched as Reading above")
                    };
                    *step = Step::CatchingUp {
                        reloader,
                        stopwatch,
                        catch_up: slow,
                    };
                }
                Step::CatchingUp { catch_up, .. } => {
                    let snapshot = ready!(catch_up.as_mut().poll(cx));
                    return Poll::Ready(finish(step, snapshot));
                }
                Step::Done => panic!("CheckFuture polled after it completed"),
            }
        }
    }
}

/// Ends a check: counts it and hands out its snapshot.
fn finish<S: Send + Sync + 'static>(step: &mut Step<S>, snapshot: Snapshot<S>) -> Snapshot<S> {
    match std::mem::replace(step, Step::Done) {
        Step::Reading {
            reloader,
            stopwatch,
            ..
        }
        | Step::CatchingUp {
            reloader,
            stopwatch,
            ..
        } => reloader.served(stopwatch, &snapshot),
        Step::Done => {}
    }
    snapshot
}

impl<S> fmt::Debug for CheckFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let step = match self.step {
            Step::Reading { .. } => "reading the shared generation",
            Step::CatchingUp { .. } => "waiting for a reload",
            Step::Done => "done",
        };
        f.debug_struct("CheckFuture").field("step", &step).finish()
    }
}

pin_project! {
    /// The response future of [`SettingsReload`](super::SettingsReload):
    /// first the check, then the inner service's own future, unboxed.
    pub struct ResponseFuture<S, T, B>
    where
        S: Service<http::Request<B>>,
    {
        #[pin]
        state: State<S::Future, T, B>,
        // The clone that was polled ready, kept until the check is done.
        inner: S,
    }
}

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

impl<S, T, B> ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
{
    pub(super) fn new(check: CheckFuture<T>, request: http::Request<B>, inner: S) -> Self {
        ResponseFuture {
            state: State::Checking {
                check,
                request: Some(request),
            },
            inner,
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
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking { check, request } => {
                    let snapshot = ready!(Pin::new(check).poll(cx));
                    let mut request = request
                        .take()
                        .expect("the request is taken once, when the check completes");
                    request.extensions_mut().insert(snapshot);
                    let future = this.inner.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => return future.poll(cx),
            }
        }
    }
}

impl<S, T, B> fmt::Debug for ResponseFuture<S, T, B>
where
    S: Service<http::Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Checking { check, .. } => format!("checking ({check:?})"),
            State::Calling { .. } => "calling the inner service".to_owned(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
