//! Locking a mutex that a panic elsewhere may have poisoned.
//!
//! Every mutex in this crate is held only for short steps that leave its
//! data whole (no holder calls user code or panics halfway through a
//! change), so a poisoned one holds nothing to distrust, and refusing it
//! would turn one panicking task into a process that can no longer check.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, poisoned or not.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
