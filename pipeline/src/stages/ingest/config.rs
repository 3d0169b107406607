//! The ingest stage's settings (`[stages.ingest]`).

use serde::Deserialize;

use super::{IngestStage, STAGE};
use crate::config::{KafkaConfig, TopicsConfig};
use crate::runtime::{StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

/// `[stages.ingest]`: validation limits and batching.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Largest raw JSON event accepted, in bytes; larger ones are
    /// dead-lettered as `too_large`.
    pub max_event_bytes: usize,
    /// Most records in one transaction.
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived, in
    /// milliseconds (the latency added at low rates).
    pub batch_max_wait_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-ingest".into(),
            max_event_bytes: 1024 * 1024,
            batch_max_records: 2_000,
            batch_max_wait_ms: 20,
        }
    }
}

impl IngestConfig {
    /// Problems as (key under `stages.ingest`, message).
    pub fn validate(&self, kafka: &KafkaConfig, _topics: &TopicsConfig) -> Vec<(String, String)> {
        let mut p = crate::config::check_loop(
            &self.group_id,
            self.batch_max_records,
            self.batch_max_wait_ms,
        );
        if self.max_event_bytes == 0 || self.max_event_bytes > kafka.message_max_bytes as usize {
            p.push((
                "max_event_bytes".into(),
                format!(
                    "expected 1..={} (kafka.message_max_bytes), found {}",
                    kafka.message_max_bytes, self.max_event_bytes
                ),
            ));
        }
        p
    }
}

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`events.raw` -> `events`, `events.dlq` (and `POST /api/v1/events`)",
    enabled: |t| t.stages.ingest.enabled,
    build,
};

fn build(ctx: &StageContext) -> StageRun {
    let cfg = ctx.topology.stages.ingest.clone();
    let topics = ctx.topology.topics.clone();
    let lc = ctx.loop_config(
        STAGE,
        &[&topics.raw],
        &cfg.group_id,
        cfg.batch_max_records,
        cfg.batch_max_wait_ms,
    );
    let max_record =
        (ctx.topology.kafka.message_max_bytes as usize).min(topics.raw_max_message_bytes as usize);
    let ctx = ctx.clone();
    Box::new(move || {
        supervise_loop(&ctx.shutdown, || {
            let stage = IngestStage::new(
                &topics.events,
                &topics.dead_letter,
                cfg.max_event_bytes,
                max_record,
            );
            StageLoop::kafka(stage, &ctx.settings, lc.clone(), ctx.metrics.clone())
        })
    })
}
