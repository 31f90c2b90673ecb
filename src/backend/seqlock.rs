//! A few words read on every check behind a sequence lock over atomics: a
//! reader pays a few loads, with no lock and no `ArcSwap` debt
//! bookkeeping. Writers are rare, and must not race each other (their
//! owner serializes them); a reader that races one gets nothing, and its
//! caller reads the slow way.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// `N` words, written and read whole.
pub(crate) struct SeqWords<const N: usize> {
    /// Even while stable, odd while a write is under way.
    seq: AtomicU64,
    words: [AtomicU64; N],
}

impl<const N: usize> Default for SeqWords<N> {
    fn default() -> Self {
        SeqWords {
            seq: AtomicU64::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl<const N: usize> SeqWords<N> {
    /// Stores `words`. The caller keeps writers from racing each other.
    pub(crate) fn write(&self, words: [u64; N]) {
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        for (cell, word) in self.words.iter().zip(words) {
            cell.store(word, Ordering::Relaxed);
        }
        self.seq.store(seq + 2, Ordering::Release);
    }

    /// The words last written (all 0 before any write), or `None` when a
    /// write raced the read.
    pub(crate) fn read(&self) -> Option<[u64; N]> {
        let before = self.seq.load(Ordering::Acquire);
        let words = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
        fence(Ordering::Acquire);
        (before.is_multiple_of(2) && self.seq.load(Ordering::Relaxed) == before).then_some(words)
    }
}
