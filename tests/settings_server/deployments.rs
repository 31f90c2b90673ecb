//! The example over Sentinel and over a Cluster: two instances given the
//! deployment's URL agree on the settings one of them saved.

use gensync::testing::{RedisCluster, SentinelGroup};

use super::*;

async fn instances_agree_through(url: &str) {
    let dir = TempDir::new();
    let file = dir.settings();
    let args = ["--redis", url, "--settings", path_str(&file)];
    let writer = Instance::start(&args, &[]);
    let reader = Instance::start(&args, &[]);
    reader_sees_what_writer_saved(&client(), &writer, &reader, url).await;
}

/// `writer` saves settings naming `site`; `reader` serves them at once,
/// with the generation the save returned.
pub(super) async fn reader_sees_what_writer_saved(
    client: &reqwest::Client,
    writer: &Instance,
    reader: &Instance,
    site: &str,
) {
    let settings = json!({ "site_name": site });
    let (status, body) = put(client, writer.url("/settings"), &settings.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, seen) = get(client, reader.url("/settings")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["settings"], settings);
    assert_eq!(seen["generation"], body["generation"]);
}

#[tokio::test]
async fn instances_agree_through_sentinel() {
    let group = SentinelGroup::start().unwrap();
    instances_agree_through(&group.url()).await;
}

#[tokio::test]
async fn instances_agree_through_a_cluster() {
    let cluster = RedisCluster::start().unwrap();
    instances_agree_through(&cluster.url()).await;
}
