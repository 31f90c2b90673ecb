//! A synchronizer's parent generation (a set's own key, read with each
//! member's) and the member tracker its reads feed.

use std::sync::{Arc, OnceLock};

use super::{Synchronizer, TRIES};
use crate::backend::{Backend, Stored, Tracker};
use crate::error::Error;
use crate::generation::Generation;
use crate::key::Key;

impl<B: Backend> Synchronizer<B> {
    /// Reads `parent` with the key, in one round trip, and folds it into
    /// every generation this synchronizer observes: a bump of the parent
    /// (a change to every tenant at once) expires this key's state too,
    /// without touching the key. A missing (or corrupt) parent reads as a
    /// missing key: creating the key creates the parent too, with a fresh
    /// value, as does a bump of the key; a bump leaves a parent that
    /// exists alone.
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
        Ok(fold(own, parent))
    }

    /// The parent generation, created with a fresh value when missing (a
    /// corrupt one replaced), as the key is. `None` without a parent.
    pub(super) async fn parent_or_create(&self) -> Result<Option<Generation>, Error> {
        let Some(parent) = &self.parent else {
            return Ok(None);
        };
        for _ in 0..TRIES {
            match self.reply("get", self.backend.get(parent).await)? {
                Stored::Value(p) => return Ok(Some(p)),
                Stored::Missing => {}
                Stored::Corrupt => {
                    tracing::warn!(key = %self.key, parent = %parent, "gensync replacing a corrupt parent generation");
                    self.reply("delete", self.backend.delete(parent).await)?;
                }
            }
            let fresh = Generation::fresh();
            if self.reply("add", self.backend.add(parent, fresh, self.ttl).await)? {
                return Ok(Some(fresh));
            }
            // Another process created it meanwhile: read that one.
        }
        Err(self.contended())
    }
}

/// The key as readers see it with the parent folded in. A missing or
/// corrupt parent makes the pair read as missing, never as the key alone:
/// the parent comes and goes (a lapsed intent, a flush), and a number for
/// "no parent" would come back each time it went, matching what a reader
/// recorded before it came and every change in between. Creating the
/// parent (fresh each time) gives each of its lives a number of its own.
pub(super) fn fold(own: Stored, parent: Stored) -> Stored {
    match (own, parent) {
        (Stored::Value(g), Stored::Value(p)) => Stored::Value(g.with_parent(p)),
        (Stored::Value(_), _) => Stored::Missing,
        (own, _) => own,
    }
}
