//! The tier stage's settings (`[stages.tier]`); the tier ages are in
//! `[archive]`.

use super::{STAGE, run_periodically};
use crate::stages::registry::{StageContext, StageRun, StageSpec};
use serde::Deserialize;

/// `[stages.tier]`: how often the stage runs a pass.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TierStageConfig {
    /// Run this stage (a pass every `interval_seconds`) in `kusanagi run`.
    pub enabled: bool,
    /// Seconds between two passes (the first runs at start).
    pub interval_seconds: u64,
}

impl Default for TierStageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 3_600,
        }
    }
}

impl TierStageConfig {
    /// Problems as (key under `stages.tier`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        if (60..=604_800).contains(&self.interval_seconds) {
            return Vec::new();
        }
        vec![(
            "interval_seconds".into(),
            format!("expected 60..=604800, found {}", self.interval_seconds),
        )]
    }
}

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
