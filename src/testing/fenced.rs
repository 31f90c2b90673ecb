//! A store of a test's data, fenced as a careful database is.

use std::sync::Mutex;

use crate::fence::Fence;
use crate::reload::StaleFence;
use crate::unpoisoned;

/// A value, fenced as a careful database is: it keeps the greatest fencing
/// token it accepted beside the value, checked and stored together, and
/// refuses a save with a smaller one, noting the refusal.
///
/// The store a [`fenced`](crate::reload::fenced) saver writes to in a test
/// of writers: a writer whose lease lapsed while it saved is refused, and
/// the test reads what was kept and what was refused.
///
/// ```
/// use gensync::testing::FencedStore;
/// use gensync::backend::Fence;
///
/// let store = FencedStore::new(String::from("initial"));
/// store.save("from writer 2".into(), Fence::new(2)).unwrap();
/// let refused = store.save("from writer 1".into(), Fence::new(1)).unwrap_err();
/// assert_eq!(refused.accepted, Fence::new(2));
/// assert_eq!(store.value(), "from writer 2");
/// assert_eq!(store.refused(), vec![refused]);
/// ```
#[derive(Debug)]
pub struct FencedStore<T> {
    held: Mutex<(T, Fence)>,
    refused: Mutex<Vec<StaleFence>>,
}

impl<T: Clone> FencedStore<T> {
    /// A store holding `value`, having accepted no token yet (the greatest
    /// is `Fence::new(0)`).
    pub fn new(value: T) -> Self {
        FencedStore {
            held: Mutex::new((value, Fence::new(0))),
            refused: Mutex::new(Vec::new()),
        }
    }

    /// The value kept.
    pub fn value(&self) -> T {
        unpoisoned::lock(&self.held).0.clone()
    }

    /// The greatest fencing token accepted.
    pub fn fence(&self) -> Fence {
        unpoisoned::lock(&self.held).1
    }

    /// Keeps `value` unless a greater token than `fence` was accepted
    /// already; a refusal is noted and returned.
    pub fn save(&self, value: T, fence: Fence) -> Result<(), StaleFence> {
        let mut held = unpoisoned::lock(&self.held);
        if fence < held.1 {
            let refusal = StaleFence {
                offered: fence,
                accepted: held.1,
            };
            unpoisoned::lock(&self.refused).push(refusal);
            return Err(refusal);
        }
        *held = (value, fence);
        Ok(())
    }

    /// Keeps `value` as a writer that saves by hand does: with no token,
    /// so the greatest accepted one stays.
    pub fn set(&self, value: T) {
        unpoisoned::lock(&self.held).0 = value;
    }

    /// The saves refused for a stale token, oldest first.
    pub fn refused(&self) -> Vec<StaleFence> {
        unpoisoned::lock(&self.refused).clone()
    }
}

impl<T: Clone + Default> Default for FencedStore<T> {
    /// A store holding `T`'s default value, having accepted no token yet.
    fn default() -> Self {
        FencedStore::new(T::default())
    }
}
