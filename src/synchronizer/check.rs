//! What one check saw, and what it means: the rule "anything but an exact
//! match is expired", written once for every reader.

use crate::backend::Stored;
use crate::generation::Generation;

/// What the shared store held when a check read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observed {
    /// A valid generation.
    Value(Generation),
    /// No key: never created, cleared, expired or evicted.
    Missing,
    /// A value that is not a generation.
    Corrupt,
    /// The backend failed; the error was logged.
    Unavailable,
}

impl From<Stored> for Observed {
    /// What a backend's answer means to a check.
    fn from(stored: Stored) -> Self {
        match stored {
            Stored::Value(g) => Observed::Value(g),
            Stored::Missing => Observed::Missing,
            Stored::Corrupt => Observed::Corrupt,
        }
    }
}

/// The outcome of one check: the generation this process recorded and what
/// the shared store held.
///
/// Keep it across a reload: after loading, record
/// [`Check::observed`] (the reload fence), not a value read after loading,
/// so a bump that lands during the load causes one more reload instead of
/// being lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Check {
    /// The generation recorded locally, if any.
    pub local: Option<Generation>,
    /// What the shared store held.
    pub shared: Observed,
}

impl Check {
    /// Expired unless the shared store holds exactly the local generation.
    /// Errors, missing and corrupt keys all read as expired.
    pub fn is_expired(&self) -> bool {
        match (self.local, self.shared) {
            (Some(local), Observed::Value(shared)) => local != shared,
            _ => true,
        }
    }

    /// The shared generation the check saw, if it saw a valid one.
    pub fn observed(&self) -> Option<Generation> {
        match self.shared {
            Observed::Value(g) => Some(g),
            _ => None,
        }
    }
}
