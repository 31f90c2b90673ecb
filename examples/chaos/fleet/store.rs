//! The fleet's source of truth: one fenced version per target, every save
//! it took or refused recorded in its own order.

use std::collections::BTreeMap;
use std::sync::Mutex;

use gensync::backend::Fence;
use gensync::testing::FencedStore;

use super::settings::{INITIAL, TENANTS};
use crate::history::{Event, Recorder, Save, Target};

/// The fleet's source of truth: one fenced version per target, and the
/// history of every save it took or refused, recorded under the same lock
/// as the save itself, so the history has the store's own order.
pub struct Db {
    stores: Mutex<BTreeMap<Target, FencedStore<u64>>>,
    recorder: Recorder,
}

impl Db {
    pub(super) fn new(recorder: Recorder) -> Db {
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

    /// A tenant's version and the parent's, read together: a save lands
    /// wholly before or after.
    pub(super) fn tenant(&self, tenant: u16) -> (u64, u64) {
        let stores = self.stores();
        (
            stores[&Target::Tenant(tenant)].value(),
            stores[&Target::Parent].value(),
        )
    }

    /// Saves `version` for `target` unless a newer fence was taken.
    pub(super) fn save(
        &self,
        writer: u16,
        target: Target,
        version: u64,
        fence: Fence,
    ) -> Result<(), String> {
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
