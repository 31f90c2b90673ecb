//! What a tracker keeps of its last read, read on every push-mode check:
//! behind a sequence lock over atomics, so a reader pays a few loads.

use super::seqlock::SeqWords;
use super::Stored;
use crate::generation::Generation;
use crate::unpoisoned::lock;

/// One read of the key by the tracking connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) token: u64,
    pub(super) stored: Stored,
    pub(super) epoch: u64,
}

/// The last [`Seen`], read on every check in push mode: a sequence lock
/// over atomics, so a reader pays a few loads instead of an `ArcSwap`'s
/// debt bookkeeping (this is most of a push check's cost). Writers are
/// rare and take a lock; a reader that races one sees nothing, which only
/// sends that check to a read of its own.
#[derive(Default)]
pub(super) struct SeenCell {
    writers: std::sync::Mutex<()>,
    /// The token, the stored value and the epoch.
    words: SeqWords<3>,
}

/// `Stored` as one word: a stored generation is never 0 and at most
/// `i64::MAX`.
const MISSING: u64 = 0;
const CORRUPT: u64 = u64::MAX;

impl SeenCell {
    pub(super) fn write(&self, seen: Seen) {
        let _one_writer = lock(&self.writers);
        let stored = match seen.stored {
            Stored::Value(g) => g.get(),
            Stored::Missing => MISSING,
            Stored::Corrupt => CORRUPT,
        };
        self.words.write([seen.token, stored, seen.epoch]);
    }

    pub(super) fn read(&self) -> Option<Seen> {
        let [token, stored, epoch] = self.words.read()?;
        if token == 0 {
            return None;
        }
        let stored = match stored {
            MISSING => Stored::Missing,
            CORRUPT => Stored::Corrupt,
            g => Stored::Value(Generation::new(g)?),
        };
        Some(Seen {
            token,
            stored,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn value(n: u64) -> Stored {
        Stored::Value(Generation::new(n).unwrap())
    }

    #[test]
    fn a_read_of_the_last_seen_is_never_torn_by_a_write() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Barrier;

        let cell = Arc::new(SeenCell::default());
        let done = Arc::new(AtomicBool::new(false));
        let started = Arc::new(Barrier::new(2));
        let writer = {
            let (cell, done, started) =
                (Arc::clone(&cell), Arc::clone(&done), Arc::clone(&started));
            std::thread::spawn(move || {
                started.wait();
                let mut n = 0u64;
                // Writes for as long as the reader reads.
                while !done.load(Ordering::Relaxed) {
                    n += 1;
                    cell.write(Seen {
                        token: n,
                        stored: value(n),
                        epoch: n,
                    });
                }
                n
            })
        };
        started.wait();
        let mut whole = 0u64;
        for _ in 0..1_000_000 {
            if let Some(seen) = cell.read() {
                // Every write keeps the three equal: a mix of two writes
                // would not be.
                assert_eq!(seen.stored, value(seen.token));
                assert_eq!(seen.epoch, seen.token);
                whole += 1;
            }
        }
        done.store(true, Ordering::Relaxed);
        let last = writer.join().unwrap();
        assert!(whole > 0, "some reads saw a write whole");
        assert_eq!(cell.read().map(|s| s.token), Some(last));
    }
}
