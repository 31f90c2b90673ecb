//! Telling the rest of the program about a reload: a `watch` channel of
//! the newest snapshot, and callbacks given the old and the new one.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::snapshot::Snapshot;
use crate::key::Key;
use crate::unpoisoned;

type Listener<S> = Arc<dyn Fn(&Snapshot<S>, &Snapshot<S>) + Send + Sync>;

/// Names a callback given to [`Reloader::on_reload`](super::Reloader::on_reload),
/// so it can be removed with
/// [`Reloader::remove_listener`](super::Reloader::remove_listener).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

/// Who hears of each reload.
pub(super) struct Listeners<S> {
    notify: watch::Sender<Snapshot<S>>,
    callbacks: Mutex<Vec<(ListenerId, Listener<S>)>>,
    next_id: AtomicU64,
}

impl<S> Listeners<S> {
    /// Listeners whose channel starts out holding `first`.
    pub(super) fn new(first: Snapshot<S>) -> Self {
        let (notify, _) = watch::channel(first);
        Listeners {
            notify,
            callbacks: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// A receiver that always holds the newest snapshot.
    pub(super) fn subscribe(&self) -> watch::Receiver<Snapshot<S>> {
        self.notify.subscribe()
    }

    /// Adds a callback, called after each later reload.
    pub(super) fn add(&self, listener: Listener<S>) -> ListenerId {
        let id = ListenerId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.list().push((id, listener));
        id
    }

    /// Removes a callback; `false` when it was not there.
    pub(super) fn remove(&self, id: ListenerId) -> bool {
        let mut list = self.list();
        let before = list.len();
        list.retain(|(each, _)| *each != id);
        list.len() != before
    }

    /// Tells every subscriber and callback that `new` replaced `old`.
    ///
    /// The callbacks run on a copy of the list, with no lock held, so a
    /// callback may add or remove callbacks (the change applies from the
    /// next reload). A panicking callback is caught and logged, so one bad
    /// listener cannot stop a reload or the listeners after it.
    pub(super) fn tell(&self, key: &Key, old: &Snapshot<S>, new: &Snapshot<S>) {
        self.notify.send_replace(new.clone());
        let callbacks: Vec<Listener<S>> = self.list().iter().map(|(_, l)| Arc::clone(l)).collect();
        for listener in callbacks {
            if catch_unwind(AssertUnwindSafe(|| listener(old, new))).is_err() {
                tracing::error!(key = %key, "a gensync reload listener panicked");
            }
        }
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<(ListenerId, Listener<S>)>> {
        // Held only to copy, push or retain: a panic cannot leave it torn.
        unpoisoned::lock(&self.callbacks)
    }
}

impl<S> fmt::Debug for Listeners<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listeners")
            .field("subscribers", &self.notify.receiver_count())
            .field("callbacks", &self.list().len())
            .finish()
    }
}
