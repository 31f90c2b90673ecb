//! One load of the settings, bounded: on a task of its own (so a panicking
//! loader fails this load only, and a caller that stops waiting cancels
//! nothing), and aborted when it outlasts its bound (so a hung loader does
//! not keep running, or holding its connection, after the load gave up).
//! Every load goes through here: a reloader's, a keyed reloader's first
//! one, and an update's read of the current settings.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::source::BoxError;

/// Why a load gave no settings.
#[derive(Debug)]
pub(crate) enum LoadFailure {
    /// The loader returned an error.
    Failed(BoxError),
    /// The loader panicked: the runtime's words, with the panic's message.
    Panicked(String),
    /// The loader's task was cancelled (its runtime shutting down).
    Cancelled,
    /// The loader did not finish within the bound, and was aborted.
    TimedOut(Duration),
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadFailure::Failed(e) => write!(f, "the loader failed: {e}"),
            LoadFailure::Panicked(how) => write!(f, "the loader panicked: {how}"),
            LoadFailure::Cancelled => f.write_str("the loader task was cancelled"),
            LoadFailure::TimedOut(bound) => {
                write!(f, "the loader did not finish within {bound:?}")
            }
        }
    }
}

impl LoadFailure {
    /// What to report as the cause: the loader's own error when it returned
    /// one (its words, as the caller already says a load failed), else this
    /// failure's text.
    pub(crate) fn into_cause(self) -> BoxError {
        match self {
            LoadFailure::Failed(e) => e,
            other => other.to_string().into(),
        }
    }
}

/// Runs `load` on a task of its own for at most `timeout`, aborting it
/// when the bound passes. Must run inside a tokio runtime.
pub(crate) async fn load_within<S, F>(timeout: Duration, load: F) -> Result<S, LoadFailure>
where
    S: Send + 'static,
    F: Future<Output = Result<S, BoxError>> + Send + 'static,
{
    let mut task = tokio::spawn(load);
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(Ok(settings))) => Ok(settings),
        Ok(Ok(Err(e))) => Err(LoadFailure::Failed(e)),
        Ok(Err(e)) if e.is_panic() => Err(LoadFailure::Panicked(e.to_string())),
        Ok(Err(_)) => Err(LoadFailure::Cancelled),
        Err(_) => {
            task.abort();
            Err(LoadFailure::TimedOut(timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_loader_fails_its_load_with_the_panics_message() {
        let failure = load_within(Duration::from_secs(5), async {
            if true {
                panic!("the settings table is gone");
            }
            Ok::<u8, BoxError>(1)
        })
        .await
        .unwrap_err();
        assert!(matches!(failure, LoadFailure::Panicked(_)), "{failure:?}");
        let said = failure.to_string();
        assert!(said.contains("the settings table is gone"), "{said}");
    }
}
