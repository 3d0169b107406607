//! The tier stage in the registry: built from the topology (its settings,
//! `[stages.tier]`, are `crate::config::stages::tier`).

use super::{STAGE, run_periodically};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::tier::TierStageConfig;

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "moves archive files hot -> warm -> cold by age, every `stages.tier.interval_seconds`",
    enabled: |t| t.stages.tier.enabled,
    build,
};

fn build(ctx: &StageContext) -> StageRun {
    let ctx = ctx.clone();
    Box::new(move || {
        let t = &ctx.topology;
        run_periodically(
            &t.stages.tier,
            &t.archive,
            t.stages.archive.zstd_level,
            &ctx.shutdown,
            &ctx.rt,
        )
    })
}
