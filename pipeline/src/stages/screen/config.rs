//! The screen stage in the registry: built from the topology (its settings,
//! `[stages.screen]`, are `crate::config::stages::screen`).

use super::{STAGE, ScreenStage};
use crate::runtime::{StageLoop, replay_reader, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::screen::{EvidenceConfig, ScreenConfig, TenantEvidence};

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`events` -> `screenings`: the L1 rules over 5-minute windows",
    enabled: |t| t.stages.screen.enabled,
    build,
};

fn build(ctx: &StageContext) -> StageRun {
    let cfg = ctx.topology.stages.screen.clone();
    let topics = ctx.topology.topics.clone();
    let lc = ctx.loop_config(
        STAGE,
        &[&topics.events],
        &cfg.group_id,
        cfg.batch_max_records,
        cfg.batch_max_wait_ms,
    );
    let ctx = ctx.clone();
    Box::new(move || {
        supervise_loop(&ctx.shutdown, || {
            let reader = replay_reader(STAGE, &ctx.settings)?;
            let stage = ScreenStage::new(
                cfg.clone(),
                &topics.events,
                &topics.screenings,
                &topics.dead_letter,
                Box::new(reader),
            );
            StageLoop::kafka(stage, &ctx.settings, lc.clone(), ctx.metrics.clone())
        })
    })
}
