//! The compact stage in the registry: built from the topology (its settings,
//! `[stages.compact]`, are `crate::config::stages::compact`).

use super::{CompactStage, STAGE};
use crate::erasure::Secrets;
use crate::runtime::{RuntimeError, StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::compact::CompactStageConfig;

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`erasures` -> the archive's purge, deletion certificates, `audit`",
    enabled: |t| t.stages.compact.enabled,
    build,
};

fn build(ctx: &StageContext) -> StageRun {
    let cfg = ctx.topology.stages.compact.clone();
    let lc = ctx.loop_config(
        STAGE,
        &[&ctx.topology.topics.erasures],
        &cfg.group_id,
        cfg.batch_max_records,
        cfg.batch_max_wait_ms,
    );
    let ctx = ctx.clone();
    Box::new(move || {
        let topology = &ctx.topology;
        let secrets =
            Secrets::load(&topology.gdpr, topology.kafka.bootstrap.is_empty()).map_err(|e| {
                RuntimeError::Setup {
                    stage: STAGE,
                    detail: e.to_string(),
                }
            })?;
        let instance = topology.instance_id();
        supervise_loop(&ctx.shutdown, || {
            let stage = CompactStage::new(topology, secrets.clone(), &instance, ctx.rt.clone())?;
            StageLoop::kafka(stage, &ctx.settings, lc.clone(), ctx.metrics.clone())
        })
    })
}
