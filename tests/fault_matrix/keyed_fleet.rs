//! The keyed rows' fleet: three "processes", each a `KeyedReloader` over
//! `TENANTS` tenants with room for `CAPACITY` of them (so keys are evicted
//! under load), behind a `KeyedReloadLayer` that takes the tenant from a
//! header; one in-memory database of every tenant's version (fenced per
//! tenant) and a site-wide version; and the writers that update random
//! tenants through the instances and sometimes bump the parent.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use gensync::backend::Fence;
use gensync::keyed::{KeyRejection, KeyedReload, KeyedReloadLayer, KeyedReloader};
use gensync::reload::{ReloadMetrics, Snapshot, StaleFence};
use gensync::testing::{FencedStore, RedisServer};
use gensync::{GenerationSynchronizer, RedisBackend, Synchronizer};
use tokio::task::JoinHandle;
use tower::{Layer, Service};

use crate::fleet::{config, Options};
use crate::harness::INSTANCES;
use crate::traffic::Traffic;
use gensync::testing::fast_config;

/// Tenants each instance serves.
pub const TENANTS: usize = 200;
/// Tenants each instance keeps a reloader for: fewer, so they are evicted.
pub const CAPACITY: u64 = 64;
/// The hot tenants (`0..HOT`) get `HOT_PERCENT` of the requests; the rest
/// are spread over every tenant.
pub const HOT: usize = 8;
pub const HOT_PERCENT: u64 = 80;
/// The freshness slot of the site-wide part of every tenant's settings;
/// tenant `t`'s own part is slot `t`.
pub const SITE: usize = TENANTS;
/// Writer tasks, each updating a random tenant through a random instance,
/// or (one time in `BUMP_ONE_IN`) making a site-wide change.
const WRITERS: usize = 2;
const BUMP_ONE_IN: u64 = 8;
/// The pause between one writer's operations.
const WRITE_PACE: Duration = Duration::from_millis(5);

/// What a tenant is served: its own version and the site-wide version.
pub type Settings = (u64, u64);

pub fn slot_name(slot: usize) -> String {
    if slot == SITE {
        "the site-wide part".to_owned()
    } else {
        format!("tenant-{slot}")
    }
}

/// A small deterministic generator: which tenant, which instance.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A tenant, hot or cold.
    pub fn tenant(&mut self) -> usize {
        if self.below(100) < HOT_PERCENT {
            self.below(HOT as u64) as usize
        } else {
            self.below(TENANTS as u64) as usize
        }
    }
}

/// Every tenant's version with the greatest fencing token its store
/// accepted, and the site-wide version (saved by hand, as a site-wide
/// change is, then announced by a bump of the parent).
pub struct Db {
    /// Each tenant's version, fenced.
    tenants: Vec<FencedStore<u64>>,
    site: AtomicU64,
}

impl Db {
    fn new() -> Db {
        Db {
            tenants: (0..TENANTS).map(|_| FencedStore::new(1)).collect(),
            site: AtomicU64::new(1),
        }
    }

    pub fn tenant(&self, tenant: usize) -> u64 {
        self.tenants[tenant].value()
    }

    pub fn site(&self) -> u64 {
        self.site.load(SeqCst)
    }

    /// Saves the next site-wide version, and returns it.
    pub fn change_site(&self) -> u64 {
        self.site.fetch_add(1, SeqCst) + 1
    }

    fn store(&self, tenant: usize, version: u64, fence: Fence) -> Result<(), StaleFence> {
        self.tenants[tenant].save(version, fence)
    }
}

/// A response: the settings the middleware handed the inner service, or
/// the middleware's own answer (a 503 for a tenant that could not load).
pub enum Body {
    Settings(Settings),
    Text(String),
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::Text(text)
    }
}

#[derive(Clone, Copy)]
pub struct Echo;

impl Service<http::Request<()>> for Echo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        let body = match request.extensions().get::<Snapshot<Settings>>() {
            Some(snapshot) => Body::Settings(**snapshot),
            None => Body::Text("no Snapshot in the request's extensions".to_owned()),
        };
        ready(Ok(http::Response::new(body)))
    }
}

type TenantOf = fn(&http::Request<()>) -> Result<usize, KeyRejection>;
pub type KeyedSvc = KeyedReload<Echo, usize, Settings, TenantOf>;

fn tenant_of(request: &http::Request<()>) -> Result<usize, KeyRejection> {
    request
        .headers()
        .get("x-tenant")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .ok_or_else(|| KeyRejection::bad_request("no tenant"))
}

pub fn ask(tenant: usize) -> http::Request<()> {
    http::Request::builder()
        .header("x-tenant", tenant)
        .body(())
        .expect("a request")
}

/// One "process". Its backend is the plain `RedisBackend`, not wrapped in
/// a counting `FaultyBackend` as the single-key fleet's is: that wrapper
/// does not forward `get_with_parent`, so every keyed check would read the
/// key and the parent with two GETs instead of the one script, a read path
/// no process runs. Backend calls are not counted here; Redis commands are.
pub struct Instance {
    pub reloader: KeyedReloader<usize, Settings>,
    pub service: KeyedSvc,
}

pub struct KeyedFleet {
    pub server: RedisServer,
    pub db: Arc<Db>,
    pub instances: Vec<Instance>,
    /// A process of its own that makes site-wide changes: the parent's
    /// synchronizer, as `gensync bump` would use.
    pub parent: Arc<Synchronizer<RedisBackend>>,
}

impl KeyedFleet {
    pub fn new(server: RedisServer, opts: &Options) -> Result<KeyedFleet, String> {
        let db = Arc::new(Db::new());
        let url = (opts.url)(&server);
        let instances = (0..INSTANCES)
            .map(|_| {
                let backend = RedisBackend::with_config(&url, config())
                    .map_err(|e| format!("backend: {e}"))?;
                let (read, write) = (Arc::clone(&db), Arc::clone(&db));
                let reloader = KeyedReloader::builder(
                    backend,
                    crate::harness::key(),
                    |tenant: &usize| format!("tenant-{tenant}"),
                    move |tenant: usize| {
                        let db = Arc::clone(&read);
                        async move {
                            // Let other tasks run mid-load, so bumps can land during it.
                            tokio::task::yield_now().await;
                            Ok::<_, Infallible>((db.tenant(tenant), db.site()))
                        }
                    },
                )
                .saver(move |tenant: usize, settings: &Settings, fence: Fence| {
                    let stored = write.store(tenant, settings.0, fence);
                    async move { stored }
                })
                .capacity(CAPACITY)
                .max_wait(opts.max_wait)
                .load_timeout(Duration::from_secs(2))
                .backoff(opts.backoff.0, opts.backoff.1)
                .write_lock(opts.lock_ttl, 40)
                .write_timeout(Duration::from_secs(2))
                .mode(opts.mode)
                .build()
                .map_err(|e| format!("keyed reloader: {e}"))?;
                let service =
                    KeyedReloadLayer::new(reloader.clone(), tenant_of as TenantOf).layer(Echo);
                Ok(Instance { reloader, service })
            })
            .collect::<Result<_, String>>()?;
        let parent = RedisBackend::with_config(&url, fast_config())
            .map_err(|e| format!("the site writer's backend: {e}"))?;
        let parent = Arc::new(Synchronizer::new(parent, crate::harness::key()));
        Ok(KeyedFleet {
            server,
            db,
            instances,
            parent,
        })
    }

    pub fn metrics(&self) -> Vec<ReloadMetrics> {
        self.instances
            .iter()
            .map(|i| i.reloader.metrics())
            .collect()
    }

    /// A site-wide change: the next site version saved by hand, then the
    /// parent bumped. The version once the bump returned.
    pub async fn change_site(&self) -> Result<u64, String> {
        let version = self.db.change_site();
        self.parent
            .mark_updated()
            .await
            .map_err(|e| format!("the parent bump after saving site version {version}: {e}"))?;
        Ok(version)
    }
}

/// What the writers were told.
#[derive(Default)]
pub struct WriteLog {
    /// Each update a writer was told succeeded: (tenant, version).
    pub oks: Mutex<Vec<(usize, u64)>>,
    pub site_changes: AtomicU64,
    pub errors: AtomicU64,
    pub first_errors: Mutex<Vec<String>>,
}

impl WriteLog {
    fn error(&self, why: String) {
        self.errors.fetch_add(1, SeqCst);
        let mut first = self.first_errors.lock().unwrap();
        if first.len() < 3 {
            first.push(why);
        }
    }

    pub fn told_ok(&self) -> usize {
        self.oks.lock().unwrap().len() + self.site_changes.load(SeqCst) as usize
    }
}

/// The writers at work, until stopped.
pub struct Writers {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Writers {
    pub fn start(
        fleet: &KeyedFleet,
        traffic: &Arc<Traffic>,
        log: &Arc<WriteLog>,
        round: u64,
    ) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..WRITERS)
            .map(|w| {
                let reloaders: Vec<_> =
                    fleet.instances.iter().map(|i| i.reloader.clone()).collect();
                let (db, parent) = (Arc::clone(&fleet.db), Arc::clone(&fleet.parent));
                let (traffic, log, stop) =
                    (Arc::clone(traffic), Arc::clone(log), Arc::clone(&stop));
                let mut rng = Rng::new(round * 100 + w as u64 + 7);
                tokio::spawn(async move {
                    while !stop.load(SeqCst) {
                        if rng.below(BUMP_ONE_IN) == 0 {
                            let version = db.change_site();
                            match parent.mark_updated().await {
                                Ok(_) => {
                                    traffic.completed(SITE, version);
                                    log.site_changes.fetch_add(1, SeqCst);
                                }
                                Err(e) => log.error(format!("a parent bump: {e}")),
                            }
                        } else {
                            let tenant = rng.below(TENANTS as u64) as usize;
                            let writer = &reloaders[rng.below(INSTANCES as u64) as usize];
                            let made = Arc::new(AtomicU64::new(0));
                            let noted = Arc::clone(&made);
                            let updated = writer
                                .update(&tenant, move |&(version, site)| {
                                    noted.store(version + 1, SeqCst);
                                    (version + 1, site)
                                })
                                .await;
                            match updated {
                                Ok(_) => {
                                    let version = made.load(SeqCst);
                                    traffic.completed(tenant, version);
                                    log.oks.lock().unwrap().push((tenant, version));
                                }
                                Err(e) => log.error(format!("an update of tenant-{tenant}: {e}")),
                            }
                        }
                        tokio::time::sleep(WRITE_PACE).await;
                    }
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    /// Stops the writers where they are (a row that failed half-way).
    pub fn abort(self) {
        self.stop.store(true, SeqCst);
        for task in self.tasks {
            task.abort();
        }
    }

    /// Stops the writers once their operation in progress ended.
    pub async fn stop(self, within: Duration) -> Result<(), String> {
        self.stop.store(true, SeqCst);
        let began = Instant::now();
        for task in self.tasks {
            let left = within.saturating_sub(began.elapsed());
            match tokio::time::timeout(left, task).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(format!("a writer task: {e}")),
                Err(_) => {
                    return Err(format!(
                        "a writer was still writing {within:?} after it was stopped"
                    ))
                }
            }
        }
        Ok(())
    }
}
