//! The ingest stage in the registry: built from the topology (its settings,
//! `[stages.ingest]`, are `crate::config::stages::ingest`).

use super::{IngestStage, STAGE};
use crate::runtime::{StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::ingest::IngestConfig;

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
