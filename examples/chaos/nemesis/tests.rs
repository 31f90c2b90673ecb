//! The nemesis's tests: the schedule from the seed alone, and (on Redis
//! topologies started for them) every kind applied, recorded and healed.

use super::*;
use crate::history::{Event, Fault};
use crate::nemesis::commands::{client_list, set_acl};
use crate::nemesis::ctx::{locked, wait_for};
use crate::topology::{admin, admin_query, connect, user_url, Deployment, USER};
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

const KINDS: [Kind; 3] = [Kind::Single, Kind::Sentinel, Kind::Cluster];

/// The faults `recorder` holds, in the order they were recorded.
fn faults(recorder: &Recorder) -> Vec<Fault> {
    recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Fault(f) => Some(f),
            _ => None,
        })
        .collect()
}

#[test]
fn nemesis_plan_is_the_seeds_alone() {
    for kind in KINDS {
        let a = plan(42, Duration::from_secs(60), kind);
        assert_eq!(a, plan(42, Duration::from_secs(60), kind));
        assert_ne!(a, plan(43, Duration::from_secs(60), kind));
    }
}

#[test]
fn nemesis_plan_has_every_kind_in_60s_and_quiet_ends() {
    for kind in KINDS {
        let all: HashSet<FaultKind> = FaultKind::all(kind).into_iter().collect();
        for seed in 0..200 {
            let planned = plan(seed, Duration::from_secs(60), kind);
            let seen: HashSet<FaultKind> = planned.iter().map(|p| p.kind).collect();
            let missing: Vec<_> = all.difference(&seen).collect();
            assert!(
                missing.is_empty(),
                "{kind:?} seed {seed}: {missing:?} missing"
            );
            for p in &planned {
                assert!(p.at >= QUIET_START, "{p:?}");
                assert!(p.at + p.lasts <= Duration::from_secs(55), "{p:?}");
            }
            // Faults overlap: some start before the previous ends.
            assert!(
                planned.windows(2).any(|w| w[1].at < w[0].at + w[0].lasts),
                "{kind:?} seed {seed}: no overlap"
            );
        }
    }
}

#[test]
fn nemesis_kind_names_are_distinct() {
    for kind in KINDS {
        let kinds = FaultKind::all(kind);
        let names: HashSet<&str> = kinds.iter().map(FaultKind::name).collect();
        assert_eq!(names.len(), kinds.len());
    }
}

/// A fleet that counts what it was asked.
#[derive(Default)]
struct Stub {
    asked: AtomicU32,
}

impl FleetFaults for Stub {
    fn instances(&self) -> usize {
        3
    }
    fn loader_fail(&self, _: usize, _: u32) {
        self.asked.fetch_add(1, SeqCst);
    }
    fn loader_hang(&self, _: usize, _: u32) {
        self.asked.fetch_add(1, SeqCst);
    }
    fn loader_panic(&self, _: usize, _: u32) {
        self.asked.fetch_add(1, SeqCst);
    }
    fn writers(&self) -> usize {
        2
    }
    fn writer_stall(&self, _: usize, _: Duration) {
        self.asked.fetch_add(1, SeqCst);
    }
    fn writer_die(&self, _: usize) {
        self.asked.fetch_add(1, SeqCst);
    }
}

/// Two connections as the fleet user on the primary of `key`: one
/// plain, one tracking with its invalidations redirected to the
/// first, as push mode's are.
fn tracking_pair(topology: &Topology, key: &str) -> Vec<redis::Connection> {
    let url = match topology.kind() {
        Kind::Single => topology.url(),
        _ => user_url(topology.primary_for(key).unwrap()),
    };
    let a = connect(&url).unwrap();
    // The fleet user may not ask its own id: the newest of its
    // connections, as the default user sees them, is `a`.
    let mut admin = admin(topology.primary_for(key).unwrap()).unwrap();
    let id = client_list(&mut admin)
        .unwrap()
        .iter()
        .filter(|c| c.get("user").map(String::as_str) == Some(USER))
        .filter_map(|c| c.get("id")?.parse::<u64>().ok())
        .max()
        .unwrap();
    let mut b = connect(&url).unwrap();
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("REDIRECT")
        .arg(id)
        .query::<()>(&mut b)
        .unwrap();
    vec![a, b]
}

/// Applies every kind of `kind`'s schedule once through `inject`,
/// heals, and checks: the kinds skipped are exactly `skippable`, the
/// fleet was asked its faults, and the fleet user reads its key on a
/// healthy deployment.
async fn smoke(kind: Kind, skippable: &[FaultKind]) {
    let topology = Arc::new(Mutex::new(Topology::start(kind).await.unwrap()));
    let keys = vec![
        "gensync:chaos".to_owned(),
        "{gensync:chaos-keyed}parent".to_owned(),
    ];
    let fleet = Arc::new(Stub::default());
    let ctx = Ctx {
        topology: topology.clone(),
        fleet: fleet.clone(),
        keys: Arc::new(keys.clone()),
    };
    let recorder = Recorder::new();
    let kinds = FaultKind::all(kind);
    let (mut tracking, mut data) = (Vec::new(), Vec::new());
    for (i, fault) in kinds.iter().enumerate() {
        if *fault == FaultKind::ClientKillTracking || *fault == FaultKind::ClientKillData {
            let t = topology.clone();
            let key = keys[0].clone();
            let pair = tokio::task::spawn_blocking(move || tracking_pair(&t.lock().unwrap(), &key))
                .await
                .unwrap();
            // Held open until its fault: a connection to kill.
            match *fault == FaultKind::ClientKillTracking {
                true => tracking = pair,
                false => data = pair,
            }
        }
        let planned = Planned {
            at: Duration::ZERO,
            kind: *fault,
            lasts: Duration::from_millis(300),
            // Not 0 mod 4: the primary holding the first key.
            pick: 1 + 16 * i as u64,
        };
        inject(&ctx, &planned, &recorder).await;
    }
    heal(&topology, &keys).await;
    drop(data);

    let faults = faults(&recorder);
    assert_eq!(faults.len(), kinds.len());
    let skipped: HashSet<String> = faults
        .iter()
        .filter(|f| f.detail.starts_with("skipped"))
        .map(|f| f.kind.clone())
        .collect();
    let expected: HashSet<String> = skippable
        .iter()
        .map(|k| format!("{}, skipped", k.name()))
        .collect();
    assert_eq!(skipped, expected, "{faults:#?}");
    // A killed node came back, and on Cluster the cluster was whole
    // again within the fault.
    for f in faults.iter().filter(|f| f.kind.starts_with("kill -9")) {
        assert!(f.detail.contains(", restarted "), "{f:?}");
        if kind == Kind::Cluster {
            assert!(f.detail.contains("the cluster whole after"), "{f:?}");
        }
    }
    assert_eq!(fleet.asked.load(SeqCst), 5);
    // gensync itself reads through the fleet's URL, as the fleet user.
    let url = topology.lock().unwrap().url();
    let backend = gensync::RedisBackend::open(&url).unwrap();
    let key: gensync::Key = "gensync:chaos".parse().unwrap();
    gensync::backend::Backend::get(&backend, &key)
        .await
        .unwrap();
    // Both pairs' tracking connections and their redirect targets
    // (the data fault's pair is still open then).
    let killed = faults
        .iter()
        .find(|f| f.kind == FaultKind::ClientKillTracking.name())
        .unwrap();
    assert_eq!(killed.detail.matches(',').count(), 3, "{killed:?}");
    tokio::task::spawn_blocking(move || {
        let t = topology.lock().unwrap();
        t.healthy(&keys).unwrap();
        // The killed tracking connection and its redirect target
        // are gone.
        for mut conn in tracking {
            let ping: redis::RedisResult<()> = redis::cmd("GET").arg("x").query(&mut conn);
            assert!(ping.is_err(), "a killed connection still answers");
        }
    })
    .await
    .unwrap();
}

/// `run` snapshots the server while it goes; a kill restarting from an
/// older snapshot brings back the value that snapshot held, and the
/// record says which; the run ends healed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_run_restarts_from_an_older_snapshot() {
    restarts_from_an_older_snapshot(Kind::Single).await;
}

/// The same on Cluster: the key's primary, restarted in place from its
/// oldest snapshot, serves that snapshot's value in a whole cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_run_restarts_a_cluster_node_from_an_older_snapshot() {
    restarts_from_an_older_snapshot(Kind::Cluster).await;
}

async fn restarts_from_an_older_snapshot(kind: Kind) {
    let topology = Arc::new(Mutex::new(Topology::start(kind).await.unwrap()));
    let (dir, admin_url) = {
        let t = topology.lock().unwrap();
        let server = t.primary_for("gensync:chaos").unwrap();
        (server.dir().to_path_buf(), server.url())
    };
    let set = move |value: u64| {
        let url = admin_url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                redis::cmd("SET")
                    .arg("gensync:chaos")
                    .arg(value)
                    .query::<()>(&mut connect(&url).unwrap())
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    set(1).await;
    let recorder = Recorder::new();
    let planned = vec![Planned {
        at: Duration::from_millis(2500),
        kind: FaultKind::KillOlder,
        lasts: Duration::from_millis(200),
        // The key's primary (not 0 mod 4), the oldest of the one or
        // two snapshots taken by then.
        pick: 2,
    }];
    let keys = vec!["gensync:chaos".to_owned()];
    let running = tokio::spawn(run(
        planned,
        topology.clone(),
        Arc::new(Stub::default()),
        keys.clone(),
        recorder.clone(),
    ));
    // The first snapshot (taken at once) holds 1; what follows 2.
    let first = dir.join("snap-00000000.rdb");
    assert!(
        wait_for(Duration::from_secs(5), || {
            let exists = first.exists();
            async move { exists }
        })
        .await
    );
    set(2).await;
    running.await.unwrap();

    let fault = faults(&recorder).remove(0);
    assert_eq!(fault.kind, FaultKind::KillOlder.name());
    assert!(fault.detail.contains("from snap-00000000.rdb"), "{fault:?}");
    assert!(fault.start >= 2_500_000, "{fault:?}");
    if kind == Kind::Cluster {
        assert!(
            fault.detail.contains("the cluster whole after"),
            "{fault:?}"
        );
    }
    tokio::task::spawn_blocking(move || {
        let t = topology.lock().unwrap();
        t.healthy(&keys).unwrap();
        let url = match kind {
            Kind::Single => t.url(),
            _ => user_url(t.primary_for("gensync:chaos").unwrap()),
        };
        let value: Option<u64> = redis::cmd("GET")
            .arg("gensync:chaos")
            .query(&mut connect(&url).unwrap())
            .unwrap();
        assert_eq!(value, Some(1));
    })
    .await
    .unwrap();
}

/// A whole schedule, overlapping faults and all, runs on a single
/// server without aborting: every fault recorded, the deployment
/// healthy at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_run_of_a_schedule_records_every_fault_and_heals() {
    let topology = Arc::new(Mutex::new(Topology::start(Kind::Single).await.unwrap()));
    let planned = plan(7, Duration::from_secs(14), Kind::Single);
    let keys = vec!["gensync:chaos".to_owned()];
    let recorder = Recorder::new();
    run(
        planned.clone(),
        topology.clone(),
        Arc::new(Stub::default()),
        keys.clone(),
        recorder.clone(),
    )
    .await;
    assert_eq!(faults(&recorder).len(), planned.len());
    tokio::task::spawn_blocking(move || topology.lock().unwrap().healthy(&keys))
        .await
        .unwrap()
        .unwrap();
}

/// Faults left half done (as when the run ends mid-fault) are all
/// undone by `heal`: a command denied, a low maxmemory, a client
/// pause of writes, a stopped server, a slow and refusing proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_heal_undoes_faults_left_applied() {
    let topology = Arc::new(Mutex::new(Topology::start(Kind::Single).await.unwrap()));
    let ctx = Ctx {
        topology: topology.clone(),
        fleet: Arc::new(Stub::default()),
        keys: Arc::new(vec!["gensync:chaos".to_owned()]),
    };
    set_acl(&ctx, "-getrange".into()).await.unwrap();
    locked(&topology, |t| {
        let server = t.primary_for("gensync:chaos")?;
        let mut low = redis::cmd("CONFIG");
        low.arg("SET").arg("maxmemory").arg(1 << 20);
        admin_query::<()>(server, &low)?;
        let mut pause = redis::cmd("CLIENT");
        // WRITE: a pause of ALL blocks `CLIENT UNPAUSE` too (Redis
        // 7.0), so the nemesis only ever pauses ALL for `lasts`.
        pause.arg("PAUSE").arg(600_000).arg("WRITE");
        admin_query::<()>(server, &pause)?;
        let pid = server.pid().unwrap();
        server.pause().map_err(|e| e.to_string())?;
        t.paused.insert(pid);
        let proxy = t.proxy().unwrap();
        proxy.set_latency(Duration::from_secs(2));
        proxy.refuse(true);
        Ok(())
    })
    .await
    .unwrap();

    heal(&topology, &ctx.keys).await;
    tokio::task::spawn_blocking(move || {
        let t = topology.lock().unwrap();
        let mut conn = connect(&t.url()).unwrap();
        let began = std::time::Instant::now();
        let read: redis::RedisResult<String> = redis::cmd("GETRANGE")
            .arg("gensync:chaos")
            .arg(0)
            .arg(19)
            .query(&mut conn);
        read.unwrap();
        redis::cmd("SET")
            .arg("gensync:chaos")
            .arg(1)
            .query::<()>(&mut conn)
            .unwrap();
        assert!(began.elapsed() < Duration::from_secs(1), "still slow");
        let server = t.primary_for("gensync:chaos").unwrap();
        let (_, maxmemory): (String, u64) =
            admin_query(server, redis::cmd("CONFIG").arg("GET").arg("maxmemory")).unwrap();
        assert_eq!(maxmemory, 0);
    })
    .await
    .unwrap();
}

/// While the Sentinel primary is killed and not failed over yet, a
/// pause (a fault a replica takes too) lands on the running replica
/// instead of being skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_pause_lands_on_the_replica_while_the_primary_is_down() {
    let topology = Arc::new(Mutex::new(Topology::start(Kind::Sentinel).await.unwrap()));
    let replica = locked(&topology, |t| {
        let Deployment::Sentinel(group) = t.deployment_mut() else {
            return Err("not a Sentinel group".into());
        };
        let replica = group.replica().map_err(|e| e.to_string())?.port();
        let old = group.kill_primary().map_err(|e| e.to_string())?;
        t.down = Some(old);
        Ok(replica)
    })
    .await
    .unwrap();
    let keys = vec!["gensync:chaos".to_owned()];
    let ctx = Ctx {
        topology: topology.clone(),
        fleet: Arc::new(Stub::default()),
        keys: Arc::new(keys.clone()),
    };
    let recorder = Recorder::new();
    let planned = Planned {
        at: Duration::ZERO,
        kind: FaultKind::Pause,
        lasts: Duration::from_millis(100),
        // Not 0 mod 4: the primary holding the key, which is down.
        pick: 1,
    };
    inject(&ctx, &planned, &recorder).await;
    let fault = faults(&recorder).remove(0);
    assert_eq!(fault.kind, FaultKind::Pause.name(), "{fault:?}");
    assert!(
        fault.detail.starts_with(&format!("node {replica} ")),
        "{fault:?}"
    );
    heal(&topology, &keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_smoke_single() {
    smoke(Kind::Single, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_smoke_sentinel() {
    smoke(Kind::Sentinel, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nemesis_smoke_cluster() {
    smoke(Kind::Cluster, &[]).await;
}
