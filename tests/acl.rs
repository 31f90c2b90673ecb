//! Least privilege, as documented: each role runs with exactly the ACL
//! that SECURITY.md's table gives it (the test reads the table, so the
//! document and the test cannot drift apart), and with any one command of
//! it taken away gets an error naming that command and the rule to add,
//! while the shared generation is never deleted or rewritten and readers
//! keep serving their last good settings. One redis-server per test.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gensync::backend::BackendErrorKind;
use gensync::reload::{CheckMode, Reloader};
use gensync::testing::RedisServer;
use gensync::{
    BlockingRedisBackend, BlockingSynchronizer, Error, GenerationSynchronizer, Key, RedisBackend,
    Synchronizer,
};

const PASSWORD: &str = "acl-test-pw-7Qx";

/// A role's documented `ACL SETUSER` rules, read from SECURITY.md's
/// least-privilege table: the row whose first cell starts with `**id**`.
fn documented(id: &str) -> Vec<String> {
    let doc = include_str!("../SECURITY.md");
    let row = doc
        .lines()
        .find(|l| l.starts_with(&format!("| **{id}**")))
        .unwrap_or_else(|| panic!("SECURITY.md has no row for {id}"));
    let line = row
        .split('`')
        .find(|cell| cell.starts_with("ACL SETUSER"))
        .unwrap_or_else(|| panic!("the {id} row has no ACL SETUSER line"));
    line.split_whitespace().skip(3).map(str::to_owned).collect()
}

/// `rules` with `+command` taken away.
fn without(rules: &[String], command: &str) -> Vec<String> {
    let rule = format!("+{command}");
    rules.iter().filter(|r| **r != rule).cloned().collect()
}

/// The commands a rule list allows (`+getrange` → `getrange`).
fn commands(rules: &[String]) -> Vec<String> {
    rules
        .iter()
        .filter_map(|r| r.strip_prefix('+'))
        .map(str::to_owned)
        .collect()
}

struct Server {
    server: RedisServer,
    admin: redis::Connection,
}

impl Server {
    fn start() -> Self {
        let server = RedisServer::start().expect("redis-server");
        let admin = server.connection().unwrap();
        Server { server, admin }
    }

    /// Makes user `app` afresh with exactly `rules`, the password set.
    fn user(&mut self, rules: &[String]) {
        user_on(&self.server, "app", rules);
    }

    fn url(&self) -> String {
        format!("redis://app:{PASSWORD}@127.0.0.1:{}", self.server.port())
    }

    fn raw_get(&mut self, key: &Key) -> Option<String> {
        redis::cmd("GET")
            .arg(key.as_str())
            .query(&mut self.admin)
            .unwrap()
    }

    /// How many times the server ran `command` so far.
    fn calls(&mut self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.admin)
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// A full-rights writer's bump of `key`, as another process's.
    async fn bump(&self, key: &Key) -> gensync::Generation {
        let backend =
            RedisBackend::with_config(&self.server.url(), support::patient_config()).expect("URL");
        Synchronizer::new(backend, key.clone())
            .mark_updated()
            .await
            .unwrap()
    }
}

fn backend(url: &str) -> RedisBackend {
    RedisBackend::with_config(url, support::patient_config()).expect("URL")
}

/// Whether `error` is the ACL's refusal of `command`, saying what to add.
fn names(error: &Error, command: &str) -> bool {
    let text = error.to_string();
    matches!(error, Error::Backend(e) if e.kind() == BackendErrorKind::Denied && e.rule() == Some(format!("+{command}").as_str()))
        && text.contains(&format!("'{command}'"))
        && text.contains("ACL SETUSER")
        && !text.contains(PASSWORD)
}

/// A strict or interval reader over the app user: its source a number
/// the test moves.
fn reader(url: &str, key: &Key, mode: CheckMode, db: &Arc<AtomicU64>) -> Reloader<u64> {
    let db = Arc::clone(db);
    Reloader::builder(Synchronizer::new(backend(url), key.clone()), move || {
        let v = db.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .mode(mode)
    .build(0)
    .unwrap()
}

/// A reader with its documented ACL, in each mode that reads: loads the
/// settings, and after another process's bump, the new ones, as current.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_runs_with_exactly_its_documented_acl() {
    let mut s = Server::start();
    s.user(&documented("reader"));
    for (i, mode) in [
        CheckMode::Strict,
        CheckMode::Interval(Duration::from_millis(1)),
    ]
    .into_iter()
    .enumerate()
    {
        let key = Key::new(["acl", "reader", &i.to_string()]).unwrap();
        s.bump(&key).await;
        let db = Arc::new(AtomicU64::new(1));
        let reader = reader(&s.url(), &key, mode, &db);
        assert_eq!(*reader.check().await, 1);
        db.store(2, Ordering::SeqCst);
        let bumped = s.bump(&key).await;
        let served = loop {
            let served = reader.check().await;
            if *served == 2 || !matches!(mode, CheckMode::Interval(_)) {
                break served;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        assert_eq!(*served, 2, "{mode:?}: the bump was missed");
        assert_eq!(
            reader.synchronizer().sync_gen(),
            reader.synchronizer().check().await.observed(),
            "{mode:?}: serves the new settings as current"
        );
        assert_eq!(served.generation(), Some(bumped), "{mode:?}");
        assert_eq!(reader.metrics().backend_errors, 0, "{mode:?}");
    }

    // The blocking path, the same user.
    let key = Key::new(["acl", "reader", "blocking"]).unwrap();
    let created = s.bump(&key).await;
    let url = s.url();
    let observed = tokio::task::spawn_blocking(move || {
        let backend = BlockingRedisBackend::with_config(&url, support::patient_config()).unwrap();
        let sync = BlockingSynchronizer::new(backend, key);
        sync.read()
    })
    .await
    .unwrap()
    .expect("the blocking reader reads with the reader's ACL");
    assert_eq!(observed, gensync::backend::Stored::Value(created));
}

/// One reader per command the reader's ACL holds, each with that command
/// taken away: the check reads as expired, the last good settings are
/// served, the read's error names the command and the rule to add, and
/// the shared generation is never deleted or rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_denied_any_one_command_changes_nothing_and_names_it() {
    let mut s = Server::start();
    let rules = documented("reader");
    for command in commands(&rules) {
        if command == "info" {
            // Not needed to read: what its absence costs is tested below.
            continue;
        }
        let key = Key::new(["acl", "denied", &command]).unwrap();
        s.user(&documented("reader"));
        let db = Arc::new(AtomicU64::new(1));
        let readers: Vec<_> = (0..3)
            .map(|_| reader(&s.url(), &key, CheckMode::Strict, &db))
            .collect();
        s.bump(&key).await;
        let created = s.raw_get(&key);
        for reader in &readers {
            assert_eq!(*reader.check().await, 1);
        }
        let fewer = without(&rules, &command);
        s.user(&fewer);
        let dels = s.calls("del");
        let (sets, incrs) = (s.calls("set"), s.calls("incrby"));
        db.store(2, Ordering::SeqCst);
        let runs: Vec<u64> = readers.iter().map(|r| r.metrics().loader_runs).collect();
        for _ in 0..50 {
            for reader in &readers {
                let served = reader.check().await;
                // The source may be read again (after a backoff), but what
                // is served is never vouched for as current.
                assert_eq!(
                    served.generation(),
                    None,
                    "denied {command}: settings served as current"
                );
            }
        }
        for (reader, before) in readers.iter().zip(runs) {
            let metrics = reader.metrics();
            assert!(
                metrics.loader_runs - before <= 2,
                "denied {command}: {} loads for 50 checks: a reload storm",
                metrics.loader_runs - before
            );
            assert!(metrics.backend_errors > 0, "denied {command}: not counted");
            let check = reader.synchronizer().check().await;
            assert!(check.is_expired(), "denied {command}: reads as expired");
            let error = reader.synchronizer().read().await.unwrap_err();
            assert!(names(&error, &command), "denied {command}: {error}");
        }
        assert_eq!(
            s.raw_get(&key),
            created,
            "denied {command}: the shared generation changed"
        );
        assert_eq!(s.calls("del"), dels, "denied {command}: something deleted");
        assert_eq!(
            (s.calls("set"), s.calls("incrby")),
            (sets, incrs),
            "denied {command}: something written"
        );
    }
}

/// A writer (`publish` under the lease, with its intent) with its
/// documented ACL bumps; with any one command of it taken away it is told
/// the command and the rule to add (or, for a renewal's command, which
/// fails no write that still holds its lease, the log says so), and the
/// generation is never deleted. On this thread, so the log is captured.
#[tokio::test]
async fn a_writer_runs_with_exactly_its_documented_acl_and_is_told_what_is_missing() {
    let logs = support::LogCapture::default();
    let _capture = logs.install();
    let mut s = Server::start();
    let rules = documented("writer");
    s.user(&rules);
    let key = Key::new(["acl", "writer"]).unwrap();
    let write = |url: String, key: Key| async move {
        let reloader = Reloader::builder(Synchronizer::new(backend(&url), key), || async {
            Ok::<_, std::io::Error>(0u64)
        })
        // A save that outlasts a third of the lease, so the lease (and
        // the intent) is renewed once: every script is sent.
        .saver(|_: &u64| async {
            tokio::time::sleep(Duration::from_millis(150)).await;
            Ok::<_, std::io::Error>(())
        })
        .write_lock(Duration::from_millis(300), 40)
        .build(0)
        .unwrap();
        reloader.publish(7).await
    };
    // The key missing (a create), then present (a bump), with a stray
    // lease of no lifetime and an intents key of another type planted, so
    // every command of the writer's scripts is sent.
    let plant = |s: &mut Server, key: &Key| {
        redis::pipe()
            .cmd("SET")
            .arg(key.companion("lock").as_str())
            .arg("stray")
            .cmd("SET")
            .arg(key.companion("intents").as_str())
            .arg("not a zset")
            .query::<()>(&mut s.admin)
            .unwrap();
    };
    plant(&mut s, &key);
    let created = write(s.url(), key.clone()).await.expect("a create");
    plant(&mut s, &key);
    let stored = s.raw_get(&key);
    let bumped = write(s.url(), key.clone()).await.expect("a bump");
    assert_ne!(created, bumped);
    assert!(
        s.raw_get(&key).is_some() && s.raw_get(&key) != stored,
        "bumped"
    );
    let sent =
        |s: &mut Server| -> Vec<u64> { commands(&rules).iter().map(|c| s.calls(c)).collect() };
    let _ = sent(&mut s);

    for command in commands(&rules) {
        if command == "info" {
            continue;
        }
        s.user(&rules);
        let key = Key::new(["acl", "writer", &command]).unwrap();
        // First a create, then a bump: one of the two sends the command.
        let mut denied = None;
        let logged = logs.text().len();
        for _ in 0..2 {
            plant(&mut s, &key);
            let fewer = without(&rules, &command);
            s.user(&fewer);
            let before = s.raw_get(&key);
            let outcome = write(s.url(), key.clone()).await;
            let after = s.raw_get(&key);
            // The lease and a wrong-typed intents key are deleted as they
            // should be; the generation never is.
            assert!(
                after.is_some() || before.is_none(),
                "denied {command}: the generation was deleted"
            );
            s.user(&rules);
            match outcome {
                Ok(_) => {}
                Err(e) => {
                    denied = Some(e.to_string());
                    break;
                }
            }
        }
        let log = logs.text()[logged..].to_owned();
        let denied = denied.or_else(|| log.contains(&format!("'{command}'")).then_some(log));
        let denied = denied.unwrap_or_else(|| panic!("denied {command}: the writer never noticed"));
        assert!(
            denied.contains(&format!("'{command}'"))
                && denied.contains(&format!("+{command}"))
                && !denied.contains(PASSWORD),
            "denied {command}: {denied}"
        );
    }
}

/// Makes user `name` with exactly `rules` on `server`.
fn user_on(server: &RedisServer, name: &str, rules: &[String]) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER").arg(name).arg("reset");
    for rule in rules {
        cmd.arg(rule.replace(">PASSWORD", &format!(">{PASSWORD}")));
    }
    cmd.query::<()>(&mut server.connection().unwrap())
        .unwrap_or_else(|e| panic!("ACL SETUSER {rules:?}: {e}"));
}

/// A reader over `reader_url` and a writer over `writer_url`, each its
/// own user: the writer's create and bump reach the reader as current.
async fn reader_and_writer_over(reader_url: &str, writer_url: &str, key: &Key) {
    let db = Arc::new(AtomicU64::new(1));
    let reader = reader(reader_url, key, CheckMode::Strict, &db);
    let writer = Reloader::builder(
        Synchronizer::new(backend(writer_url), key.clone()),
        || async { Ok::<_, std::io::Error>(0u64) },
    )
    .saver(|_: &u64| async { Ok::<_, std::io::Error>(()) })
    .build(0)
    .unwrap();
    writer
        .publish(0)
        .await
        .expect("a create with the writer's ACL");
    assert_eq!(*reader.check().await, 1, "{key}");
    db.store(2, Ordering::SeqCst);
    let bumped = writer
        .publish(0)
        .await
        .expect("a bump with the writer's ACL");
    assert_eq!(*reader.check().await, 2, "{key}");
    assert_eq!(reader.synchronizer().sync_gen(), Some(bumped), "{key}");
    assert_eq!(reader.metrics().backend_errors, 0, "{key}");
}

/// The user `name` with password [`PASSWORD`] in a multi-host `url`.
fn as_user(url: &str, name: &str) -> String {
    url.replacen("://", &format!("://{name}:{PASSWORD}@"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_roles_run_with_exactly_their_documented_acl() {
    let group = gensync::testing::SentinelGroup::start().expect("a Sentinel group");
    for node in [group.primary().unwrap(), group.replica().unwrap()] {
        user_on(node, "reader", &documented("sentinel-reader"));
        user_on(node, "writer", &documented("sentinel-writer"));
    }
    let key = Key::new(["acl", "sentinel"]).unwrap();
    let url = group.url();
    reader_and_writer_over(&as_user(&url, "reader"), &as_user(&url, "writer"), &key).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_roles_run_with_exactly_their_documented_acl() {
    let cluster = gensync::testing::RedisCluster::start().expect("a Cluster");
    for node in cluster.nodes() {
        user_on(node, "reader", &documented("cluster-reader"));
        user_on(node, "writer", &documented("cluster-writer"));
    }
    let url = cluster.url();
    let keys = support::keys_on_every_shard(&cluster);
    for key in keys.iter().take(3) {
        reader_and_writer_over(&as_user(&url, "reader"), &as_user(&url, "writer"), key).await;
    }

    // A reader denied any one command of its line is told which.
    let rules = documented("cluster-reader");
    for command in commands(&rules) {
        if command == "info" || command == "exists" {
            // `info`: sampled, and its absence costs a reload, not a
            // read; `exists`: sent only for an empty value.
            continue;
        }
        let fewer = without(&rules, &command);
        for node in cluster.nodes() {
            user_on(node, "reader", &fewer);
        }
        let sync = Synchronizer::new(backend(&as_user(&url, "reader")), keys[0].clone());
        let error = sync.read().await.unwrap_err();
        assert!(names(&error, &command), "denied {command}: {error}");
        assert!(sync.check().await.is_expired());
    }
}

/// A keyed member, read with its parent in one script: with the keyed
/// reader's line it is served as current after a bump; with any one
/// command fewer the pair's read names it, the member's last good
/// settings are served but not as current, and neither generation
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_reader_runs_with_exactly_its_documented_acl() {
    use gensync::backend::Backend;
    use gensync::keyed::KeyedReloader;

    let mut s = Server::start();
    let rules = documented("keyed-reader");
    let parent = Key::new(["acl", "tenants"]).unwrap();
    let value = Arc::new(AtomicU64::new(1));
    let keyed = |url: &str| {
        let value = Arc::clone(&value);
        KeyedReloader::builder(
            backend(url),
            parent.clone(),
            |tenant: &String| tenant.clone(),
            move |_tenant: String| {
                let v = value.load(Ordering::SeqCst);
                async move { Ok::<_, std::io::Error>(v) }
            },
        )
        .saver(
            |_tenant: String, _value: &u64, _fence: gensync::backend::Fence| async {
                Ok::<_, std::io::Error>(())
            },
        )
        .build()
        .unwrap()
    };
    let writer = keyed(&s.server.url());
    let tenant = "acme".to_owned();
    writer.publish(&tenant, 1).await.unwrap();
    s.user(&rules);
    let reader = keyed(&s.url());
    assert_eq!(*reader.check(&tenant).await.unwrap(), 1);
    value.store(2, Ordering::SeqCst);
    writer.publish(&tenant, 2).await.unwrap();
    let served = reader.check(&tenant).await.unwrap();
    assert_eq!(*served, 2);
    assert!(served.generation().is_some(), "served as current");
    assert_eq!(reader.metrics().backend_errors, 0);

    let member = reader.key_of(&tenant).unwrap();
    let before = (s.raw_get(&member), s.raw_get(&parent));
    for command in commands(&rules) {
        if command == "info" || command == "exists" {
            // `exists` is sent only for an empty value; `info` is not
            // needed to read (see the reader's test).
            continue;
        }
        let fewer = without(&rules, &command);
        s.user(&fewer);
        let error = backend(&s.url())
            .get_with_parent(&member, &parent)
            .await
            .unwrap_err();
        assert!(
            names(&Error::Backend(error.clone()), &command),
            "denied {command}: {error}"
        );
        let errors = reader.metrics().backend_errors;
        let served = reader.check(&tenant).await.unwrap();
        assert_eq!(*served, 2, "denied {command}: the last good settings");
        assert_eq!(
            served.generation(),
            None,
            "denied {command}: served as current"
        );
        assert!(reader.metrics().backend_errors > errors, "denied {command}");
        assert_eq!(
            (s.raw_get(&member), s.raw_get(&parent)),
            before,
            "denied {command}"
        );
        s.user(&rules);
    }
}

/// Push mode with the push reader's line arms and hears a bump without a
/// read; with any one command fewer it never vouches (a denied read
/// fails strict reads too), and the generation never changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reader_runs_with_exactly_its_documented_acl() {
    let mut s = Server::start();
    let rules = documented("push-reader");
    let key = Key::new(["acl", "push"]).unwrap();
    s.bump(&key).await;
    s.user(&rules);
    let db = Arc::new(AtomicU64::new(1));
    let armed = reader(&s.url(), &key, CheckMode::Push, &db);
    support::push_armed(&armed, Duration::from_secs(10)).await;
    db.store(2, Ordering::SeqCst);
    let bumped = s.bump(&key).await;
    let mut settings = armed.subscribe();
    tokio::time::timeout(Duration::from_secs(10), settings.wait_for(|s| **s == 2))
        .await
        .expect("the push brought the bump")
        .unwrap();
    support::push_armed(&armed, Duration::from_secs(10)).await;
    assert_eq!(armed.synchronizer().sync_gen(), Some(bumped));

    for command in commands(&rules) {
        if command == "info" {
            continue;
        }
        let key = Key::new(["acl", "push", &command]).unwrap();
        s.bump(&key).await;
        let created = s.raw_get(&key);
        let fewer = without(&rules, &command);
        s.user(&fewer);
        let reader = reader(&s.url(), &key, CheckMode::Push, &db);
        for _ in 0..20 {
            reader.check().await;
            assert_eq!(
                reader.synchronizer().vouched(),
                None,
                "denied {command}: push vouched"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(s.raw_get(&key), created, "denied {command}");
        s.user(&rules);
    }
}

/// The `gensync` command with the documented line: every subcommand
/// works; with `eval` taken away, `bump` exits 2 naming it and the
/// generation is left as it was.
#[tokio::test]
async fn the_command_runs_with_exactly_its_documented_acl() {
    use support::cli::{gensync, run, tempdir};

    let mut s = Server::start();
    let rules = documented("cli");
    s.user(&rules);
    let url = s.url();
    let cli = |args: &[&str]| run(gensync().arg("--url").arg(&url).args(args));
    let bumped = cli(&["bump", "acl:cli"]);
    assert_eq!(bumped.code, Some(0), "bump: {}", bumped.all());
    let got = cli(&["get", "acl:cli"]);
    assert_eq!(
        (got.code, got.stdout.clone()),
        (Some(0), bumped.stdout.clone()),
        "get: {}",
        got.all()
    );
    let dir = tempdir();
    let state = dir.path().join("state");
    let synced = cli(&[
        "sync",
        "--state",
        state.to_str().unwrap(),
        "acl:cli",
        "--",
        "true",
    ]);
    assert_eq!(synced.code, Some(0), "sync: {}", synced.all());
    assert!(
        !synced.stderr.contains("cannot tell"),
        "sync learnt the server: {}",
        synced.stderr
    );
    let member = cli(&["--member", "acme", "bump", "acl:tenants"]);
    assert_eq!(member.code, Some(0), "member bump: {}", member.all());
    let member = cli(&["--member", "acme", "get", "acl:tenants"]);
    assert_eq!(member.code, Some(0), "member get: {}", member.all());
    for args in [&["break-lock", "acl:cli"][..], &["clear", "acl:cli"]] {
        let out = cli(args);
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.all());
    }

    let key = Key::new(["acl", "cli"]).unwrap();
    cli(&["bump", "acl:cli"]);
    let before = s.raw_get(&key);
    s.user(&without(&rules, "eval"));
    let denied = cli(&["bump", "acl:cli"]);
    assert_eq!(denied.code, Some(2), "{}", denied.all());
    assert!(
        denied.stderr.contains("'eval'") && denied.stderr.contains("+eval"),
        "{}",
        denied.stderr
    );
    assert!(!denied.all().contains(PASSWORD));
    assert_eq!(s.raw_get(&key), before, "nothing written");
}

/// The reproduction: a user with every command but `STRLEN` and
/// three strict readers, no writer. Reads no longer send `STRLEN` (they
/// did inside a script, whose denial read as a corrupt value that readers
/// deleted: the generation changed hundreds of times a second); the
/// shared generation stays as it was and nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_denied_strlen_leaves_the_generation_alone() {
    let mut s = Server::start();
    let key = Key::new(["acl", "strlen"]).unwrap();
    s.bump(&key).await;
    let created = s.raw_get(&key);
    s.user(&[
        "on".into(),
        ">PASSWORD".into(),
        "~*".into(),
        "+@all".into(),
        "-strlen".into(),
    ]);
    let db = Arc::new(AtomicU64::new(1));
    let readers: Vec<_> = (0..3)
        .map(|_| reader(&s.url(), &key, CheckMode::Strict, &db))
        .collect();
    let dels = s.calls("del");
    for _ in 0..200 {
        for reader in &readers {
            assert!(
                reader.check().await.generation().is_some(),
                "served as current"
            );
        }
    }
    assert_eq!(s.raw_get(&key), created, "the shared generation changed");
    assert_eq!(s.calls("del"), dels, "readers deleted something");
    for reader in &readers {
        assert_eq!(reader.metrics().loader_runs, 1, "one load each");
        assert_eq!(reader.metrics().backend_errors, 0);
    }
}
