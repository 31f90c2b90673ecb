//! The throwaway topologies of `gensync::testing` at the Redis level (no
//! gensync backend): each starts, takes a write, loses its primary, and the
//! replica that acknowledged the write takes over holding it.
//!
//! Each test prints how long its start and its failover took.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gensync::testing::{RedisCluster, RedisServer, SentinelGroup};

/// Generous: a failover is a few seconds, more on a loaded machine.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(60);

fn set(server: &RedisServer, key: &str, value: &str) {
    let mut connection = server.connection().unwrap();
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut connection)
        .unwrap();
    // The write is acknowledged by the replica: a failover must keep it.
    let acked: u32 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut connection)
        .unwrap();
    assert_eq!(acked, 1, "the replica did not acknowledge {key}");
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    let mut connection = server.connection().unwrap();
    redis::cmd("GET").arg(key).query(&mut connection).unwrap()
}

/// The processes are gone once their owner is dropped.
fn assert_gone(pids: &[u32]) {
    assert_eq!(
        pids.len(),
        pids.iter().collect::<std::collections::BTreeSet<_>>().len()
    );
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} outlived its owner"
        );
    }
}

#[test]
fn a_sentinel_group_promotes_the_replica_holding_the_acknowledged_write() {
    let started = Instant::now();
    let mut group = SentinelGroup::start().unwrap();
    eprintln!("sentinel group: started in {:?}", started.elapsed());

    assert_eq!(group.master_name(), "gensync");
    let addrs = group.sentinel_addrs();
    assert_eq!(addrs.len(), 3);
    let hosts: Vec<String> = addrs.iter().map(|(h, p)| format!("{h}:{p}")).collect();
    assert_eq!(
        group.url(),
        format!("redis+sentinel://{}/gensync", hosts.join(","))
    );
    let old = group.primary_port().unwrap();
    assert_eq!(group.primary().unwrap().port(), old);
    let replica = group.replica().unwrap().port();
    assert_ne!(replica, old);

    set(
        group.primary().unwrap(),
        "topo:written",
        "before the failover",
    );
    assert_eq!(group.kill_primary().unwrap(), old);
    let killed = Instant::now();
    let new = group.wait_for_failover(old, FAILOVER_TIMEOUT).unwrap();
    eprintln!("sentinel group: failed over in {:?}", killed.elapsed());

    assert_eq!(new, replica);
    assert_eq!(group.primary_port().unwrap(), new);
    let primary = group.primary().unwrap();
    assert_eq!(primary.port(), new);
    assert_eq!(
        get(primary, "topo:written").as_deref(),
        Some("before the failover")
    );
    // Promoted: it takes writes now.
    let mut connection = primary.connection().unwrap();
    let () = redis::cmd("SET")
        .arg("topo:after")
        .arg(1)
        .query(&mut connection)
        .unwrap();
    assert!(!group.replica().unwrap().is_running());

    let mut pids: Vec<u32> = group
        .sentinels_mut()
        .iter()
        .filter_map(|s| s.pid())
        .collect();
    pids.extend(group.primary().unwrap().pid());
    assert_eq!(pids.len(), 4);
    drop(group);
    assert_gone(&pids);
}

#[test]
fn a_sentinel_group_with_a_password_tells_the_sentinels_and_the_url() {
    let started = Instant::now();
    // The sentinels learn of the replica from the primary's INFO, which
    // needs the password: starting at all says `auth-pass` works.
    let group = SentinelGroup::start_with_password("s3cret").unwrap();
    eprintln!(
        "sentinel group with a password: started in {:?}",
        started.elapsed()
    );

    assert!(
        group
            .url()
            .starts_with("redis+sentinel://:s3cret@127.0.0.1:"),
        "{}",
        group.url()
    );
    let primary = group.primary().unwrap();
    let anonymous = format!("redis://127.0.0.1:{}", primary.port());
    let mut connection = redis::Client::open(anonymous)
        .unwrap()
        .get_connection()
        .unwrap();
    let refused: redis::RedisResult<Option<String>> =
        redis::cmd("GET").arg("topo:k").query(&mut connection);
    let err = refused.unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err:?}");
    set(primary, "topo:k", "v");
    assert_eq!(
        get(group.replica().unwrap(), "topo:k").as_deref(),
        Some("v")
    );
}

#[test]
fn a_cluster_fails_over_one_shard_while_the_others_keep_answering() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start().unwrap();
    eprintln!("cluster: started in {:?}", started.elapsed());

    let ports: Vec<u16> = cluster.nodes().iter().map(RedisServer::port).collect();
    assert_eq!(ports.len(), 6);
    let seeds: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    assert_eq!(cluster.seeds(), seeds);
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(
        cluster.url(),
        format!("redis+cluster://{}", hosts.join(","))
    );

    let key = "topo:failing";
    let old = cluster.primary_for(key).unwrap();
    let replica = cluster.replica_of(old).unwrap();
    assert_ne!(replica, old);
    // A key on each of the other two shards.
    let mut others = BTreeMap::new();
    for i in 0.. {
        let other = format!("topo:other:{i}");
        let port = cluster.primary_for(&other).unwrap();
        if port != old {
            others.entry(port).or_insert(other);
        }
        if others.len() == 2 {
            break;
        }
    }

    set(cluster.node(old).unwrap(), key, "before the failover");
    for (port, other) in &others {
        set(cluster.node(*port).unwrap(), other, "elsewhere");
    }
    let other_urls: Vec<(String, String)> = others
        .iter()
        .map(|(port, other)| (cluster.node(*port).unwrap().url(), other.clone()))
        .collect();

    assert_eq!(cluster.kill_primary_for(key).unwrap(), old);
    let killed = Instant::now();
    // The other shards answer all through the failover.
    let done = AtomicBool::new(false);
    let (new, reads) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut connections: Vec<_> = other_urls
                .iter()
                .map(|(url, other)| {
                    let connection = redis::Client::open(url.as_str())
                        .unwrap()
                        .get_connection()
                        .unwrap();
                    connection
                        .set_read_timeout(Some(Duration::from_secs(2)))
                        .unwrap();
                    (connection, other)
                })
                .collect();
            let mut reads = 0;
            while !done.load(Ordering::Relaxed) {
                for (connection, other) in &mut connections {
                    let value: Option<String> = redis::cmd("GET")
                        .arg(other.as_str())
                        .query(connection)
                        .unwrap_or_else(|e| panic!("{other} during the failover: {e}"));
                    assert_eq!(value.as_deref(), Some("elsewhere"));
                    reads += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            reads
        });
        let new = cluster.wait_for_failover(key, old, FAILOVER_TIMEOUT);
        done.store(true, Ordering::Relaxed);
        (new, reader.join().unwrap())
    });
    let new = new.unwrap();
    eprintln!(
        "cluster: failed over in {:?} ({reads} reads from the other shards meanwhile)",
        killed.elapsed()
    );
    assert!(reads > 0);

    assert_eq!(new, replica);
    assert_eq!(cluster.primary_for(key).unwrap(), new);
    assert_eq!(
        get(cluster.node(new).unwrap(), key).as_deref(),
        Some("before the failover")
    );
    let mut connection = cluster.node(new).unwrap().connection().unwrap();
    let () = redis::cmd("SET")
        .arg(key)
        .arg("after")
        .query(&mut connection)
        .unwrap();

    let pids: Vec<u32> = cluster
        .nodes()
        .iter()
        .filter_map(RedisServer::pid)
        .collect();
    assert_eq!(pids.len(), 5);
    drop(cluster);
    assert_gone(&pids);
}
