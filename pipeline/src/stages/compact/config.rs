//! `[stages.compact]`.

use super::{CompactStage, STAGE};
use crate::erasure::Secrets;
use crate::runtime::{RuntimeError, StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};
use serde::Deserialize;

/// `[stages.compact]`: the erasure purge.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompactStageConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// zstd level of rewritten files (1 fast .. 22 small).
    pub zstd_level: i32,
    /// Most erasure requests purged in one pass (one transaction): a pass
    /// rewrites each affected file once for all of them.
    pub batch_max_records: usize,
    /// Longest wait for more requests once the first arrived, in
    /// milliseconds.
    pub batch_max_wait_ms: u64,
}

impl Default for CompactStageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-compact".into(),
            zstd_level: 6,
            batch_max_records: 16,
            batch_max_wait_ms: 200,
        }
    }
}

impl CompactStageConfig {
    /// Problems as (key under `stages.compact`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = crate::config::check_loop(
            &self.group_id,
            self.batch_max_records,
            self.batch_max_wait_ms,
        );
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
