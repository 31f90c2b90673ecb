//! One row's run: its fleet under a load of concurrent requests through
//! the tower layer, the phases it goes through (healthy, with freshness
//! judged, or faulty), convergence polling, and the promises `finish`
//! checks for every row.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gensync::reload::{CheckMode, ReloadMetrics};
use gensync::synchronizer::Observed;
use gensync::{Generation, GenerationSynchronizer};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::fleet::{vouching, Deployment, Fleet, Options, Svc, HEARTBEAT};
use crate::harness::{ensure, log_mark, logs_since, DEBUG_LOGS, INSTANCES, IN_FLIGHT, POLL};
use crate::traffic::{sample_in_flight, Entered, Phases, Traffic};

/// Publishes in each healthy phase.
const HEALTHY_PUBLISHES: usize = 2;
/// How long a healthy fleet may take to agree on a publish, or to settle.
const HEALTHY_WITHIN: Duration = Duration::from_secs(5);
/// How long the requests in flight may take to finish once the load stops.
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// How long a quiet window (load, no publish, no fault) lasts, to measure
/// what a request costs the backend and the server.
const QUIET: Duration = Duration::from_millis(250);
/// How long push tracking may take to vouch again on every instance once a
/// fault is removed (reconnect pauses, a dial, `CLIENT TRACKING`, a read).
const REARM_WITHIN: Duration = Duration::from_secs(5);
/// Slack on the heartbeat bound once tracking must be lost, for a SIGSTOP
/// to take effect after `kill -STOP` returns.
const SIGNAL_SLACK: Duration = Duration::from_millis(5);

/// What requests cost the backend over a window: the synchronizers'
/// backend calls per request served, and the commands the server ran per
/// request (not measured where the row's own commands would mix in).
#[derive(Clone, Copy, Debug)]
pub struct Cost {
    pub calls: Option<f64>,
    pub commands: Option<f64>,
}

/// One row's run: its fleet under load, the phases it went through, and
/// what it measured.
pub struct Trial {
    pub fleet: Fleet,
    opts: Options,
    traffic: Arc<Traffic>,
    services: Vec<Svc>,
    /// The load's request loops and its in-flight sampler.
    workers: Vec<JoinHandle<()>>,
    requesters: usize,
    phases: Phases,
    min_in_flight: usize,
    log_from: usize,
    notes: Vec<String>,
    /// Whether a fault window has opened yet.
    faulted: bool,
    /// Backend calls and requests served when the fault window opened.
    fault_began: Option<(u64, u64)>,
    before: Option<Cost>,
    during: Option<f64>,
    after: Option<Cost>,
    /// Push: how long after tracking had to be lost an instance still
    /// vouched (zero if none did), and which.
    vouch_stopped: Option<(Duration, Option<usize>)>,
}

impl Trial {
    /// Builds the fleet over `redis` (running or not) and starts the load:
    /// `IN_FLIGHT` requests in flight, plus one per runtime thread to cover
    /// the instant a task spends between two requests.
    pub async fn start(redis: Deployment, opts: Options) -> Result<Trial, String> {
        DEBUG_LOGS.store(opts.debug_logs, SeqCst);
        let log_from = log_mark();
        let fleet = Fleet::new(redis, &opts)?;
        let services: Vec<Svc> = fleet.instances.iter().map(|i| i.service.clone()).collect();
        let traffic = Arc::new(Traffic::new(1, opts.freshness_grace(), |_| {
            "the settings".to_owned()
        }));
        let threads = tokio::runtime::Handle::current().metrics().num_workers();
        let requesters = IN_FLIGHT + threads;
        let mut workers: Vec<JoinHandle<()>> = (0..requesters)
            .map(|w| {
                let (traffic, service) = (Arc::clone(&traffic), services[w % INSTANCES].clone());
                tokio::spawn(async move {
                    let mut entered = traffic.enter();
                    traffic.started.add_permits(1);
                    loop {
                        serve(&traffic, entered, w % INSTANCES, &service).await;
                        if traffic.done.load(SeqCst) {
                            break;
                        }
                        entered = traffic.enter();
                    }
                })
            })
            .collect();
        let push = opts.mode.pushes().then(|| fleet.reloaders());
        workers.push(tokio::spawn(sample_in_flight(Arc::clone(&traffic), push)));
        let trial = Trial {
            fleet,
            opts,
            traffic,
            services,
            workers,
            requesters,
            phases: Phases::default(),
            min_in_flight: usize::MAX,
            log_from,
            notes: Vec::new(),
            faulted: false,
            fault_began: None,
            before: None,
            during: None,
            after: None,
            vouch_stopped: None,
        };
        // Until every task has entered its first request, fewer than
        // `IN_FLIGHT` may be in flight for a reason that is the harness's.
        // (On failure, dropping the trial stops the load.)
        let wanted = trial.traffic.started.acquire_many(requesters as u32);
        let ramped = matches!(
            tokio::time::timeout(HEALTHY_WITHIN, wanted).await,
            Ok(Ok(_))
        );
        ensure(ramped, || {
            format!("the load's {requesters} tasks had not all started after {HEALTHY_WITHIN:?}")
        })?;
        Ok(trial)
    }

    pub fn opts(&self) -> &Options {
        &self.opts
    }

    fn push(&self) -> bool {
        self.opts.mode.pushes()
    }

    pub fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// What the capture logged since the row started.
    pub fn logs(&self) -> String {
        logs_since(self.log_from)
    }

    pub fn metrics(&self) -> Vec<ReloadMetrics> {
        self.fleet.metrics()
    }

    pub fn served(&self) -> u64 {
        self.traffic.served.load(SeqCst)
    }

    /// Switches freshness judging on or off. Stale answers are counted
    /// before a strict phase opens and after it closes, so the counts
    /// cover every request judged in it.
    fn set_phase(&mut self, strict: bool) {
        let fleet = &self.fleet;
        self.phases.set(&self.traffic, strict, || {
            fleet.metrics().iter().map(|m| m.stale_served).collect()
        });
    }

    /// A healthy phase: every instance current, then publishes under load
    /// with the freshness promise judged, until every instance serves the
    /// last one. Judging goes on until the next fault.
    pub async fn healthy(&mut self) -> Result<(), String> {
        self.settle().await?;
        self.set_phase(true);
        let mut version = 0;
        for _ in 0..HEALTHY_PUBLISHES {
            self.await_served().await?;
            version = self.publish().await?;
        }
        self.converge(version, Instant::now(), HEALTHY_WITHIN)
            .await
            .map_err(|e| format!("while healthy: {e}"))?;
        self.settle().await?;
        if self.push() {
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

    /// Push: waits until every instance would answer a check without a
    /// read at once (tracking armed, heartbeats answered, its generation
    /// the loaded one).
    async fn all_vouching(&self) -> Result<(), String> {
        let deadline = Instant::now() + REARM_WITHIN;
        loop {
            let vouching: Vec<bool> = self
                .fleet
                .instances
                .iter()
                .map(|i| vouching(&i.reloader))
                .collect();
            if vouching.iter().all(|v| *v) {
                return Ok(());
            }
            ensure(Instant::now() < deadline, || {
                format!(
                    "push tracking did not vouch on every instance at once within {REARM_WITHIN:?} \
                     at the end of a healthy phase (vouching per instance: {vouching:?}); checks stay strict"
                )
            })?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// A window of load with no publish and no fault: what a request costs
    /// the backend (calls) and the server (commands).
    async fn quiet(&self) -> Result<Cost, String> {
        let commands = self.fleet.commands()?;
        let (calls, served) = (self.fleet.backend_calls(), self.served());
        self.hold(QUIET).await;
        let requests = (self.served() - served).max(1) as f64;
        let calls = (self.fleet.backend_calls() - calls) as f64 / requests;
        let commands = (self.fleet.commands()? - commands) as f64 / requests;
        Ok(Cost {
            calls: Some(calls),
            commands: Some(commands),
        })
    }

    /// Waits until every instance's recorded generation is the shared one,
    /// so no reload is left pending from an earlier phase.
    pub async fn settle(&self) -> Result<(), String> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        for (i, instance) in self.fleet.instances.iter().enumerate() {
            loop {
                // A request drives the reload; the check tells whether it is done.
                request(&self.traffic, i, &self.services[i]).await;
                if !instance.reloader.synchronizer().is_expired().await {
                    break;
                }
                ensure(Instant::now() < deadline, || {
                    format!(
                        "instance {i} was still expired {HEALTHY_WITHIN:?} into a healthy phase"
                    )
                })?;
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(())
    }

    async fn await_served(&self) -> Result<(), String> {
        let permits = &self.traffic.served_permits;
        permits.forget_permits(permits.available_permits());
        let wanted = self.requesters as u32;
        let served = tokio::time::timeout(HEALTHY_WITHIN, permits.acquire_many(wanted)).await;
        ensure(matches!(served, Ok(Ok(_))), || {
            format!("fewer than {wanted} requests were served in {HEALTHY_WITHIN:?} while healthy")
        })?;
        permits.forget_permits(permits.available_permits());
        Ok(())
    }

    /// Opens a fault window: in-flight requests are sampled through it, and
    /// unless the promise still holds, freshness is no longer judged.
    pub fn fault(&mut self, freshness_holds: bool) -> Instant {
        if !freshness_holds {
            self.set_phase(false);
        }
        self.faulted = true;
        self.fault_began = Some((self.fleet.backend_calls(), self.served()));
        self.traffic.min_in_flight.store(usize::MAX, SeqCst);
        self.traffic.sampling.store(true, SeqCst);
        Instant::now()
    }

    /// Closes the fault window: the moment the fault was removed.
    pub fn heal(&mut self) -> Instant {
        self.traffic.sampling.store(false, SeqCst);
        let sampled = self.traffic.min_in_flight.load(SeqCst);
        self.min_in_flight = self.min_in_flight.min(sampled);
        if let Some((calls, served)) = self.fault_began.take() {
            let requests = (self.served() - served).max(1) as f64;
            self.during = Some((self.fleet.backend_calls() - calls) as f64 / requests);
        }
        let healed = Instant::now();
        let mut watch = self.traffic.vouching.lock().unwrap();
        if watch.rearm_from.is_none() {
            watch.rearm_from = Some(healed);
        }
        healed
    }

    /// The fault is in place and cuts push tracking off (or it was never
    /// armed): from now on, past the heartbeat bound, no instance may vouch
    /// until [`tracking_back`](Self::tracking_back).
    pub fn tracking_lost(&mut self) {
        self.traffic.vouching.lock().unwrap().lost_from = Some(Instant::now());
    }

    /// The row starts removing the fault that cut tracking off: records how
    /// long an instance still vouched after it was cut off, and times the
    /// re-arming from here.
    pub fn tracking_back(&mut self) {
        if !self.push() {
            return;
        }
        let mut watch = self.traffic.vouching.lock().unwrap();
        if let Some(from) = watch.lost_from.take() {
            self.vouch_stopped = Some(match watch.last_while_lost.take() {
                Some((at, instance)) => (at - from, Some(instance)),
                None => (Duration::ZERO, None),
            });
        }
        watch.rearm_from = Some(Instant::now());
        watch.rearmed = [None; INSTANCES];
    }

    /// Keeps the load (and the fault) going.
    pub async fn hold(&self, how_long: Duration) {
        tokio::time::sleep(how_long).await;
    }

    /// Publishes the next version through the instances' writer path
    /// (lock, intent, save, bump), rotating the writer.
    pub async fn publish(&self) -> Result<u64, String> {
        let version = self.fleet.db.version() + 1;
        self.publish_through(version as usize % INSTANCES, version)
            .await?;
        Ok(version)
    }

    /// Publishes `version` through instance `writer`; requests that start
    /// once it returned are judged by it.
    pub async fn publish_through(&self, writer: usize, version: u64) -> Result<(), String> {
        self.fleet.instances[writer]
            .reloader
            .publish(version)
            .await
            .map_err(|e| {
                format!("publishing version {version} through instance {writer} failed: {e}")
            })?;
        self.traffic.completed(0, version);
        Ok(())
    }

    /// Saves the next version by hand and bumps through `writer`.
    pub async fn bump_by_hand(
        &self,
        writer: &dyn GenerationSynchronizer,
    ) -> Result<(u64, Generation), String> {
        let version = self.fleet.db.version() + 1;
        self.fleet.db.save(version);
        let generation = writer
            .mark_updated()
            .await
            .map_err(|e| format!("mark_updated after saving version {version} failed: {e}"))?;
        self.traffic.completed(0, version);
        Ok((version, generation))
    }

    /// Polls every instance with requests until each serves `target`, and
    /// returns how long that took from `since`; fails at the deadline.
    /// An instance's versions never go back (its loads are single flight
    /// and read the database later each time), so once one served `target`
    /// it stays converged.
    pub async fn converge(
        &self,
        target: u64,
        since: Instant,
        within: Duration,
    ) -> Result<Duration, String> {
        self.converge_on(target, since, within, false).await
    }

    /// As [`converge`](Self::converge), and each instance's own check must
    /// then read the shared generation as current (a read answered by
    /// Redis, matching what it loaded at): serving `target` while Redis is
    /// out of reach does not count.
    pub async fn converge_current(
        &self,
        target: u64,
        since: Instant,
        within: Duration,
    ) -> Result<Duration, String> {
        self.converge_on(target, since, within, true).await
    }

    async fn converge_on(
        &self,
        target: u64,
        since: Instant,
        within: Duration,
        current: bool,
    ) -> Result<Duration, String> {
        let mut pending: Vec<usize> = (0..INSTANCES).collect();
        let mut last_seen = [None; INSTANCES];
        loop {
            let mut still = Vec::new();
            for i in pending {
                let seen = request(&self.traffic, i, &self.services[i]).await;
                let synchronizer = self.fleet.instances[i].reloader.synchronizer();
                if seen.is_none_or(|v| v < target) || (current && synchronizer.is_expired().await) {
                    last_seen[i] = seen;
                    still.push(i);
                }
            }
            pending = still;
            if pending.is_empty() {
                return Ok(since.elapsed());
            }
            ensure(since.elapsed() < within, || {
                let seen: Vec<_> = pending.iter().map(|&i| (i, last_seen[i])).collect();
                format!(
                    "instances did not converge on version {target} within {within:?}; \
                     (instance, version served) at the deadline: {seen:?}"
                )
            })?;
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every instance's own synchronizer reads the shared generation as
    /// unavailable, hence expired. The checks run at once, so a paused
    /// server costs one timeout, not one per instance.
    pub async fn all_read_unavailable(&self, when: &str) -> Result<(), String> {
        let probes: Vec<_> = self
            .fleet
            .instances
            .iter()
            .map(|instance| {
                let reloader = instance.reloader.clone();
                tokio::spawn(async move { reloader.synchronizer().check().await })
            })
            .collect();
        for (i, probe) in probes.into_iter().enumerate() {
            let check = probe.await.map_err(|e| format!("probe: {e}"))?;
            ensure(
                check.shared == Observed::Unavailable && check.is_expired(),
                || format!("{when}, instance {i} did not read as expired: {check:?}"),
            )?;
        }
        Ok(())
    }

    /// After an outage that began with `before`: every instance counted
    /// backend errors, and loaded at most once per backoff window.
    pub fn outage_checks(&self, before: &[ReloadMetrics], since: Instant) -> Result<(), String> {
        let lasted = since.elapsed();
        let allowed = self.opts.loads_allowed(lasted);
        for (i, (b, a)) in before.iter().zip(self.metrics()).enumerate() {
            ensure(a.backend_errors > b.backend_errors, || {
                format!("instance {i} counted no backend error during the outage")
            })?;
            let loads = a.loader_runs - b.loader_runs;
            let checks = a.checks - b.checks;
            ensure(loads <= allowed, || {
                format!(
                    "reload storm: instance {i} ran its loader {loads} times for {checks} \
                     checks in {lasted:?} of outage; its backoff allows {allowed}"
                )
            })?;
        }
        Ok(())
    }

    /// A last healthy phase, then the load stops and every shared promise
    /// is checked.
    pub async fn finish(mut self, converge: Duration) -> Result<Row, String> {
        self.healthy()
            .await
            .map_err(|e| format!("after recovery: {e}"))?;
        self.set_phase(false);
        self.traffic.done.store(true, SeqCst);
        let workers = std::mem::take(&mut self.workers);
        let stopped = tokio::time::timeout(STOP_WITHIN, async {
            for worker in workers {
                let _ = worker.await;
            }
        })
        .await;
        ensure(stopped.is_ok(), || {
            format!("requests were still unanswered {STOP_WITHIN:?} after the load stopped: stuck")
        })?;
        DEBUG_LOGS.store(false, SeqCst);
        self.judge_freshness()?;

        let t = &self.traffic;
        t.judge_load(self.opts.latency_bound(), self.min_in_flight)?;
        let failed = t.failed.load(SeqCst);
        let worst = Duration::from_micros(t.worst_micros.load(SeqCst));
        let logs = self.logs();
        if let Some(secret) = self.opts.secrets.iter().find(|s| logs.contains(**s)) {
            return Err(format!("the password {secret:?} appeared in the logs"));
        }
        let bound = HEARTBEAT * 2 + SIGNAL_SLACK;
        if let Some((stopped, Some(instance))) = self.vouch_stopped {
            ensure(stopped <= bound, || {
                format!(
                    "push: instance {instance} still vouched (served without a read) {stopped:?} \
                     after its tracking connection was cut off, past the heartbeat bound of {bound:?}"
                )
            })?;
        }
        let rearmed = if self.push() {
            let watch = self.traffic.vouching.lock().unwrap();
            let from = watch.rearm_from.ok_or("push: no fault window was closed")?;
            let firsts: Option<Vec<Instant>> = watch.rearmed.iter().copied().collect();
            // `healthy` saw every instance vouch, so each has a first sample.
            let firsts = firsts.ok_or("push: an instance vouched unseen by the sampler")?;
            firsts.into_iter().map(|at| at - from).max()
        } else {
            None
        };
        let metrics = self.metrics();
        Ok(Row {
            fault: "",
            mode: self.opts.mode,
            before: self.before,
            during: self.during,
            after: self.after,
            vouch_stopped: self.vouch_stopped.map(|(d, _)| d),
            rearmed,
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

    fn judge_freshness(&mut self) -> Result<(), String> {
        self.phases
            .judge(&self.traffic, self.opts.mode, &mut self.notes)
    }
}

/// One request through an instance's layered service. `None` when it
/// failed (counted, with the first reasons kept).
async fn request(traffic: &Traffic, instance: usize, service: &Svc) -> Option<u64> {
    serve(traffic, traffic.enter(), instance, service).await
}

async fn serve(traffic: &Traffic, entered: Entered, instance: usize, service: &Svc) -> Option<u64> {
    let started = Instant::now();
    // Its own task, so a panic anywhere in the request is caught and
    // counted as that request's failure.
    let outcome = match tokio::spawn(service.clone().oneshot(http::Request::new(()))).await {
        Ok(Ok(version)) => Ok(version),
        Ok(Err(e)) => Err(format!("the service failed: {e}")),
        Err(e) => Err(format!("the request panicked: {e}")),
    };
    let served = traffic.answered(started, instance, outcome)?;
    traffic.judge(&entered, instance, 0, served);
    Some(served)
}

impl Drop for Trial {
    /// A row that fails half-way must not leave its load running into the
    /// next row.
    fn drop(&mut self) {
        self.traffic.done.store(true, SeqCst);
        for worker in &self.workers {
            worker.abort();
        }
    }
}

/// One line of the table.
pub struct Row {
    pub fault: &'static str,
    pub mode: CheckMode,
    /// Quiet windows before the fault (when the row starts healthy) and
    /// after recovery.
    pub before: Option<Cost>,
    /// Backend calls per request through the fault window.
    pub during: Option<f64>,
    pub after: Option<Cost>,
    /// Push: how long an instance still vouched after tracking was cut off.
    pub vouch_stopped: Option<Duration>,
    /// Push: how long after the fault's removal every instance had vouched.
    pub rearmed: Option<Duration>,
    pub served: u64,
    pub failed: u64,
    pub worst: Duration,
    pub loader_runs: u64,
    pub converge: Duration,
    pub stale: u64,
    pub min_in_flight: usize,
    pub notes: Vec<String>,
}
