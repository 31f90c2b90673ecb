//! The readers: one [`Reloader`] each over its own synchronizer, loading
//! the source's version, with loader failures and delays on command.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gensync::reload::{CheckMode, Reloader, ReloaderBuilder};
use gensync::testing::{Faults, FaultyBackend};
use gensync::{GenerationSynchronizer, Synchronizer};
use tokio::time::Instant;

use super::world::World;
use super::{key, BACKOFF_INITIAL, BACKOFF_MAX, KEY_TTL, LOAD_TIMEOUT, MAX_WAIT};

pub const READERS: usize = 3;

/// Loads at one instant past which a reader is reloading in a loop that
/// never lets the (paused) clock move: a hang, not a case.
pub const SPIN: u32 = 1_000;

/// What a reader's loader does next, set by the operations.
#[derive(Default)]
pub struct LoaderPlan {
    pub fail_next: AtomicU32,
    pub delay_next_ms: AtomicU64,
    pub bump_during: AtomicBool,
    /// The instant of the last load, and how many loads ran at it.
    runs: Mutex<Option<(Instant, u32)>>,
    /// The loader ran [`SPIN`] times at one instant. Past that it fails
    /// until the clock moves, so the reader backs off and the case goes
    /// on.
    pub spun: AtomicBool,
}

impl LoaderPlan {
    /// Counts a load; whether the reader is spinning.
    fn spinning(&self) -> bool {
        let now = Instant::now();
        let mut runs = self.runs.lock().unwrap();
        let n = match *runs {
            Some((at, n)) if at == now => n + 1,
            _ => 1,
        };
        *runs = Some((now, n));
        if n >= SPIN {
            self.spun.store(true, SeqCst);
        }
        n >= SPIN
    }

    pub fn disarm(&self) {
        self.fail_next.store(0, SeqCst);
        self.delay_next_ms.store(0, SeqCst);
        self.bump_during.store(false, SeqCst);
    }
}

pub struct Reader {
    pub reloader: Reloader<u64>,
    pub mode: CheckMode,
    pub faults: Option<Faults>,
    pub plan: Arc<LoaderPlan>,
    /// The newest version a finished check of this reader returned: shared
    /// with the checks of a request stream, which run concurrently.
    pub last_seen: Arc<AtomicU64>,
}

impl Reader {
    /// Reader `index`, checking in `mode`: reader 0 talks to the memory
    /// backend directly, the others through the fleet's faults and then
    /// their own.
    pub fn new(world: &Arc<World>, index: usize, mode: CheckMode) -> Self {
        let plan = Arc::new(LoaderPlan::default());
        let (w, p) = (Arc::clone(world), Arc::clone(&plan));
        let loader = move || {
            let (world, plan) = (Arc::clone(&w), Arc::clone(&p));
            async move {
                if plan.spinning() {
                    return Err(std::io::Error::other("reloading in a loop"));
                }
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
            (bounded(Reloader::builder(sync, loader), mode), None)
        } else {
            let own = FaultyBackend::new(world.fleet.clone());
            let faults = own.faults();
            let sync = Synchronizer::new(own, key()).with_ttl(KEY_TTL).unwrap();
            (bounded(Reloader::builder(sync, loader), mode), Some(faults))
        };
        Reader {
            reloader,
            mode,
            faults,
            plan,
            last_seen: Arc::default(),
        }
    }
}

/// Builds a reader's reloader with the model's bounds.
fn bounded<G: GenerationSynchronizer + 'static>(
    builder: ReloaderBuilder<u64, G>,
    mode: CheckMode,
) -> Reloader<u64> {
    builder
        .mode(mode)
        .max_wait(MAX_WAIT)
        .load_timeout(LOAD_TIMEOUT)
        .backoff(BACKOFF_INITIAL, BACKOFF_MAX)
        .build(0)
        .unwrap()
}
