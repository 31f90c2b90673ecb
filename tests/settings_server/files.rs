//! The settings file: written through a symlink, its mode and owner kept,
//! a read-only one left alone, a missing one not mistaken for defaults,
//! and its content kept exactly as sent.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

/// `settings.json -> real/target.json`: a PUT changes the target, and the
/// link stays a link, so every reader of either sees the change.
#[tokio::test]
async fn a_put_writes_through_a_symlinked_settings_file() {
    let dir = TempDir::new();
    let real = dir.0.path().join("real");
    std::fs::create_dir(&real).unwrap();
    let target = real.join("target.json");
    std::fs::write(&target, r#"{"v": 0}"#).unwrap();
    let link = dir.settings();
    std::os::unix::fs::symlink("real/target.json", &link).unwrap();
    let instance = Instance::start(&["--settings", path_str(&link)], &[]);

    let (status, body) = put(&client(), instance.url("/settings"), r#"{"v": 1}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let meta = std::fs::symlink_metadata(&link).unwrap();
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("real/target.json")
    );
    assert_eq!(read_json(&target), json!({"v": 1}));
    // Nothing left beside the link; the lock and the token beside the
    // target, where every instance writing it finds them.
    assert_eq!(dir.names(), ["real", "settings.json"]);
    let mut beside: Vec<String> = std::fs::read_dir(&real)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(
        beside,
        ["target.json", "target.json.fence", "target.json.lock"]
    );
}

/// A PUT under `umask 077` keeps a 0664 file 0664, and (run as root) its
/// owner; the lock and fence files it creates beside it take both.
#[tokio::test]
async fn a_put_keeps_the_files_mode_and_owner() {
    let dir = TempDir::new();
    let file = dir.settings();
    std::fs::write(&file, r#"{"v": 0}"#).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
    // Root may give a file away; anyone else keeps their own.
    let root = std::fs::metadata(dir.0.path()).unwrap().uid() == 0
        && std::os::unix::fs::chown(&file, Some(4321), Some(4322)).is_ok();
    let owner = {
        let meta = std::fs::metadata(&file).unwrap();
        (meta.uid(), meta.gid())
    };
    let instance = Instance::start_after(Some("umask 077"), &["--settings", path_str(&file)], &[]);

    let (status, body) = put(&client(), instance.url("/settings"), r#"{"v": 1}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_json(&file), json!({"v": 1}));
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o664);
    assert_eq!((meta.uid(), meta.gid()), owner, "root: {root}");
    // The lock and fence files the save created beside it follow it, so an
    // instance running as another user of its group can save too.
    for suffix in [".lock", ".fence"] {
        let companion = format!("{}{suffix}", file.display());
        let meta = std::fs::metadata(&companion).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o664, "{suffix}");
        assert_eq!((meta.uid(), meta.gid()), owner, "{suffix}, root: {root}");
    }
}

/// A file the user made read-only (0444) is not overwritten, even by a
/// service running as root: the PUT fails, saving nothing, and says so.
#[tokio::test]
async fn a_read_only_settings_file_is_not_overwritten() {
    let dir = TempDir::new();
    let file = dir.settings();
    let original = b"{\"theme\": \"pinned\"}\n";
    std::fs::write(&file, original).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);

    let (status, body) = put(&client(), instance.url("/settings"), r#"{"theme": "x"}"#).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["saved"], json!(false));
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing was saved"),
        "{body}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), original);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o444);
    // No temporary file left, and no token moved.
    assert_eq!(dir.names(), ["settings.json", "settings.json.lock"]);
    let (_, served) = get(&client(), instance.url("/settings")).await;
    assert_eq!(served["settings"], json!({"theme": "pinned"}));
    let stopped = instance.stop();
    assert!(stopped.stderr.contains("read-only"), "{}", stopped.stderr);
}

/// After a PUT, the settings directory vanishing does not reset the
/// instance to its start-up defaults: it keeps serving what it saved, does
/// not create the file again, and a PUT that cannot save says so.
#[tokio::test]
async fn a_settings_file_gone_at_runtime_keeps_the_last_good_settings() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let client = client();
    let (status, body) = put(&client, instance.url("/settings"), r#"{"k": 1}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    std::fs::remove_dir_all(dir.0.path()).unwrap();
    let (status, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["settings"], json!({"k": 1}), "not the defaults");

    let (status, body) = put(&client, instance.url("/settings"), r#"{"k": 2}"#).await;
    assert!(status.is_server_error(), "{status}: {body}");
    assert_eq!(body["saved"], json!(false));
    let (_, body) = get(&client, instance.url("/settings")).await;
    assert_eq!(body["settings"], json!({"k": 1}));
    assert!(!dir.0.path().exists(), "created again");
}

/// Numbers are saved and served with every digit as sent: no 2^64 turned
/// into a float, no trailing zero dropped (an exponent gains its sign).
#[tokio::test]
async fn numbers_are_kept_exactly_as_sent() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let numbers = [
        "18446744073709551616",
        "-9223372036854775809",
        "123456789012345678901234567890",
        "1.50",
        "0.1000000000000000055511151231257827",
        "1e400",
        "-2.50E-7",
    ];
    // Written back by serde_json: the same digits, the exponent signed.
    let written = |n: &str| n.replace("e4", "e+4").replace('E', "e");
    let body = format!(
        "{{{}}}",
        numbers
            .iter()
            .enumerate()
            .map(|(i, n)| format!("\"n{i}\": {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (status, reply) = put(&client(), instance.url("/settings"), &body).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    let saved = std::fs::read_to_string(&file).unwrap();
    let served = client()
        .get(instance.url("/settings"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (i, n) in numbers.iter().enumerate() {
        let n = written(n);
        let field = format!("\"n{i}\": {n}");
        assert!(saved.contains(&field), "{field} not in the file:\n{saved}");
        let field = format!("\"n{i}\":{n}");
        assert!(served.contains(&field), "{field} not served:\n{served}");
    }
}

/// JSON a parser may take but the settings must not: NaN, a byte-order
/// mark, a lone surrogate, nesting deeper than the parser's limit. Each is
/// a 400 that saves nothing.
#[tokio::test]
async fn json_edge_cases_are_a_400_and_save_nothing() {
    let dir = TempDir::new();
    let file = dir.settings();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let before = std::fs::read(&file).unwrap();
    let deep = format!("{{\"a\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    let bodies: [&[u8]; 6] = [
        b"{\"x\": NaN}",
        b"{\"x\": Infinity}",
        b"\xEF\xBB\xBF{\"x\": 1}",
        b"{\"x\": \"\\ud800\"}",
        b"{\"x\": \"\xff\"}",
        deep.as_bytes(),
    ];
    for body in bodies {
        let response = client()
            .put(instance.url("/settings"))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        let reply: Value = response.json().await.unwrap();
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("nothing was saved"),
            "{reply}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }
    assert_eq!(dir.names(), ["settings.json"]);
}
