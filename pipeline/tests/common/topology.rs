//! What a test configures and calls: its topology file, an S3 bucket, the
//! HTTP API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::free_port;

/// A topology file for a test, built key by key instead of written by
/// hand: `TopologyFile::new().set("stages.archive.rotate_after_seconds", 1)
/// .archive_in(&dir).write(&dir)`. Unset keys keep Kusanagi's defaults.
#[derive(Debug, Clone, Default)]
pub struct TopologyFile {
    table: toml::Table,
}

impl TopologyFile {
    /// An empty topology: every default.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`, a dotted path (`stages.archive.rotate_after_seconds`),
    /// to `value`.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        let mut parts: Vec<&str> = key.split('.').collect();
        let last = parts.pop().expect("a key");
        let mut table = &mut self.table;
        for part in parts {
            table = table
                .entry(part)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .unwrap_or_else(|| panic!("{key}: {part} is not a table"));
        }
        table.insert(last.to_owned(), value.into());
        self
    }

    /// Sets `key` to a path.
    pub fn path(self, key: &str, path: &Path) -> Self {
        self.set(key, path.display().to_string())
    }

    /// Keeps the archive's catalog and three tiers as folders under `dir`.
    pub fn archive_in(self, dir: &Path) -> Self {
        ["catalog", "hot", "warm", "cold"]
            .into_iter()
            .fold(self, |t, part| {
                t.path(&format!("archive.{part}"), &dir.join(part))
            })
    }

    /// Writes it to `<dir>/topology.toml` and returns that path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("topology.toml");
        std::fs::write(
            &path,
            toml::to_string(&self.table).expect("a topology as TOML"),
        )
        .expect("writing the topology");
        path
    }
}

/// A fresh bucket on the S3-protocol server `scripts/test.sh` started.
pub struct S3Bucket {
    /// The server's URL.
    pub endpoint: String,
    /// The bucket.
    pub name: String,
}

impl S3Bucket {
    /// Creates a bucket named `<prefix>-<unique>`.
    pub fn create(prefix: &str) -> Self {
        let endpoint = std::env::var("KUSANAGI_TEST_S3_ENDPOINT").expect(
            "KUSANAGI_TEST_S3_ENDPOINT is not set: run scripts/test.sh, which starts the S3 server",
        );
        let name = format!("{prefix}-{}-{}", std::process::id(), free_port());
        let answer = reqwest::blocking::Client::new()
            .put(format!("{endpoint}/{name}"))
            .send()
            .expect("S3 server reachable");
        assert!(answer.status().is_success(), "create bucket: {answer:?}");
        Self { endpoint, name }
    }

    /// `s3://<bucket>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("s3://{}/{path}", self.name)
    }

    /// `topology` with `[archive.s3]` set to reach this server.
    pub fn options(&self, topology: TopologyFile) -> TopologyFile {
        topology
            .set("archive.s3.endpoint", self.endpoint.as_str())
            .set("archive.s3.region", "us-east-1")
            .set("archive.s3.access_key_id", "test")
            .set("archive.s3.secret_access_key", "test")
            .set("archive.s3.allow_http", "true")
    }
}

/// One HTTP request to `addr` (with the API key `key`, if any, and a JSON
/// body); returns (status, body). Fails the test only if no answer came.
pub fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: &[u8]) -> (u16, String) {
    static CLIENT: std::sync::LazyLock<reqwest::blocking::Client> =
        std::sync::LazyLock::new(|| {
            reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("an HTTP client")
        });
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = CLIENT
        .request(method, format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(k) = key {
        request = request.header("x-api-key", k);
    }
    let response = request.send().unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().unwrap_or_default())
}
