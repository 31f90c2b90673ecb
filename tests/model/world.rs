//! The shared world: the cache server, the source of truth (a fenced
//! store), and what the model knows has been published.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use gensync::reload::StaleFence;

use super::watch::Releases;
use gensync::backend::{Backend, Fence, Stored};
use gensync::testing::FaultyBackend;
use gensync::{Generation, GenerationSynchronizer, MemoryBackend, Synchronizer};
use tokio::time::Instant;

use super::{key, KEY_TTL, LEASE};

/// What writer processes read and write: the change ids applied so far, and
/// the write that produced this copy (0 for a copy read from the store).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Doc {
    pub applied: BTreeSet<u32>,
    pub by: u32,
}

/// Who saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveKind {
    /// `update`: a change applied to what the store held.
    Update,
    /// `publish`: a whole document written blind, so it may replace
    /// updates saved since it was made.
    Publish,
    /// A writer that died after saving.
    Dead,
}

/// One save a leased writer sent to the store.
#[derive(Clone, Debug)]
pub struct SaveRecord {
    pub by: u32,
    pub kind: SaveKind,
    pub fence: Fence,
    /// The lease was live and its fence the last handed out, as the store
    /// was written: no other writer could have held it.
    pub held: bool,
    /// Nobody held the lease as the store was written (it had lapsed, or a
    /// restore went back to before it was taken).
    pub free: bool,
    /// For a publish: the row version its document was read at. Its save
    /// replaces every update saved after that.
    pub base: Option<u64>,
    /// The store's row version after this save, if the store accepted it.
    pub accepted: Option<u64>,
}

/// Who is saving under which lease.
pub struct Leased {
    pub by: u32,
    pub kind: SaveKind,
    pub fence: Fence,
    /// See [`SaveRecord::base`].
    pub base: Option<u64>,
    /// The restore count when the write began: a save under the lease with
    /// no rollback since is covered by its writer's intent, so it is
    /// published within a lease.
    pub since: u64,
}

/// The source of truth and the model's bookkeeping about it.
struct Source {
    /// The store's row version: every accepted save adds one. Readers load
    /// this; it is what "published" and "latest" are counted in.
    version: u64,
    applied: BTreeSet<u32>,
    /// The greatest fencing token the store accepted.
    fence: Fence,
    /// Every leased save, accepted or refused, in order.
    saves: Vec<SaveRecord>,
    published: u64,
    /// When each version was published, for a promise about what was
    /// published some time ago (interval mode).
    history: Vec<(Instant, u64)>,
    /// Versions that become published at an instant: saved under a pending
    /// intent, which caps the key's life by then.
    covered: Vec<(Instant, u64)>,
    /// Every raw generation a bump returned.
    bumped: Vec<Generation>,
    restores: u64,
}

impl Source {
    fn publish(&mut self, at: Instant, version: u64) {
        self.published = self.published.max(version);
        self.history.push((at, version));
    }
}

/// What every process shares.
pub struct World {
    pub memory: MemoryBackend,
    /// The faults every fleet process (the writers and readers 1 and 2)
    /// goes through.
    pub fleet: FaultyBackend<MemoryBackend>,
    /// The memory backend as fleet processes read it, without faults but
    /// with the fleet's server changes mirrored, so its reads mix in the
    /// same epoch: what `is_expired()` would compare with on a healthy
    /// fleet.
    fleet_view: Synchronizer<FaultyBackend<MemoryBackend>>,
    direct_view: Synchronizer<MemoryBackend>,
    /// The raw writer: saves, then `mark_updated`, with no lease.
    pub writer: Synchronizer<FaultyBackend<MemoryBackend>>,
    /// When the writer processes let their leases go.
    pub releases: Releases,
    source: Mutex<Source>,
}

/// Whether the model's store checks fencing tokens. Only ever `false` while
/// checking that the model notices a store that does not.
pub const FENCED: bool = true;

impl World {
    pub fn new() -> Arc<Self> {
        let memory = MemoryBackend::new();
        let fleet = FaultyBackend::new(memory.clone());
        let writer = Synchronizer::new(fleet.clone(), key())
            .with_ttl(KEY_TTL)
            .unwrap();
        Arc::new(World {
            fleet_view: Synchronizer::new(FaultyBackend::new(memory.clone()), key()),
            direct_view: Synchronizer::new(memory.clone(), key()),
            memory,
            fleet,
            writer,
            releases: Releases::default(),
            // Version 1 is in the source from the start; readers begin on 0.
            source: Mutex::new(Source {
                version: 1,
                applied: BTreeSet::new(),
                fence: Fence::new(0),
                saves: Vec::new(),
                published: 0,
                history: Vec::new(),
                covered: Vec::new(),
                bumped: Vec::new(),
                restores: 0,
            }),
        })
    }

    fn source(&self) -> MutexGuard<'_, Source> {
        self.source.lock().unwrap()
    }

    pub fn latest(&self) -> u64 {
        self.source().version
    }

    pub fn doc(&self) -> Doc {
        Doc {
            applied: self.source().applied.clone(),
            by: 0,
        }
    }

    /// The newest published version now (see the module docs).
    pub fn published(&self) -> u64 {
        let now = Instant::now();
        let mut source = self.source();
        // Published when their intent lapsed, not when noticed here.
        let (lapsed, pending) = std::mem::take(&mut source.covered)
            .into_iter()
            .partition(|(at, _)| *at <= now);
        source.covered = pending;
        for (at, version) in lapsed {
            source.publish(at, version);
        }
        source.published
    }

    /// The newest version published at or before `at` (which is not in
    /// the future).
    pub fn published_at(&self, at: Instant) -> u64 {
        self.published();
        let source = self.source();
        source
            .history
            .iter()
            .filter(|(when, _)| *when <= at)
            .map(|(_, v)| *v)
            .max()
            .unwrap_or(0)
    }

    pub fn publish_up_to(&self, version: u64) {
        self.source().publish(Instant::now(), version);
    }

    /// The raw writer's save: a new row version, the changes kept.
    pub fn save(&self) {
        self.source().version += 1;
    }

    /// The raw writer's bump; on success counts every save made before the
    /// bump began as published. Returns whether it succeeded.
    pub async fn bump(&self) -> bool {
        let covers = self.latest();
        match self.writer.mark_updated().await {
            Ok(g) => {
                self.bumped(g);
                self.publish_up_to(covers);
                true
            }
            Err(_) => false,
        }
    }

    /// Notes a generation a bump returned.
    pub fn bumped(&self, g: Generation) {
        self.source().bumped.push(g);
    }

    /// A generation two bumps returned, if any.
    pub fn reissued(&self) -> Option<Generation> {
        let source = self.source();
        let all = &source.bumped;
        all.iter()
            .enumerate()
            .find(|(i, g)| all[..*i].contains(g))
            .map(|(_, g)| *g)
    }

    /// Whether the lease with `fence` is held now (the lease key is live
    /// and `fence` is the last token handed out, so nobody took it since),
    /// and whether nobody holds it.
    async fn lease(&self, fence: Fence) -> (bool, bool) {
        let lock = self.memory.get(&key().companion("lock")).await.unwrap();
        let last = self.memory.get(&key().companion("fence")).await.unwrap();
        let live = matches!(lock, Stored::Value(_));
        let last = matches!(last, Stored::Value(g) if g.get() == fence.get());
        (live && last, !live)
    }

    /// A leased writer's save: refused when a greater fencing token was
    /// accepted before (unless the store is not fenced). `change` makes the
    /// new set from the stored one.
    pub async fn save_leased(
        &self,
        write: Leased,
        change: impl FnOnce(&BTreeSet<u32>) -> BTreeSet<u32>,
    ) -> Result<u64, StaleFence> {
        let Leased {
            by,
            kind,
            fence,
            base,
            since,
        } = write;
        let (held, free) = self.lease(fence).await;
        let mut source = self.source();
        let mut record = SaveRecord {
            by,
            kind,
            fence,
            held,
            free,
            base,
            accepted: None,
        };
        if FENCED && fence < source.fence {
            let refusal = StaleFence {
                offered: fence,
                accepted: source.fence,
            };
            source.saves.push(record);
            return Err(refusal);
        }
        source.fence = source.fence.max(fence);
        source.version += 1;
        source.applied = change(&source.applied);
        let version = source.version;
        record.accepted = Some(version);
        source.saves.push(record);
        if held && source.restores == since {
            source.covered.push((Instant::now() + LEASE, version));
        }
        Ok(version)
    }

    pub fn saves(&self) -> Vec<SaveRecord> {
        self.source().saves.clone()
    }

    pub fn top_fence(&self) -> Fence {
        self.source().fence
    }

    pub fn restores(&self) -> u64 {
        self.source().restores
    }

    pub fn applied(&self) -> BTreeSet<u32> {
        self.source().applied.clone()
    }

    /// Redis restarted from `point`: every process reads expired once, so
    /// every save so far counts as published.
    pub fn restore(&self, point: &gensync::testing::SavePoint) {
        self.memory.restore(point);
        let mut source = self.source();
        source.restores += 1;
        let version = source.version;
        source.publish(Instant::now(), version);
    }

    /// The fleet failed over to a server with the same data.
    pub fn new_server(&self) {
        self.fleet.faults().new_server();
        self.fleet_view.backend().faults().new_server();
    }

    /// The stored generation as reader `i`'s synchronizer reads it on a
    /// healthy backend (mixed with its epoch), read past the faults.
    pub async fn seen_by(&self, reader: usize) -> Option<Generation> {
        let check = if reader == 0 {
            self.direct_view.check().await
        } else {
            self.fleet_view.check().await
        };
        check.observed()
    }
}
