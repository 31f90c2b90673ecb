//! The writers: processes that update one target under the lease through
//! the fenced store, which the nemesis can stall or kill between save and
//! bump.

use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::backend::Fence;
use gensync::keyed::{KeyedError, KeyedReloader};
use gensync::reload::{fenced, CheckMode, PublishError, Reloader};
use gensync::testing::{Faults, FaultyBackend};
use gensync::{Key, RedisBackend, Synchronizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;

use super::loader::{keyed, LoaderFaults, Tenant};
use super::settings::{
    global_key, set_key, writer_config, INITIAL, LOCK_TTL, TENANTS, WRITE_TIMEOUT,
};
use super::store::Db;
use crate::history::{Event, Recorder, Target, Write, WriteOutcome};

/// What a writer writes.
#[derive(Clone, Copy)]
pub(super) enum WriterOf {
    Global,
    Parent,
    Tenants,
}

/// What the nemesis arms for one writer's next save.
#[derive(Default)]
pub(super) struct WriterFaults {
    /// The next save stalls this long first, its process cut off from
    /// Redis meanwhile (renewals included), as a paused process is.
    stall: Mutex<Option<Duration>>,
    /// The next save lands, then the writer dies before its bump.
    die: AtomicBool,
    /// The current writer process's backend, to cut it off.
    backend: Mutex<Option<Faults>>,
    /// Told when the writer died mid-write.
    died: Notify,
}

impl WriterFaults {
    /// The next save stalls `stall` first, cut off from Redis.
    pub(super) fn stall_next(&self, stall: Duration) {
        *self.stall.lock().unwrap_or_else(|e| e.into_inner()) = Some(stall);
    }

    /// The next save lands, then the writer dies before its bump.
    pub(super) fn die_next(&self) {
        self.die.store(true, SeqCst);
    }

    /// Disarms the faults not used up.
    pub(super) fn disarm(&self) {
        self.stall.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.die.store(false, SeqCst);
    }

    /// The current writer process's backend faults, to cut it off.
    fn process(&self) -> Option<Faults> {
        self.backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The writer's saver: the armed fault, then the fenced save.
    async fn save(
        &self,
        writer: u16,
        db: &Db,
        target: Target,
        version: u64,
        fence: Fence,
    ) -> Result<(), String> {
        let process = self.process();
        let stall = self.stall.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let (Some(stall), Some(process)) = (stall, &process) {
            // Reconnected however the stall ends: a write abandoned at its
            // timeout drops this future mid-sleep.
            let _resumed = Resume(process.clone());
            process.fail_all();
            tokio::time::sleep(stall).await;
        }
        let saved = db.save(writer, target, version, fence);
        if self.die.swap(false, SeqCst) {
            // Dead between the save and the bump: nothing more of this
            // process reaches Redis, and it never answers its caller.
            if let Some(process) = &process {
                process.fail_all();
            }
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
        saved
    }
}

/// Ends a stalled writer's cut from Redis when dropped.
struct Resume(Faults);

impl Drop for Resume {
    fn drop(&mut self) {
        self.0.stop_failing();
    }
}

/// One writer process, started again each time it dies.
pub(super) struct WriterLoop {
    pub(super) id: u16,
    pub(super) of: WriterOf,
    pub(super) url: String,
    pub(super) replicated: bool,
    pub(super) db: Arc<Db>,
    pub(super) faults: Arc<WriterFaults>,
    pub(super) recorder: Recorder,
    pub(super) stop: Arc<AtomicBool>,
}

/// A writer process's handle on its reloader.
enum Writer {
    Plain(Reloader<u64>),
    Keyed(KeyedReloader<u16, Tenant>),
}

impl WriterLoop {
    /// A new writer process: its own backend (which the nemesis can cut
    /// off) and reloader.
    fn spawn_process(&self) -> Result<Writer, String> {
        let backend = FaultyBackend::new(
            RedisBackend::with_config(&self.url, writer_config(self.replicated))
                .map_err(|e| format!("a writer's backend: {e}"))?,
        );
        *self
            .faults
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(backend.faults());
        let loader = Arc::new(LoaderFaults::default());
        let (id, db, faults) = (self.id, Arc::clone(&self.db), Arc::clone(&self.faults));
        let plain = |key: Key, target: Target| {
            let read = Arc::clone(&db);
            Reloader::builder(Synchronizer::new(backend.clone(), key), move || {
                let db = Arc::clone(&read);
                async move { Ok::<_, Infallible>(db.version(target)) }
            })
            .saver(fenced(move |v: &u64, fence: Fence| {
                let (db, faults, v) = (Arc::clone(&db), Arc::clone(&faults), *v);
                async move { faults.save(id, &db, target, v, fence).await }
            }))
            .write_lock(LOCK_TTL, 20)
            .write_timeout(WRITE_TIMEOUT)
            .build(INITIAL)
            .map(Writer::Plain)
            .map_err(|e| format!("a writer: {e}"))
        };
        match self.of {
            WriterOf::Global => plain(global_key(), Target::Global),
            WriterOf::Parent => plain(set_key(), Target::Parent),
            WriterOf::Tenants => {
                let (db, faults) = (Arc::clone(&self.db), Arc::clone(&self.faults));
                keyed(&self.db, &loader, backend.clone(), CheckMode::Strict)
                    .saver(move |tenant: u16, settings: &Tenant, fence: Fence| {
                        let (db, faults, version) =
                            (Arc::clone(&db), Arc::clone(&faults), settings.0);
                        async move {
                            faults
                                .save(id, &db, Target::Tenant(tenant), version, fence)
                                .await
                        }
                    })
                    .write_lock(LOCK_TTL, 20)
                    .write_timeout(WRITE_TIMEOUT)
                    .build()
                    .map(Writer::Keyed)
                    .map_err(|e| format!("a keyed writer: {e}"))
            }
        }
    }

    pub(super) async fn run(self) {
        let mut rng = StdRng::seed_from_u64(u64::from(self.id) + 7_000);
        let mut writer = match self.spawn_process() {
            Ok(writer) => writer,
            Err(e) => {
                eprintln!("chaos: {e}");
                std::process::exit(2);
            }
        };
        while !self.stop.load(SeqCst) {
            let start = self.recorder.now();
            let tried = Arc::new(Mutex::new(None));
            let (target, write) = self.write(&writer, &mut rng, &tried);
            let outcome = tokio::select! {
                told = write => Some(told),
                () = self.faults.died.notified() => None,
            };
            let version = *tried.lock().unwrap_or_else(|e| e.into_inner());
            let outcome = outcome.unwrap_or(WriteOutcome::Died);
            let died = outcome == WriteOutcome::Died;
            self.recorder.record(Event::Write(Write {
                writer: self.id,
                target,
                start,
                end: self.recorder.now(),
                version,
                outcome,
            }));
            if died {
                match self.spawn_process() {
                    Ok(next) => writer = next,
                    Err(e) => eprintln!("chaos: writer {} could not restart: {e}", self.id),
                }
            }
            let ms = rng.random_range(20..200);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// One update: load, add one, save under the lease, bump; and what the
    /// writer was told.
    fn write<'a>(
        &'a self,
        writer: &'a Writer,
        rng: &mut StdRng,
        tried: &Arc<Mutex<Option<u64>>>,
    ) -> (
        Target,
        std::pin::Pin<Box<dyn std::future::Future<Output = WriteOutcome> + Send + 'a>>,
    ) {
        let tried = Arc::clone(tried);
        match writer {
            Writer::Plain(reloader) => {
                let target = match self.of {
                    WriterOf::Parent => Target::Parent,
                    _ => Target::Global,
                };
                let write = Box::pin(async move {
                    reloader
                        .update(move |v: &u64| {
                            *tried.lock().unwrap_or_else(|e| e.into_inner()) = Some(v + 1);
                            v + 1
                        })
                        .await
                        .map_or_else(|e| told(&e), |_| WriteOutcome::Ok)
                });
                (target, write)
            }
            Writer::Keyed(keyed) => {
                let tenant = rng.random_range(0..TENANTS);
                let write = Box::pin(async move {
                    keyed
                        .update(&tenant, move |s: &Tenant| {
                            *tried.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.0 + 1);
                            (s.0 + 1, s.1)
                        })
                        .await
                        .map_or_else(
                            |e| match e {
                                KeyedError::Publish(e) => told(&e),
                                other => WriteOutcome::Failed {
                                    saved: Some(false),
                                    error: other.to_string(),
                                },
                            },
                            |_| WriteOutcome::Ok,
                        )
                });
                (Target::Tenant(tenant), write)
            }
        }
    }
}

/// What a writer told `e` was told, as the history records it.
fn told(e: &PublishError) -> WriteOutcome {
    match e {
        PublishError::LeaseLost { .. } => WriteOutcome::LeaseLost { saved: e.saved() },
        e => WriteOutcome::Failed {
            saved: e.saved(),
            error: e.to_string(),
        },
    }
}
