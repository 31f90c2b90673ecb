//! The fleet under test: reloaders in every mode, each with its own Redis
//! client as a process of its own would have, readers checking through
//! them, writers publishing numbered versions through a fenced store, and
//! the hooks the nemesis uses to break the fleet's own parts.

mod loader;
mod reads;
mod settings;
mod store;
mod writers;

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::Duration;

use gensync::keyed::KeyedReloader;
use gensync::reload::{CheckMode, Reloader};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinHandle;

use self::loader::{keyed, plain, LoaderFaults, Tenant};
use self::reads::{blocking_reader, pace, record_keyed, record_plain};
use self::settings::{backend, LOCK_TTL, TENANTS};
use self::store::Db;
use self::writers::{WriterFaults, WriterLoop, WriterOf};
use crate::history::{Micros, Mode, Recorder};
use crate::nemesis::FleetFaults;

pub use self::loader::INJECTED;
pub use self::settings::{check_bound, keyed_check_bound, keys, HEARTBEAT, INITIAL, INTERVAL};

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
                Mode::KeyedStrict | Mode::KeyedPush => Instance::Keyed(
                    keyed(&db, &faults, backend(url)?, check_mode(mode))
                        .build()
                        .map_err(|e| format!("a keyed reloader: {e}"))?,
                ),
                _ => Instance::Plain(
                    plain(&db, &faults, backend(url)?, check_mode(mode))
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

impl Fleet {
    /// Disarms every fault the nemesis armed in the fleet's own parts and
    /// did not use up: the run ends on working loaders and writers.
    pub fn heal(&self) {
        for loader in &self.loaders {
            loader.disarm();
        }
        for writer in &self.writers {
            writer.disarm();
        }
    }
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
            writer.stall_next(stall + LOCK_TTL);
        }
    }

    fn writer_die(&self, w: usize) {
        if let Some(writer) = self.writers.get(w % self.writers.len().max(1)) {
            writer.die_next();
        }
    }
}
