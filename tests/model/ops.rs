//! The operations a case is made of, and the strategies that draw them.

use std::time::Duration;

use gensync::reload::CheckMode;
use gensync::testing::Faults;
use proptest::prelude::*;

use super::readers::READERS;
use super::writers::{Saver, WriteKind, WRITERS};
use super::{LEASE, MAX_HANG_MS, MAX_LATENCY_MS, MAX_LOAD_DELAY_MS};

/// A fault to set on a [`FaultyBackend`](gensync::testing::FaultyBackend).
#[derive(Clone, Debug)]
pub enum Fault {
    FailAll,
    FailNext(u64),
    FailFraction { percent: u8, seed: u64 },
    Corrupt,
    Missing,
    LatencyMs(u64),
    HangMs(u64),
    EvictNext,
}

/// Which wrapper a fault is set on.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The writers (raw and leased) and readers 1 and 2.
    Fleet,
    /// One reader's own wrapper (1 or 2; reader 0 has none).
    Reader(usize),
    /// One writer process's own wrapper: failing every call stalls it, as
    /// its renewals no longer get through.
    Writer(usize),
}

#[derive(Clone, Debug)]
pub enum Op {
    Check(usize),
    /// A stream of requests: `count` checks of one reader, `every_ms` apart,
    /// each on a task of its own, so checks overlap whenever one takes
    /// longer than the spacing (latency, hangs, slow loads) and are
    /// coalesced; as traffic during an outage keeps coming and retries
    /// after backoff.
    Requests {
        reader: usize,
        count: u32,
        every_ms: u64,
    },
    /// The raw writer saves a new version; nobody is told yet.
    WriterSave,
    /// The raw writer's `mark_updated`; publishes every save so far if it
    /// returns `Ok`.
    WriterBump,
    /// The reader's next load saves and bumps (raw) right after reading the
    /// source, so the version it loads is already outdated when it records.
    SaveAndBumpDuringLoad(usize),
    /// `publish` or `update` through a writer process, running in the
    /// background from here on while the next operations run.
    Write {
        writer: usize,
        kind: WriteKind,
        saver: Saver,
    },
    /// A writer process takes the lease and records its intent, saves
    /// `save_after_ms` later (in the background, while the next operations
    /// run), and dies before its bump and release.
    DeadWriter {
        writer: usize,
        save_after_ms: u64,
    },
    /// Remembers everything the cache server stores now.
    SavePoint,
    /// The cache server restarts from the last save point, if any.
    Restore,
    /// The fleet fails over to a server holding the same data.
    NewServer,
    FaultOn(Target, Fault),
    FaultOff(Target),
    /// Removes the key from the store, as memory pressure would.
    Evict,
    /// `clear` through the fleet wrapper.
    WriterClear,
    /// Text that is not a generation, stored at the key.
    StoreGarbage,
    LoaderFailNext(usize, u32),
    /// The reader's next load takes this long after reading the source.
    LoaderDelayNextMs(usize, u64),
    AdvanceTimeMs(u64),
}

pub fn set(faults: &Faults, fault: &Fault) {
    match *fault {
        Fault::FailAll => faults.fail_all(),
        Fault::FailNext(n) => faults.fail_next(n),
        Fault::FailFraction { percent, seed } => {
            faults.fail_fraction(f64::from(percent) / 100.0, seed)
        }
        Fault::Corrupt => faults.corrupt(true),
        Fault::Missing => faults.missing(true),
        Fault::LatencyMs(ms) => faults.latency(Duration::from_millis(ms)),
        Fault::HangMs(ms) => faults.hang(Duration::from_millis(ms)),
        Fault::EvictNext => faults.evict_next(),
    }
}

fn fault() -> impl Strategy<Value = Fault> {
    prop_oneof![
        Just(Fault::FailAll),
        (1u64..=4).prop_map(Fault::FailNext),
        (1u8..=99, any::<u64>()).prop_map(|(percent, seed)| Fault::FailFraction { percent, seed }),
        Just(Fault::Corrupt),
        Just(Fault::Missing),
        (1..=MAX_LATENCY_MS).prop_map(Fault::LatencyMs),
        (100..=MAX_HANG_MS).prop_map(Fault::HangMs),
        Just(Fault::EvictNext),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        2 => Just(Target::Fleet),
        2 => (1..READERS).prop_map(Target::Reader),
        1 => (0..WRITERS).prop_map(Target::Writer),
    ]
}

fn saver() -> impl Strategy<Value = Saver> {
    let lease = LEASE.as_millis() as u64;
    prop_oneof![
        4 => Just(Saver::Quick),
        // Up to three leases: renewed on a healthy fleet, lapsed when the
        // writer is cut off.
        3 => (1..=3 * lease).prop_map(Saver::SlowMs),
        1 => Just(Saver::Fails),
        1 => Just(Saver::FailsAfterSave),
    ]
}

fn write() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![Just(WriteKind::Publish), Just(WriteKind::Update)];
    (0..WRITERS, kind, saver()).prop_map(|(writer, kind, saver)| Op::Write {
        writer,
        kind,
        saver,
    })
}

/// How each reader checks: mostly strict or push, sometimes interval (up to
/// about a backoff window, well under the drain, so convergence's checks
/// read afresh).
pub fn modes() -> impl Strategy<Value = [CheckMode; READERS]> {
    let mode = prop_oneof![
        2 => Just(CheckMode::Strict),
        2 => Just(CheckMode::Push),
        1 => (50u64..=1_500).prop_map(|ms| CheckMode::Interval(Duration::from_millis(ms))),
    ];
    [mode.clone(), mode.clone(), mode]
}

pub fn op() -> impl Strategy<Value = Op> {
    let reader = || 0..READERS;
    prop_oneof![
        8 => reader().prop_map(Op::Check),
        1 => (reader(), 2u32..=16, prop_oneof![10u64..=200, 200u64..=2_500])
            .prop_map(|(reader, count, every_ms)| Op::Requests { reader, count, every_ms }),
        2 => Just(Op::WriterSave),
        2 => Just(Op::WriterBump),
        2 => reader().prop_map(Op::SaveAndBumpDuringLoad),
        5 => write(),
        // Mostly within the lease; sometimes after it lapsed, unrenewed.
        1 => (0..WRITERS, 0..=LEASE.as_millis() as u64 * 3 / 2)
            .prop_map(|(writer, save_after_ms)| Op::DeadWriter { writer, save_after_ms }),
        1 => Just(Op::SavePoint),
        1 => Just(Op::Restore),
        1 => Just(Op::NewServer),
        3 => (target(), fault()).prop_map(|(t, f)| Op::FaultOn(t, f)),
        2 => target().prop_map(Op::FaultOff),
        1 => Just(Op::Evict),
        1 => Just(Op::WriterClear),
        1 => Just(Op::StoreGarbage),
        1 => (reader(), 1u32..=10).prop_map(|(i, n)| Op::LoaderFailNext(i, n)),
        2 => (reader(), 1..=MAX_LOAD_DELAY_MS).prop_map(|(i, ms)| Op::LoaderDelayNextMs(i, ms)),
        // Mostly within a backoff window or two; sometimes past a lease,
        // the cap or the key's time to live.
        3 => prop_oneof![4 => 1u64..=1_500, 1 => 1_500u64..=90_000].prop_map(Op::AdvanceTimeMs),
    ]
}
