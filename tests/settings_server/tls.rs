//! The example against a TLS Redis with a private CA: `--tls-ca`,
//! `--tls-cert` and `--tls-key` reach the backend, and a missing CA is
//! said to be one.

use gensync::testing::TlsCerts;

use super::deployments::reader_sees_what_writer_saved;

use super::*;

#[tokio::test]
async fn instances_agree_over_tls_with_a_private_ca_and_client_certificates() {
    let certs = TlsCerts::generate().unwrap();
    let redis = RedisServer::start_tls(certs.redis_args(true)).unwrap();
    let url = redis.tls_url().unwrap();
    let dir = TempDir::new();
    let file = dir.settings();
    let (ca, cert, key) = (certs.ca(), certs.client_cert(), certs.client_key());
    let args = [
        "--redis",
        url.as_str(),
        "--settings",
        path_str(&file),
        "--tls-ca",
        path_str(&ca),
        "--tls-cert",
        path_str(&cert),
        "--tls-key",
        path_str(&key),
    ];
    let writer = Instance::start(&args, &[]);
    // The other through the environment.
    let reader = Instance::start(
        &args[..4],
        &[
            ("REDIS_TLS_CA", path_str(&ca)),
            ("REDIS_TLS_CERT", path_str(&cert)),
            ("REDIS_TLS_KEY", path_str(&key)),
        ],
    );
    let client = client();
    reader_sees_what_writer_saved(&client, &writer, &reader, "over TLS").await;

    // Without the CA: serving the file, and saying what to fix.
    let untrusting = Instance::start(&args[..4], &[]);
    let (status, _) = get(&client, untrusting.url("/settings")).await;
    assert_eq!(status, StatusCode::OK, "still serves the file's settings");
    let stopped = untrusting.stop();
    assert!(
        stopped.stderr.contains("TLS handshake"),
        "{}",
        stopped.stderr
    );
    assert!(stopped.stderr.contains("--tls-ca"), "{}", stopped.stderr);
    assert!(
        !stopped.stderr.contains("did not answer"),
        "{}",
        stopped.stderr
    );
}
