//! The `kusanagi` processes the suite runs: the topology they read, the
//! archive stage as a child process, and operator commands run to their end.

use std::path::{Path, PathBuf};

use crate::common::{ChildGuard, S3Bucket, TopologyFile, kusanagi_with_env};

pub(crate) const PARTITIONS: i32 = 3;

pub(crate) fn write_topology(dir: &Path, bootstrap: &str, bucket: &S3Bucket) -> PathBuf {
    let topology = TopologyFile::new()
        .set("instance.id", "it")
        .set("kafka.bootstrap", bootstrap)
        .set("kafka.session_timeout_ms", 6000)
        .set("topics.partitions", i64::from(PARTITIONS))
        .set("stages.archive.rotate_after_seconds", 2)
        .set("archive.catalog", bucket.url("catalog"))
        .path("archive.hot", &dir.join("archive/hot"))
        .path("archive.warm", &dir.join("archive/warm"))
        .set("archive.cold", bucket.url("cold"))
        .set("http.enabled", false);
    bucket.options(topology).write(dir)
}

pub(crate) fn stage(dir: &Path, name: &str, topology: &Path, instance: &str) -> ChildGuard {
    kusanagi_with_env(
        dir,
        name,
        topology,
        &["stage", "archive"],
        &[("KUSANAGI_INSTANCE_ID", instance)],
    )
}

/// Runs `kusanagi --topology T <args>` to its end: (success, stdout).
pub(crate) fn cli(topology: &Path, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .arg("--topology")
        .arg(topology)
        .args(args)
        .output()
        .expect("kusanagi runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "[kusanagi {}] {}{}",
        args.join(" "),
        stdout.lines().last().unwrap_or(""),
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .map(|l| format!(" / {l}"))
            .unwrap_or_default()
    );
    (out.status.success(), stdout)
}
