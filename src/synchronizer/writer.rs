//! The writers' protocol, written once: take the lease (retrying while
//! another writer holds it), record the intent, produce and save the
//! settings while the lease is renewed, bump, release, and say what became
//! of a write whose lease lapsed. A [`Reloader`](crate::reload::Reloader)
//! and every key of a [`KeyedReloader`](crate::keyed::KeyedReloader)
//! write through it.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::lease::Lease;
use super::publish_error::{BoxError, PublishError};
use super::WriterLock;
use crate::error::Error;
use crate::fence::Fence;
use crate::generation::Generation;
use crate::key::Key;

/// The bounds of a write: the lease's length and tries, and how long a
/// write may hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WriteSettings {
    /// How long a lease lasts without renewal (also how long a dead
    /// writer's intent takes to lapse).
    pub(crate) lock_ttl: Duration,
    /// How many times a writer tries to take the lease.
    pub(crate) lock_tries: u32,
    /// How long a write may hold the lease at most.
    pub(crate) write_timeout: Duration,
}

impl Default for WriteSettings {
    fn default() -> Self {
        WriteSettings {
            lock_ttl: Duration::from_secs(5),
            lock_tries: 40,
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl WriteSettings {
    /// Refuses bounds no write could keep.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.lock_ttl.is_zero() {
            return Err(Error::Config(
                "write_lock ttl must be greater than zero".into(),
            ));
        }
        if self.write_timeout.is_zero() {
            return Err(Error::Config(
                "write_timeout must be greater than zero".into(),
            ));
        }
        if self.lock_ttl < Duration::from_millis(1) || self.lock_tries == 0 {
            return Err(Error::Config(
                "write_lock needs a ttl of at least 1 ms and at least one try".into(),
            ));
        }
        Ok(())
    }
}

/// One key's writer: its writers' lock and the bounds of a write.
pub(crate) struct Writer {
    lock: Arc<dyn WriterLock>,
    key: Key,
    settings: WriteSettings,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("key", &self.key)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The pause between tries for the writers' lock: short at first, then
/// capped, so 40 tries outlast a dead holder's 5 s lock.
fn lock_retry_delay(attempt: u32) -> Duration {
    Duration::from_millis((10u64 << attempt.min(5)).min(200))
}

impl Writer {
    /// The writer of `key`, taking turns under `lock`.
    pub(crate) fn new(lock: Arc<dyn WriterLock>, key: Key, settings: WriteSettings) -> Self {
        Writer {
            lock,
            key,
            settings,
        }
    }

    /// Writes on a task of its own, so a caller that stops waiting (a
    /// request dropped mid-write) does not cut it off halfway: between a
    /// save and its bump, or before the lease is released. `produce` makes
    /// the settings once the lease is held and the intent recorded; `save`
    /// saves them with the lease's fencing token. Returns the new shared
    /// generation.
    pub(crate) async fn spawn<S, P, PF, V, VF>(
        self: &Arc<Self>,
        produce: P,
        save: V,
    ) -> Result<Generation, PublishError>
    where
        S: Send + 'static,
        P: FnOnce() -> PF + Send + 'static,
        PF: Future<Output = Result<S, PublishError>> + Send + 'static,
        V: FnOnce(S, Fence) -> VF + Send + 'static,
        VF: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let this = Arc::clone(self);
        match tokio::spawn(async move { this.write(produce, save).await }).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(PublishError::Save(
                "the write panicked (in the saver); its lease lapses on its own".into(),
            )),
            Err(_) => Err(PublishError::Save("the write's task was cancelled".into())),
        }
    }

    async fn write<S, P, PF, V, VF>(&self, produce: P, save: V) -> Result<Generation, PublishError>
    where
        P: FnOnce() -> PF,
        PF: Future<Output = Result<S, PublishError>>,
        V: FnOnce(S, Fence) -> VF,
        VF: Future<Output = Result<(), BoxError>>,
    {
        let lock = &*self.lock;
        let WriteSettings {
            lock_ttl,
            write_timeout,
            ..
        } = self.settings;
        let lease = self.take_lease().await?;
        let work = lease.keep_while(lock, lock_ttl, async {
            lock.mark_intent(lease.token, lock_ttl)
                .await
                .map_err(PublishError::Start)?;
            lease.intended.store(true, Ordering::SeqCst);
            let settings = produce().await?;
            if lease.server_changed(lock) {
                // A restarted or failed-over server may not hold the
                // lease: make sure it does (which records the intent
                // there again) before saving.
                lease.renew(lock, lock_ttl).await;
            }
            if !lease.holds() || lease.server_changed(lock) {
                // Saving now could overwrite a newer writer's change.
                return Err(self.lease_lost(false, false, None));
            }
            save(settings, lease.fence)
                .await
                .map_err(PublishError::Save)
        });
        let saved = match tokio::time::timeout(write_timeout, work).await {
            Ok(saved) => saved,
            // Abandoned, so a hung saver cannot hold the lease for ever.
            Err(_) => Err(PublishError::Save(
                format!(
                    "the write did not finish within {write_timeout:?} and was abandoned; \
                     a save still running elsewhere may land later, which a fenced store \
                     refuses once a newer writer saved"
                )
                .into(),
            )),
        };
        let saved_ok = saved.is_ok();
        // Announced even when the lease lapsed meanwhile: the source holds
        // this save now, and every process should load what it holds.
        let result = match saved {
            Ok(()) => lock
                .mark_updated_by(lease.token)
                .await
                .map_err(|source| PublishError::Bump { source, lock_ttl }),
            Err(e) => Err(e),
        };
        let released = lock.unlock(lease.token).await;
        if let Err(e) = &released {
            // Harmless: the lease lapses on its own.
            tracing::warn!(key = %self.key, "gensync could not release the writers' lease: {e}");
        }
        // Held to the end: nothing said otherwise, and if the server changed
        // meanwhile, the release found the lease there.
        let held = lease.holds()
            && !matches!(released, Ok(false))
            && (!lease.server_changed(lock) || matches!(released, Ok(true)));
        if !held {
            return Err(match result {
                Err(e @ PublishError::LeaseLost { .. }) => e,
                Err(PublishError::Save(e)) => self.lease_lost(false, false, Some(e)),
                other => self.lease_lost(saved_ok, other.is_ok(), None),
            });
        }
        result
    }

    async fn take_lease(&self) -> Result<Lease, PublishError> {
        let lock = &*self.lock;
        let settings = &self.settings;
        let token = Generation::fresh();
        for attempt in 0..settings.lock_tries {
            let asked = Instant::now();
            let epoch = lock.epoch();
            let taken = lock
                .try_lock(token, settings.lock_ttl)
                .await
                .map_err(PublishError::Start)?;
            if let Some(fence) = taken {
                return Ok(Lease::new(token, fence, asked + settings.lock_ttl, epoch));
            }
            if attempt + 1 < settings.lock_tries {
                tokio::time::sleep(lock_retry_delay(attempt)).await;
            }
        }
        Err(PublishError::Locked {
            key: self.key.to_string(),
            lock: self.key.companion("lock").to_string(),
            tries: settings.lock_tries,
            lock_ttl: settings.lock_ttl,
            write_timeout: settings.write_timeout,
        })
    }

    /// The error of a write whose lease lapsed.
    fn lease_lost(&self, saved: bool, announced: bool, source: Option<BoxError>) -> PublishError {
        PublishError::LeaseLost {
            key: self.key.to_string(),
            lease: self.settings.lock_ttl,
            saved,
            announced,
            source,
        }
    }
}
