//! The archive stage in the registry: built from the topology (its settings,
//! `[stages.archive]`, are `crate::config::stages::archive`).

use super::{ArchiveCopy, ArchiveStage, ArchiveTopics, STAGE};
use crate::erasure::Secrets;
use crate::runtime::{StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::archive::ArchiveStageConfig;

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
