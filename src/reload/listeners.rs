//! Telling the rest of the program about a reload: a `watch` channel of
//! the newest snapshot, and callbacks given the old and the new one.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::RwLock;

use tokio::sync::watch;

use super::snapshot::Snapshot;
use crate::key::Key;

type Listener<S> = Box<dyn Fn(&Snapshot<S>, &Snapshot<S>) + Send + Sync>;

/// Who hears of each reload.
pub(super) struct Listeners<S> {
    notify: watch::Sender<Snapshot<S>>,
    callbacks: RwLock<Vec<Listener<S>>>,
}

impl<S> Listeners<S> {
    /// Listeners whose channel starts out holding `first`.
    pub(super) fn new(first: Snapshot<S>) -> Self {
        let (notify, _) = watch::channel(first);
        Listeners {
            notify,
            callbacks: RwLock::new(Vec::new()),
        }
    }

    /// A receiver that always holds the newest snapshot.
    pub(super) fn subscribe(&self) -> watch::Receiver<Snapshot<S>> {
        self.notify.subscribe()
    }

    /// Adds a callback, called after each later reload.
    pub(super) fn add(&self, listener: Listener<S>) {
        self.callbacks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    /// Tells every subscriber and callback that `new` replaced `old`. A
    /// panicking callback is caught and logged, so one bad listener cannot
    /// stop a reload or the listeners after it.
    pub(super) fn tell(&self, key: &Key, old: &Snapshot<S>, new: &Snapshot<S>) {
        self.notify.send_replace(new.clone());
        let callbacks = self.callbacks.read().unwrap_or_else(|e| e.into_inner());
        for listener in callbacks.iter() {
            if catch_unwind(AssertUnwindSafe(|| listener(old, new))).is_err() {
                tracing::error!(key = %key, "a gensync reload listener panicked");
            }
        }
    }
}

impl<S> fmt::Debug for Listeners<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let callbacks = self.callbacks.read().map_or(0, |c| c.len());
        f.debug_struct("Listeners")
            .field("subscribers", &self.notify.receiver_count())
            .field("callbacks", &callbacks)
            .finish()
    }
}
