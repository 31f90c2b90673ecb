//! The writer processes: `publish` and `update` through a writer
//! [`Reloader`] with a fenced saver, writers that die between their save
//! and their bump, and what each write's outcome must say.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use gensync::backend::Fence;
use gensync::reload::{fenced, PublishError, Reloader};
use gensync::synchronizer::WriterLock;
use gensync::testing::FaultyBackend;
use gensync::{Generation, MemoryBackend, Synchronizer};
use tokio::task::JoinHandle;

use super::watch::Watch;
use super::world::{Doc, Leased, SaveKind, World};
use super::{key, KEY_TTL, LEASE};

pub const WRITERS: usize = 2;
/// The library's default: about 7 s of tries, past a dead holder's lease.
const LOCK_TRIES: u32 = 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Publish,
    Update,
}

/// How a write's saver behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saver {
    Quick,
    /// Takes this long before it reaches the store.
    SlowMs(u64),
    /// Fails without writing.
    Fails,
    /// Writes, then reports a failure (a commit whose reply was lost).
    FailsAfterSave,
}

/// What a write returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Locked,
    Start,
    Load,
    Save,
    Bump,
    /// `saved`: what [`PublishError::saved`] says: `Some(false)` nothing
    /// saved, `Some(true)` saved, `None` a failed saver may have saved.
    LeaseLost {
        saved: Option<bool>,
    },
    Other(String),
}

impl From<&PublishError> for Outcome {
    fn from(e: &PublishError) -> Self {
        match e {
            PublishError::Locked { .. } => Outcome::Locked,
            PublishError::Start(_) => Outcome::Start,
            PublishError::Load(_) => Outcome::Load,
            PublishError::Save(_) => Outcome::Save,
            PublishError::Bump { .. } => Outcome::Bump,
            PublishError::LeaseLost { .. } => Outcome::LeaseLost { saved: e.saved() },
            other => Outcome::Other(other.to_string()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct WriteOutcome {
    pub id: u32,
    pub kind: WriteKind,
    pub saver: Saver,
    pub outcome: Outcome,
    pub generation: Option<Generation>,
    /// The greatest fencing token the store had accepted when the write
    /// returned.
    pub top_fence: Fence,
    /// No fault touched the fleet or this writer, and the server neither
    /// went back nor changed, from the call to the return.
    pub healthy: bool,
    /// The server went back to a save point while the write ran.
    pub restored: bool,
}

/// A writer process: a reloader that writes through its own fault wrapper
/// (on top of the fleet's), and a synchronizer on the same wrapper for a
/// writer that dies half-way.
pub struct WriterProcess {
    reloader: Reloader<Doc>,
    lock: Arc<Synchronizer<FaultyBackend<FaultyBackend<MemoryBackend>>>>,
}

impl WriterProcess {
    pub fn new(world: &Arc<World>, log: &Arc<WriteLog>) -> Self {
        let own = FaultyBackend::new(world.fleet.clone());
        let sync = || {
            Synchronizer::new(own.clone(), key())
                .with_ttl(KEY_TTL)
                .unwrap()
        };
        let read = Arc::clone(world);
        let loader = move || {
            let doc = read.doc();
            async move { Ok::<_, std::io::Error>(doc) }
        };
        let watched = FaultyBackend::new(own.clone()).observed(Watch(Arc::clone(world)));
        let (world, log) = (Arc::clone(world), Arc::clone(log));
        let saver = fenced(move |doc: &Doc, fence: Fence| {
            let (world, log, doc) = (Arc::clone(&world), Arc::clone(&log), doc.clone());
            async move { log.save(&world, doc, fence).await }
        });
        let reloader = Reloader::builder(
            Synchronizer::new(watched, key()).with_ttl(KEY_TTL).unwrap(),
            loader,
        )
        .saver(saver)
        .write_lock(LEASE, LOCK_TRIES)
        .build(Doc::default())
        .unwrap();
        WriterProcess {
            reloader,
            lock: Arc::new(sync()),
        }
    }

    pub fn faults(&self) -> gensync::testing::Faults {
        self.lock.backend().faults()
    }
}

/// What a write's saver is to do, set when the write starts.
struct Plan {
    kind: SaveKind,
    saver: Saver,
    /// The store's version when a publish's document was read.
    base: Option<u64>,
    /// The restore count when the write began.
    since: u64,
}

/// Whether the fleet or a writer has a fault set, and a mark per writer
/// that moves whenever something disturbs it.
#[derive(Default)]
struct Health {
    fleet_faulty: bool,
    writer_faulty: [bool; WRITERS],
    marks: [u64; WRITERS],
}

/// The writes' shared bookkeeping: their savers' plans, the fleet's health
/// and the outcomes not yet checked.
#[derive(Default)]
pub struct WriteLog {
    plans: Mutex<HashMap<u32, Plan>>,
    health: Mutex<Health>,
    outcomes: Mutex<Vec<WriteOutcome>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap()
}

fn with(applied: &BTreeSet<u32>, id: u32) -> BTreeSet<u32> {
    let mut next = applied.clone();
    next.insert(id);
    next
}

impl WriteLog {
    /// A fault set on the fleet (`None`) or on one writer.
    pub fn fault_on(&self, writer: Option<usize>) {
        let mut health = lock(&self.health);
        match writer {
            None => {
                health.fleet_faulty = true;
                health.marks.iter_mut().for_each(|m| *m += 1);
            }
            Some(w) => {
                health.writer_faulty[w] = true;
                health.marks[w] += 1;
            }
        }
    }

    pub fn fault_off(&self, writer: Option<usize>) {
        let mut health = lock(&self.health);
        match writer {
            None => health.fleet_faulty = false,
            Some(w) => health.writer_faulty[w] = false,
        }
    }

    /// The server went back in time or changed: every writer is disturbed.
    pub fn disturb_all(&self) {
        lock(&self.health).marks.iter_mut().for_each(|m| *m += 1);
    }

    /// The writer's mark if nothing disturbs it now.
    fn healthy_mark(&self, w: usize) -> Option<u64> {
        let health = lock(&self.health);
        (!health.fleet_faulty && !health.writer_faulty[w]).then_some(health.marks[w])
    }

    /// The saver of every writer process.
    async fn save(&self, world: &World, doc: Doc, fence: Fence) -> Result<(), std::io::Error> {
        let (write, saver) = {
            let plans = lock(&self.plans);
            let plan = &plans[&doc.by];
            let write = Leased {
                by: doc.by,
                kind: plan.kind,
                fence,
                base: plan.base,
                since: plan.since,
            };
            (write, plan.saver)
        };
        match saver {
            Saver::Fails => return Err(std::io::Error::other("injected saver failure")),
            Saver::SlowMs(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Saver::Quick | Saver::FailsAfterSave => {}
        }
        // A publish writes its document whole; an update's document is the
        // change applied to what it loaded, written whole too.
        let written = doc.applied;
        world
            .save_leased(write, |_| written)
            .await
            .map_err(std::io::Error::other)?;
        if saver == Saver::FailsAfterSave {
            return Err(std::io::Error::other("saved, but the reply was lost"));
        }
        Ok(())
    }

    /// Starts write `id` through `process` in the background.
    pub fn spawn(
        self: &Arc<Self>,
        world: &Arc<World>,
        process: &WriterProcess,
        writer: usize,
        id: u32,
        kind: WriteKind,
        saver: Saver,
    ) -> JoinHandle<()> {
        let (save_kind, base) = match kind {
            WriteKind::Publish => (SaveKind::Publish, Some(world.latest())),
            WriteKind::Update => (SaveKind::Update, None),
        };
        let plan = Plan {
            kind: save_kind,
            saver,
            base,
            since: world.restores(),
        };
        lock(&self.plans).insert(id, plan);
        let mark = self.healthy_mark(writer);
        let restores = world.restores();
        // A publish writes what the store holds now, blind: an update that
        // lands before its save is replaced, as publish promises.
        let blind = Doc {
            applied: world.applied(),
            by: id,
        };
        let (reloader, world, log) = (
            process.reloader.clone(),
            Arc::clone(world),
            Arc::clone(self),
        );
        tokio::spawn(async move {
            let result = match kind {
                WriteKind::Publish => reloader.publish(blind).await,
                WriteKind::Update => {
                    let change = move |doc: &Doc| Doc {
                        applied: with(&doc.applied, id),
                        by: id,
                    };
                    reloader.update(change).await
                }
            };
            // No await since the write returned: on this one-threaded
            // runtime nothing else has run in between.
            let outcome = WriteOutcome {
                id,
                kind,
                saver,
                outcome: result.as_ref().map_or_else(Outcome::from, |_| Outcome::Ok),
                generation: result.ok(),
                top_fence: world.top_fence(),
                healthy: mark.is_some() && log.healthy_mark(writer) == mark,
                restored: world.restores() != restores,
            };
            log.finish(&world, outcome);
        })
    }

    /// Records a write's outcome. One that returned `Ok` bumped after its
    /// save, which publishes it. (`LeaseLost { saved: true }` says the same
    /// today, but not in a way this model relies on.)
    fn finish(&self, world: &World, outcome: WriteOutcome) {
        if let Some(g) = outcome.generation {
            world.bumped(g);
            let own = world
                .saves()
                .iter()
                .find_map(|s| s.accepted.filter(|_| s.by == outcome.id));
            if let Some(version) = own {
                world.publish_up_to(version);
            }
        }
        lock(&self.outcomes).push(outcome);
    }

    /// The outcomes recorded since the last call.
    pub fn take_outcomes(&self) -> Vec<WriteOutcome> {
        std::mem::take(&mut *lock(&self.outcomes))
    }
}

/// A writer that takes the lease, records its intent, saves `save_after`
/// later, and dies before its bump and its release. Runs in the background;
/// counts itself in `saved` if the store took its save.
pub fn spawn_dead(
    world: &Arc<World>,
    process: &WriterProcess,
    id: u32,
    save_after: Duration,
    saved: &Arc<AtomicU32>,
) -> JoinHandle<()> {
    let (world, lock, saved) = (
        Arc::clone(world),
        Arc::clone(&process.lock),
        Arc::clone(saved),
    );
    let since = world.restores();
    tokio::spawn(async move {
        let token = Generation::fresh();
        let Ok(Some(fence)) = lock.try_lock(token, LEASE).await else {
            // It could not take the lease: it dies before saving anything.
            return;
        };
        if lock.mark_intent(token, LEASE).await.is_err() {
            return;
        }
        tokio::time::sleep(save_after).await;
        let write = Leased {
            by: id,
            kind: SaveKind::Dead,
            fence,
            base: None,
            since,
        };
        if world
            .save_leased(write, |applied| with(applied, id))
            .await
            .is_ok()
        {
            saved.fetch_add(1, SeqCst);
        }
    })
}
