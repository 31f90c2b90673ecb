//! Readiness and what the loader accepts: `/readyz` beside `/healthz`, a
//! settings file missing beside a running fleet (not created, a failed
//! load), and a settings file that is not a bounded regular file.

use std::os::unix::fs::FileTypeExt;

use super::*;

/// The most a settings file may hold (`files::MAX_FILE`).
const MAX_FILE: u64 = 8 * 1024 * 1024;
/// The generation key of the default `--key`.
const KEY: &str = "gensync:example:settings";

async fn readyz(client: &reqwest::Client, instance: &Instance) -> (StatusCode, Value) {
    get(client, instance.url("/readyz")).await
}

/// Polls `GET path` until `done` holds for its answer (a reload waits for
/// the reloader's backoff), up to the deadline.
async fn until(
    client: &reqwest::Client,
    instance: &Instance,
    path: &str,
    done: impl Fn(StatusCode, &Value) -> bool,
) -> (StatusCode, Value) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = get(client, instance.url(path)).await;
        if done(status, &body) || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A new instance whose settings file is missing, while other instances
/// already share a generation: it does not create the defaults (which it
/// would serve under the fleet's generation), logs an error, serves no
/// generation and is not ready; once the file is restored it catches up.
#[tokio::test]
async fn a_missing_file_beside_a_running_fleet_is_a_failed_load_not_the_defaults() {
    let server = RedisServer::start().unwrap();
    let url = server.url();
    let client = client();
    let (dir_a, dir_b) = (TempDir::new(), TempDir::new());
    let (file_a, file_b) = (dir_a.settings(), dir_b.settings());

    // The fleet's first start: the key is missing, the defaults created.
    let first = Instance::start(&["--redis", &url, "--settings", path_str(&file_a)], &[]);
    assert_eq!(read_json(&file_a), defaults());
    let (status, body) = put(&client, first.url("/settings"), r#"{"theme": "fleet"}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let generation = body["generation"].as_u64().unwrap();

    let late = Instance::start(&["--redis", &url, "--settings", path_str(&file_b)], &[]);
    assert!(
        !file_b.exists(),
        "the defaults were created beside a running fleet"
    );
    let (status, body) = get(&client, late.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["generation"], Value::Null, "served as current: {body}");
    let (status, body) = readyz(&client, &late).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["last_load"], "failed", "{body}");
    assert_eq!(body["backend"], "ok", "{body}");
    let (status, _) = readyz(&client, &first).await;
    assert_eq!(status, StatusCode::OK);

    std::fs::copy(&file_a, &file_b).unwrap();
    let (_, body) = until(&client, &late, "/settings", |_, body| {
        body["generation"] == generation
    })
    .await;
    assert_eq!(
        body,
        json!({"generation": generation, "settings": {"theme": "fleet"}})
    );
    let (status, body) = readyz(&client, &late).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let stopped = late.stop();
    let logged = stopped
        .stderr
        .lines()
        .find(|l| l.contains("the settings file is missing"))
        .unwrap_or_else(|| panic!("not logged:\n{}", stopped.stderr));
    assert!(logged.contains("ERROR"), "{logged}");
    assert!(
        logged.contains("other instances already share a generation"),
        "{logged}"
    );
}

/// A FIFO as the settings file: refused as not a regular file, without a
/// thread stuck waiting for a writer, so SIGTERM still ends the process.
#[tokio::test]
async fn a_fifo_as_the_settings_file_is_refused_and_sigterm_still_ends_the_service() {
    let dir = TempDir::new();
    let file = dir.settings();
    let made = Command::new("mkfifo").arg(&file).status().unwrap();
    assert!(made.success());
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let client = client();
    for _ in 0..3 {
        let (status, body) = get(&client, instance.url("/settings")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"generation": null, "settings": defaults()}));
    }

    let stopped = instance.stop();
    assert!(
        stopped.status.success(),
        "SIGTERM must end it: {}\n{}",
        stopped.status,
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("is not a regular file"),
        "{}",
        stopped.stderr
    );
    let kind = std::fs::symlink_metadata(&file).unwrap().file_type();
    assert!(kind.is_fifo(), "left as it was");
}

/// A settings file larger than the bound is a failed load, not read
/// whole: the defaults stay in service, with no generation.
#[tokio::test]
async fn an_oversized_settings_file_is_refused_not_read_whole() {
    let dir = TempDir::new();
    let file = dir.settings();
    let big = json!({ "big": "x".repeat(MAX_FILE as usize) });
    std::fs::write(&file, big.to_string()).unwrap();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let client = client();
    let (status, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"generation": null, "settings": defaults()}));
    let (status, body) = readyz(&client, &instance).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["last_load"], "failed", "{body}");
    let stopped = instance.stop();
    assert!(
        stopped.stderr.contains("is larger than 8 MiB"),
        "{}",
        stopped.stderr
    );
}

/// A PUT whose indented form would pass the bound (deep nesting multiplies
/// the indentation) is saved compact, within it, and loads back as sent.
#[tokio::test]
async fn a_put_too_large_to_indent_is_saved_within_the_bound_and_loads_back() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let mut deep = Value::Array(vec![json!(1); 300_000]);
    for _ in 0..40 {
        deep = Value::Array(vec![deep]);
    }
    let settings = json!({ "deep": deep });
    let client = client();
    let (status, body) = put(&client, instance.url("/settings"), &settings.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let size = std::fs::metadata(&file).unwrap().len();
    assert!(size <= MAX_FILE, "saved {size} bytes, more than it loads");
    assert_eq!(read_json(&file), settings);
    let (_, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(body["settings"], settings);
    let (status, body) = readyz(&client, &instance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `/healthz` stays liveness (`ok`), while `/readyz` answers 503 as long
/// as Redis refuses the credentials, without showing them, and 200 once
/// the server takes them, without a restart.
#[tokio::test]
async fn readyz_fails_while_redis_refuses_the_credentials() {
    let dir = TempDir::new();
    let file = dir.settings();
    std::fs::write(&file, r#"{"theme": "dark"}"#).unwrap();
    let server = RedisServer::start_with_password("right-pw").unwrap();
    let url = format!("redis://:wrong-pw@127.0.0.1:{}", server.port());
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    let client = client();

    let health = client.get(instance.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");
    let (status, body) = readyz(&client, &instance).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["backend"], "refused", "{body}");
    assert_eq!(body["last_load"], "ok", "{body}");
    assert!(!body.to_string().contains("-pw"), "{body}");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("wrong-pw")
        .query(&mut server.connection().unwrap())
        .unwrap();
    let (status, body) = until(&client, &instance, "/readyz", |s, _| s.is_success()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["backend"], "ok", "{body}");
}

/// `/readyz` follows the last load: a file broken at runtime makes the
/// next reload fail (503, the last good settings still served), and the
/// fixed file makes it ready again.
#[tokio::test]
async fn readyz_follows_the_last_load() {
    let server = RedisServer::start().unwrap();
    let dir = TempDir::new();
    let file = dir.settings();
    std::fs::write(&file, r#"{"v": 1}"#).unwrap();
    let instance = Instance::start(
        &["--redis", &server.url(), "--settings", path_str(&file)],
        &[],
    );
    let client = client();
    let (status, body) = readyz(&client, &instance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["last_load"], "ok", "{body}");
    let bump = || {
        let _: i64 = redis::cmd("INCR")
            .arg(KEY)
            .query(&mut server.connection().unwrap())
            .unwrap();
    };

    std::fs::write(&file, "not json").unwrap();
    bump();
    let (_, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(body["settings"], json!({"v": 1}), "the last good settings");
    let (status, body) = readyz(&client, &instance).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["last_load"], "failed", "{body}");

    std::fs::write(&file, r#"{"v": 2}"#).unwrap();
    until(&client, &instance, "/settings", |_, body| {
        body["settings"] == json!({"v": 2})
    })
    .await;
    let (status, body) = readyz(&client, &instance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A Redis that does not answer is reported, but leaves the instance
/// ready: every instance shares it, and each still serves its file.
#[tokio::test]
async fn an_unanswering_redis_is_reported_but_leaves_the_instance_ready() {
    let dir = TempDir::new();
    let file = dir.settings();
    std::fs::write(&file, r#"{"theme": "dark"}"#).unwrap();
    let url = format!("redis://127.0.0.1:{}", gensync::testing::closed_port());
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    let (status, body) = readyz(&client(), &instance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["backend"], "unavailable", "{body}");
    assert_eq!(body["last_load"], "ok", "{body}");
}

/// Under SECURITY.md's least-privilege writer ACL (no `PING`), start-up
/// says nothing of refused credentials, and the instance is ready: both
/// read the settings' key, as the reloader does.
#[tokio::test]
async fn the_least_privilege_acl_is_not_mistaken_for_refused_credentials() {
    let server = RedisServer::start().unwrap();
    let mut setuser = redis::cmd("ACL");
    setuser.arg("SETUSER").arg("app").arg("on").arg(">app-pw");
    for rule in "resetkeys ~gensync:* ~{gensync:* -@all +eval +getrange +get +exists +set \
                 +incrby +pttl +time +type +del +zadd +zrem +zscore +zrange \
                 +zremrangebyscore +pexpire +pexpireat +info"
        .split_whitespace()
    {
        setuser.arg(rule);
    }
    let _: () = setuser.query(&mut server.connection().unwrap()).unwrap();
    let dir = TempDir::new();
    let file = dir.settings();
    std::fs::write(&file, r#"{"theme": "dark"}"#).unwrap();
    let url = format!("redis://app:app-pw@127.0.0.1:{}", server.port());
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    let (status, body) = readyz(&client(), &instance).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["backend"], "ok", "{body}");
    let stopped = instance.stop();
    assert!(!stopped.stderr.contains("refused"), "{}", stopped.stderr);
}
