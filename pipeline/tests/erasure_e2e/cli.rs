//! The `kusanagi` command run to its end, and what its operator commands
//! answer (`erasures ls`, `verify`, `catalog ls`); and waiting for a stage
//! process to stop at its crash point.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::ChildGuard;

pub(crate) fn kusanagi_cli(dir: &Path, topology: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .arg("--topology")
        .arg(topology)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .expect("kusanagi runs")
}

/// Waits for `child` to end on its own (an abort at a crash point).
pub(crate) fn wait_exit(child: &mut ChildGuard, timeout: Duration) -> std::process::ExitStatus {
    let end = Instant::now() + timeout;
    loop {
        if let Some(status) = child.child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < end,
            "{} did not stop at its crash point",
            child.name
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn erasures_ls(dir: &Path, topology: &Path) -> Vec<Value> {
    let out = kusanagi_cli(dir, topology, &["erasures", "ls", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap()
}

pub(crate) fn verify_archive(dir: &Path, topology: &Path, when: &str) {
    let out = kusanagi_cli(dir, topology, &["verify"]);
    assert!(
        out.status.success(),
        "kusanagi verify after {when}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files the catalog lists (`kusanagi catalog ls --json`).
pub(crate) fn archive_files(root: &Path, topology: &Path) -> usize {
    let out = kusanagi_cli(root, topology, &["catalog", "ls", "--json"]);
    assert!(out.status.success());
    serde_json::from_slice::<Vec<Value>>(&out.stdout).map_or(0, |v| v.len())
}
