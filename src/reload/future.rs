//! The named futures of a check and of the middleware, so neither boxes
//! the inner service's future nor asks more of it than tower does.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

#[cfg(feature = "layer")]
use pin_project_lite::pin_project;
#[cfg(feature = "layer")]
use tower_service::Service;

use super::answer::{Answer, Freshness};
use super::metrics::Stopwatch;
use super::reads::Observe;
use super::reloader::Reloader;
use super::snapshot::Snapshot;

/// A boxed future, for the parts of a check that run on a trait object.
pub(super) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of [`Reloader::check`](super::Reloader::check): resolves to the settings a request
/// should use.
///
/// A named state machine: a check answered without a read (push or
/// interval mode, settings current) is ready at once, and a check that
/// waits for a read shared with others allocates nothing. Only the first
/// check after an idle spell, which makes the read itself, and a check
/// that must wait for a load, box what they wait on (the synchronizer and
/// the loader are trait objects whose calls allocate anyway).
#[must_use = "futures do nothing unless polled"]
pub struct CheckFuture<S> {
    answer: AnswerFuture<S>,
}

/// The future of [`Reloader::answer`](super::Reloader::answer): the
/// settings and how fresh they are. Allocates as [`CheckFuture`] does.
#[must_use = "futures do nothing unless polled"]
pub struct AnswerFuture<S> {
    check: Checking<S>,
}

/// Where a check stands.
pub(super) enum Checking<S> {
    /// Answered.
    Ready(Answer<S>),
    /// Not polled yet: the check begins (takes its number and asks for its
    /// read) when first polled.
    Start(Reloader<S>),
    /// Waiting for the read that answers it.
    Observing {
        reloader: Reloader<S>,
        began: u64,
        stopwatch: Stopwatch,
        observe: Observe,
    },
    /// Expired: waiting for a load.
    CatchingUp(BoxFuture<Answer<S>>),
    /// Its answer was taken.
    Done,
}

impl<S> AnswerFuture<S> {
    pub(super) fn start(reloader: Reloader<S>) -> Self {
        AnswerFuture {
            check: Checking::Start(reloader),
        }
    }

    pub(super) fn ready(answer: Answer<S>) -> Self {
        AnswerFuture {
            check: Checking::Ready(answer),
        }
    }
}

impl<S> CheckFuture<S> {
    pub(super) fn new(answer: AnswerFuture<S>) -> Self {
        CheckFuture { answer }
    }

    /// The answer, when the check had it at once (no read to wait for).
    #[cfg_attr(not(feature = "layer"), allow(dead_code))]
    pub(super) fn now_or_later(mut self) -> Result<Snapshot<S>, Self> {
        match mem::replace(&mut self.answer.check, Checking::Done) {
            Checking::Ready(answer) => Ok(answer.snapshot),
            check => {
                self.answer.check = check;
                Err(self)
            }
        }
    }
}

impl<S> Unpin for AnswerFuture<S> {}

impl<S: Send + Sync + 'static> Future for AnswerFuture<S> {
    type Output = Answer<S>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer<S>> {
        let check = &mut self.check;
        loop {
            match check {
                Checking::Observing {
                    reloader, observe, ..
                } => {
                    let observed = ready!(observe.poll(cx, &reloader.core().reads));
                    let Checking::Observing {
                        reloader,
                        began,
                        stopwatch,
                        ..
                    } = mem::replace(check, Checking::Done)
                    else {
                        unreachable!("matched above")
                    };
                    *check = reloader.observed(began, stopwatch, observed, Freshness::Read);
                }
                Checking::CatchingUp(load) => {
                    let answer = ready!(load.as_mut().poll(cx));
                    *check = Checking::Done;
                    return Poll::Ready(answer);
                }
                _ => match mem::replace(check, Checking::Done) {
                    Checking::Ready(answer) => return Poll::Ready(answer),
                    Checking::Start(reloader) => {
                        *check = reloader.start_check(cx.waker());
                        // Registered with this waker already: no need to
                        // look again before it wakes.
                        if matches!(check, Checking::Observing { observe, .. } if observe.waiting())
                        {
                            return Poll::Pending;
                        }
                    }
                    _ => panic!("a CheckFuture is not polled after it completed"),
                },
            }
        }
    }
}

impl<S> Drop for AnswerFuture<S> {
    fn drop(&mut self) {
        // A check dropped while waiting lets go of its waker now.
        if let Checking::Observing {
            reloader, observe, ..
        } = &mut self.check
        {
            observe.cancel(&reloader.core().reads);
        }
    }
}

impl<S: Send + Sync + 'static> Future for CheckFuture<S> {
    type Output = Snapshot<S>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Snapshot<S>> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| answer.snapshot)
    }
}

impl<S> fmt::Debug for CheckFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckFuture").finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for AnswerFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerFuture").finish_non_exhaustive()
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
        steps: Steps<S, CheckFuture<T>, B>,
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

#[cfg(feature = "layer")]
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

#[cfg(feature = "layer")]
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
#[cfg(feature = "layer")]
pub(crate) trait Checked<R> {
    /// The settings' type.
    type Settings: Send + Sync + 'static;

    /// The settings, or the answer without them.
    fn settings(self) -> Result<Snapshot<Self::Settings>, R>;
}

#[cfg(feature = "layer")]
impl<T: Send + Sync + 'static, R> Checked<R> for Snapshot<T> {
    type Settings = T;

    fn settings(self) -> Result<Snapshot<T>, R> {
        Ok(self)
    }
}

#[cfg(feature = "layer")]
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

#[cfg(feature = "layer")]
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

#[cfg(feature = "layer")]
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

#[cfg(feature = "layer")]
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
