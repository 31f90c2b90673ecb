//! `rediss://` as it is deployed, against a real TLS redis-server with a
//! private CA: the CA trusted from a file on both paths and in push mode,
//! client certificates, the errors a certificate problem gives, files
//! refused at open, and the command's flags; and `rediss+sentinel://` and
//! `rediss+cluster://` against a Sentinel group and a cluster that speak
//! only TLS.

#![cfg(feature = "tls")]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gensync::backend::BackendErrorKind;
use gensync::backend::Stored;
use gensync::reload::{CheckMode, Reloader};
use gensync::testing::{RedisCluster, RedisServer, SentinelGroup, TlsCerts};
use gensync::{
    BackendError, BlockingRedisBackend, BlockingSynchronizer, Error, Generation,
    GenerationSynchronizer, Key, RedisBackend, RedisConfig, Synchronizer,
};

/// Long enough that only a broken promise reaches it.
const PATIENCE: Duration = Duration::from_secs(10);
/// A failover's worst case on a loaded 2-core machine, with room to spare.
const FAILOVER: Duration = Duration::from_secs(30);

fn key() -> Key {
    Key::new(["tls", "settings"]).unwrap()
}

/// Timeouts a busy test machine does not reach; a TLS handshake is slower
/// than a plain connect.
fn patient() -> RedisConfig {
    RedisConfig::default()
        .connect_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(2))
        .heartbeat(Duration::from_millis(50))
}

fn trusting(certs: &TlsCerts) -> RedisConfig {
    patient().tls_ca_file(certs.ca())
}

/// Certificates, and a TLS server that requires a client certificate
/// when `require_client_cert`.
fn tls_server(require_client_cert: bool) -> (TlsCerts, RedisServer) {
    let certs = TlsCerts::generate().unwrap();
    let server = RedisServer::start_tls(certs.redis_args(require_client_cert)).unwrap();
    (certs, server)
}

fn tls_url(server: &RedisServer) -> String {
    server.tls_url().expect("started with TLS")
}

#[tokio::test]
async fn a_private_ca_given_as_a_file_is_trusted_on_both_paths() {
    let (certs, server) = tls_server(false);
    both_paths_agree(&tls_url(&server), trusting(&certs), key()).await;
}

/// Bumps `key` on the async path and reads it on the blocking one, each
/// after a ping, with `config`: both see the one generation.
async fn both_paths_agree(url: &str, config: RedisConfig, key: Key) -> Generation {
    let backend = RedisBackend::with_config(url, config.clone()).unwrap();
    backend.ping().await.unwrap();
    let sync = Synchronizer::new(backend, key.clone());
    let bumped = sync.mark_updated().await.unwrap();

    let url = url.to_owned();
    let seen = tokio::task::spawn_blocking(move || {
        let blocking = BlockingRedisBackend::with_config(&url, config).unwrap();
        blocking.ping().unwrap();
        let sync = BlockingSynchronizer::new(blocking, key);
        sync.read().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(seen, Stored::Value(bumped), "both paths see one generation");
    bumped
}

/// Push mode's tracking connection is made by a client of its own: it
/// must carry the CA file too, or tracking would never arm over TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_mode_arms_over_tls_and_hears_a_bump() {
    let (certs, server) = tls_server(false);
    push_hears_a_bump(&tls_url(&server), trusting(&certs)).await;
}

/// A push-mode reloader of [`key`] on `url` with `config` arms its
/// tracking, and hears a bump another backend makes; returned, so its
/// tracking connection stays open for the caller to find.
async fn push_hears_a_bump(url: &str, config: RedisConfig) -> Reloader<u64> {
    let source = Arc::new(AtomicU64::new(1));
    let loaded = Arc::clone(&source);
    let backend = RedisBackend::with_config(url, config.clone()).unwrap();
    let reloader = Reloader::builder(Synchronizer::new(backend, key()), move || {
        let v = loaded.load(Ordering::SeqCst);
        async move { Ok::<_, std::io::Error>(v) }
    })
    .mode(CheckMode::Push)
    .build(0)
    .unwrap();

    support::push_armed(&reloader, PATIENCE).await;

    source.store(2, Ordering::SeqCst);
    let writer = RedisBackend::with_config(url, config).unwrap();
    Synchronizer::new(writer, key())
        .mark_updated()
        .await
        .unwrap();
    let mut settings = reloader.subscribe();
    tokio::time::timeout(PATIENCE, settings.wait_for(|s| **s == 2))
        .await
        .expect("the bump was pushed over TLS")
        .unwrap();
    reloader
}

/// Asserts the data node `node` has no plain port (`port 0`): whatever
/// reached it came over TLS.
fn tls_only(node: &RedisServer) {
    let mut conn = node.connection().unwrap();
    let (_, port): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query(&mut conn)
        .unwrap();
    assert_eq!(port, "0", "{} has a plain port", node.url());
}

/// Whether a client of `node` has key tracking on (`t` in its `CLIENT
/// LIST` flags): push mode's connection.
fn tracks_on(node: &RedisServer) -> bool {
    let mut conn = node.connection().unwrap();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    clients.lines().any(|client| {
        client
            .split(' ')
            .find_map(|field| field.strip_prefix("flags="))
            .is_some_and(|flags| flags.contains('t'))
    })
}

/// Through sentinels that speak only TLS, to data nodes that do too: the
/// sentinels' clients, the primary's and push mode's all carry the CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_sentinel_group_serves_both_paths_and_push_mode() {
    let certs = TlsCerts::generate().unwrap();
    let mut group = SentinelGroup::start_tls(&certs, false).unwrap();
    let url = group.url();
    assert!(url.starts_with("rediss+sentinel://"), "{url}");
    // The sentinels have no plain port either, but do not answer `CONFIG`.
    let primary = group.primary().unwrap();
    tls_only(primary);
    tls_only(group.replica().unwrap());

    both_paths_agree(&url, trusting(&certs), key()).await;
    let reloader = push_hears_a_bump(&url, trusting(&certs)).await;
    assert!(tracks_on(primary), "push mode tracks on the primary");
    drop(reloader);

    // The system's roots only: the sentinels' certificate is refused.
    for err in ping_errors(&url, patient()).await {
        assert_tls_error(&err, &["UnknownIssuer", "tls_ca_file"]);
    }

    // The sentinels promote the replica over TLS and name it at its TLS
    // port, the one it announced: new clients reach it there.
    let old = group.kill_primary().unwrap();
    let new = group.wait_for_failover(old, FAILOVER).unwrap();
    let promoted = group.primary().unwrap();
    assert_eq!(promoted.port(), new);
    let backend = RedisBackend::with_config(&url, trusting(&certs)).unwrap();
    backend.ping().await.unwrap();
    assert_eq!(backend.server_id(), Some(support::run_id(promoted)));
    both_paths_agree(&url, trusting(&certs), key()).await;
}

/// A cluster that speaks only TLS and requires client certificates: the
/// cluster client's connections to every shard and push mode's to the
/// key's owner carry the CA and the client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_requiring_client_certificates_serves_every_shard_and_push_mode() {
    let certs = TlsCerts::generate().unwrap();
    let cluster = RedisCluster::start_tls(&certs, true).unwrap();
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    for node in cluster.nodes() {
        tls_only(node);
    }
    let ours = trusting(&certs).tls_client_auth(certs.client_cert(), certs.client_key());

    for key in support::keys_on_every_shard(&cluster) {
        both_paths_agree(&url, ours.clone(), key).await;
    }

    let _reloader = push_hears_a_bump(&url, ours).await;
    let owner = cluster
        .node(cluster.primary_for(key().as_str()).unwrap())
        .unwrap();
    // The bump was heard, so a session tracked on its owner just now; a
    // loaded machine may have it redialling at this instant (a heartbeat
    // past its bound), so the owner is asked until it shows the session.
    let deadline = std::time::Instant::now() + PATIENCE;
    while !tracks_on(owner) {
        assert!(
            std::time::Instant::now() < deadline,
            "push mode tracks on the key's owner"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    for err in ping_errors(&url, trusting(&certs)).await {
        assert_tls_error(&err, &["requires a client certificate", "tls_client_auth"]);
    }
    for err in ping_errors(&url, patient()).await {
        assert_tls_error(&err, &["UnknownIssuer", "tls_ca_file"]);
    }
}

/// The error both paths give for `url` with `config`, after a ping.
async fn ping_errors(url: &str, config: RedisConfig) -> [BackendError; 2] {
    let backend = RedisBackend::with_config(url, config.clone()).unwrap();
    let aio = backend.ping().await.unwrap_err();
    let url = url.to_owned();
    let blocking = tokio::task::spawn_blocking(move || {
        BlockingRedisBackend::with_config(&url, config)
            .unwrap()
            .ping()
            .unwrap_err()
    })
    .await
    .unwrap();
    [aio, blocking]
}

/// Asserts `err` is a TLS error whose text holds each of `wanted`, and
/// never the advice for a server that is down.
fn assert_tls_error(err: &BackendError, wanted: &[&str]) {
    assert_eq!(err.kind(), BackendErrorKind::Tls, "{err:?}");
    let text = err.to_string();
    for want in wanted {
        assert!(text.contains(want), "{want:?} not in: {text}");
    }
    assert!(!text.contains("is the server running"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[tokio::test]
async fn an_untrusted_server_certificate_says_which_ca_to_give() {
    let (certs, server) = tls_server(false);
    let url = tls_url(&server).replace("rediss://", "rediss://:s3cret@");
    // Only the system's roots; then an unrelated CA.
    for config in [patient(), patient().tls_ca_file(certs.other_ca())] {
        for err in ping_errors(&url, config).await {
            assert_tls_error(&err, &["UnknownIssuer", "--tls-ca", "tls_ca_file"]);
            assert!(
                err.to_string()
                    .starts_with("Redis at rediss://:***@127.0.0.1:"),
                "{err}"
            );
        }
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_says_so() {
    let certs = TlsCerts::generate().unwrap();
    let mut args = certs.redis_args(false);
    // The last of a repeated option wins.
    args.extend([
        "--tls-cert-file".to_owned(),
        certs.misnamed_cert().to_string_lossy().into_owned(),
    ]);
    let server = RedisServer::start_tls(args).unwrap();
    for err in ping_errors(&tls_url(&server), trusting(&certs)).await {
        assert_tls_error(&err, &["elsewhere.invalid", "subjectAltName", "IP SAN"]);
    }
}

#[tokio::test]
async fn a_server_requiring_client_certificates_refuses_none_and_strangers_and_takes_ours() {
    let (certs, server) = tls_server(true);
    let url = tls_url(&server);

    for err in ping_errors(&url, trusting(&certs)).await {
        assert_tls_error(&err, &["requires a client certificate", "--tls-cert"]);
    }
    let stranger = trusting(&certs).tls_client_auth(certs.stranger_cert(), certs.stranger_key());
    for err in ping_errors(&url, stranger).await {
        assert_tls_error(
            &err,
            &["refused this client's certificate", "tls-ca-cert-file"],
        );
    }

    let ours = trusting(&certs).tls_client_auth(certs.client_cert(), certs.client_key());
    let backend = RedisBackend::with_config(&url, ours.clone()).unwrap();
    backend.ping().await.unwrap();
    tokio::task::spawn_blocking(move || {
        BlockingRedisBackend::with_config(&url, ours)
            .unwrap()
            .ping()
            .unwrap();
    })
    .await
    .unwrap();
}

/// The `Config` error opening `url` with `config` gives, on both paths.
fn open_error(url: &str, config: RedisConfig) -> String {
    let aio = RedisBackend::with_config(url, config.clone()).unwrap_err();
    let blocking = BlockingRedisBackend::with_config(url, config).unwrap_err();
    assert_eq!(aio, blocking);
    assert_eq!(aio.kind(), BackendErrorKind::Config, "{aio:?}");
    let text = aio.to_string();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(!format!("{aio:?}").contains("s3cret"), "{aio:?}");
    text
}

#[test]
fn bad_tls_files_are_refused_at_open_naming_the_file() {
    let certs = TlsCerts::generate().unwrap();
    // Nothing listens there: every error below comes from opening.
    let url = "rediss://:s3cret@127.0.0.1:1";
    let path = |p: &Path| p.display().to_string();
    let missing = certs.dir().join("missing.crt");
    let garbage = certs.dir().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let key = std::fs::read_to_string(certs.client_key()).unwrap();

    let text = open_error(url, patient().tls_ca_file(&missing));
    assert!(text.contains(&path(&missing)), "{text}");
    assert!(text.contains("cannot read the TLS CA file"), "{text}");

    let text = open_error(url, patient().tls_ca_file(&garbage));
    assert!(text.contains(&path(&garbage)), "{text}");
    assert!(text.contains("holds no PEM certificate"), "{text}");

    // A key where the CA should be.
    let text = open_error(url, patient().tls_ca_file(certs.client_key()));
    assert!(text.contains("holds no PEM certificate"), "{text}");
    assert!(!text.contains(key.lines().nth(1).unwrap()), "{text}");

    let text = open_error(url, patient().tls_client_auth(&garbage, certs.client_key()));
    assert!(text.contains("TLS client certificate"), "{text}");
    assert!(text.contains(&path(&garbage)), "{text}");

    // A certificate where the key should be.
    let text = open_error(
        url,
        patient().tls_client_auth(certs.client_cert(), certs.ca()),
    );
    assert!(text.contains("holds no PEM private key"), "{text}");
    assert!(text.contains(&path(&certs.ca())), "{text}");

    let text = open_error(
        url,
        patient().tls_client_auth(certs.client_cert(), certs.stranger_key()),
    );
    assert!(
        text.contains("cannot sign for the client certificate"),
        "{text}"
    );
    assert!(!text.contains(key.lines().nth(1).unwrap()), "{text}");

    let text = open_error(
        url,
        patient().tls_client_auth(certs.client_cert(), &missing),
    );
    assert!(text.contains("cannot read the TLS client key"), "{text}");

    // TLS files with a URL that does not use TLS would be ignored.
    for plain in ["redis://:s3cret@127.0.0.1:1", "redis+unix:///tmp/no.sock"] {
        let text = open_error(plain, patient().tls_ca_file(certs.ca()));
        assert!(text.contains("rediss://"), "{text}");
        assert!(text.contains(&path(&certs.ca())), "{text}");
    }
}

#[test]
fn debug_output_shows_the_paths_and_never_the_key() {
    let certs = TlsCerts::generate().unwrap();
    let config = patient()
        .tls_ca_file(certs.ca())
        .tls_client_auth(certs.client_cert(), certs.client_key());
    let backend =
        BlockingRedisBackend::with_config("rediss://127.0.0.1:1", config.clone()).unwrap();
    let key = std::fs::read_to_string(certs.client_key()).unwrap();
    let secret_line = key.lines().nth(1).unwrap();
    for text in [format!("{config:?}"), format!("{backend:?}")] {
        assert!(!text.contains(secret_line), "{text}");
    }
    assert!(format!("{config:?}").contains("client.key"));
}

/// The synchronizer's errors carry the backend's TLS error whole.
#[test]
fn a_synchronizer_reports_the_tls_error() {
    let (_certs, server) = tls_server(false);
    let backend = BlockingRedisBackend::with_config(&tls_url(&server), patient()).unwrap();
    let err = BlockingSynchronizer::new(backend, key())
        .mark_updated()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Backend(e) if e.kind() == BackendErrorKind::Tls),
        "{err:?}"
    );
}

#[cfg(feature = "cli")]
mod cli {
    use super::*;
    use crate::support::cli::{gensync, run};

    #[test]
    fn the_command_trusts_a_ca_given_with_tls_ca() {
        let (certs, server) = tls_server(false);
        let url = tls_url(&server);
        let bumped = run(gensync()
            .args(["--url", &url, "--tls-ca"])
            .arg(certs.ca())
            .args(["bump", "tls:settings"]));
        assert_eq!(bumped.code, Some(0), "{}", bumped.all());

        let got = run(gensync()
            .env("GENSYNC_URL", &url)
            .env("GENSYNC_TLS_CA", certs.ca())
            .args(["get", "tls:settings"]));
        assert_eq!(got.code, Some(0), "{}", got.all());
        assert_eq!(got.stdout.trim(), bumped.stdout.trim());
    }

    #[test]
    fn the_command_with_the_wrong_ca_exits_2_with_one_line_saying_what_to_check() {
        let (certs, server) = tls_server(false);
        let wrong = run(gensync()
            .args(["--url", &tls_url(&server), "--tls-ca"])
            .arg(certs.other_ca())
            .args(["get", "tls:settings"]));
        assert_eq!(wrong.code, Some(2), "{}", wrong.all());
        assert_eq!(wrong.stderr.lines().count(), 1, "{}", wrong.stderr);
        assert!(wrong.stderr.contains("--tls-ca"), "{}", wrong.stderr);
        assert!(
            !wrong.stderr.contains("is the server running"),
            "{}",
            wrong.stderr
        );
    }

    #[test]
    fn the_command_takes_a_client_certificate_and_wants_both_halves() {
        let (certs, server) = tls_server(true);
        let url = tls_url(&server);
        let ok = run(gensync()
            .args(["--url", &url, "--tls-ca"])
            .arg(certs.ca())
            .arg("--tls-cert")
            .arg(certs.client_cert())
            .arg("--tls-key")
            .arg(certs.client_key())
            .args(["bump", "tls:settings"]));
        assert_eq!(ok.code, Some(0), "{}", ok.all());

        let half = run(gensync()
            .args(["--url", &url, "--tls-cert"])
            .arg(certs.client_cert())
            .args(["get", "tls:settings"]));
        assert_eq!(half.code, Some(2), "{}", half.all());
        assert!(half.stderr.contains("--tls-key"), "{}", half.stderr);

        let plain = run(gensync()
            .args(["--url", &server.url(), "--tls-ca"])
            .arg(certs.ca())
            .args(["get", "tls:settings"]));
        assert_eq!(plain.code, Some(2), "{}", plain.all());
        assert!(plain.stderr.contains("rediss://"), "{}", plain.stderr);
    }
}
