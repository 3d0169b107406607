//! One conformance suite for every kind of tier: in memory, a local
//! folder, and S3 on the real S3-protocol server the harness starts
//! (`KUSANAGI_TEST_S3_ENDPOINT`, set by `scripts/test.sh`).

use std::collections::BTreeMap;

use bytes::Bytes;
use kusanagi_connectors::storage::TierStore;

async fn conformance(tier: TierStore) {
    let a = "events/tenant=t1/dt=2099-01-01/hour=00/a.parquet";
    let b = "events/tenant=t1/dt=2099-01-02/hour=13/b.parquet";
    tier.put(a, Bytes::from_static(b"first")).await.unwrap();
    tier.put(b, Bytes::from(vec![7u8; 70_000])).await.unwrap();
    tier.put("screenings/x.parquet", Bytes::from_static(b"s"))
        .await
        .unwrap();

    assert_eq!(tier.get(a).await.unwrap(), Bytes::from_static(b"first"));
    assert_eq!(tier.get(b).await.unwrap().len(), 70_000);
    assert_eq!(
        tier.list("events").await.unwrap(),
        [(a.to_owned(), 5), (b.to_owned(), 70_000)]
    );

    // Overwrite is whole-object.
    tier.put(a, Bytes::from_static(b"second")).await.unwrap();
    assert_eq!(tier.get(a).await.unwrap(), Bytes::from_static(b"second"));

    tier.delete(a).await.unwrap();
    tier.delete(a).await.unwrap(); // deleting what is gone is fine
    let err = tier.get(a).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    let err = err.to_string();
    assert!(err.contains(tier.url()) && err.contains(a), "{err}");
    assert_eq!(tier.list("events").await.unwrap().len(), 1);
    assert_eq!(tier.list("").await.unwrap().len(), 2);

    // Create-if-absent: the first writer wins, the second is told.
    let log = "_catalog/log/00000000000000000001.json";
    assert!(!tier.exists(log).await.unwrap());
    assert!(
        tier.put_if_absent(log, Bytes::from_static(b"one"))
            .await
            .unwrap()
    );
    assert!(
        !tier
            .put_if_absent(log, Bytes::from_static(b"two"))
            .await
            .unwrap()
    );
    assert_eq!(tier.get(log).await.unwrap(), Bytes::from_static(b"one"));
    assert!(tier.exists(log).await.unwrap());

    // Listing after a key returns only what sorts after it.
    let next = "_catalog/log/00000000000000000002.json";
    tier.put(next, Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(
        tier.list_after("_catalog/log", log).await.unwrap(),
        [(next.to_owned(), 1)]
    );
    assert_eq!(tier.list_after("_catalog/log", "").await.unwrap().len(), 2);
    let modified = tier.list_modified("_catalog/log").await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert_eq!(modified.len(), 2);
    assert!(
        modified.iter().all(|(_, t)| (now_ms - t).abs() < 600_000),
        "{modified:?}"
    );
}

#[tokio::test]
async fn memory_tier() {
    conformance(TierStore::open("memory://", &BTreeMap::new()).unwrap()).await;
}

#[tokio::test]
async fn local_folder_tier() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path();
    let url = format!("file://{}", dir.join("hot").display());
    conformance(TierStore::open(&url, &BTreeMap::new()).unwrap()).await;
    assert!(
        dir.join("hot/screenings/x.parquet").exists(),
        "files are plain files in the folder"
    );
}

/// Creates a bucket on the S3-protocol server.
async fn create_bucket(endpoint: &str, bucket: &str) {
    let answer = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("S3 server reachable");
    assert!(answer.status().is_success(), "create bucket: {answer:?}");
}

#[tokio::test]
async fn s3_tier_on_the_real_s3_server() {
    let endpoint = std::env::var("KUSANAGI_TEST_S3_ENDPOINT").expect(
        "KUSANAGI_TEST_S3_ENDPOINT is not set: run scripts/test.sh, which starts the S3 server",
    );
    let bucket = format!("kusanagi-conformance-{}", std::process::id());
    create_bucket(&endpoint, &bucket).await;
    let options: BTreeMap<String, String> = [
        ("endpoint", endpoint.as_str()),
        ("region", "us-east-1"),
        ("access_key_id", "test"),
        ("secret_access_key", "test"),
        ("allow_http", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let tier = TierStore::open(&format!("s3://{bucket}/cold"), &options).unwrap();
    conformance(tier).await;
}

#[test]
fn bad_urls_and_options_are_named() {
    let err = TierStore::open("ftp://x", &BTreeMap::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("ftp://x") && err.contains("expected"), "{err}");
    let mut options = BTreeMap::new();
    options.insert("colour".to_owned(), "blue".to_owned());
    let err = TierStore::open("s3://b", &options).unwrap_err().to_string();
    assert!(err.contains("colour"), "{err}");
}
