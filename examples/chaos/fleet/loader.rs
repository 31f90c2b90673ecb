//! The fleet's loaders, which the nemesis can make fail, hang or panic,
//! and the reloaders' construction over them.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use gensync::backend::Backend;
use gensync::keyed::{KeyedReloader, KeyedReloaderBuilder};
use gensync::reload::{CheckMode, Reloader, ReloaderBuilder};
use gensync::{RedisBackend, Synchronizer};

use super::settings::{global_key, set_key, BACKOFF, CAPACITY, LOAD_TIMEOUT, MAX_WAIT};
use super::store::Db;
use crate::history::Target;

/// What one instance's loader is told to do next.
#[derive(Default)]
pub(super) struct LoaderFaults {
    pub(super) fail: AtomicU32,
    pub(super) hang: AtomicU32,
    pub(super) panic: AtomicU32,
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
    /// Disarms every fault not used up.
    pub(super) fn disarm(&self) {
        for counter in [&self.fail, &self.hang, &self.panic] {
            counter.store(0, SeqCst);
        }
    }

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

/// A reloader's builder of the global settings, loading them from the
/// store, in `mode` (the async instances' and the blocking one's).
pub(super) fn plain(
    db: &Arc<Db>,
    faults: &Arc<LoaderFaults>,
    backend: RedisBackend,
    mode: CheckMode,
) -> ReloaderBuilder<u64, Synchronizer<RedisBackend>> {
    let (db, faults) = (Arc::clone(db), Arc::clone(faults));
    Reloader::builder(Synchronizer::new(backend, global_key()), move || {
        let (db, faults) = (Arc::clone(&db), Arc::clone(&faults));
        async move {
            faults.strike().await?;
            Ok::<_, std::io::Error>(db.version(Target::Global))
        }
    })
    .mode(mode)
    .max_wait(MAX_WAIT)
    .load_timeout(LOAD_TIMEOUT)
    .backoff(BACKOFF.0, BACKOFF.1)
}

/// What a keyed tenant is served: its own version and the parent's.
pub(super) type Tenant = (u64, u64);

/// A keyed reloader's builder over the tenants, loading `(tenant,
/// parent)` from the store.
pub(super) fn keyed(
    db: &Arc<Db>,
    faults: &Arc<LoaderFaults>,
    backend: impl Backend + 'static,
    mode: CheckMode,
) -> KeyedReloaderBuilder<u16, Tenant> {
    let (read, faults) = (Arc::clone(db), Arc::clone(faults));
    KeyedReloader::builder(
        backend,
        set_key(),
        |tenant: &u16| format!("tenant-{tenant}"),
        move |tenant: u16| {
            let (db, faults) = (Arc::clone(&read), Arc::clone(&faults));
            async move {
                faults.strike().await?;
                Ok::<_, std::io::Error>(db.tenant(tenant))
            }
        },
    )
    .capacity(CAPACITY)
    .mode(mode)
    .max_wait(MAX_WAIT)
    .load_timeout(LOAD_TIMEOUT)
    .backoff(BACKOFF.0, BACKOFF.1)
}
