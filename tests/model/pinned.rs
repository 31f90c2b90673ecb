//! Interleavings worth running every time, whatever proptest draws, each
//! with a check that it took the path it is about.

use gensync::reload::CheckMode;

use super::ops::{Fault, Op, Target};
use super::readers::READERS;
use super::run::{Stream, Tally};
use super::writers::{Outcome, Saver, WriteKind};
use super::LEASE;

use Op::*;
use Saver::*;
use WriteKind::*;

const LEASE_MS: u64 = LEASE.as_millis() as u64;

/// A case, and a check of the path it took.
pub type Pinned = (&'static [Op], fn(&Tally));

/// Checks nothing about the path a case took.
fn any(_: &Tally) {}

/// The outcome of write `id` (numbered from 1 in the order of the case).
fn outcome(tally: &Tally, id: u32) -> &Outcome {
    &tally
        .outcomes
        .iter()
        .find(|o| o.id == id)
        .unwrap_or_else(|| panic!("write {id} did not finish: {tally:?}"))
        .outcome
}

const fn write(writer: usize, kind: WriteKind, saver: Saver) -> Op {
    Op::Write {
        writer,
        kind,
        saver,
    }
}

/// The stream of a case that has one.
fn stream(tally: &Tally) -> &Stream {
    tally
        .streams
        .first()
        .unwrap_or_else(|| panic!("no request stream ran: {tally:?}"))
}

pub const KNOWN: &[Pinned] = &[
    // Coalescing: a stream of requests arrives while the first load is
    // slow and every read is slowed too, so checks overlap, join the load,
    // and share reads: the reader's backend sees fewer calls than checks.
    (
        &[
            LoaderDelayNextMs(1, 400),
            FaultOn(Target::Reader(1), Fault::LatencyMs(100)),
            Requests {
                reader: 1,
                count: 8,
                every_ms: 30,
            },
        ],
        |tally| {
            let s = stream(tally);
            assert_eq!((s.reader, s.checks), (1, 8), "{tally:?}");
            assert!(s.peak >= 2, "the checks did not overlap: {tally:?}");
            let calls = s.calls.expect("reader 1 has a wrapper");
            assert!(calls < 8, "the reads were not coalesced: {tally:?}");
        },
    ),
    // The reload fence: a save and bump land while the load runs.
    (
        &[
            Check(0),
            SaveAndBumpDuringLoad(0),
            WriterSave,
            WriterBump,
            Check(0),
            Check(0),
        ],
        any,
    ),
    (
        &[SaveAndBumpDuringLoad(1), Check(1), Check(1), Check(2)],
        any,
    ),
    // A load outlives the wait bound; an update lands meanwhile, and a
    // later check must not join the load that read the old version.
    (
        &[
            Check(0),
            LoaderDelayNextMs(0, 700),
            WriterSave,
            WriterBump,
            Check(0),
            WriterSave,
            WriterBump,
            Check(0),
            Check(0),
        ],
        any,
    ),
    // A failed load records nothing.
    (
        &[
            Check(2),
            WriterSave,
            WriterBump,
            LoaderFailNext(2, 1),
            Check(2),
            AdvanceTimeMs(1_000),
            Check(2),
        ],
        any,
    ),
    // A backend outage is expired, not fresh; an eviction and a fresh
    // key are a change.
    (
        &[
            Check(1),
            WriterSave,
            WriterBump,
            FaultOn(Target::Fleet, Fault::FailAll),
            Check(1),
            FaultOff(Target::Fleet),
            Evict,
            WriterSave,
            WriterBump,
            Check(0),
            Check(1),
        ],
        any,
    ),
    // Garbage at the key is expired, not fresh.
    (
        &[Check(0), WriterSave, WriterBump, StoreGarbage, Check(0)],
        any,
    ),
    // A long outage under steady traffic: the backoff stays capped, so
    // the reader is past it once the drain is over.
    (
        &[
            LoaderFailNext(0, 8),
            Requests {
                reader: 0,
                count: 11,
                every_ms: 2_134,
            },
        ],
        any,
    ),
    // A dead writer, and a later bump: the writer records its intent,
    // the raw writer bumps and every reader records the new generation
    // (still without the dead writer's save), then the writer saves and
    // dies. The raw bump must not have given the key its full time to
    // live back: one lease after the save, every reader reloads on its
    // first check, and convergence needs no bump.
    (
        &[
            Check(0),
            Check(1),
            Check(2),
            DeadWriter {
                writer: 0,
                save_after_ms: 1_000,
            },
            AdvanceTimeMs(10),
            WriterBump,
            Check(0),
            Check(1),
            Check(2),
            AdvanceTimeMs(1_000 + LEASE_MS),
            Check(0),
            Check(1),
            Check(2),
        ],
        |tally| {
            assert_eq!(tally.dead_saves, 1, "{tally:?}");
            assert!(!tally.final_bump, "{tally:?}");
        },
    ),
    // A slow update keeps its lease: the other writer's update waits for
    // it, and both changes are kept.
    (
        &[
            Check(0),
            write(0, Update, SlowMs(2 * LEASE_MS + 500)),
            AdvanceTimeMs(100),
            write(1, Update, Quick),
            AdvanceTimeMs(3 * LEASE_MS),
            Check(0),
        ],
        |tally| {
            assert_eq!(outcome(tally, 1), &Outcome::Ok, "{tally:?}");
            assert_eq!(outcome(tally, 2), &Outcome::Ok, "{tally:?}");
        },
    ),
    // A stalled writer is refused: writer 0's update is saving when its
    // backend fails, so its lease lapses unrenewed; writer 1 takes the
    // lease and updates; when writer 0's save resumes, the fenced store
    // refuses it, and writer 0 is told its lease was lost.
    (
        &[
            Check(0),
            write(0, Update, SlowMs(LEASE_MS + 1_000)),
            AdvanceTimeMs(100),
            FaultOn(Target::Writer(0), Fault::FailAll),
            AdvanceTimeMs(LEASE_MS + 100),
            write(1, Update, Quick),
            AdvanceTimeMs(100),
            FaultOff(Target::Writer(0)),
            AdvanceTimeMs(1_000),
            Check(0),
            Check(1),
        ],
        |tally| {
            let lost = Outcome::LeaseLost { saved: Some(false) };
            assert_eq!(outcome(tally, 1), &lost, "{tally:?}");
            assert_eq!(outcome(tally, 2), &Outcome::Ok, "{tally:?}");
            assert_eq!(tally.refused, 1, "{tally:?}");
        },
    ),
    // A rollback, then a publish: reader 1 records the generation the
    // save point holds, misses the next publish, and finds that
    // generation back after the restore; it must reload anyway. The
    // publish after the restore must not hand out a generation the one
    // before it did.
    (
        &[
            write(0, Publish, Quick),
            AdvanceTimeMs(10),
            Check(0),
            Check(1),
            SavePoint,
            write(0, Publish, Quick),
            AdvanceTimeMs(10),
            Check(0),
            Restore,
            Check(1),
            Check(0),
            write(1, Publish, Quick),
            AdvanceTimeMs(10),
            Check(0),
            Check(1),
            Check(2),
        ],
        |tally| {
            for id in 1..=3 {
                assert_eq!(outcome(tally, id), &Outcome::Ok, "{tally:?}");
            }
        },
    ),
    // A failover: the fleet's readers reload once, reader 0 does not
    // need to; an update after it reaches everyone.
    (
        &[
            Check(0),
            Check(1),
            NewServer,
            Check(1),
            write(1, Update, Quick),
            NewServer,
            AdvanceTimeMs(10),
            Check(0),
            Check(1),
            Check(2),
        ],
        |tally| assert_eq!(outcome(tally, 1), &Outcome::Ok, "{tally:?}"),
    ),
];

/// Sequences on which this model caught the library breaking a promise,
/// now fixed: a lost lease reported from the bump's result rather than the
/// save's, and a writer whose lease a restore wiped reporting `Ok` when its
/// release failed.
pub const ONCE_BROKEN: &[Pinned] = &[
    // `LeaseLost { saved: false }` for a write the store took, saved under
    // its lease: writer 0's update saves at 500 ms, then its backend hangs,
    // so its bump fails (at 2.5 s) and its release too (at 4.5 s), by when
    // the lease has lapsed. The writer is told "nothing of this write was
    // announced" with `saved: false`; the store holds the change (and its
    // pending intent makes every reader load it within the lease).
    (
        &[
            write(0, Update, SlowMs(500)),
            AdvanceTimeMs(100),
            FaultOn(Target::Writer(0), Fault::HangMs(2_000)),
            AdvanceTimeMs(5_000),
        ],
        any,
    ),
    // The same, with the lease lapsed before the save: writer 0 is cut off
    // from the backend, its renewals fail, its lease lapses at 2 s, nobody
    // takes it, and its save lands at 2.5 s; the fenced store takes it (no
    // newer token exists), the bump fails. Told `saved: false`, but the
    // store holds the change, which no intent covers any more: readers
    // keep the old settings until something else bumps.
    (
        &[
            write(0, Update, SlowMs(LEASE_MS + 500)),
            AdvanceTimeMs(100),
            FaultOn(Target::Writer(0), Fault::FailAll),
            AdvanceTimeMs(LEASE_MS + 1_000),
        ],
        any,
    ),
    // A restore wipes writer 0's lease while its update saves slowly;
    // writer 1 takes the lease, loads, and saves after writer 0. Writer 0's
    // bump gets through, its release does not (seed 0 draws pass, then
    // fail), and its lease has not lapsed by its own clock: it returns `Ok`
    // although writer 1 held the lease when it saved, and writer 1's
    // update, also `Ok`, replaced its change.
    (
        &[
            SavePoint,
            write(0, Update, SlowMs(500)),
            AdvanceTimeMs(100),
            Restore,
            write(1, Update, SlowMs(1_000)),
            FaultOn(
                Target::Writer(0),
                Fault::FailFraction {
                    percent: 50,
                    seed: 0,
                },
            ),
            AdvanceTimeMs(3_000),
        ],
        any,
    ),
];

/// A case for readers in given modes, and a check of the path it took.
pub type PinnedIn = ([CheckMode; READERS], &'static [Op], fn(&Tally));

/// Sequences for readers in given modes on which this model caught the
/// library breaking a promise, now fixed: push mode's reload task checked
/// whenever tracking had read the key, even on a server the backend had
/// left, so a load that writes the key woke it into a loop.
pub const ONCE_BROKEN_IN: &[PinnedIn] = &[
    // A push reader reloaded in a loop at one instant. Its reads go through
    // the fleet, which answers every read corrupt and failed over (so the
    // tracker, fed by the store itself in the old epoch, vouches nothing),
    // while its pushes are real. Each load repairs the key (`incr` finds it
    // corrupt: `delete`, then `add` a fresh value); the repair is pushed;
    // the push mode's reload task checks at every push, reads corrupt
    // again, and loads and repairs again: no timer between, so the clock
    // never moves and the loader runs without end.
    (
        [CheckMode::Strict, CheckMode::Strict, CheckMode::Push],
        &[
            FaultOn(Target::Fleet, Fault::Corrupt),
            NewServer,
            Check(2),
            AdvanceTimeMs(1),
        ],
        |tally| assert_eq!(tally.spins, 0, "a reader reloaded in a loop: {tally:?}"),
    ),
];

/// The minimal case the model found with the heartbeat bound disabled (a
/// tracker vouching past the instant the key lapses): a dead writer
/// records its intent and saves at 1 ms; push reader 0's requests come at
/// 0, 1,001 and 2,002 ms. The intent caps the key's life to the lease, so
/// the key lapses at about 2 s without any push, and only the bound makes
/// the third request read again and load the dead writer's save.
pub const HEARTBEAT_BOUND: PinnedIn = (
    [CheckMode::Push, CheckMode::Strict, CheckMode::Strict],
    &[
        DeadWriter {
            writer: 0,
            save_after_ms: 1,
        },
        Requests {
            reader: 0,
            count: 3,
            every_ms: 1_001,
        },
    ],
    |tally| {
        assert_eq!(tally.dead_saves, 1, "{tally:?}");
        let s = stream(tally);
        assert_eq!((s.reader, s.checks), (0, 3), "{tally:?}");
    },
);

/// The minimal case the model found with a lease held past its expiry (a
/// writer's `holds()` looking only at whether a renewal found the lease
/// gone): writer 1's slow publish is cut off from Redis, so its renewals
/// fail and its lease lapses at 2 s with nobody saying so; writer 0 takes
/// the lease and publishes; writer 1's save lands at 2,149 ms and the
/// fenced store refuses it. Writer 1 must be told its lease was lost, not
/// that its save failed.
pub const LEASE_EXPIRY: PinnedIn = (
    [CheckMode::Strict; READERS],
    &[
        write(1, Publish, SlowMs(LEASE_MS + 149)),
        Check(0),
        FaultOn(Target::Writer(1), Fault::FailAll),
        write(0, Publish, Quick),
        AdvanceTimeMs(LEASE_MS + 150),
    ],
    |tally| {
        let lost = Outcome::LeaseLost { saved: Some(false) };
        assert_eq!(outcome(tally, 1), &lost, "{tally:?}");
        assert_eq!(outcome(tally, 2), &Outcome::Ok, "{tally:?}");
        assert_eq!(tally.refused, 1, "{tally:?}");
    },
);

/// A writer whose renewals keep failing through its load and its save:
/// writer 1's update is cut off from Redis as it starts, its lease lapses
/// unrenewed at 2 s, and its slow save lands just then; nobody else took
/// the lease, so the fenced store takes it. Its bump and release fail too.
/// It must be told `LeaseLost { saved: true }`, not a failed bump (the
/// minimal case the model found with failed renewals counted as renewals,
/// or the lease's lapse left out of the write's last look, as an update).
pub const RENEWALS_FAIL: PinnedIn = (
    [CheckMode::Strict; READERS],
    &[
        write(1, Update, SlowMs(LEASE_MS)),
        Check(0),
        FaultOn(Target::Writer(1), Fault::FailAll),
        AdvanceTimeMs(LEASE_MS + 1),
    ],
    |tally| {
        let lost = Outcome::LeaseLost { saved: Some(true) };
        assert_eq!(outcome(tally, 1), &lost, "{tally:?}");
    },
);
