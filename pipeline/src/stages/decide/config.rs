//! The decide stage's settings (`[stages.decide]`).

use super::{DecideStage, DecideTopics, STAGE};
use crate::runtime::{StageLoop, replay_reader, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};
use serde::Deserialize;

/// `[stages.decide]`: group and batching.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Most records in one transaction.
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived, in
    /// milliseconds.
    pub batch_max_wait_ms: u64,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-decide".into(),
            batch_max_records: 2_000,
            batch_max_wait_ms: 10,
        }
    }
}

impl DecideConfig {
    /// Problems as (key under `stages.decide`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        crate::config::check_loop(
            &self.group_id,
            self.batch_max_records,
            self.batch_max_wait_ms,
        )
    }
}

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
