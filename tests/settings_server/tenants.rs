//! Tenants (issue 12): `GET/PUT /tenants/<id>/settings`, one file each in
//! the tenants' directory, each with its own generation under the set key
//! `<--key>:tenants`, whose own bump reloads them all.

use gensync::{GenerationSynchronizer, Key, RedisBackend, Synchronizer};

use super::*;

impl TempDir {
    /// The default tenants' directory: `tenants/` beside the settings.
    fn tenants(&self) -> PathBuf {
        self.0.path().join("tenants")
    }
}

fn tenant_url(instance: &Instance, id: &str) -> String {
    instance.url(&format!("/tenants/{id}/settings"))
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes tenant files as an operator would, creating the directory.
fn write_tenant(dir: &TempDir, id: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir.tenants()).unwrap();
    std::fs::write(dir.tenants().join(format!("{id}.json")), bytes).unwrap();
}

#[tokio::test]
async fn a_tenant_put_on_one_instance_is_served_by_the_other_and_no_other_tenant_moves() {
    let redis = RedisServer::start().expect("start redis-server");
    let dir = TempDir::new();
    write_tenant(&dir, "a", br#"{"theme": "light"}"#);
    // Odd spacing, so any rewrite of b's file would show.
    let b_bytes = b"{ \"theme\" :  \"blue\",\"n\": 1 }\n";
    write_tenant(&dir, "b", b_bytes);
    let file = dir.settings();
    let url = redis.url();
    let args = [
        "--redis",
        url.as_str(),
        "--settings",
        path_str(&file),
        "--key",
        "test:tenants",
    ];
    let instances = [Instance::start(&args, &[]), Instance::start(&args, &[])];
    let client = client();

    // Both serve both tenants from their files, and agree on each.
    let mut b_answers = Vec::new();
    for instance in &instances {
        let (status, a) = get(&client, tenant_url(instance, "a")).await;
        assert_eq!(status, StatusCode::OK, "{a}");
        assert_eq!(a["settings"], json!({"theme": "light"}));
        let (status, b) = get(&client, tenant_url(instance, "b")).await;
        assert_eq!(status, StatusCode::OK, "{b}");
        assert_eq!(b["settings"], json!({"theme": "blue", "n": 1}));
        assert!(b["generation"].as_u64().is_some(), "{b}");
        b_answers.push(b);
    }
    assert_eq!(b_answers[0], b_answers[1], "one generation for b");

    let settings = json!({"theme": "dark", "owner": "instance 1"});
    let (status, body) = put(
        &client,
        tenant_url(&instances[0], "a"),
        &settings.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let generation = body["generation"].as_u64().expect("a generation");
    assert_eq!(read_json(&dir.tenants().join("a.json")), settings);

    // The other instance first, on its very next request.
    for instance in [&instances[1], &instances[0]] {
        let (status, a) = get(&client, tenant_url(instance, "a")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(a, json!({"generation": generation, "settings": settings}));
    }
    // b did not move: not its file, not its answer on either instance.
    assert_eq!(
        std::fs::read(dir.tenants().join("b.json")).unwrap(),
        b_bytes
    );
    for (instance, before) in instances.iter().zip(&b_answers) {
        let (status, b) = get(&client, tenant_url(instance, "b")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&b, before, "b on {}", instance.address);
    }

    // A new tenant: unknown on instance 2, created through instance 1, then
    // served by instance 2 at once (its miss was not remembered).
    let (status, body) = get(&client, tenant_url(&instances[1], "c")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let created = json!({"theme": "new"});
    let (status, body) = put(
        &client,
        tenant_url(&instances[0], "c"),
        &created.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, c) = get(&client, tenant_url(&instances[1], "c")).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["settings"], created);
    assert_eq!(c["generation"], body["generation"]);

    // One file a tenant, the saver's fence and lock beside each it wrote,
    // no temporary file; the service's own settings file untouched.
    assert_eq!(
        names_in(&dir.tenants()),
        [
            "a.json",
            "a.json.fence",
            "a.json.lock",
            "b.json",
            "c.json",
            "c.json.fence",
            "c.json.lock"
        ]
    );
    assert_eq!(dir.names(), ["settings.json", "tenants"]);
    assert_eq!(read_json(&file), defaults());
}

#[tokio::test]
async fn an_unknown_tenant_is_a_404_and_its_get_creates_nothing() {
    let dir = TempDir::new();
    // Given explicitly, and missing: a GET does not create it.
    let tenants = dir.0.path().join("elsewhere");
    let instance = Instance::start(
        &[
            "--settings",
            path_str(&dir.settings()),
            "--tenants",
            path_str(&tenants),
        ],
        &[],
    );
    let client = client();
    for _ in 0..2 {
        let (status, body) = get(&client, tenant_url(&instance, "nobody")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains("no tenant \"nobody\""), "{error}");
    }
    assert_eq!(dir.names(), ["settings.json"]);

    // Its file appears: the tenant exists.
    std::fs::create_dir(&tenants).unwrap();
    std::fs::write(tenants.join("nobody.json"), br#"{"here": true}"#).unwrap();
    let (status, body) = get(&client, tenant_url(&instance, "nobody")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["settings"], json!({"here": true}));
}

/// A tenant whose file exists but is no settings object cannot be
/// served: 503 with `Retry-After`, in JSON, the reason (and the file's
/// path) in the log only.
#[tokio::test]
async fn a_tenant_whose_file_cannot_be_loaded_is_a_503_without_internals() {
    let dir = TempDir::new();
    write_tenant(&dir, "broken", b"{not json");
    let instance = Instance::start(&["--settings", path_str(&dir.settings())], &[]);
    let response = client()
        .get(tenant_url(&instance, "broken"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("a JSON body");
    let error = body["error"].as_str().expect("an error message");
    assert!(error.contains("could not be loaded"), "{error}");
    let file = dir.tenants().join("broken.json");
    let path = path_str(&file);
    assert!(
        !error.contains("broken.json") && !error.contains("JSON"),
        "{error}"
    );
    assert!(
        instance.stderr.wait_for(path, DEADLINE),
        "the log names the file:\n{}",
        instance.stderr.text()
    );
}

#[tokio::test]
async fn a_bad_tenant_id_is_a_400_and_nothing_is_read_or_written_anywhere() {
    let dir = TempDir::new();
    let file = dir.settings();
    let original = b"{\"site_name\": \"kept\"}\n";
    std::fs::write(&file, original).unwrap();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let client = client();

    let too_long = "a".repeat(65);
    // `..%2Fsettings` would be the settings file itself, decoded.
    let bad = ["..%2F..", "..%2Fsettings", "a.b", &too_long, "", "a%41"];
    for id in bad {
        let url = tenant_url(&instance, id);
        let (status, body) = get(&client, url.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {id:?}: {body}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains("tenant id"), "GET {id:?}: {error}");
        let (status, body) = put(&client, url, r#"{"theme": "evil"}"#).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "PUT {id:?}: {body}");
        let error = body["error"].as_str().expect("an error message");
        assert!(error.contains("tenant id"), "PUT {id:?}: {error}");
    }
    // Not even the tenants' directory.
    assert_eq!(dir.names(), ["settings.json"]);
    assert_eq!(std::fs::read(&file).unwrap(), original);
    let (_, settings) = get(&client, instance.url("/settings")).await;
    assert_eq!(settings["settings"], json!({"site_name": "kept"}));

    // The longest id there may be is one; its PUT makes the directory.
    let longest = "z".repeat(64);
    let (status, body) = put(&client, tenant_url(&instance, &longest), "{}").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        read_json(&dir.tenants().join(format!("{longest}.json"))),
        json!({})
    );
}

#[tokio::test]
async fn a_tenant_write_without_the_right_token_is_a_401_and_writes_nothing() {
    let dir = TempDir::new();
    let a_bytes = b"{\"theme\": \"light\"}\n";
    write_tenant(&dir, "a", a_bytes);
    let token = "tenant-token-123";
    let instance = Instance::start(
        &["--settings", path_str(&dir.settings())],
        &[("SETTINGS_WRITE_TOKEN", token)],
    );
    let client = client();
    let body = r#"{"theme": "evil"}"#;

    let wrong = format!("Bearer {token}x");
    for (id, authorization) in [
        ("a", None),
        ("a", Some(wrong.as_str())),
        ("new", None),
        ("new", Some("Bearer tenant-token")),
        // The token first: no word on the id without it.
        ("a.b", None),
    ] {
        let (status, headers, text) =
            put_as(&client, tenant_url(&instance, id), authorization, body).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{id} {authorization:?}: {text}"
        );
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"settings\"");
        assert!(text.contains("nothing was saved"), "{text}");
        assert!(!text.contains(token), "{text}");
    }
    assert_eq!(names_in(&dir.tenants()), ["a.json"]);
    assert_eq!(
        std::fs::read(dir.tenants().join("a.json")).unwrap(),
        a_bytes
    );
    let (_, a) = get(&client, tenant_url(&instance, "a")).await;
    assert_eq!(a["settings"], json!({"theme": "light"}));

    let right = format!("Bearer {token}");
    let (status, _, text) = put_as(&client, tenant_url(&instance, "a"), Some(&right), body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        read_json(&dir.tenants().join("a.json")),
        json!({"theme": "evil"})
    );
}

#[tokio::test]
async fn bumping_the_set_key_reloads_every_tenant_from_disk_on_every_instance() {
    let redis = RedisServer::start().expect("start redis-server");
    let dir = TempDir::new();
    write_tenant(&dir, "a", br#"{"v": "a1"}"#);
    write_tenant(&dir, "b", br#"{"v": "b1"}"#);
    let url = redis.url();
    let file = dir.settings();
    let args = [
        "--redis",
        url.as_str(),
        "--settings",
        path_str(&file),
        "--key",
        "test:parent",
    ];
    let instances = [Instance::start(&args, &[]), Instance::start(&args, &[])];
    let client = client();
    let served = |instance: &Instance, id: &str| {
        let url = tenant_url(instance, id);
        let client = client.clone();
        async move {
            let (status, body) = get(&client, url).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["settings"]["v"].as_str().unwrap().to_owned()
        }
    };
    for instance in &instances {
        assert_eq!(served(instance, "a").await, "a1");
        assert_eq!(served(instance, "b").await, "b1");
    }

    // Changed behind the service's back: nothing tells the instances.
    write_tenant(&dir, "a", br#"{"v": "a2"}"#);
    write_tenant(&dir, "b", br#"{"v": "b2"}"#);
    for instance in &instances {
        assert_eq!(
            served(instance, "a").await,
            "a1",
            "no reload without a bump"
        );
        assert_eq!(
            served(instance, "b").await,
            "b1",
            "no reload without a bump"
        );
    }

    // What `gensync bump test:parent:tenants` does.
    let backend = RedisBackend::open(&url).unwrap();
    let set = Key::parse("test:parent:tenants").unwrap();
    Synchronizer::new(backend, set)
        .mark_updated()
        .await
        .expect("bump the parent");
    for instance in &instances {
        assert_eq!(served(instance, "a").await, "a2");
        assert_eq!(served(instance, "b").await, "b2");
    }
}

/// A symlink in the tenants' folder, dangling or not, in place of a
/// tenant's file or of its lock or fence file, is refused: a `PUT`
/// creates and overwrites nothing outside the folder, and a `GET` does not
/// serve the file a link points at.
#[tokio::test]
async fn a_symlink_in_the_tenants_folder_is_never_written_or_read_through() {
    use std::os::unix::fs::symlink;
    let dir = TempDir::new();
    let tenants = dir.tenants();
    std::fs::create_dir_all(&tenants).unwrap();
    let outside = dir.0.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim.json");
    let original = b"{\"secret\": \"kept\"}\n";
    std::fs::write(&victim, original).unwrap();
    // A link to an existing file, and dangling links: as the tenant's
    // file, its lock file and its fence file.
    symlink(&victim, tenants.join("linked.json")).unwrap();
    symlink(outside.join("new.json"), tenants.join("dangling.json")).unwrap();
    write_tenant(&dir, "locked", b"{}");
    symlink(outside.join("lock"), tenants.join("locked.json.lock")).unwrap();
    write_tenant(&dir, "fenced", b"{}");
    symlink(outside.join("fence"), tenants.join("fenced.json.fence")).unwrap();
    let instance = Instance::start(&["--settings", path_str(&dir.settings())], &[]);
    let client = client();

    let (status, body) = get(&client, tenant_url(&instance, "linked")).await;
    assert_ne!(status, StatusCode::OK, "{body}");
    assert!(!body.to_string().contains("kept"), "{body}");
    for id in ["linked", "dangling", "locked", "fenced"] {
        let (status, body) = put(&client, tenant_url(&instance, id), r#"{"evil": 1}"#).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{id}: {body}");
        assert_eq!(body["saved"], json!(false), "{id}: {body}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), original);
    assert_eq!(
        names_in(&outside),
        ["victim.json"],
        "created through a link"
    );
    assert_eq!(
        std::fs::read_link(tenants.join("linked.json")).unwrap(),
        victim,
        "the link itself is left for the operator"
    );
    assert!(
        instance.stderr.wait_for("is a symbolic link", DEADLINE),
        "{}",
        instance.stderr.text()
    );
}
