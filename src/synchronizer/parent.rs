//! A synchronizer's parent generation (a set's own key, read with each
//! member's) and the member tracker its reads feed.

use std::sync::{Arc, OnceLock};

use super::Synchronizer;
use crate::backend::{Backend, Stored, Tracker};
use crate::error::Error;
use crate::generation::Generation;
use crate::key::Key;

impl<B: Backend> Synchronizer<B> {
    /// Reads `parent` with the key, in one round trip, and folds it into
    /// every generation this synchronizer observes: a bump of the parent
    /// (a change to every tenant at once) expires this key's state too,
    /// without touching the key. A missing parent is no bump yet. Writes
    /// (creating and bumping the key) leave the parent alone.
    ///
    /// With a parent, a plain push-mode tracker cannot see the parent's
    /// changes, so [`track`](super::GenerationSynchronizer::track) offers none
    /// (checks read, as in strict mode); a keyed reloader tracks both.
    pub fn with_parent(mut self, parent: Key) -> Self {
        self.parent = Some(parent);
        self
    }

    /// The parent generation read with the key, if any.
    pub fn parent(&self) -> Option<&Key> {
        self.parent.as_ref()
    }

    /// Tracks through `tracker`, a member of a set a backend session
    /// tracks: this synchronizer's own reads tell it what the key holds.
    #[cfg_attr(not(feature = "keyed"), allow(dead_code))]
    pub(crate) fn fed_tracker(mut self, tracker: Arc<Tracker>) -> Self {
        self.tracker = OnceLock::from(Some(tracker));
        self.feeds_tracker = true;
        self
    }

    /// The key as stored, with the parent generation folded in.
    pub(super) async fn read_with_parent(&self) -> Result<Stored, Error> {
        let Some(parent) = &self.parent else {
            return self.reply("get", self.backend.get(&self.key).await);
        };
        let (own, parent) =
            self.reply("get", self.backend.get_with_parent(&self.key, parent).await)?;
        Ok(match own {
            Stored::Value(g) => Stored::Value(fold(g, parent)),
            own => own,
        })
    }
}

/// `own` with the parent generation folded in. A parent never bumped, or
/// unreadable (`mark_updated` on it repairs it), has no change to fold in.
pub(super) fn fold(own: Generation, parent: Stored) -> Generation {
    match parent {
        Stored::Value(p) => own.with_parent(p),
        _ => own,
    }
}
