//! One generation number (issue 20, point 7): across a restart of Redis,
//! what a PUT answers is what every running instance answers, what an
//! instance started afterwards answers, and what `gensync get` prints.

use super::*;

/// What `gensync get KEY` against `url` printed.
fn cli_get(url: &str, key: &str) -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_gensync"))
        .env_remove("GENSYNC_URL")
        .env_remove("REDIS_URL")
        .args(["--url", url, "get", key])
        .output()
        .expect("run gensync");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().parse().expect("a generation")
}

/// The generation `instance` answers once it serves `settings` (right
/// after a restart it may serve the last good ones for a moment).
async fn answered(client: &reqwest::Client, instance: &Instance, settings: &Value) -> u64 {
    let until = Instant::now() + DEADLINE;
    loop {
        let (status, body) = get(client, instance.url("/settings")).await;
        if status == StatusCode::OK && body["settings"] == *settings {
            if let Some(generation) = body["generation"].as_u64() {
                return generation;
            }
        }
        assert!(Instant::now() < until, "never served {settings}: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_every_instance_and_the_cli_answer_the_puts_generation() {
    let mut redis = RedisServer::start().expect("start redis-server");
    let dir = TempDir::new();
    let file = dir.settings();
    let url = redis.url();
    let key = "test:one-number";
    let args = [
        "--redis",
        url.as_str(),
        "--settings",
        path_str(&file),
        "--key",
        key,
    ];
    let instances: Vec<Instance> = (0..3).map(|_| Instance::start(&args, &[])).collect();
    let client = client();
    for instance in &instances {
        answered(&client, instance, &defaults()).await;
    }

    redis.restart().expect("restart redis-server");
    let settings = json!({"site_name": "after the restart", "theme": "dark", "writer": 0});
    let until = Instant::now() + DEADLINE;
    let put_answer = loop {
        let (status, body) = put(
            &client,
            instances[0].url("/settings"),
            &settings.to_string(),
        )
        .await;
        if status == StatusCode::OK {
            break body["generation"].as_u64().expect("a generation");
        }
        assert!(Instant::now() < until, "no PUT after the restart: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for (i, instance) in instances.iter().enumerate() {
        let answer = answered(&client, instance, &settings).await;
        assert_eq!(
            answer, put_answer,
            "instance {i}, running since before the restart"
        );
    }
    assert_eq!(cli_get(&url, key), put_answer, "gensync get");
    let late = Instance::start(&args, &[]);
    assert_eq!(
        answered(&client, &late, &settings).await,
        put_answer,
        "an instance started afterwards"
    );
}
