//! The fleet under test: reloaders in every mode, each with its own Redis
//! client as a process of its own would have, readers checking through
//! them, writers publishing numbered versions through a fenced store, and
//! the hooks the nemesis uses to break the fleet's own parts.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::backend::{Backend, Fence};
use gensync::keyed::{KeyedError, KeyedReloader};
use gensync::reload::{fenced, Answer, BlockingReloader, CheckMode, Freshness, Reloader};
use gensync::testing::{Faults, FaultyBackend, FencedStore};
use gensync::{Key, RedisBackend, RedisConfig, Synchronizer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::history::{Event, Mode, Read, ReadOutcome, Recorder, Said, Save, Target, Write};
use crate::history::{Micros, WriteOutcome};
use crate::nemesis::FleetFaults;

/// The version every target starts at.
pub const INITIAL: u64 = 0;
/// Tenants of the keyed set.
pub const TENANTS: u16 = 8;
/// Tenants a keyed instance keeps loaded: fewer, so they are evicted and
/// loaded again (first loads) all run long.
const CAPACITY: u64 = 5;
/// Push mode's heartbeat.
pub const HEARTBEAT: Duration = Duration::from_millis(100);
/// Interval mode's interval.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// How long a check waits for a reload.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// How long a load may take; a hung loader outlasts it.
pub const LOAD_TIMEOUT: Duration = Duration::from_secs(1);
/// The writers' lease: short, so a stalled or dead writer's lapses.
const LOCK_TTL: Duration = Duration::from_secs(1);
/// A writer abandons a write it cannot finish after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(3);

/// The fleet's Redis configuration: timeouts short enough that faults are
/// outages, long enough that a busy machine is not one.
pub fn config() -> RedisConfig {
    RedisConfig::default()
        .connect_timeout(Duration::from_millis(300))
        .response_timeout(Duration::from_millis(300))
        .reconnect_delay(Duration::from_millis(100))
        .heartbeat(HEARTBEAT)
}

/// A writer's configuration: the fleet's, and where there are replicas,
/// a bump answered only once one has it (else a failover may lose a bump
/// its writer was told was done, as DEPLOYMENT.md says).
fn writer_config(replicated: bool) -> RedisConfig {
    if replicated {
        config().wait_for_replicas(1, Duration::from_millis(500))
    } else {
        config()
    }
}

/// The most a check may take, by the documented bounds: a read of the
/// generation and the reload wait; or, for a keyed tenant's first load, a
/// read, the key's creation when it is missing, and the load's timeout.
pub fn check_bound() -> Duration {
    config().call_bound() * 2 + MAX_WAIT.max(LOAD_TIMEOUT)
}

/// The unkeyed reloaders' key.
pub fn global_key() -> Key {
    Key::new(["chaos"]).expect("a valid key")
}

/// The keyed set's key: its parent.
pub fn set_key() -> Key {
    Key::new(["chaos-keyed"]).expect("a valid key")
}

/// The fleet's keys as stored (the keyed members share their parent's
/// Cluster slot): the nodes the nemesis's server faults hit.
pub fn keys() -> Vec<String> {
    vec![
        global_key().as_str().to_owned(),
        set_key().as_str().to_owned(),
    ]
}

/// The fleet's source of truth: one fenced version per target, and the
/// history of every save it took or refused, recorded under the same lock
/// as the save itself, so the history has the store's own order.
pub struct Db {
    stores: Mutex<BTreeMap<Target, FencedStore<u64>>>,
    recorder: Recorder,
}

impl Db {
    fn new(recorder: Recorder) -> Db {
        let mut stores = BTreeMap::new();
        stores.insert(Target::Global, FencedStore::new(INITIAL));
        stores.insert(Target::Parent, FencedStore::new(INITIAL));
        for t in 0..TENANTS {
            stores.insert(Target::Tenant(t), FencedStore::new(INITIAL));
        }
        Db {
            stores: Mutex::new(stores),
            recorder,
        }
    }

    fn stores(&self) -> std::sync::MutexGuard<'_, BTreeMap<Target, FencedStore<u64>>> {
        self.stores.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn version(&self, target: Target) -> u64 {
        self.stores()[&target].value()
    }

    /// Saves `version` for `target` unless a newer fence was taken.
    fn save(&self, writer: u16, target: Target, version: u64, fence: Fence) -> Result<(), String> {
        let stores = self.stores();
        let saved = stores[&target].save(version, fence);
        self.recorder.record(Event::Save(Save {
            writer,
            target,
            at: self.recorder.now(),
            version,
            accepted: saved.is_ok(),
        }));
        saved.map_err(|refused| refused.to_string())
    }

    /// What the store holds for each target now.
    pub fn finals(&self) -> Vec<Event> {
        self.stores()
            .iter()
            .map(|(target, store)| Event::Final {
                target: *target,
                version: store.value(),
            })
            .collect()
    }
}

/// What one instance's loader is told to do next.
#[derive(Default)]
struct LoaderFaults {
    fail: AtomicU32,
    hang: AtomicU32,
    panic: AtomicU32,
}

/// Takes one of `counter`'s faults, if any is left.
fn take(counter: &AtomicU32) -> bool {
    counter
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The text of an injected loader failure: a keyed read that fails with it
/// failed because of the loader, not the synchronizer.
pub const INJECTED: &str = "injected loader fault";

impl LoaderFaults {
    /// Runs the next fault, if one is armed.
    async fn strike(&self) -> Result<(), std::io::Error> {
        tokio::task::yield_now().await;
        if take(&self.panic) {
            std::panic::panic_any(format!("{INJECTED}: a panic"));
        }
        if take(&self.hang) {
            tokio::time::sleep(LOAD_TIMEOUT * 3).await;
        }
        if take(&self.fail) {
            return Err(std::io::Error::other(format!(
                "{INJECTED}: the database is down"
            )));
        }
        Ok(())
    }
}

/// What a keyed tenant is served: its own version and the parent's.
type Tenant = (u64, u64);

/// One reloader of the fleet, in one of the modes.
enum Instance {
    Plain(Reloader<u64>),
    Keyed(KeyedReloader<u16, Tenant>),
    /// Read on a thread of its own: it runs its own runtime.
    Blocking,
}

/// The fleet's instances: their mode and how to reach them.
pub struct Fleet {
    pub db: Arc<Db>,
    instances: Vec<(Mode, Instance)>,
    loaders: Vec<Arc<LoaderFaults>>,
    writers: Vec<Arc<WriterFaults>>,
    url: String,
    /// Whether the writers wait for a replica.
    replicated: bool,
    recorder: Recorder,
}

/// The modes of the fleet's instances, in order: every mode twice, and
/// one blocking reloader.
pub fn modes() -> Vec<Mode> {
    let interval = INTERVAL.as_micros() as Micros;
    vec![
        Mode::Strict,
        Mode::Strict,
        Mode::Push,
        Mode::Push,
        Mode::Interval(interval),
        Mode::Interval(interval),
        Mode::KeyedStrict,
        Mode::KeyedStrict,
        Mode::KeyedPush,
        Mode::KeyedPush,
        Mode::Blocking,
    ]
}

fn check_mode(mode: Mode) -> CheckMode {
    match mode {
        Mode::Push | Mode::KeyedPush => CheckMode::Push,
        Mode::Interval(_) => CheckMode::Interval(INTERVAL),
        Mode::Strict | Mode::KeyedStrict | Mode::Blocking => CheckMode::Strict,
    }
}

fn backend(url: &str) -> Result<RedisBackend, String> {
    RedisBackend::with_config(url, config()).map_err(|e| format!("the fleet's backend: {e}"))
}

fn plain_loader(
    db: &Arc<Db>,
    faults: &Arc<LoaderFaults>,
) -> impl Fn() -> futures_like::Load + Send + Sync + Clone + 'static {
    let (db, faults) = (Arc::clone(db), Arc::clone(faults));
    move || {
        let (db, faults) = (Arc::clone(&db), Arc::clone(&faults));
        Box::pin(async move {
            faults.strike().await?;
            Ok(db.version(Target::Global))
        })
    }
}

/// The boxed load future the plain loaders return (one type for the
/// async and the blocking reloader).
mod futures_like {
    use std::future::Future;
    use std::pin::Pin;

    pub type Load = Pin<Box<dyn Future<Output = Result<u64, std::io::Error>> + Send>>;
}

impl Fleet {
    /// Builds the fleet's async instances over `url` (the blocking one is
    /// built by its reader, on its own thread).
    pub fn new(url: &str, replicated: bool, recorder: Recorder) -> Result<Fleet, String> {
        let db = Arc::new(Db::new(recorder.clone()));
        let mut instances = Vec::new();
        let mut loaders = Vec::new();
        for mode in modes() {
            let faults = Arc::new(LoaderFaults::default());
            let instance = match mode {
                Mode::Blocking => Instance::Blocking,
                Mode::KeyedStrict | Mode::KeyedPush => {
                    Instance::Keyed(keyed(&db, &faults, backend(url)?, check_mode(mode), None)?)
                }
                _ => Instance::Plain(
                    Reloader::builder(
                        Synchronizer::new(backend(url)?, global_key()),
                        plain_loader(&db, &faults),
                    )
                    .mode(check_mode(mode))
                    .max_wait(MAX_WAIT)
                    .load_timeout(LOAD_TIMEOUT)
                    .backoff(Duration::from_millis(50), Duration::from_millis(500))
                    .build(INITIAL)
                    .map_err(|e| format!("a {} reloader: {e}", mode.name()))?,
                ),
            };
            instances.push((mode, instance));
            loaders.push(faults);
        }
        Ok(Fleet {
            db,
            instances,
            loaders,
            writers: Vec::new(),
            url: url.to_owned(),
            replicated,
            recorder,
        })
    }

    /// Starts `per_instance` readers on every instance, until `stop`.
    pub fn start_readers(
        &self,
        per_instance: usize,
        stop: &Arc<AtomicBool>,
    ) -> Vec<JoinHandle<()>> {
        let mut readers = Vec::new();
        for (i, (mode, instance)) in self.instances.iter().enumerate() {
            for r in 0..per_instance {
                let (mode, i, stop, recorder) =
                    (*mode, i as u16, Arc::clone(stop), self.recorder.clone());
                let seed = u64::from(i) * 1000 + r as u64;
                match instance {
                    Instance::Plain(reloader) => {
                        let reloader = reloader.clone();
                        readers.push(tokio::spawn(async move {
                            let mut rng = StdRng::seed_from_u64(seed);
                            while !stop.load(SeqCst) {
                                let start = recorder.now();
                                let answer = reloader.answer().await;
                                record_plain(&recorder, i, mode, start, &answer);
                                pace(&mut rng).await;
                            }
                        }));
                    }
                    Instance::Keyed(keyed) => {
                        let keyed = keyed.clone();
                        readers.push(tokio::spawn(async move {
                            let mut rng = StdRng::seed_from_u64(seed);
                            while !stop.load(SeqCst) {
                                let tenant = rng.random_range(0..TENANTS);
                                let start = recorder.now();
                                let answer = keyed.answer(&tenant).await;
                                record_keyed(&recorder, i, mode, tenant, start, answer);
                                pace(&mut rng).await;
                            }
                        }));
                    }
                    Instance::Blocking => {
                        let (db, faults, url) = (
                            Arc::clone(&self.db),
                            Arc::clone(&self.loaders[i as usize]),
                            self.url.clone(),
                        );
                        readers.push(tokio::task::spawn_blocking(move || {
                            blocking_reader(&url, &db, &faults, i, &recorder, &stop, seed)
                        }));
                    }
                }
            }
        }
        readers
    }

    /// Starts the writers: two of the global version, one of the parent,
    /// one of the tenants, each writing until `stop`, then one last write
    /// on a healed Redis.
    pub fn start_writers(&mut self, stop: &Arc<AtomicBool>) -> Vec<JoinHandle<()>> {
        let targets = [
            WriterOf::Global,
            WriterOf::Global,
            WriterOf::Parent,
            WriterOf::Tenants,
        ];
        let mut handles = Vec::new();
        for (w, of) in targets.into_iter().enumerate() {
            let faults = Arc::new(WriterFaults::default());
            self.writers.push(Arc::clone(&faults));
            let writer = WriterLoop {
                id: w as u16,
                of,
                url: self.url.clone(),
                replicated: self.replicated,
                db: Arc::clone(&self.db),
                faults,
                recorder: self.recorder.clone(),
                stop: Arc::clone(stop),
            };
            handles.push(tokio::spawn(writer.run()));
        }
        handles
    }
}

/// A reader's pause between checks: a few milliseconds, so a run of an
/// hour records a few million reads.
async fn pace(rng: &mut StdRng) {
    let ms = rng.random_range(3..12);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn said(freshness: Freshness) -> Said {
    match freshness {
        Freshness::Read => Said::Read,
        Freshness::Vouched => Said::Vouched,
        _ => Said::Stale,
    }
}

fn record_plain(
    recorder: &Recorder,
    instance: u16,
    mode: Mode,
    start: Micros,
    answer: &Answer<u64>,
) {
    recorder.record(Event::Read(Read {
        instance,
        mode,
        target: Target::Global,
        start,
        end: recorder.now(),
        outcome: ReadOutcome::Served {
            version: *answer.snapshot,
            parent: None,
            said: said(answer.freshness),
        },
    }));
}

fn record_keyed(
    recorder: &Recorder,
    instance: u16,
    mode: Mode,
    tenant: u16,
    start: Micros,
    answer: Result<Answer<Tenant>, KeyedError>,
) {
    let end = recorder.now();
    let outcome = match answer {
        Ok(answer) => ReadOutcome::Served {
            version: answer.snapshot.0,
            parent: Some(answer.snapshot.1),
            said: said(answer.freshness),
        },
        Err(error) => ReadOutcome::Failed {
            // A tenant whose first load failed: the loader's doing (here,
            // only the nemesis makes it fail, hang or panic).
            loader: matches!(error, KeyedError::Unavailable { .. }),
            error: error.to_string(),
        },
    };
    recorder.record(Event::Read(Read {
        instance,
        mode,
        target: Target::Tenant(tenant),
        start,
        end,
        outcome,
    }));
}

/// A keyed reloader over the tenants, loading `(tenant, parent)` from the
/// store; with `writer`, saving a tenant's version through the fence.
fn keyed(
    db: &Arc<Db>,
    faults: &Arc<LoaderFaults>,
    backend: impl Backend + 'static,
    mode: CheckMode,
    writer: Option<(u16, Arc<WriterFaults>)>,
) -> Result<KeyedReloader<u16, Tenant>, String> {
    let (read, faults) = (Arc::clone(db), Arc::clone(faults));
    let mut builder = KeyedReloader::builder(
        backend,
        set_key(),
        |tenant: &u16| format!("tenant-{tenant}"),
        move |tenant: u16| {
            let (db, faults) = (Arc::clone(&read), Arc::clone(&faults));
            async move {
                faults.strike().await?;
                // Both read under one lock: a parent save lands wholly
                // before or after.
                Ok::<_, std::io::Error>((
                    db.version(Target::Tenant(tenant)),
                    db.version(Target::Parent),
                ))
            }
        },
    )
    .capacity(CAPACITY)
    .mode(mode)
    .max_wait(MAX_WAIT)
    .load_timeout(LOAD_TIMEOUT)
    .backoff(Duration::from_millis(50), Duration::from_millis(500));
    if let Some((id, writer)) = writer {
        let db = Arc::clone(db);
        builder = builder
            .saver(move |tenant: u16, settings: &Tenant, fence: Fence| {
                let (db, writer, version) = (Arc::clone(&db), Arc::clone(&writer), settings.0);
                async move {
                    writer
                        .save(id, &db, Target::Tenant(tenant), version, fence)
                        .await
                }
            })
            .write_lock(LOCK_TTL, 20)
            .write_timeout(WRITE_TIMEOUT);
    }
    builder
        .build()
        .map_err(|e| format!("a keyed reloader: {e}"))
}

fn blocking_reader(
    url: &str,
    db: &Arc<Db>,
    faults: &Arc<LoaderFaults>,
    instance: u16,
    recorder: &Recorder,
    stop: &AtomicBool,
    seed: u64,
) {
    let built = backend(url).and_then(|backend| {
        BlockingReloader::new(
            Reloader::builder(
                Synchronizer::new(backend, global_key()),
                plain_loader(db, faults),
            )
            .max_wait(MAX_WAIT)
            .load_timeout(LOAD_TIMEOUT)
            .backoff(Duration::from_millis(50), Duration::from_millis(500)),
            INITIAL,
        )
        .map_err(|e| format!("the blocking reloader: {e}"))
    });
    let reloader = match built {
        Ok(reloader) => reloader,
        Err(e) => {
            eprintln!("chaos: {e}");
            std::process::exit(2);
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(SeqCst) {
        let start = recorder.now();
        let answer = reloader.answer();
        record_plain(recorder, instance, Mode::Blocking, start, &answer);
        std::thread::sleep(Duration::from_millis(rng.random_range(3..12)));
    }
}

/// What a writer writes.
#[derive(Clone, Copy)]
enum WriterOf {
    Global,
    Parent,
    Tenants,
}

/// What the nemesis arms for one writer's next save.
#[derive(Default)]
struct WriterFaults {
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
    fn cut(&self, on: bool) {
        if let Some(faults) = &*self.backend.lock().unwrap_or_else(|e| e.into_inner()) {
            if on {
                faults.fail_all();
            } else {
                faults.stop_failing();
            }
        }
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
        let stall = self.stall.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stall) = stall {
            self.cut(true);
            tokio::time::sleep(stall).await;
            self.cut(false);
        }
        let saved = db.save(writer, target, version, fence);
        if self.die.swap(false, SeqCst) {
            // Dead between the save and the bump: nothing more of this
            // process reaches Redis, and it never answers its caller.
            self.cut(true);
            self.died.notify_one();
            std::future::pending::<()>().await;
        }
        saved
    }
}

/// One writer process, started again each time it dies.
struct WriterLoop {
    id: u16,
    of: WriterOf,
    url: String,
    replicated: bool,
    db: Arc<Db>,
    faults: Arc<WriterFaults>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
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
            WriterOf::Tenants => keyed(
                &self.db,
                &loader,
                backend.clone(),
                CheckMode::Strict,
                Some((self.id, Arc::clone(&self.faults))),
            )
            .map(Writer::Keyed),
        }
    }

    async fn run(self) {
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
            let outcome = match outcome {
                Some(Ok(())) => WriteOutcome::Ok,
                Some(Err((saved, _, true))) => WriteOutcome::LeaseLost { saved },
                Some(Err((saved, error, false))) => WriteOutcome::Failed { saved, error },
                None => WriteOutcome::Died,
            };
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

    /// One update: load, add one, save under the lease, bump. Says what it
    /// was told: `Ok`, or what `PublishError::saved` said, the message and
    /// whether the lease was lost.
    fn write<'a>(
        &'a self,
        writer: &'a Writer,
        rng: &mut StdRng,
        tried: &Arc<Mutex<Option<u64>>>,
    ) -> (
        Target,
        std::pin::Pin<Box<dyn std::future::Future<Output = Told> + Send + 'a>>,
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
                        .map(|_| ())
                        .map_err(|e| told(&e))
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
                        .map(|_| ())
                        .map_err(|e| match e {
                            KeyedError::Publish(e) => told(&e),
                            other => (Some(false), other.to_string(), false),
                        })
                });
                (Target::Tenant(tenant), write)
            }
        }
    }
}

/// What a writer was told: `Ok`, or (saved, message, lease lost).
type Told = Result<(), (Option<bool>, String, bool)>;

fn told(e: &gensync::reload::PublishError) -> (Option<bool>, String, bool) {
    let lease_lost = matches!(e, gensync::reload::PublishError::LeaseLost { .. });
    (e.saved(), e.to_string(), lease_lost)
}

impl FleetFaults for Fleet {
    fn instances(&self) -> usize {
        self.loaders.len()
    }

    fn loader_fail(&self, i: usize, loads: u32) {
        self.loaders[i % self.loaders.len()]
            .fail
            .fetch_add(loads, SeqCst);
    }

    fn loader_hang(&self, i: usize, loads: u32) {
        self.loaders[i % self.loaders.len()]
            .hang
            .fetch_add(loads, SeqCst);
    }

    fn loader_panic(&self, i: usize, loads: u32) {
        self.loaders[i % self.loaders.len()]
            .panic
            .fetch_add(loads, SeqCst);
    }

    fn writers(&self) -> usize {
        self.writers.len()
    }

    fn writer_stall(&self, w: usize, stall: Duration) {
        if let Some(writer) = self.writers.get(w % self.writers.len().max(1)) {
            // Past the lease, whatever the schedule drew.
            *writer.stall.lock().unwrap_or_else(|e| e.into_inner()) = Some(stall + LOCK_TTL);
        }
    }

    fn writer_die(&self, w: usize) {
        if let Some(writer) = self.writers.get(w % self.writers.len().max(1)) {
            writer.die.store(true, SeqCst);
        }
    }
}
