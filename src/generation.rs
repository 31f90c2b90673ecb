//! Generations: the opaque numbers processes compare to know whether their
//! copy of the shared state is current.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

/// One version of the shared state, as stored in the backend.
///
/// Generations are compared for equality only: a process is current when
/// its recorded generation equals the shared one. Their order means nothing,
/// because a re-created key starts from a random value.
///
/// ```
/// use gensync::Generation;
///
/// let a = Generation::fresh();
/// let b = Generation::fresh();
/// assert_ne!(a, b);
/// assert_eq!(a.to_string().parse::<Generation>().unwrap(), a);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Generation(u64);

/// The smallest fresh value: far above anything a stray `INCR` on a missing
/// key (1, 2, 3...) could produce.
const FRESH_MIN: u64 = 1 << 32;
/// The largest fresh value: Redis integers are signed 64-bit, and a fresh
/// value leaves room for 2^40 increments before `INCR` would overflow.
const FRESH_MAX: u64 = (i64::MAX as u64) - (1 << 40);

impl Generation {
    /// A new generation, unique with overwhelming probability.
    ///
    /// 64 random bits are mixed with the wall clock in nanoseconds, so two
    /// keys created within the same second (or millisecond) differ: a stale
    /// process never mistakes a re-created key for the one it loaded
    /// (an eviction ABA: equal values across a re-creation).
    pub fn fresh() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mixed = splitmix64(rand::random::<u64>() ^ nanos.rotate_left(29));
        Generation(FRESH_MIN + mixed % (FRESH_MAX - FRESH_MIN + 1))
    }

    /// This generation as shown to users and compared by processes when it
    /// was read from the server known as `server`
    /// ([`Backend::identity`](crate::backend::Backend::identity)): itself for 0 (no
    /// identity), else the stored value mixed with the server's identity.
    /// Every process reads a server's identity alike, so they all show one
    /// number for one state; a restarted or different server has another
    /// identity, so an equal stored value read from it (an older snapshot)
    /// shows a number never shown for the state before.
    pub(crate) fn on_server(self, server: u64) -> Self {
        if server == 0 {
            return self;
        }
        let mixed = splitmix64(self.0 ^ splitmix64(server));
        Generation(FRESH_MIN + mixed % (FRESH_MAX - FRESH_MIN + 1))
    }

    /// This generation combined with its set's parent generation `parent`:
    /// a change of either is a change of the result. Mixed apart from
    /// [`on_server`](Self::on_server), so neither can undo the other.
    pub(crate) fn with_parent(self, parent: Generation) -> Self {
        // "PARENT", so a parent mix never equals a server mix of equal value.
        let mixed = splitmix64(self.0 ^ splitmix64(parent.0 ^ 0x5041_5245_4e54));
        Generation(FRESH_MIN + mixed % (FRESH_MAX - FRESH_MIN + 1))
    }

    /// Wraps a raw value. Returns `None` for 0, which is never a valid
    /// generation (it stands for "none recorded").
    pub fn new(value: u64) -> Option<Self> {
        (value != 0).then_some(Generation(value))
    }

    /// The raw value.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Parses a value as a backend stores it: a positive decimal integer
    /// Redis can increment. Anything else (empty, signed, padded, out of
    /// range, zero) is `None`, which readers treat as "expired".
    pub fn parse_stored(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        // `u64::from_str` accepts a leading '+', which Redis does not.
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if text.len() > 1 && text.starts_with('0') {
            return None;
        }
        let value: u64 = text.parse().ok()?;
        if value > i64::MAX as u64 {
            return None;
        }
        Generation::new(value)
    }
}

/// The identity of the Redis server run `run_id` (from `INFO server`), as
/// [`Generation::on_server`] mixes it: the same number in every process
/// and every version of gensync, since it is part of what users see;
/// never 0.
#[cfg_attr(not(any(feature = "redis", feature = "testing")), allow(dead_code))]
pub(crate) fn run_hash(run_id: &str) -> u64 {
    identity_of(0, run_id.as_bytes())
}

/// FNV-1a over `bytes` from `seed`, then [`splitmix64`]: a stable
/// identity, never 0 (which shows a stored value as it is).
pub(crate) fn identity_of(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325 ^ seed;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    splitmix64(h).max(1)
}

/// SplitMix64's finaliser: spreads the clock's low-entropy bits over the
/// whole word.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The error returned when a string is not a valid generation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a generation: {0:?} (expected a positive decimal integer up to 2^63-1)")]
pub struct ParseGenerationError(String);

impl FromStr for Generation {
    type Err = ParseGenerationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Generation::parse_stored(s.trim().as_bytes())
            .ok_or_else(|| ParseGenerationError(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn fresh_values_are_large_incrementable_and_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let g = Generation::fresh();
            assert!(
                g.get() >= FRESH_MIN,
                "{g} is small enough to collide with INCR"
            );
            assert!(g.get() <= FRESH_MAX, "{g} leaves no room to increment");
            assert!(seen.insert(g), "duplicate fresh generation {g}");
        }
    }

    #[test]
    fn parse_stored_accepts_only_what_redis_can_increment() {
        assert_eq!(Generation::parse_stored(b"42"), Generation::new(42));
        assert_eq!(
            Generation::parse_stored(b"9223372036854775807").map(Generation::get),
            Some(i64::MAX as u64)
        );
        for bad in [
            &b""[..],
            b"0",
            b"-5",
            b"+5",
            b" 5",
            b"05",
            b"5.0",
            b"garbage",
            b"9223372036854775808",
            b"\xff\xfe",
        ] {
            assert_eq!(Generation::parse_stored(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn display_round_trips_through_from_str() {
        let g = Generation::fresh();
        assert_eq!(g.to_string().parse::<Generation>(), Ok(g));
        assert!("nope".parse::<Generation>().is_err());
        assert!(Generation::new(0).is_none());
    }
}
