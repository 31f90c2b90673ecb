//! What a failed write says: [`PublishError`], and how to tell a fenced
//! store's refusal ([`StaleFence`]) from a save that may have landed.

use std::time::Duration;

use crate::error::Error;
use crate::fence::Fence;

/// The error a loader or saver returns: anything that can be displayed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed [`Reloader::publish`](crate::reload::Reloader::publish) or
/// [`Reloader::update`](crate::reload::Reloader::update) (and their keyed
/// counterparts).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The reloader was built without a saver.
    #[error("this reloader has no saver: build it with ReloaderBuilder::saver to publish")]
    NoSaver,
    /// Other writers held the lease for every try.
    #[error("another writer held the writers' lease {lock} (of {key}) through {tries} tries; retry later, or look for a stuck writer: a lease lapses {lock_ttl:?} after its writer stops renewing it, a write is abandoned after {write_timeout:?}, and a lease that would never lapse is taken over by the next writer; `gensync break-lock` on the key breaks one at once")]
    Locked {
        /// The generation's key.
        key: String,
        /// The lease's own key, as stored.
        lock: String,
        /// How many times the lease was tried.
        tries: u32,
        /// How long a lease lasts without renewal.
        lock_ttl: Duration,
        /// How long a writer may hold it at most.
        write_timeout: Duration,
    },
    /// The backend failed before anything was saved.
    #[error("could not start the write, nothing was saved: {0}")]
    Start(#[source] Error),
    /// Loading the current settings for an update failed.
    #[error("could not load the current settings to update them, nothing was saved: {0}")]
    Load(#[source] BoxError),
    /// The saver failed.
    #[error("saving the settings failed: {0}")]
    Save(#[source] BoxError),
    /// The writers' lease lapsed before this write finished: the writer was
    /// stalled (or cut off from the backend) for longer than the lease,
    /// and another writer may have written meanwhile. Reported whatever
    /// the saver did; a [fenced](crate::reload::fenced) store refuses the save.
    /// [`PublishError::saved`] says what became of it.
    #[error("the writers' lease on {key} lapsed before this write finished (it went {lease:?} without a renewal: a stalled process, Redis out of reach, or a Redis that restarted or failed over without it), so another writer may have written meanwhile; {}", lease_lost_outcome(*saved, *announced, .source))]
    LeaseLost {
        /// The generation's key.
        key: String,
        /// How long a lease lasts without renewal.
        lease: Duration,
        /// Whether the saver reported this write saved: it may have
        /// replaced a newer change.
        saved: bool,
        /// Whether the saved write was also announced (bumped).
        announced: bool,
        /// What the saver said when it failed (a fenced store refusing a
        /// stale token, say).
        #[source]
        source: Option<BoxError>,
    },
    /// The settings were saved, but the bump failed.
    #[error("the settings were saved but other processes were not told: {source}; they reload when the write intent lapses (within {lock_ttl:?}), or publish again")]
    Bump {
        /// Why the bump failed.
        #[source]
        source: Error,
        /// When the intent recorded before saving lapses.
        lock_ttl: Duration,
    },
}

fn lease_lost_outcome(saved: bool, announced: bool, source: &Option<BoxError>) -> String {
    match (saved, announced, source) {
        (true, true, _) => "this write was saved and announced anyway, and may have replaced a newer change: check the settings".to_owned(),
        (true, false, _) => "this write was saved but not announced, and may have replaced a newer change: check the settings and publish again".to_owned(),
        (false, _, None) => "nothing of this write was saved".to_owned(),
        (false, _, Some(e)) if refused(e) => format!("the store refused it ({e}): nothing of it was saved"),
        (false, _, Some(e)) => format!("the saver failed ({e}) and may have saved part of it: check the settings"),
    }
}

/// Whether a saver's error is a fenced store's refusal, which saved
/// nothing: a [`StaleFence`], or one that carries it (as its source, or
/// inside an `io::Error`).
fn refused(e: &BoxError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&**e);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if e.is::<StaleFence>() || inner.is_some_and(|i| i.is::<StaleFence>()) {
            return true;
        }
        next = e.source();
    }
    false
}

impl PublishError {
    /// Whether this write's settings reached the source of truth:
    /// `Some(false)` when surely not (the write never got to save, or the
    /// store refused it), `Some(true)` when the saver reported them saved
    /// (but the write failed after), `None` when the saver failed and may
    /// have saved part of them.
    pub fn saved(&self) -> Option<bool> {
        match self {
            PublishError::NoSaver
            | PublishError::Locked { .. }
            | PublishError::Start(_)
            | PublishError::Load(_) => Some(false),
            PublishError::Save(e) => refused(e).then_some(false),
            PublishError::LeaseLost { saved: true, .. } | PublishError::Bump { .. } => Some(true),
            PublishError::LeaseLost { source: None, .. } => Some(false),
            PublishError::LeaseLost {
                source: Some(e), ..
            } => refused(e).then_some(false),
        }
    }
}

/// A store's refusal of a save whose fencing token is smaller than one it
/// accepted: a newer writer saved first, and this writer's lease had
/// lapsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused a save with fencing token {offered}: the store already took token {accepted} from a newer writer")]
pub struct StaleFence {
    /// The token this save came with.
    pub offered: Fence,
    /// The greatest token the store accepted.
    pub accepted: Fence,
}
