//! A model-based property test of the reloader fleet.
//!
//! # What is modelled
//!
//! One [`MemoryBackend`] is the shared cache server. Around it sits one
//! "fleet" [`FaultyBackend`], whose faults hit every process that talks
//! through it: the writer and readers 1 and 2. Readers 1 and 2 each add a
//! [`FaultyBackend`] of their own on top, so a fault can also hit one reader
//! only. Reader 0 talks to the memory backend directly and only ever sees
//! what is really stored. Each reader is a [`Reloader`] over its own
//! [`Synchronizer`], with a loader reading one shared source of truth: a
//! version counter (the settings are the version itself; 0 is the initial
//! value, never in the source). The writer saves by incrementing the version
//! and bumps with [`GenerationSynchronizer::mark_updated`].
//!
//! Proptest generates a sequence of [`Op`]s: reader checks, one at a time
//! or as a stream of requests spaced in time; writer saves and bumps
//! (separately, so a save can stay unpublished); a save-and-bump made by a
//! reader's next load right after it read the source (the reload-fence race,
//! hit deterministically); fleet or per-reader faults (every call failing,
//! the next n calls failing, a seeded random fraction failing, corrupt
//! reads, the key evicted before every call, latency, hangs, evicting the
//! next call's key) and healing; evictions, `clear`, garbage stored at the
//! key; loader failures and slow loads (past the wait bound and past the
//! load timeout); and time passing, which also lapses the key's time to
//! live. Everything runs in sequence on a current-thread tokio runtime with
//! paused time, so a case is a pure function of its operations: proptest's
//! shrunk sequence replays exactly (`PROPTEST_RNG_SEED=<n>` replays a whole
//! run). The clock moves only where an operation says so (`AdvanceTimeMs`,
//! the spacing of `Requests`, the final drain) or when every task is idle
//! on a timer: a hang, latency, a slow load, the wait bound.
//!
//! # The properties
//!
//! 1. **Convergence.** After the sequence every fault is healed, loaders
//!    stop failing and stalling, and the clock is moved on by [`DRAIN`]:
//!    the longest a call or load in flight at the heal can still take, plus
//!    the backoff cap, so no reader is inside a backoff window any more (the
//!    bound is tight on purpose: a backoff that outgrows its cap fails
//!    here). If some save is unpublished,
//!    the writer bumps once (this must succeed). Then "within one check"
//!    means: the *first* [`Reloader::check`] of each reader returns exactly
//!    the source's latest version without counting `stale_served`; the
//!    reader's synchronizer then reports fresh
//!    ([`GenerationSynchronizer::is_expired`] is `false`); a second check
//!    returns the same version without running the loader; and once every
//!    reader has checked, all of them are still fresh (the fleet agrees on
//!    one generation).
//! 2. **No silent staleness.** Let `published` be the newest version whose
//!    save happened before a bump that returned `Ok` (an `Err` bump
//!    publishes nothing). A reader *reports fresh* in two observable ways,
//!    and both are asserted:
//!    - (a) a [`Reloader::check`] reports fresh when it returns without
//!      counting itself in [`ReloadMetrics::stale_served`] (DESIGN.md
//!      section 2: past a bound the last good settings are served "and that
//!      is counted, never silent"); that covers a check that found its
//!      generation current and one that joined or ran a reload. Every check
//!      that reports fresh returns a version at least `published` as of the
//!      moment the check began.
//!    - (b) a reader's synchronizer reports fresh when its recorded
//!      generation equals the one stored in the memory backend, which is
//!      what `is_expired()` answers on a healthy backend (compared directly,
//!      so the assertion does not spend the injected faults). After every
//!      operation, every reader whose synchronizer reports fresh holds
//!      settings at least `published`.
//!
//!    Also asserted on every check: a reader's settings never go back to an
//!    older version.
//!
//! # Running
//!
//! `cargo test --test model` runs 64 cases; `PROPTEST_CASES` overrides that
//! (`PROPTEST_CASES=5000 cargo test --release --test model`). Failures are
//! not persisted to a regressions file, to keep the tree clean: proptest
//! prints the minimal failing sequence, which can be pinned as a case in
//! [`known_interleavings`].
//!
//! [`ReloadMetrics::stale_served`]: gensync::reload::ReloadMetrics::stale_served

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::reload::{Reloader, ReloaderBuilder};
use gensync::testing::{Faults, FaultyBackend};
use gensync::{
    Backend, Generation, GenerationSynchronizer, Key, MemoryBackend, Stored, Synchronizer,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const READERS: usize = 3;
/// Long enough to survive the drain, short enough that `AdvanceTime` can
/// lapse the key mid-sequence.
const KEY_TTL: Duration = Duration::from_secs(60);
const MAX_WAIT: Duration = Duration::from_millis(500);
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(800);
const MAX_LATENCY_MS: u64 = 300;
const MAX_HANG_MS: u64 = 2_000;
/// Past the wait bound and past the load timeout, so slow loads both
/// outlast waiting checks and fail.
const MAX_LOAD_DELAY_MS: u64 = 3_000;
/// How far the clock moves after healing, before the convergence checks:
/// past the backoff cap, once whatever was in flight at the heal is over.
/// A load in flight then makes at most one call that drew its faults before
/// the heal (latency, then a hang), then healthy calls, then a loader run
/// cut off at the load timeout; if it fails, it backs off at most the cap.
const DRAIN: Duration = Duration::from_millis(
    MAX_LATENCY_MS
        + MAX_HANG_MS
        + LOAD_TIMEOUT.as_millis() as u64
        + BACKOFF_MAX.as_millis() as u64
        + 1,
);

fn key() -> Key {
    Key::new(["model", "settings"]).unwrap()
}

/// A fault to set on a [`FaultyBackend`].
#[derive(Clone, Debug)]
enum Fault {
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
enum Target {
    /// The writer and readers 1 and 2.
    Fleet,
    /// One reader's own wrapper (1 or 2; reader 0 has none).
    Reader(usize),
}

#[derive(Clone, Debug)]
enum Op {
    Check(usize),
    /// A stream of requests: `count` checks of one reader, `every_ms` apart,
    /// as traffic during an outage keeps coming and retries after backoff.
    Requests {
        reader: usize,
        count: u32,
        every_ms: u64,
    },
    /// Saves a new version; nobody is told yet.
    WriterSave,
    /// `mark_updated`; publishes every save so far if it returns `Ok`.
    WriterBump,
    /// The reader's next load saves and bumps right after reading the
    /// source, so the version it loads is already outdated when it records.
    SaveAndBumpDuringLoad(usize),
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

/// The source of truth, and what the writer has told the fleet about it.
#[derive(Default)]
struct Source {
    version: u64,
    published: u64,
}

/// What every process shares: the store, the writer and the source.
struct World {
    memory: MemoryBackend,
    fleet: FaultyBackend<MemoryBackend>,
    writer: Synchronizer<FaultyBackend<MemoryBackend>>,
    source: Mutex<Source>,
}

impl World {
    fn source(&self) -> std::sync::MutexGuard<'_, Source> {
        self.source.lock().unwrap()
    }

    fn latest(&self) -> u64 {
        self.source().version
    }

    fn published(&self) -> u64 {
        self.source().published
    }

    fn save(&self) {
        self.source().version += 1;
    }

    /// Bumps, and on success counts every save made before the bump began
    /// as published. Returns whether the bump succeeded.
    async fn bump(&self) -> bool {
        let covers = self.latest();
        let ok = self.writer.mark_updated().await.is_ok();
        if ok {
            let mut source = self.source();
            source.published = source.published.max(covers);
        }
        ok
    }

    /// The generation really stored, read past every fault wrapper.
    async fn stored(&self) -> Option<Generation> {
        match self.memory.get(&key()).await.unwrap() {
            Stored::Value(g) => Some(g),
            Stored::Missing | Stored::Corrupt => None,
        }
    }
}

/// What a reader's loader does next, set by the operations.
#[derive(Default)]
struct LoaderPlan {
    fail_next: AtomicU32,
    delay_next_ms: AtomicU64,
    bump_during: AtomicBool,
}

impl LoaderPlan {
    fn disarm(&self) {
        self.fail_next.store(0, SeqCst);
        self.delay_next_ms.store(0, SeqCst);
        self.bump_during.store(false, SeqCst);
    }
}

struct Reader {
    reloader: Reloader<u64>,
    faults: Option<Faults>,
    plan: Arc<LoaderPlan>,
    /// The newest version a check of this reader returned.
    last_seen: u64,
}

fn reader(world: &Arc<World>, index: usize) -> Reader {
    let plan = Arc::new(LoaderPlan::default());
    let (w, p) = (Arc::clone(world), Arc::clone(&plan));
    let loader = move || {
        let (world, plan) = (Arc::clone(&w), Arc::clone(&p));
        async move {
            let fail = plan
                .fail_next
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                return Err(std::io::Error::other("injected loader failure"));
            }
            let version = world.latest();
            // Both after the read: the version returned is then outdated
            // before the load records, or while it is still in flight.
            if plan.bump_during.swap(false, SeqCst) {
                world.save();
                world.bump().await;
            }
            let delay = plan.delay_next_ms.swap(0, SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            Ok(version)
        }
    };
    let (reloader, faults) = if index == 0 {
        let sync = Synchronizer::new(world.memory.clone(), key())
            .with_ttl(KEY_TTL)
            .unwrap();
        (bounded(Reloader::builder(sync, loader)), None)
    } else {
        let own = FaultyBackend::new(world.fleet.clone());
        let faults = own.faults();
        let sync = Synchronizer::new(own, key()).with_ttl(KEY_TTL).unwrap();
        (bounded(Reloader::builder(sync, loader)), Some(faults))
    };
    Reader {
        reloader,
        faults,
        plan,
        last_seen: 0,
    }
}

/// Builds a reader's reloader with the model's bounds.
fn bounded<G: GenerationSynchronizer + 'static>(builder: ReloaderBuilder<u64, G>) -> Reloader<u64> {
    builder
        .max_wait(MAX_WAIT)
        .load_timeout(LOAD_TIMEOUT)
        .backoff(BACKOFF_INITIAL, BACKOFF_MAX)
        .build(0)
        .unwrap()
}

struct Model {
    world: Arc<World>,
    readers: Vec<Reader>,
}

impl Model {
    fn new() -> Self {
        let memory = MemoryBackend::new();
        let fleet = FaultyBackend::new(memory.clone());
        let writer = Synchronizer::new(fleet.clone(), key())
            .with_ttl(KEY_TTL)
            .unwrap();
        let world = Arc::new(World {
            memory,
            fleet,
            writer,
            // Version 1 is in the source from the start; readers begin on 0.
            source: Mutex::new(Source {
                version: 1,
                published: 0,
            }),
        });
        let readers = (0..READERS).map(|i| reader(&world, i)).collect();
        Model { world, readers }
    }

    fn faults(&self, target: Target) -> Option<Faults> {
        match target {
            Target::Fleet => Some(self.world.fleet.faults()),
            Target::Reader(i) => self.readers[i].faults.clone(),
        }
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Check(i) => self.check(i).await?,
            Op::Requests {
                reader,
                count,
                every_ms,
            } => {
                for _ in 0..count {
                    self.check(reader).await?;
                    tokio::time::sleep(Duration::from_millis(every_ms)).await;
                }
            }
            Op::WriterSave => self.world.save(),
            Op::WriterBump => {
                self.world.bump().await;
            }
            Op::SaveAndBumpDuringLoad(i) => self.readers[i].plan.bump_during.store(true, SeqCst),
            Op::FaultOn(target, ref fault) => {
                if let Some(faults) = self.faults(target) {
                    set(&faults, fault);
                }
            }
            Op::FaultOff(target) => {
                if let Some(faults) = self.faults(target) {
                    faults.heal();
                }
            }
            Op::Evict => {
                self.world.memory.evict(&key());
            }
            Op::WriterClear => {
                // An error (a fault) just means nothing was cleared.
                let _ = self.world.writer.clear().await;
            }
            Op::StoreGarbage => self.world.memory.insert_raw(&key(), "not a generation"),
            Op::LoaderFailNext(i, n) => {
                self.readers[i].plan.fail_next.fetch_add(n, SeqCst);
            }
            Op::LoaderDelayNextMs(i, ms) => self.readers[i].plan.delay_next_ms.store(ms, SeqCst),
            // Paused time: this moves the clock, firing every timer due on
            // the way in order, and lets tasks run at each step. It models
            // time passing; it does not wait for anything.
            Op::AdvanceTimeMs(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
        self.fresh_readers_are_current().await
    }

    /// Property 2 (a), and settings never moving backwards.
    async fn check(&mut self, i: usize) -> Result<(), TestCaseError> {
        let published = self.world.published();
        let reader = &mut self.readers[i];
        let stale_before = reader.reloader.metrics().stale_served;
        let got = *reader.reloader.check().await;
        let stale_counted = reader.reloader.metrics().stale_served > stale_before;
        prop_assert!(
            got >= published || stale_counted,
            "reader {i} reported fresh holding version {got}, although version {published} \
             was published before its check began"
        );
        prop_assert!(
            got >= reader.last_seen,
            "reader {i} went back from version {} to {got}",
            reader.last_seen
        );
        reader.last_seen = got;
        Ok(())
    }

    /// Property 2 (b): a reader whose recorded generation is the stored one
    /// holds every published update.
    async fn fresh_readers_are_current(&self) -> Result<(), TestCaseError> {
        let Some(stored) = self.world.stored().await else {
            return Ok(());
        };
        let published = self.world.published();
        for (i, reader) in self.readers.iter().enumerate() {
            let recorded = reader.reloader.synchronizer().sync_gen();
            let held = *reader.reloader.current();
            prop_assert!(
                recorded != Some(stored) || held >= published,
                "reader {i} recorded the stored generation {stored:?} while holding version \
                 {held}, older than the published version {published}"
            );
        }
        Ok(())
    }

    /// Property 1.
    async fn converge(&mut self) -> Result<(), TestCaseError> {
        self.world.fleet.faults().heal();
        for reader in &self.readers {
            reader.plan.disarm();
            if let Some(faults) = &reader.faults {
                faults.heal();
            }
        }
        tokio::time::sleep(DRAIN).await;
        self.fresh_readers_are_current().await?;
        if self.world.latest() > self.world.published() {
            prop_assert!(self.world.bump().await, "a bump failed on a healed backend");
        }
        let latest = self.world.latest();
        for (i, reader) in self.readers.iter().enumerate() {
            let r = &reader.reloader;
            let before = r.metrics();
            let got = *r.check().await;
            let after = r.metrics();
            prop_assert_eq!(
                got,
                latest,
                "reader {} did not converge in one check ({:?} -> {:?})",
                i,
                before,
                after
            );
            prop_assert_eq!(
                after.stale_served,
                before.stale_served,
                "reader {} served stale settings on a healed fleet",
                i
            );
            prop_assert!(
                !r.synchronizer().is_expired().await,
                "reader {} still expired after converging",
                i
            );
            let again = *r.check().await;
            prop_assert_eq!(again, latest, "reader {} moved off the latest version", i);
            prop_assert_eq!(
                r.metrics().loader_runs,
                after.loader_runs,
                "reader {} reloaded again when fresh",
                i
            );
        }
        for (i, reader) in self.readers.iter().enumerate() {
            prop_assert!(
                !reader.reloader.synchronizer().is_expired().await,
                "reader {} no longer agrees with the fleet",
                i
            );
        }
        Ok(())
    }
}

fn set(faults: &Faults, fault: &Fault) {
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

/// Runs one case on its own paused current-thread runtime.
fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut model = Model::new();
        for op in ops {
            model.apply(op).await?;
        }
        model.converge().await
    })
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
    prop_oneof![Just(Target::Fleet), (1..READERS).prop_map(Target::Reader)]
}

fn op() -> impl Strategy<Value = Op> {
    let reader = || 0..READERS;
    prop_oneof![
        8 => reader().prop_map(Op::Check),
        1 => (reader(), 2u32..=16, prop_oneof![10u64..=200, 200u64..=2_500])
            .prop_map(|(reader, count, every_ms)| Op::Requests { reader, count, every_ms }),
        3 => Just(Op::WriterSave),
        3 => Just(Op::WriterBump),
        2 => reader().prop_map(Op::SaveAndBumpDuringLoad),
        3 => (target(), fault()).prop_map(|(t, f)| Op::FaultOn(t, f)),
        2 => target().prop_map(Op::FaultOff),
        1 => Just(Op::Evict),
        1 => Just(Op::WriterClear),
        1 => Just(Op::StoreGarbage),
        1 => (reader(), 1u32..=10).prop_map(|(i, n)| Op::LoaderFailNext(i, n)),
        2 => (reader(), 1..=MAX_LOAD_DELAY_MS).prop_map(|(i, ms)| Op::LoaderDelayNextMs(i, ms)),
        // Mostly within a backoff window or two; sometimes past the cap or
        // the key's time to live.
        3 => prop_oneof![4 => 1u64..=1_500, 1 => 1_500u64..=90_000].prop_map(Op::AdvanceTimeMs),
    ]
}

/// 64 cases unless `PROPTEST_CASES` says otherwise. Built from
/// `ProptestConfig::default()`, which is where proptest reads its
/// environment variables (`PROPTEST_RNG_SEED` included).
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 64;
    }
    config.failure_persistence = None;
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_fleet_never_serves_silently_stale_settings_and_converges(
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run(&ops)?;
    }
}

/// Interleavings worth running every time, whatever proptest draws.
#[test]
fn known_interleavings() {
    use Op::*;
    let cases: &[&[Op]] = &[
        // The reload fence: a save and bump land while the load runs.
        &[
            Check(0),
            SaveAndBumpDuringLoad(0),
            WriterSave,
            WriterBump,
            Check(0),
            Check(0),
        ],
        &[SaveAndBumpDuringLoad(1), Check(1), Check(1), Check(2)],
        // A load outlives the wait bound; an update lands meanwhile, and a
        // later check must not join the load that read the old version.
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
        // A failed load records nothing.
        &[
            Check(2),
            WriterSave,
            WriterBump,
            LoaderFailNext(2, 1),
            Check(2),
            AdvanceTimeMs(1_000),
            Check(2),
        ],
        // A backend outage is expired, not fresh; an eviction and a fresh
        // key are a change.
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
        // Garbage at the key is expired, not fresh.
        &[Check(0), WriterSave, WriterBump, StoreGarbage, Check(0)],
        // A long outage under steady traffic: the backoff stays capped, so
        // the reader is past it once the drain is over.
        &[
            LoaderFailNext(0, 8),
            Requests {
                reader: 0,
                count: 11,
                every_ms: 2_134,
            },
        ],
    ];
    for (n, ops) in cases.iter().enumerate() {
        if let Err(e) = run(ops) {
            panic!("case {n} {ops:?}: {e}");
        }
    }
}
