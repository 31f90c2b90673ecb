//! A model-based property test of the reloader fleet and its writers.
//!
//! # What is modelled
//!
//! One [`MemoryBackend`] is the shared cache server. Around it sits one
//! "fleet" [`FaultyBackend`], whose faults hit every process that talks
//! through it: the raw writer, the two writer processes, and readers 1 and
//! 2. Readers 1 and 2 and the two writer processes each add a
//! [`FaultyBackend`] of their own on top, so a fault can also hit one
//! process only. Reader 0 talks to the memory backend directly and only
//! ever sees what is really stored.
//!
//! The source of truth is a fenced store: a set of applied change ids, a
//! row version that every accepted save moves on by one, and the greatest
//! fencing token it accepted, below which it refuses a save
//! ([`StaleFence`](gensync::reload::StaleFence)). Each reader is a
//! [`Reloader`] over its own [`Synchronizer`], loading the row version
//! (0 is the initial value, never in the source). Three kinds of writer
//! write to it:
//!
//! - **The raw writer** saves (a new row version, the changes kept) and
//!   bumps with [`GenerationSynchronizer::mark_updated`], as separate
//!   operations and with no lease.
//! - **Two writer processes**, each a [`Reloader`] with a
//!   [`fenced`](gensync::reload::fenced) saver and `write_lock(LEASE, 40)`.
//!   [`Reloader::update`] adds its change id to the set it loaded;
//!   [`Reloader::publish`] writes, blind, the set the store held when it
//!   was called. Writes run in the background while the next operations
//!   run, so they contend for the lease with each other, with dead writers
//!   and with everything else. A write's saver is quick; slow (up to three
//!   leases: renewed on a healthy fleet, lapsed when the writer is cut
//!   off); failing before it writes; or failing after it wrote (a commit
//!   whose reply was lost).
//! - **Dead writers**: a writer process takes the lease
//!   ([`WriterLock::try_lock`]), records its intent
//!   ([`WriterLock::mark_intent`]), saves an update some time later (in the
//!   background), and stops: no bump, no release, no renewal, as a process
//!   that crashed.
//!
//! A writer is stalled by failing every call of its own wrapper: its
//! renewals no longer get through, its lease lapses, another writer may
//! take it, and when the stalled save resumes its token is stale.
//!
//! The cache server can go back in time: `SavePoint` remembers everything
//! it stores ([`MemoryBackend::save_point`]) and `Restore` restarts it from
//! there (the epoch of every process moves). `NewServer` fails the fleet
//! over to a server holding the same data (the fleet's processes see a new
//! epoch; reader 0 sees nothing).
//!
//! Each reader checks in a [`CheckMode`] drawn per case: strict (reads
//! coalesced), push (the memory backend pushes every change of the key
//! before the call that made it returns; a reader on the fleet reads its
//! generation through the faults, but its pushes come from the store
//! itself), or interval.
//!
//! Proptest generates a sequence of [`Op`]s: reader checks, one at a time
//! or as a stream of requests spaced in time, each request on a task of its
//! own so requests overlap and their reads and loads are shared; raw saves and bumps
//! (separately, so a save can stay unpublished); a raw save-and-bump made
//! by a reader's next load right after it read the source (the
//! reload-fence race, hit deterministically); writes and dead writers;
//! save points, restores and failovers; fleet, per-reader or per-writer
//! faults (every call failing, the next n calls failing, a seeded random
//! fraction failing, corrupt reads, the key evicted before every call,
//! latency, hangs, evicting the next call's key) and healing; evictions,
//! `clear`, garbage stored at the key; loader failures and slow loads (past
//! the wait bound and past the load timeout); and time passing, which also
//! lapses the key's time to live and leases. Everything runs on one
//! current-thread tokio runtime with paused time, so a case is a function
//! of its operations: proptest's shrunk sequence replays
//! (`PROPTEST_RNG_SEED=<n>` replays a whole run), up to the library's own
//! random draws (generations, bump steps, which branch of a `select!` is
//! polled first when both are ready at the same instant) and fencing
//! tokens taken from the wall clock. The clock moves only where an
//! operation says so (`AdvanceTimeMs`, the spacing of `Requests`, the
//! final drain) or when every task is idle on a timer: a hang, latency, a
//! slow load or save, the wait bound, a lease renewal.
//!
//! # What "published" means
//!
//! A version of the source (a row version) is *published*, and no reader
//! may report fresh while holding an older one, once any of these holds:
//!
//! - **A bump followed its save**: a raw `mark_updated` that returned `Ok`
//!   publishes every version saved before it began; a write that returned
//!   `Ok` (its own bump succeeded after its save) publishes its own
//!   version. An `Err` bump publishes nothing, nor does a write that
//!   returned an error.
//! - **Its writer's intent lapsed**: the save was made while its writer
//!   held the lease (the lease key live, and the save's token the last one
//!   handed out), with no restore since that write began, and one lease
//!   has passed since the save. While the lease is held, the writer's
//!   intent is pending, and it caps the key's life to the intent's lapse
//!   (at most one lease after the save, since renewals stop once the save
//!   returns) whatever bumps or re-creations happen meanwhile; every value
//!   a reader recorded before the save is gone by then. This covers a
//!   writer that died after saving, a write whose bump failed, and a saver
//!   that failed after writing, without any bump.
//! - **A restore happened after its save**: every process's next read is
//!   in a new epoch, so nothing recorded before matches, and every load
//!   that records anything afterwards read the source after the restore.
//!
//! A failover (`NewServer`) publishes nothing: reader 0 does not see it. A
//! save made after its writer's lease lapsed is covered by no intent, and
//! is published only by a bump that follows it.
//!
//! # The properties
//!
//! 1. **Convergence.** After the sequence every fault is healed, loaders
//!    stop failing and stalling, every write still running finishes, and
//!    the clock is moved on by [`DRAIN`]: past every dead writer's lease,
//!    and the longest a call or load in flight at the heal can still take,
//!    plus the backoff cap, so no reader is inside a backoff window any
//!    more (the bound is tight on purpose: a backoff that outgrows its cap
//!    fails here). If some save is still unpublished (a raw save not
//!    bumped, or a save made after its lease lapsed), the raw writer bumps
//!    once (this must succeed); a dead writer's save needs no bump. Then
//!    "within one check" means: the *first* [`Reloader::check`] of each
//!    reader returns exactly the source's latest version without counting
//!    `stale_served`; the reader's synchronizer then reports fresh
//!    ([`GenerationSynchronizer::is_expired`] is `false`); a second check
//!    returns the same version without running the loader; and once every
//!    reader has checked, all of them are still fresh (the fleet agrees on
//!    one generation).
//! 2. **No silent staleness**, against `published` as defined above. A
//!    reader *reports fresh* in two observable ways, and both are asserted:
//!    - (a) a [`Reloader::check`] reports fresh when it returns without
//!      counting itself in [`ReloadMetrics::stale_served`] (DESIGN.md
//!      section 2: past a bound the last good settings are served "and that
//!      is counted, never silent"); that covers a check that found its
//!      generation current and one that joined or ran a reload. Every check
//!      that reports fresh returns a version at least `published` as of the
//!      moment the check began (strict and push: on the memory backend a
//!      push mode's heartbeat is answered in-process), or, in interval
//!      mode, as of one interval before it began. In a stream of requests,
//!      whose checks overlap and share one reader's stale count, a check
//!      reports fresh unless that count moved while it ran, and no more
//!      checks fall short than the count moved by over the stream.
//!    - (b) a reader's synchronizer reports fresh when its recorded
//!      generation equals the stored one as that synchronizer reads it
//!      (mixed with its epoch), which is what `is_expired()` answers on a
//!      healthy backend (read past the faults, so the assertion does not
//!      spend them). After every operation, every reader whose synchronizer
//!      reports fresh holds settings at least `published`.
//!
//!    Also asserted on every check: a reader's settings never go back to an
//!    older version.
//! 3. **Writers are told the truth.** Checked as each write returns:
//!    - a write that returned `Ok` had its save accepted, made under its
//!      lease (the lease key live and its token the last handed out: no one
//!      else held it; after a restore wiped the lease, at least no one held
//!      it), and no other writer's save was accepted before it returned;
//!    - `LeaseLost { saved: false }`: the store took nothing from it;
//!      `LeaseLost { saved: true }` and `Bump`: it did; `Locked`, `Start`,
//!      `Load`: its saver never ran;
//!    - a save the store refused (a stale token) is reported as
//!      `LeaseLost { saved: false }` (or, when a restore took the lease and
//!      the writer's release could not get through, as the store's
//!      `StaleFence` refusal in `Save`), and a save made under the lease
//!      is never refused;
//!    - a save the store took while the lease was not the writer's (it
//!      lapsed unrenewed, with no restore while the write ran) is
//!      reported as `LeaseLost`, saved or maybe saved, whatever its bump
//!      did;
//!    - on a healthy fleet (no fault set on the fleet or on that writer, no
//!      restore or failover, from the call to the return) a write with a
//!      working saver, however slow, returns `Ok`, or `Locked` when other
//!      writers held the lease through every try: a save slower than the
//!      lease keeps it.
//! 4. **No lost update.** After convergence, every `update` that returned
//!    `Ok` is in the source, unless a `publish` whose document was read
//!    before that update's save was accepted after it (a publish writes
//!    blind, and promises no more).
//! 5. **No generation handed out twice.** No two bumps return the same
//!    stored value, even across restores (bumps add a random step).
//!
//! Also checked: **no reader reloads in a loop** that never lets the
//! paused clock move. A reader whose loader runs a thousand times at one
//! instant is cut off (its loader fails until the clock moves, so it backs
//! off and the case goes on) and counted in [`run::Tally::spins`]; that
//! fails the case (the library once did it: see
//! [`pinned::ONCE_BROKEN_IN`]).
//!
//! [`promises_the_library_once_broke`] runs the minimal sequences on which
//! this model caught the library breaking property 3 or 4 (both fixed), so
//! they stay fixed, and [`promises_the_library_once_broke_in_given_modes`]
//! those for readers in given modes. Pinned cases run with strict, push
//! and mixed readers.
//!
//! # Running
//!
//! `cargo test --all-features --test model` runs [`CASES`] cases (about
//! 8 s in a debug build) drawn from the fixed seed [`SEED`], so every run,
//! CI's included, checks the same sequences; the test prints the seed and
//! the case count, which proptest shows with a failure. `PROPTEST_RNG_SEED`
//! draws from another seed and `PROPTEST_CASES` changes the count, to
//! replay a failure seen elsewhere or to look further
//! (`PROPTEST_RNG_SEED=$RANDOM PROPTEST_CASES=20000 cargo test --release
//! --all-features --test model`). Failures are not persisted to a
//! regressions file, to keep the tree clean: proptest prints the minimal
//! failing sequence, which can be pinned as a case in
//! [`known_interleavings`].
//!
//! Three cases are pinned for bugs planted in the library, on which a
//! random run may draw nothing that catches them: the heartbeat bound
//! disabled ([`a_push_reader_stops_vouching_at_the_heartbeat_bound`]), a
//! writer's lease held past its expiry
//! ([`a_lease_is_held_no_longer_than_it_lasts`]), and a writer whose
//! renewals keep failing not told `LeaseLost`
//! ([`a_writer_whose_renewals_keep_failing_is_told_its_lease_was_lost`]).
//!
//! [`CheckMode`]: gensync::reload::CheckMode
//! [`FaultyBackend`]: gensync::testing::FaultyBackend
//! [`GenerationSynchronizer::is_expired`]: gensync::GenerationSynchronizer::is_expired
//! [`GenerationSynchronizer::mark_updated`]: gensync::GenerationSynchronizer::mark_updated
//! [`MemoryBackend`]: gensync::MemoryBackend
//! [`MemoryBackend::save_point`]: gensync::MemoryBackend::save_point
//! [`Op`]: ops::Op
//! [`ReloadMetrics::stale_served`]: gensync::reload::ReloadMetrics::stale_served
//! [`Reloader`]: gensync::reload::Reloader
//! [`Reloader::check`]: gensync::reload::Reloader::check
//! [`Reloader::publish`]: gensync::reload::Reloader::publish
//! [`Reloader::update`]: gensync::reload::Reloader::update
//! [`Synchronizer`]: gensync::Synchronizer
//! [`WriterLock::mark_intent`]: gensync::synchronizer::WriterLock::mark_intent
//! [`WriterLock::try_lock`]: gensync::synchronizer::WriterLock::try_lock

mod ops;
mod pinned;
mod promises;
mod readers;
mod run;
mod watch;
mod world;
mod writers;

use std::time::Duration;

use gensync::reload::CheckMode;
use gensync::Key;
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

use ops::{modes, op};
use readers::READERS;
use run::run;

/// Long enough to survive the drain, short enough that `AdvanceTime` can
/// lapse the key mid-sequence.
const KEY_TTL: Duration = Duration::from_secs(60);
/// The writers' lease, and so how long a dead writer's intent lasts.
const LEASE: Duration = Duration::from_secs(2);
const MAX_WAIT: Duration = Duration::from_millis(500);
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(800);
const MAX_LATENCY_MS: u64 = 300;
const MAX_HANG_MS: u64 = 2_000;
/// Past the wait bound and past the load timeout, so slow loads both
/// outlast waiting checks and fail.
const MAX_LOAD_DELAY_MS: u64 = 3_000;
/// How far the clock moves after healing and once every write finished,
/// before the convergence checks: past the backoff cap, once whatever was
/// in flight at the heal is over. A load in flight then makes at most one
/// call that drew its faults before the heal (latency, then a hang), then
/// healthy calls, then a loader run cut off at the load timeout; if it
/// fails, it backs off at most the cap.
const DRAIN: Duration = Duration::from_millis(
    MAX_LATENCY_MS
        + MAX_HANG_MS
        + LOAD_TIMEOUT.as_millis() as u64
        + BACKOFF_MAX.as_millis() as u64
        + 1,
);
// The drain also lets every intent lapse.
const _: () = assert!(DRAIN.as_millis() > LEASE.as_millis());

fn key() -> Key {
    Key::new(["model", "settings"]).unwrap()
}

/// How many cases a run draws unless `PROPTEST_CASES` says otherwise:
/// about 8 s in a debug build.
const CASES: u32 = 1_000;

/// The seed a run draws its cases from unless `PROPTEST_RNG_SEED` says
/// otherwise: fixed, so every CI run checks the same cases and a failure
/// there fails again on a developer's machine.
const SEED: u64 = 20_201_207;

/// [`CASES`] cases from [`SEED`] unless `PROPTEST_CASES` or
/// `PROPTEST_RNG_SEED` say otherwise; the seed is printed (shown when the
/// test fails). Built from `ProptestConfig::default()`, which is where
/// proptest reads those environment variables.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CASES;
    }
    let seed = match config.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => SEED,
    };
    config.rng_seed = RngSeed::Fixed(seed);
    eprintln!(
        "model: {} cases drawn from seed {seed}; replay them with PROPTEST_RNG_SEED={seed} \
         PROPTEST_CASES={}, or draw others with another seed",
        config.cases, config.cases
    );
    config.failure_persistence = None;
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_fleet_never_serves_silently_stale_settings_and_converges(
        modes in modes(),
        ops in prop::collection::vec(op(), 1..60)
    ) {
        run(&modes, &ops)?;
    }
}

/// The readers' modes every pinned case runs under: the cases were found
/// with strict readers; push and interval readers must keep their
/// promises on them too.
const PINNED_MODES: [[CheckMode; READERS]; 3] = [
    [CheckMode::Strict; READERS],
    [CheckMode::Push; READERS],
    [
        CheckMode::Push,
        CheckMode::Strict,
        CheckMode::Interval(Duration::from_millis(300)),
    ],
];

/// Interleavings worth running every time, whatever proptest draws.
#[test]
fn known_interleavings() {
    for modes in &PINNED_MODES {
        for (n, (ops, path)) in pinned::KNOWN.iter().enumerate() {
            match run(modes, ops) {
                Ok(tally) => path(&tally),
                Err(e) => panic!("case {n} {modes:?} {ops:?}: {e}"),
            }
        }
    }
}

/// Promises the library once broke (see [`pinned::ONCE_BROKEN`]), kept
/// as cases so they stay kept.
#[test]
fn promises_the_library_once_broke() {
    let mut broken = Vec::new();
    for modes in &PINNED_MODES {
        for (n, (ops, path)) in pinned::ONCE_BROKEN.iter().enumerate() {
            match run(modes, ops) {
                Ok(tally) => path(&tally),
                Err(e) => broken.push(format!("case {n} {modes:?} {ops:?}: {e}")),
            }
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Promises the library once broke for readers in given modes (see
/// [`pinned::ONCE_BROKEN_IN`]), kept as cases so they stay kept.
#[test]
fn promises_the_library_once_broke_in_given_modes() {
    let mut broken = Vec::new();
    for (n, (modes, ops, path)) in pinned::ONCE_BROKEN_IN.iter().enumerate() {
        let outcome = run(modes, ops).map(|tally| {
            std::panic::catch_unwind(|| path(&tally)).map_err(|_| "took the broken path")
        });
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => broken.push(format!("case {n} {modes:?} {ops:?}: {e}")),
            Err(e) => broken.push(format!("case {n} {modes:?} {ops:?}: {e}")),
        }
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Runs a case pinned for a bug planted in the library (see
/// [`pinned::HEARTBEAT_BOUND`] and those after it): every promise kept,
/// and the path the case is about taken.
fn pinned_in(case: &pinned::PinnedIn) {
    let (modes, ops, path) = case;
    match run(modes, ops) {
        Ok(tally) => path(&tally),
        Err(e) => panic!("{modes:?} {ops:?}: {e}"),
    }
}

/// A push reader stops vouching for a value once the key's lapse (the
/// bound of its last answered heartbeat, on the memory backend) passes,
/// with no push: a dead writer's save then reaches it within the lease.
#[test]
fn a_push_reader_stops_vouching_at_the_heartbeat_bound() {
    pinned_in(&pinned::HEARTBEAT_BOUND);
}

/// A writer whose lease lapsed unrenewed no longer holds it, whatever its
/// renewals said last: told `LeaseLost` when the store refuses its save.
#[test]
fn a_lease_is_held_no_longer_than_it_lasts() {
    pinned_in(&pinned::LEASE_EXPIRY);
}

/// A writer whose renewals keep failing through its load and its save is
/// told `LeaseLost`, even when the store took the save.
#[test]
fn a_writer_whose_renewals_keep_failing_is_told_its_lease_was_lost() {
    pinned_in(&pinned::RENEWALS_FAIL);
}
