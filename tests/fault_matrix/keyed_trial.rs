//! One keyed row's run: the keyed fleet under a load of requests spread
//! over hot and cold tenants, writers at work in healthy phases and
//! through the fault, judged per tenant by the single-key rows' ledger
//! (`Traffic`, a freshness slot per tenant and one for the site-wide
//! part), and the promises `finish` checks for every keyed row.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use gensync::reload::ReloadMetrics;
use gensync::synchronizer::Observed;
use gensync::testing::RedisServer;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

use crate::fleet::{commands, Options};
use crate::harness::{ensure, DEBUG_LOGS, INSTANCES, IN_FLIGHT, POLL};
use crate::keyed_fleet::{
    ask, slot_name, Body, KeyedFleet, KeyedSvc, Rng, Settings, WriteLog, Writers, CAPACITY, HOT,
    SITE, TENANTS,
};
use crate::traffic::{sample_in_flight, Entered, Phases, Traffic};
use crate::trial::{Cost, Row};

/// How long the writers write in a healthy phase.
const HEALTHY_WRITES: Duration = Duration::from_millis(500);
/// How long every tenant of every instance may take to converge while
/// healthy, the load to ramp up or to stop, or a writer to stop.
const HEALTHY_WITHIN: Duration = Duration::from_secs(5);
/// A quiet window (load, no write, no fault), to measure costs.
const QUIET: Duration = Duration::from_millis(250);
/// How long push tracking may take to vouch again for the hot tenants of
/// every instance, at the end of a healthy phase.
const REARM_WITHIN: Duration = Duration::from_secs(5);

pub struct KeyedTrial {
    pub fleet: KeyedFleet,
    opts: Options,
    traffic: Arc<Traffic>,
    workers: Vec<JoinHandle<()>>,
    writers: Option<Writers>,
    rounds: u64,
    pub log: Arc<WriteLog>,
    phases: Phases,
    notes: Vec<String>,
    min_in_flight: usize,
    faulted: bool,
    before: Option<Cost>,
    after: Option<Cost>,
}

/// One request for `tenant` through an instance's layered service, judged
/// for the tenant's own part and the site-wide part.
async fn request(
    traffic: &Traffic,
    entered: Entered,
    instance: usize,
    service: &KeyedSvc,
    tenant: usize,
) -> Option<Settings> {
    let started = Instant::now();
    let outcome = match tokio::spawn(service.clone().oneshot(ask(tenant))).await {
        Ok(Ok(answer)) => match answer.into_parts() {
            (_, Body::Settings(settings)) => Ok(settings),
            (parts, Body::Text(text)) => Err(format!(
                "tenant-{tenant} was answered {} {text:?}",
                parts.status
            )),
        },
        Ok(Err(never)) => match never {},
        Err(e) => Err(format!("tenant-{tenant}: the request panicked: {e}")),
    };
    let (own, site) = traffic.answered(started, instance, outcome)?;
    traffic.judge(&entered, instance, tenant, own);
    traffic.judge(&entered, instance, SITE, site);
    Some((own, site))
}

impl KeyedTrial {
    pub async fn start(server: RedisServer, opts: Options) -> Result<KeyedTrial, String> {
        DEBUG_LOGS.store(opts.debug_logs, SeqCst);
        let fleet = KeyedFleet::new(server, &opts)?;
        let traffic = Arc::new(Traffic::new(TENANTS + 1, opts.freshness_grace(), slot_name));
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        let requesters = IN_FLIGHT + threads;
        let mut workers: Vec<JoinHandle<()>> = (0..requesters)
            .map(|w| {
                let traffic = Arc::clone(&traffic);
                let service = fleet.instances[w % INSTANCES].service.clone();
                let mut rng = Rng::new(w as u64);
                tokio::spawn(async move {
                    traffic.started.add_permits(1);
                    while !traffic.done.load(SeqCst) {
                        let tenant = rng.tenant();
                        let entered = traffic.enter();
                        request(&traffic, entered, w % INSTANCES, &service, tenant).await;
                    }
                })
            })
            .collect();
        workers.push(tokio::spawn(sample_in_flight(Arc::clone(&traffic), None)));
        let trial = KeyedTrial {
            fleet,
            opts,
            traffic,
            workers,
            writers: None,
            rounds: 0,
            log: Arc::new(WriteLog::default()),
            phases: Phases::default(),
            notes: Vec::new(),
            min_in_flight: usize::MAX,
            faulted: false,
            before: None,
            after: None,
        };
        let wanted = trial.traffic.started.acquire_many(requesters as u32);
        let ramped = matches!(
            tokio::time::timeout(HEALTHY_WITHIN, wanted).await,
            Ok(Ok(_))
        );
        ensure(ramped, || {
            format!("the load's {requesters} tasks had not all started")
        })?;
        Ok(trial)
    }

    pub fn opts(&self) -> &Options {
        &self.opts
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    pub fn metrics(&self) -> Vec<ReloadMetrics> {
        self.fleet.metrics()
    }

    pub fn served(&self) -> u64 {
        self.traffic.served.load(SeqCst)
    }

    fn set_phase(&mut self, strict: bool) {
        let fleet = &self.fleet;
        self.phases.set(&self.traffic, strict, || {
            fleet.metrics().iter().map(|m| m.stale_served).collect()
        });
    }

    /// The writers start updating random tenants and changing the site.
    pub fn start_writers(&mut self) {
        self.rounds += 1;
        let writers = Writers::start(&self.fleet, &self.traffic, &self.log, self.rounds);
        self.writers = Some(writers);
    }

    pub async fn stop_writers(&mut self) -> Result<(), String> {
        match self.writers.take() {
            Some(writers) => writers.stop(HEALTHY_WITHIN).await,
            None => Ok(()),
        }
    }

    /// A healthy phase, judged for freshness: the writers write for a
    /// while and every write is told ok, then every tenant of every
    /// instance converges on the database, then a quiet window.
    pub async fn healthy(&mut self) -> Result<(), String> {
        self.set_phase(true);
        let (errors, told) = (self.log.errors.load(SeqCst), self.log.told_ok());
        self.start_writers();
        tokio::time::sleep(HEALTHY_WRITES).await;
        self.stop_writers().await?;
        let failed = self.log.errors.load(SeqCst) - errors;
        ensure(failed == 0, || {
            format!(
                "while healthy, {failed} writes failed; first: {:?}",
                self.log.first_errors.lock().unwrap()
            )
        })?;
        let told = self.log.told_ok() - told;
        ensure(told > 0, || {
            "while healthy, no write was told ok".to_owned()
        })?;
        self.converge(Instant::now(), HEALTHY_WITHIN)
            .await
            .map_err(|e| format!("while healthy: {e}"))?;
        if self.opts.mode.pushes() {
            self.all_vouching().await?;
        }
        let cost = self.quiet().await?;
        if self.faulted {
            self.after = Some(cost);
        } else {
            self.before = Some(cost);
        }
        Ok(())
    }

    /// Push: waits until every instance answers a check of each hot tenant
    /// at once, without a read (tracking armed, the tenant's last read
    /// vouched for): push re-armed rather than staying strict.
    async fn all_vouching(&self) -> Result<(), String> {
        let deadline = Instant::now() + REARM_WITHIN;
        loop {
            let mut unvouched = None;
            'instances: for (i, instance) in self.fleet.instances.iter().enumerate() {
                for tenant in 0..HOT {
                    let reloader = instance.reloader.reloader(&tenant).await;
                    let reloader = reloader.map_err(|e| format!("instance {i}: {e}"))?;
                    let mut check = reloader.check();
                    let polled = Pin::new(&mut check).poll(&mut Context::from_waker(Waker::noop()));
                    if polled.is_pending() {
                        check.await;
                        unvouched = Some((i, tenant));
                        break 'instances;
                    }
                }
            }
            let Some((i, tenant)) = unvouched else {
                return Ok(());
            };
            ensure(Instant::now() < deadline, || {
                format!(
                    "push tracking did not vouch for every hot tenant within {REARM_WITHIN:?} at \
                     the end of a healthy phase (instance {i}, tenant-{tenant} still read); checks \
                     stay strict"
                )
            })?;
            tokio::time::sleep(POLL).await;
        }
    }

    async fn quiet(&self) -> Result<Cost, String> {
        let commands_before = commands(&self.fleet.server)?;
        let served = self.served();
        tokio::time::sleep(QUIET).await;
        let requests = (self.served() - served).max(1) as f64;
        let commands = (commands(&self.fleet.server)? - commands_before) as f64 / requests;
        Ok(Cost {
            calls: None,
            commands: Some(commands),
        })
    }

    /// Polls every tenant of every instance at once until each serves at
    /// least the database's versions (the writers are stopped); how long
    /// that took from `since`.
    pub async fn converge(&self, since: Instant, within: Duration) -> Result<Duration, String> {
        let site = self.fleet.db.site();
        let mut polls = JoinSet::new();
        for (i, instance) in self.fleet.instances.iter().enumerate() {
            for tenant in 0..TENANTS {
                let target = (self.fleet.db.tenant(tenant), site);
                let (traffic, service) = (Arc::clone(&self.traffic), instance.service.clone());
                polls.spawn(async move {
                    loop {
                        let seen = request(&traffic, traffic.enter(), i, &service, tenant).await;
                        if seen.is_some_and(|(own, site)| own >= target.0 && site >= target.1) {
                            return Ok(since.elapsed());
                        }
                        if since.elapsed() >= within {
                            return Err(format!(
                                "instance {i} served tenant-{tenant} {seen:?}, not {target:?}, \
                                 {within:?} on"
                            ));
                        }
                        tokio::time::sleep(POLL).await;
                    }
                });
            }
        }
        let mut slowest = Duration::ZERO;
        while let Some(poll) = polls.join_next().await {
            slowest = slowest.max(poll.map_err(|e| format!("a poll: {e}"))??);
        }
        Ok(slowest)
    }

    /// Every instance's check of a hot tenant reads its generation as
    /// unavailable, hence expired.
    pub async fn all_read_unavailable(&self, when: &str) -> Result<(), String> {
        for (i, instance) in self.fleet.instances.iter().enumerate() {
            let reloader = instance.reloader.reloader(&0).await;
            let reloader = reloader.map_err(|e| format!("{when}, instance {i}: {e}"))?;
            let check = reloader.synchronizer().check().await;
            ensure(
                check.shared == Observed::Unavailable && check.is_expired(),
                || format!("{when}, instance {i} did not read tenant-0 as expired: {check:?}"),
            )?;
        }
        Ok(())
    }

    pub fn fault(&mut self, freshness_holds: bool) -> Instant {
        if !freshness_holds {
            self.set_phase(false);
        }
        self.faulted = true;
        self.traffic.min_in_flight.store(usize::MAX, SeqCst);
        self.traffic.sampling.store(true, SeqCst);
        Instant::now()
    }

    pub fn heal(&mut self) -> Instant {
        self.traffic.sampling.store(false, SeqCst);
        let sampled = self.traffic.min_in_flight.load(SeqCst);
        self.min_in_flight = self.min_in_flight.min(sampled);
        Instant::now()
    }

    /// The fault was just removed: stops the writers, makes a site-wide
    /// change (retried while the clients reconnect) and measures how long
    /// every tenant of every instance takes to serve the database's
    /// versions, from that moment.
    pub async fn recover(&mut self, within: Duration) -> Result<Duration, String> {
        let healed = self.heal();
        self.stop_writers().await?;
        let deadline = healed + within;
        loop {
            match self.fleet.change_site().await {
                Ok(version) => {
                    self.traffic.completed(SITE, version);
                    break;
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
        self.converge(healed, within).await
    }

    /// A last healthy phase, then the load stops and every promise shared
    /// by the keyed rows is checked.
    pub async fn finish(mut self, converge: Duration) -> Result<Row, String> {
        self.healthy()
            .await
            .map_err(|e| format!("after recovery: {e}"))?;
        self.set_phase(false);
        self.traffic.done.store(true, SeqCst);
        let workers = std::mem::take(&mut self.workers);
        let stopped = tokio::time::timeout(HEALTHY_WITHIN, async {
            for worker in workers {
                let _ = worker.await;
            }
        })
        .await;
        ensure(stopped.is_ok(), || {
            "requests were still unanswered after the load stopped: stuck".to_owned()
        })?;
        DEBUG_LOGS.store(false, SeqCst);
        self.phases
            .judge(&self.traffic, self.opts.mode, &mut self.notes)?;
        let t = &self.traffic;
        t.judge_load(self.opts.latency_bound(), self.min_in_flight)?;
        let failed = t.failed.load(SeqCst);
        let worst = Duration::from_micros(t.worst_micros.load(SeqCst));
        self.nothing_told_ok_was_lost()?;
        let metrics = self.metrics();
        let cached: Vec<u64> = self
            .fleet
            .instances
            .iter()
            .map(|i| i.reloader.cached_keys())
            .collect();
        self.notes.push(format!(
            "{} tenant updates and {} site-wide changes told ok, {} writes told they failed; \
             reloaders cached at the end (of {TENANTS} tenants, capacity {CAPACITY}): {cached:?}",
            self.log.oks.lock().unwrap().len(),
            self.log.site_changes.load(SeqCst),
            self.log.errors.load(SeqCst),
        ));
        Ok(Row {
            fault: "",
            mode: self.opts.mode,
            before: self.before,
            during: None,
            after: self.after,
            vouch_stopped: None,
            rearmed: None,
            served: t.served.load(SeqCst),
            failed,
            worst,
            loader_runs: metrics.iter().map(|m| m.loader_runs).sum(),
            converge,
            stale: metrics.iter().map(|m| m.stale_served).sum(),
            min_in_flight: self.min_in_flight,
            notes: std::mem::take(&mut self.notes),
        })
    }

    /// Every update a writer was told succeeded is in the database (which
    /// every tenant of every instance converged on), and no two writers
    /// were told ok for the same version of a tenant (an update lost to
    /// another, made from the same version).
    fn nothing_told_ok_was_lost(&self) -> Result<(), String> {
        let mut told: HashMap<(usize, u64), usize> = HashMap::new();
        for &(tenant, version) in self.log.oks.lock().unwrap().iter() {
            let held = self.fleet.db.tenant(tenant);
            ensure(version <= held, || {
                format!("tenant-{tenant}'s update to version {version} was told ok, and the database holds {held}")
            })?;
            *told.entry((tenant, version)).or_default() += 1;
        }
        if let Some(((tenant, version), n)) = told.into_iter().find(|(_, n)| *n > 1) {
            return Err(format!(
                "{n} writers were told ok for version {version} of tenant-{tenant}: all but one update was lost"
            ));
        }
        Ok(())
    }
}

impl Drop for KeyedTrial {
    fn drop(&mut self) {
        self.traffic.done.store(true, SeqCst);
        for worker in &self.workers {
            worker.abort();
        }
        if let Some(writers) = self.writers.take() {
            writers.abort();
        }
    }
}
