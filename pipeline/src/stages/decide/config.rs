//! The decide stage in the registry: built from the topology (its settings,
//! `[stages.decide]`, are `crate::config::stages::decide`).

use super::{DecideStage, DecideTopics, STAGE};
use crate::runtime::{StageLoop, replay_reader, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::decide::DecideConfig;

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`screenings`, `l2.verdicts` -> `accounts`, `accounts.transitions`, `l2.requests`: \
            the account state machine",
    enabled: |t| t.stages.decide.enabled,
    build,
};

fn build(ctx: &StageContext) -> StageRun {
    let cfg = ctx.topology.stages.decide.clone();
    let topics = &ctx.topology.topics;
    let lc = ctx.loop_config(
        STAGE,
        &[&topics.screenings, &topics.l2_verdicts, &topics.erasures],
        &cfg.group_id,
        cfg.batch_max_records,
        cfg.batch_max_wait_ms,
    );
    let decide_topics = DecideTopics::of(topics);
    let ctx = ctx.clone();
    Box::new(move || {
        supervise_loop(&ctx.shutdown, || {
            let reader = replay_reader(STAGE, &ctx.settings)?;
            let stage = DecideStage::new(decide_topics.clone(), Box::new(reader));
            StageLoop::kafka(stage, &ctx.settings, lc.clone(), ctx.metrics.clone())
        })
    })
}
