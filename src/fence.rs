//! Fencing tokens: the number each holder of the writers' lease gets, so a
//! store can refuse a writer whose lease lapsed while it was paused.

use std::fmt;

/// The fencing token of one writers' lease.
///
/// Each lease taken on a key gets a token greater than every token handed
/// out before on that key: one more than the last, or the server's clock in
/// microseconds if that is greater, so tokens keep growing even after Redis
/// went back to an older snapshot. A store that remembers the greatest
/// token it accepted and refuses smaller ones cannot be overwritten by a
/// writer that stalled past its lease: by then a newer writer holds a
/// greater token. See [`fenced`](crate::reload::fenced).
///
/// ```
/// use gensync::backend::Fence;
///
/// let first = Fence::new(41);
/// let next = Fence::new(42);
/// assert!(next > first);
/// assert_eq!(next.to_string(), "42");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence(u64);

impl Fence {
    /// A token with this value.
    pub fn new(value: u64) -> Self {
        Fence(value)
    }

    /// The raw value, to store beside the data it guards.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
