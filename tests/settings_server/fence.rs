//! The files beside the settings file: `.fence` (a token from the future
//! is refused, and one already recorded says how to reset it) and `.lock`
//! (both take the settings file's mode and owner), and none of them is
//! left untracked in a clone.

use std::os::unix::fs::PermissionsExt;
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;

/// Microseconds since the epoch, `days` from now: what a fencing token
/// from a clock that far ahead holds.
fn micros_in(days: u64) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (now.as_micros() as u64) + days * 86_400 * 1_000_000
}

/// A Redis whose fence counter ran 30 days ahead hands out a token the
/// saver refuses (nothing saved, nothing recorded), so once Redis loses
/// the counter, writes go through again instead of 409 for 30 days.
#[tokio::test]
async fn a_fencing_token_from_the_future_is_refused_not_recorded() {
    let redis = RedisServer::start().expect("start redis-server");
    let dir = TempDir::new();
    let file = dir.settings();
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--settings", path_str(&file)];
    let instance = Instance::start(&args, &[]);
    let client = client();
    let counter = "{gensync:example:settings}:%fence";
    let mut conn = redis.connection().unwrap();
    let future = micros_in(30);
    let () = redis::cmd("SET")
        .arg(counter)
        .arg(future)
        .query(&mut conn)
        .unwrap();

    let (status, body) = put(&client, instance.url("/settings"), r#"{"v": 1}"#).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(body["saved"], json!(false), "{body}");
    assert_eq!(read_json(&file), defaults(), "nothing saved");
    let fence = std::fs::read_to_string(beside(&file, ".fence")).unwrap_or_default();
    assert_ne!(
        fence.trim(),
        future.to_string(),
        "the future token was recorded"
    );
    assert!(
        instance
            .stderr
            .wait_for("ahead of this host's clock", DEADLINE),
        "{}",
        instance.stderr.text()
    );

    // Redis loses its counter (a restart without persistence).
    let () = redis::cmd("DEL").arg(counter).query(&mut conn).unwrap();
    let (status, body) = put(&client, instance.url("/settings"), r#"{"v": 2}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_json(&file), json!({"v": 2}));
}

/// A `.fence` already holding a token from the future (recorded by an
/// older version) refuses writes with a log line naming the file and how
/// to reset it; deleting it, as the line says, lets writes through.
#[tokio::test]
async fn a_recorded_token_from_the_future_says_how_to_reset_it() {
    let dir = TempDir::new();
    let file = dir.settings();
    let fence = beside(&file, ".fence");
    std::fs::write(&fence, format!("{}\n", micros_in(30))).unwrap();
    let instance = Instance::start(&["--settings", path_str(&file)], &[]);
    let client = client();

    let (status, body) = put(&client, instance.url("/settings"), r#"{"v": 1}"#).await;
    assert_ne!(status, StatusCode::OK, "{body}");
    assert_eq!(body["saved"], json!(false), "{body}");
    let reset = format!("reset it by deleting {}", fence.display());
    assert!(
        instance.stderr.wait_for(&reset, DEADLINE),
        "{}",
        instance.stderr.text()
    );

    std::fs::remove_file(&fence).unwrap();
    let (status, body) = put(&client, instance.url("/settings"), r#"{"v": 2}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_json(&file), json!({"v": 2}));
}

/// Two instances on one settings file, as two users of its group: the
/// second, not root, saves after the first created the lock and fence
/// files under `umask 077`, instead of failing to open them (a 500).
#[tokio::test]
async fn a_second_instance_running_as_another_user_of_the_group_can_save() {
    let dir = TempDir::new();
    let file = dir.settings();
    std::fs::write(&file, r#"{"v": 0}"#).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
    let shared = dir.0.path();
    if std::os::unix::fs::chown(&file, Some(4321), Some(4322)).is_err() {
        eprintln!("skipped: only root can set up two users");
        return;
    }
    std::os::unix::fs::chown(shared, Some(4321), Some(4322)).unwrap();
    std::fs::set_permissions(shared, std::fs::Permissions::from_mode(0o775)).unwrap();
    let args = ["--settings", path_str(&file)];
    let first = Instance::start_after(Some("umask 077"), &args, &[]);
    let (status, body) = put(&client(), first.url("/settings"), r#"{"v": 1}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The setup's `exec` runs the example as uid 4323 in group 4322 (the
    // wrapper's own `exec` after it is never reached).
    let as_other =
        "umask 077; exec setpriv --reuid=4323 --regid=4322 --clear-groups -- \"$0\" \"$@\"";
    let second = Instance::start_after(Some(as_other), &args, &[]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", second.child.id())).unwrap();
    assert!(status.contains("\nUid:\t4323\t"), "{status}");
    let (status, body) = put(&client(), second.url("/settings"), r#"{"v": 2}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(read_json(&file), json!({"v": 2}));
    drop(first);
}

/// The README's first command, run in the clone, leaves nothing untracked:
/// the settings file, its lock and fence files and the tenants' folder are
/// ignored by git.
#[test]
fn the_files_the_service_writes_in_a_clone_are_ignored_by_git() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let paths = [
        "settings.json",
        "settings.json.lock",
        "settings.json.fence",
        "tenants/acme.json",
        "tenants/acme.json.lock",
        "tenants/acme.json.fence",
    ];
    let output = Command::new("git")
        .args(["check-ignore", "--no-index", "-v"])
        .args(paths)
        .current_dir(repo)
        .output()
        .expect("run git check-ignore");
    let ignored = String::from_utf8_lossy(&output.stdout);
    for path in paths {
        assert!(
            ignored.lines().any(|l| l.ends_with(&format!("\t{path}"))),
            "{path} is not ignored:\n{ignored}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// A file beside `path`: its name with `suffix` added.
fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap().to_owned();
    name.push(suffix);
    path.with_file_name(name)
}
