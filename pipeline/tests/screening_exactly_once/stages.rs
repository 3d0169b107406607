//! The stage processes under test: the topology they run with, and their
//! SIGKILL and restart at a planned point of their committed progress.

use std::path::{Path, PathBuf};

use crate::common::{ChildGuard, TopologyFile, kusanagi};

pub(crate) const PARTITIONS: i32 = 3;

pub(crate) fn write_topology(dir: &Path, bootstrap: &str) -> PathBuf {
    TopologyFile::new()
        .set("instance.id", "it")
        .set("kafka.bootstrap", bootstrap)
        .set("kafka.session_timeout_ms", 6000)
        .set("topics.partitions", i64::from(PARTITIONS))
        .set("stages.screen.batch_max_records", 500)
        // The workload is stamped in 2099.
        .set("stages.screen.max_future_seconds", 0)
        .set("stages.decide.batch_max_records", 500)
        // Many transactions, so that kills land while verdicts flow.
        .set("stages.analyze.batch_max_records", 5)
        .set("http.enabled", false)
        .write(dir)
}

/// Kills `stage` with SIGKILL and restarts it when its committed progress
/// passes the next of `kills`.
pub(crate) fn kill_at(
    dir: &Path,
    topology: &Path,
    stage: &str,
    child: &mut ChildGuard,
    seen: i64,
    kills: &mut Vec<i64>,
    generation: &mut u32,
) {
    if kills.first().is_some_and(|k| seen >= *k) {
        kills.remove(0);
        child.kill9();
        *generation += 1;
        eprintln!(
            "[it] SIGKILLed the {stage} stage after it committed {seen} input offsets; restarting it"
        );
        *child = kusanagi(
            dir,
            &format!("{stage}-{generation}"),
            topology,
            &["stage", stage],
        );
    }
}
