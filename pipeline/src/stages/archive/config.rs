//! The archive stage's settings (`[stages.archive]`).

use super::{ArchiveCopy, ArchiveStage, ArchiveTopics, STAGE};
use crate::erasure::Secrets;
use crate::runtime::{StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};
use serde::Deserialize;

/// `[stages.archive]`: when open files are written, and how.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveStageConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Write every open file once one holds this many bytes of records (as
    /// read from Kafka).
    pub rotate_after_bytes: usize,
    /// Write every open file once the oldest has been open this long, in
    /// seconds: how far the archive may lag behind Kafka.
    pub rotate_after_seconds: u64,
    /// Write every open file once all of them hold this many bytes: the
    /// stage's memory bound.
    pub max_buffered_bytes: usize,
    /// zstd level of the Parquet pages (1 fast .. 22 small).
    pub zstd_level: i32,
}

impl Default for ArchiveStageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-archive".into(),
            rotate_after_bytes: 64 * 1024 * 1024,
            rotate_after_seconds: 300,
            max_buffered_bytes: 256 * 1024 * 1024,
            zstd_level: 6,
        }
    }
}

impl ArchiveStageConfig {
    /// Problems as (key under `stages.archive`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = crate::config::check_group_id(&self.group_id);
        if self.rotate_after_bytes == 0 {
            p.push((
                "rotate_after_bytes".into(),
                "expected at least 1, found 0".into(),
            ));
        }
        if self.max_buffered_bytes < self.rotate_after_bytes {
            p.push((
                "max_buffered_bytes".into(),
                format!(
                    "expected at least rotate_after_bytes ({}), found {}",
                    self.rotate_after_bytes, self.max_buffered_bytes
                ),
            ));
        }
        if !(1..=86_400).contains(&self.rotate_after_seconds) {
            p.push((
                "rotate_after_seconds".into(),
                format!("expected 1..=86400, found {}", self.rotate_after_seconds),
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            p.push((
                "zstd_level".into(),
                format!("expected 1..=22, found {}", self.zstd_level),
            ));
        }
        p
    }
}

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`events`, `screenings`, `accounts.transitions`, `audit` -> Parquet in the hot tier, \
            listed in the catalog",
    enabled: |t| t.stages.archive.enabled,
    build,
};

/// Most records the archive takes in one turn of its loop, and the
/// longest wait for them: it buffers into open files, so these only bound
/// how long a turn takes, not what is committed at once.
const BATCH_RECORDS: usize = 10_000;
const BATCH_WAIT_MS: u64 = 50;

fn build(ctx: &StageContext) -> StageRun {
    let topology = &ctx.topology;
    let cfg = topology.stages.archive.clone();
    let topics = &topology.topics;
    let archive_topics = ArchiveTopics {
        events: topics.events.clone(),
        screenings: topics.screenings.clone(),
        transitions: topics.transitions.clone(),
        audit: topics.audit.clone(),
        dead_letter: topics.dead_letter.clone(),
    };
    let inputs = archive_topics.inputs();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let lc = ctx.loop_config(STAGE, &inputs, &cfg.group_id, BATCH_RECORDS, BATCH_WAIT_MS);
    let copy = ArchiveCopy {
        instance: topology.instance_id(),
        max_dead_letter_bytes: (ctx.settings.message_max_bytes as usize).saturating_sub(64 * 1024),
        metrics: ctx.metrics.clone(),
        // Needed only once the archive records an erasure.
        secrets: Secrets::load(&topology.gdpr, topology.kafka.bootstrap.is_empty()),
        rt: ctx.rt.clone(),
    };
    let ctx = ctx.clone();
    Box::new(move || {
        supervise_loop(&ctx.shutdown, || {
            let stage = ArchiveStage::new(
                cfg.clone(),
                archive_topics.clone(),
                &ctx.topology.archive,
                copy.clone(),
            )?;
            StageLoop::kafka(stage, &ctx.settings, lc.clone(), ctx.metrics.clone())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_setting_is_named() {
        assert!(ArchiveStageConfig::default().validate().is_empty());
        let bad = ArchiveStageConfig {
            group_id: " ".into(),
            rotate_after_bytes: 100,
            max_buffered_bytes: 10,
            rotate_after_seconds: 0,
            zstd_level: 23,
            ..ArchiveStageConfig::default()
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "group_id",
                "max_buffered_bytes",
                "rotate_after_seconds",
                "zstd_level"
            ]
        );
    }
}
