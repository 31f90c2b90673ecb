//! What held before issue 14 and must keep holding: instances agreeing,
//! bad input refused, the in-memory default, an unreachable or
//! misconfigured Redis, the settings file's creation.

use super::*;

#[tokio::test]
async fn a_put_on_one_instance_is_seen_by_every_other_instance() {
    let redis = RedisServer::start().expect("start redis-server");
    let dir = TempDir::new();
    let file = dir.settings();
    let url = redis.url();
    let args = [
        "--redis",
        url.as_str(),
        "--settings",
        path_str(&file),
        "--key",
        "test:three",
    ];
    let instances: Vec<Instance> = (0..3).map(|_| Instance::start(&args, &[])).collect();
    let client = client();

    // All three start on the file and agree on the generation.
    let mut first = None;
    for instance in &instances {
        let (status, body) = get(&client, instance.url("/settings")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["settings"], defaults());
        let generation = body["generation"].as_u64().expect("a generation");
        assert_eq!(*first.get_or_insert(generation), generation);
    }

    for round in 0..6usize {
        let writer = round % 3;
        let settings = json!({
            "site_name": format!("round {round}"),
            "theme": if round % 2 == 0 { "dark" } else { "light" },
            "writer": writer,
        });
        let (status, body) = put(
            &client,
            instances[writer].url("/settings"),
            &settings.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "round {round}: {body}");
        let generation = body["generation"].as_u64().expect("a generation");
        assert_eq!(
            read_json(&file),
            settings,
            "round {round}: the file was saved"
        );

        // The two others first, then the writer itself.
        for reader in [(writer + 1) % 3, (writer + 2) % 3, writer] {
            let (status, body) = get(&client, instances[reader].url("/settings")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                body["settings"], settings,
                "round {round}: instance {reader} after a PUT on {writer}"
            );
            assert_eq!(
                body["generation"].as_u64(),
                Some(generation),
                "round {round}: instance {reader}"
            );
        }
    }
    // The atomic writes left no temporary files behind; beside the
    // settings, the greatest fencing token the saver accepted.
    assert_eq!(
        dir.names(),
        ["settings.json", "settings.json.fence", "settings.json.lock"]
    );
}

#[tokio::test]
async fn bad_input_is_a_400_with_a_json_error_and_leaves_the_file_alone() {
    let dir = TempDir::new();
    let file = dir.settings();
    // Odd spacing, so a rewrite of the same settings would show.
    let original = b"{ \"theme\":   \"dark\" ,\"site_name\":\"kept\"}\n";
    std::fs::write(&file, original).unwrap();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let client = client();

    let invalid = ["{bad", "", "{\"theme\": \"dark\"", "theme=dark"];
    let not_objects = ["[1,2]", "\"x\"", "42", "null", "true"];
    for body in invalid.iter().chain(&not_objects) {
        let (status, reply) = put(&client, instance.url("/settings"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "body {body:?}: {reply}");
        let error = reply["error"].as_str().expect("an error message");
        if invalid.contains(body) {
            assert!(error.contains("not valid JSON"), "body {body:?}: {error}");
        } else {
            assert!(
                error.contains("must be a JSON object"),
                "body {body:?}: {error}"
            );
        }
        assert!(error.contains("nothing was saved"), "{error}");
        assert_eq!(std::fs::read(&file).unwrap(), original, "body {body:?}");
    }

    let (status, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["settings"],
        json!({"theme": "dark", "site_name": "kept"})
    );
    // Nothing was saved: no temporary file, not even a fencing token.
    assert_eq!(dir.names(), ["settings.json"]);
}

#[tokio::test]
async fn the_in_memory_default_serves_puts_health_and_metrics() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    instance.assert_printed("(backend: in-memory");
    let client = client();

    let (status, before) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(before["settings"], defaults());

    let settings = json!({"site_name": "memory", "theme": "dark", "nested": {"a": [1, 2]}});
    let (status, body) = put(&client, instance.url("/settings"), &settings.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let generation = body["generation"].as_u64().expect("a generation");
    assert_ne!(before["generation"].as_u64(), Some(generation));

    let (status, after) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        after,
        json!({"generation": generation, "settings": settings})
    );
    assert_eq!(read_json(&file), settings);

    let health = client.get(instance.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.text().await.unwrap(), "ok");

    let metrics = client.get(instance.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let content_type = metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = metrics.text().await.unwrap();
    // Every series carries the key it counts for.
    let labels = r#"{key="gensync:example:settings"}"#;
    for name in [
        "gensync_checks_total",
        "gensync_expired_total",
        "gensync_backend_errors_total",
        "gensync_reloads_total",
        "gensync_reload_failures_total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}{labels} "))),
            "no {name} in:\n{text}"
        );
    }
    for name in [
        "gensync_check_duration_seconds",
        "gensync_reload_duration_seconds",
        "gensync_settings_age_seconds",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{name}_count{labels} "))),
            "no {name} histogram in:\n{text}"
        );
    }
    // Start-up, then the reload after the PUT.
    assert!(
        text.contains(&format!("gensync_reloads_total{labels} 2\n")),
        "{text}"
    );

    let stopped = instance.stop();
    assert!(
        stopped.status.success(),
        "SIGTERM is a clean shutdown: {}\n{}",
        stopped.status,
        stopped.stderr
    );
}

#[tokio::test]
async fn an_unreachable_redis_still_serves_the_file_settings() {
    let dir = TempDir::new();
    let file = dir.settings();
    let settings = json!({"site_name": "from the file", "theme": "dark"});
    std::fs::write(&file, settings.to_string()).unwrap();
    let url = format!("redis://127.0.0.1:{}", gensync::testing::closed_port());
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    instance.assert_printed(&format!("(backend: Redis at {url}; mode: strict)"));
    let client = client();

    for _ in 0..2 {
        let (status, body) = get(&client, instance.url("/settings")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, json!({"generation": null, "settings": settings}));
    }
    let health = client.get(instance.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // A write cannot tell the other instances, so it is refused, unsaved.
    let (status, body) = put(&client, instance.url("/settings"), r#"{"theme": "light"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("nothing was saved"), "{error}");
    assert_eq!(body["saved"], json!(false));
    assert_eq!(read_json(&file), settings);

    let stopped = instance.stop();
    assert!(
        stopped.stderr.contains("Redis did not answer at start-up"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_bad_redis_url_or_key_is_one_line_on_stderr_and_exit_2() {
    let dir = TempDir::new();
    let file = dir.settings();
    let cases: [(&[&str], &str); 4] = [
        (&["--redis", "http://x"], "unsupported Redis URL"),
        (
            &["--redis", "redis://:hunter2-pw@[::1"],
            "invalid Redis URL",
        ),
        (&["--key", ":::"], "invalid --key"),
        (&["--key", "  "], "invalid --key"),
    ];
    for (args, expected) in cases {
        let mut args = args.to_vec();
        args.extend(["--settings", path_str(&file), "--listen", "127.0.0.1:0"]);
        let output = run_to_exit(&args, &[]);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: one line, not:\n{stderr}"
        );
        assert!(stderr.starts_with("settings_server: error: "), "{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("hunter2-pw"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(output.stdout.is_empty(), "{args:?}: nothing on stdout");
        assert!(!file.exists(), "{args:?}: nothing was created");
    }
}

#[tokio::test]
async fn a_redis_password_never_appears_in_the_output() {
    const SECRET: &str = "s3cret-Pa55word";
    let dir = TempDir::new();
    let file = dir.settings();
    let url = format!(
        "redis://app:{SECRET}@127.0.0.1:{}/0",
        gensync::testing::closed_port()
    );
    // Through the environment, as a deployment would pass it.
    let instance = Instance::start(&["--settings", path_str(&file)], &[("REDIS_URL", &url)]);
    instance.assert_printed("app:***@");
    let client = client();

    let (status, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["settings"], defaults());
    let (status, body) = put(&client, instance.url("/settings"), r#"{"theme": "dark"}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.to_string().contains(SECRET), "{body}");

    // --help shows where the URL comes from, not its value.
    let help = run_to_exit(&["--help"], &[("REDIS_URL", &url)]);
    assert!(help.status.success());
    assert!(!String::from_utf8_lossy(&help.stdout).contains(SECRET));

    let stopped = instance.stop();
    assert!(
        stopped.stderr.contains("Redis did not answer at start-up"),
        "{}",
        stopped.stderr
    );
    for (name, text) in [("stdout", &stopped.stdout), ("stderr", &stopped.stderr)] {
        assert!(!text.contains(SECRET), "the password on {name}:\n{text}");
    }
}

#[tokio::test]
async fn a_missing_settings_file_is_created_with_the_defaults() {
    let dir = TempDir::new();
    let file = dir.settings();
    assert!(!file.exists());
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);

    assert_eq!(read_json(&file), defaults());
    let (status, body) = get(&client(), instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["settings"], defaults());
    assert!(body["generation"].is_u64(), "{body}");
    assert_eq!(dir.names(), ["settings.json"]);
}

/// Redis answered, and refused the password: the start-up line says that,
/// and what to fix, not that Redis did not answer.
#[tokio::test]
async fn a_wrong_password_at_start_up_says_what_to_fix() {
    let dir = TempDir::new();
    let file = dir.settings();
    let server = gensync::testing::RedisServer::start_with_password("right-pw").unwrap();
    let url = format!("redis://:wrong-pw@127.0.0.1:{}", server.port());
    let instance = Instance::start(&["--redis", &url, "--settings", path_str(&file)], &[]);
    let (status, _) = get(&client(), instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK, "still serves the file's settings");
    let stopped = instance.stop();
    assert!(
        stopped
            .stderr
            .contains("refused this instance's credentials")
            && stopped.stderr.contains("fix the user and password"),
        "{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("did not answer"),
        "{}",
        stopped.stderr
    );
    assert!(!stopped.stderr.contains("wrong-pw"), "{}", stopped.stderr);
}

/// 200 PUTs at once over two instances sharing a file and a Redis: every
/// write answered 200 has its own generation, the file ends as the write
/// with the greatest one, a reader never sees a torn file, and a refused
/// write says nothing was saved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_over_two_instances_tear_nothing_and_lose_nothing() {
    let redis = RedisServer::start().expect("start redis-server");
    let dir = TempDir::new();
    let file = dir.settings();
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--settings", path_str(&file)];
    let instances = [Instance::start(&args, &[]), Instance::start(&args, &[])];

    // Reads the file over and over while the writes run.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (done, file) = (Arc::clone(&done), file.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = std::fs::read(&file).expect("the file is always there");
                let value: Value = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("a torn file ({e}): {bytes:?}"));
                assert!(value.is_object());
                reads += 1;
            }
            reads
        })
    };
    let client = client();
    let mut writes = tokio::task::JoinSet::new();
    for n in 0..200u32 {
        let (client, url) = (client.clone(), instances[n as usize % 2].url("/settings"));
        writes.spawn(async move {
            let settings = json!({"writer": n, "padding": "x".repeat(512)});
            let (status, body) = put(&client, url, &settings.to_string()).await;
            (settings, status, body)
        });
    }
    let mut saved = Vec::new();
    while let Some(write) = writes.join_next().await {
        let (settings, status, body) = write.unwrap();
        if status == StatusCode::OK {
            saved.push((body["generation"].as_u64().unwrap(), settings));
        } else {
            assert_eq!(body["saved"], json!(false), "{status}: {body}");
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);

    assert!(!saved.is_empty(), "no write went through");
    saved.sort_by_key(|(generation, _)| *generation);
    let before = saved.len();
    saved.dedup_by_key(|(generation, _)| *generation);
    assert_eq!(saved.len(), before, "two writes answered one generation");
    // The last write is the one whose generation the instances answer
    // (generations are not ordered: each mixes in the server's identity).
    let (_, body) = get(&client, instances[0].url("/settings")).await;
    let last = body["generation"].as_u64().expect("a generation");
    let (_, settings) = (saved.iter())
        .find(|(generation, _)| *generation == last)
        .expect("the generation served is one a write answered");
    assert_eq!(&read_json(&file), settings);
    for instance in &instances {
        let (_, body) = get(&client, instance.url("/settings")).await;
        assert_eq!(&body["settings"], settings);
        assert_eq!(body["generation"].as_u64(), Some(last));
    }
    let mut names = dir.names();
    names.retain(|n| !n.ends_with(".fence") && !n.ends_with(".lock"));
    assert_eq!(names, ["settings.json"], "no temporary file left");
}
