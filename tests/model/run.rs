//! One case: the fleet, the operations applied to it, and the properties
//! checked after each one and at the end.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use gensync::reload::{CheckMode, Reloader};
use gensync::testing::{Faults, SavePoint};
use gensync::GenerationSynchronizer;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ops::{set, Op, Target};
use super::promises::{check_outcome, no_lost_update, saves_and_bumps};
use super::readers::{Reader, READERS, SPIN};
use super::world::World;
use super::writers::{spawn_dead, WriteLog, WriteOutcome, WriterProcess, WRITERS};
use super::{key, DRAIN};

/// What happened in a case, for pinned cases to check they took the path
/// they are about.
#[derive(Debug, Default)]
pub struct Tally {
    pub outcomes: Vec<WriteOutcome>,
    /// Writers that died after saving.
    pub dead_saves: u32,
    /// Saves the fenced store refused.
    pub refused: usize,
    /// The convergence phase found a save unpublished and bumped for it.
    pub final_bump: bool,
    /// Every request stream, in order.
    pub streams: Vec<Stream>,
    /// Operations after which a reader had reloaded in a loop that never
    /// let the clock move (cut off by its loader).
    pub spins: u32,
}

/// What one request stream did.
#[derive(Debug)]
pub struct Stream {
    pub reader: usize,
    pub checks: u32,
    /// The most checks in flight at once.
    pub peak: usize,
    /// Calls the reader's own wrapper saw meanwhile (readers 1 and 2).
    pub calls: Option<u64>,
}

/// One check as it began and ended.
#[derive(Debug)]
struct Checked {
    reader: usize,
    /// The version its mode promises at least, as of when it began.
    promised: u64,
    /// The newest version a check of this reader that had finished when
    /// this one began returned.
    floor: u64,
    got: u64,
    /// `stale_served` moved while it ran: it may have been this check.
    stale: bool,
}

/// What a check of one reader needs, apart from the model.
#[derive(Clone)]
struct Probe {
    reader: usize,
    reloader: Reloader<u64>,
    mode: CheckMode,
    last_seen: Arc<AtomicU64>,
    world: Arc<World>,
}

impl Probe {
    /// The version a check beginning now must return at least, unless it
    /// counts itself stale: on the memory backend, strict and push promise
    /// every version published before the check began, interval every
    /// version published an interval before.
    fn promised(&self) -> u64 {
        match self.mode.interval() {
            None => self.world.published(),
            Some(every) => Instant::now()
                .checked_sub(every)
                .map_or(0, |at| self.world.published_at(at)),
        }
    }

    async fn check(self) -> Checked {
        let r = &self.reloader;
        let floor = self.last_seen.load(SeqCst);
        let stale_before = r.metrics().stale_served;
        // No await between the promise and the check's first poll, so
        // nothing is published in between.
        let promised = self.promised();
        let got = *r.check().await;
        self.last_seen.fetch_max(got, SeqCst);
        Checked {
            reader: self.reader,
            promised,
            floor,
            got,
            stale: r.metrics().stale_served > stale_before,
        }
    }
}

/// Property 2 (a), and settings never moving backwards, for one check.
fn assert_checked(c: &Checked) -> Result<(), TestCaseError> {
    let i = c.reader;
    prop_assert!(
        c.got >= c.promised || c.stale,
        "reader {i} reported fresh holding version {}, although its mode promised version {}",
        c.got,
        c.promised
    );
    prop_assert!(
        c.got >= c.floor,
        "reader {i} went back from version {} to {}",
        c.floor,
        c.got
    );
    Ok(())
}

struct Model {
    world: Arc<World>,
    log: Arc<WriteLog>,
    readers: Vec<Reader>,
    writers: Vec<WriterProcess>,
    /// The writes still running in the background.
    tasks: Vec<JoinHandle<()>>,
    next_write: u32,
    /// Dead writers whose save the store took.
    dead_saves: Arc<AtomicU32>,
    save_point: Option<SavePoint>,
    tally: Tally,
}

impl Model {
    fn new(modes: &[CheckMode; READERS]) -> Self {
        let world = World::new();
        let log = Arc::new(WriteLog::default());
        Model {
            readers: (0..READERS)
                .map(|i| Reader::new(&world, i, modes[i]))
                .collect(),
            writers: (0..WRITERS)
                .map(|_| WriterProcess::new(&world, &log))
                .collect(),
            world,
            log,
            tasks: Vec::new(),
            next_write: 0,
            dead_saves: Arc::default(),
            save_point: None,
            tally: Tally::default(),
        }
    }

    fn faults(&self, target: Target) -> Option<Faults> {
        match target {
            Target::Fleet => Some(self.world.fleet.faults()),
            Target::Reader(i) => self.readers[i].faults.clone(),
            Target::Writer(w) => Some(self.writers[w].faults()),
        }
    }

    /// Write ids start at 1: 0 marks a document read from the store.
    fn write_id(&mut self) -> u32 {
        self.next_write += 1;
        self.next_write
    }

    async fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Check(i) => self.check(i).await?,
            Op::Requests {
                reader,
                count,
                every_ms,
            } => self.requests(reader, count, every_ms).await?,
            Op::WriterSave => self.world.save(),
            Op::WriterBump => {
                self.world.bump().await;
            }
            Op::SaveAndBumpDuringLoad(i) => self.readers[i].plan.bump_during.store(true, SeqCst),
            Op::Write {
                writer,
                kind,
                saver,
            } => {
                let id = self.write_id();
                let process = &self.writers[writer];
                let task = self
                    .log
                    .spawn(&self.world, process, writer, id, kind, saver);
                self.tasks.push(task);
            }
            Op::DeadWriter {
                writer,
                save_after_ms,
            } => {
                let id = self.write_id();
                let after = Duration::from_millis(save_after_ms);
                let process = &self.writers[writer];
                let task = spawn_dead(&self.world, process, id, after, &self.dead_saves);
                self.tasks.push(task);
            }
            Op::SavePoint => self.save_point = Some(self.world.memory.save_point()),
            Op::Restore => {
                if let Some(point) = &self.save_point {
                    self.world.restore(point);
                    self.log.disturb_all();
                }
            }
            Op::NewServer => {
                self.world.new_server();
                self.log.disturb_all();
            }
            Op::FaultOn(target, ref fault) => {
                if let Some(faults) = self.faults(target) {
                    set(&faults, fault);
                }
                match target {
                    Target::Fleet => self.log.fault_on(None),
                    Target::Writer(w) => self.log.fault_on(Some(w)),
                    Target::Reader(_) => {}
                }
            }
            Op::FaultOff(target) => {
                if let Some(faults) = self.faults(target) {
                    faults.heal();
                }
                match target {
                    Target::Fleet => self.log.fault_off(None),
                    Target::Writer(w) => self.log.fault_off(Some(w)),
                    Target::Reader(_) => {}
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
        self.after_op().await
    }

    /// The properties checked after every operation.
    async fn after_op(&mut self) -> Result<(), TestCaseError> {
        self.spun()?;
        self.fresh_readers_are_current().await?;
        for outcome in self.log.take_outcomes() {
            check_outcome(&self.world, &outcome)?;
            self.tally.outcomes.push(outcome);
        }
        saves_and_bumps(&self.world)?;
        let saves = self.world.saves();
        self.tally.refused = saves.iter().filter(|s| s.accepted.is_none()).count();
        Ok(())
    }

    /// Counts the readers that reloaded in a loop since the last look.
    fn spun(&mut self) -> Result<(), TestCaseError> {
        for (i, reader) in self.readers.iter().enumerate() {
            if reader.plan.spun.swap(false, SeqCst) {
                self.tally.spins += 1;
                // Once a library bug (see `pinned::ONCE_BROKEN_IN`).
                prop_assert!(
                    false,
                    "reader {i} ({}) ran its loader {SPIN} times without the clock moving",
                    reader.mode
                );
            }
        }
        Ok(())
    }

    fn probe(&self, i: usize) -> Probe {
        let reader = &self.readers[i];
        Probe {
            reader: i,
            reloader: reader.reloader.clone(),
            mode: reader.mode,
            last_seen: Arc::clone(&reader.last_seen),
            world: Arc::clone(&self.world),
        }
    }

    /// Property 2 (a), and settings never moving backwards.
    async fn check(&mut self, i: usize) -> Result<(), TestCaseError> {
        assert_checked(&self.probe(i).check().await)
    }

    /// A stream of requests: a check every `every_ms`, each on a task of
    /// its own as a server runs them, so a check arriving while another
    /// waits for its read or its load joins it (coalesced reads, one
    /// load). Each check keeps its own promise; and since the stale count
    /// is per reader, as many checks as it counted at most may fall short.
    async fn requests(&mut self, i: usize, count: u32, every_ms: u64) -> Result<(), TestCaseError> {
        let probe = self.probe(i);
        let calls = |model: &Self| model.readers[i].faults.as_ref().map(|f| f.counts().calls);
        let calls_before = calls(self);
        let stale_before = probe.reloader.metrics().stale_served;
        let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..count {
            let (probe, in_flight, peak) =
                (probe.clone(), Arc::clone(&in_flight), Arc::clone(&peak));
            tasks.push(tokio::spawn(async move {
                peak.fetch_max(in_flight.fetch_add(1, SeqCst) + 1, SeqCst);
                let checked = probe.check().await;
                in_flight.fetch_sub(1, SeqCst);
                checked
            }));
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
        }
        let mut short = 0;
        for task in tasks {
            let checked = task.await.expect("a check panicked");
            assert_checked(&checked)?;
            short += u64::from(checked.got < checked.promised);
        }
        let stale = probe.reloader.metrics().stale_served - stale_before;
        prop_assert!(
            short <= stale,
            "reader {i}: {short} checks of a stream fell short of their promise, \
             but only {stale} counted themselves stale"
        );
        self.tally.streams.push(Stream {
            reader: i,
            checks: count,
            peak: peak.load(SeqCst),
            calls: calls(self)
                .zip(calls_before)
                .map(|(after, before)| after - before),
        });
        Ok(())
    }

    /// Property 2 (b): a reader whose recorded generation is the one stored
    /// (as its synchronizer would read it) holds every published update.
    async fn fresh_readers_are_current(&self) -> Result<(), TestCaseError> {
        let published = self.world.published();
        for (i, reader) in self.readers.iter().enumerate() {
            let Some(seen) = self.world.seen_by(i).await else {
                continue;
            };
            let recorded = reader.reloader.synchronizer().sync_gen();
            let held = *reader.reloader.current();
            prop_assert!(
                recorded != Some(seen) || held >= published,
                "reader {i} recorded the stored generation {seen:?} while holding version \
                 {held}, older than the published version {published}"
            );
        }
        Ok(())
    }

    /// Heals everything and lets every write finish.
    async fn heal(&mut self) -> Result<(), TestCaseError> {
        self.world.fleet.faults().heal();
        self.log.fault_off(None);
        for (w, writer) in self.writers.iter().enumerate() {
            writer.faults().heal();
            self.log.fault_off(Some(w));
        }
        for reader in &self.readers {
            reader.plan.disarm();
            if let Some(faults) = &reader.faults {
                faults.heal();
            }
        }
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                prop_assert!(false, "a write task failed: {e}");
            }
        }
        self.after_op().await
    }

    /// Property 1, and property 4.
    async fn converge(&mut self) -> Result<(), TestCaseError> {
        self.heal().await?;
        tokio::time::sleep(DRAIN).await;
        self.fresh_readers_are_current().await?;
        if self.world.latest() > self.world.published() {
            self.tally.final_bump = true;
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
        self.spun()?;
        no_lost_update(&self.world, &self.tally.outcomes)
    }
}

/// Runs one case, its readers checking in `modes`, on its own paused
/// current-thread runtime.
pub fn run(modes: &[CheckMode; READERS], ops: &[Op]) -> Result<Tally, TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut model = Model::new(modes);
        for op in ops {
            model.apply(op).await?;
        }
        model.converge().await?;
        model.tally.dead_saves = model.dead_saves.load(SeqCst);
        Ok(model.tally)
    })
}
