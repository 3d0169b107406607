//! The analyze stage in the registry: built from the topology (its settings,
//! `[stages.analyze]`, are `crate::config::stages::analyze`).

use std::time::Duration;

use super::{AnalyzeStage, Analyzer, STAGE};
use crate::runtime::{RuntimeError, StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::analyze::{AnalyzeConfig, ModelConfig, ProviderKind};

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`l2.requests` -> `l2.verdicts`: the LLM analysis, with the fallback",
    enabled: |t| t.stages.analyze.enabled,
    build,
};

fn build(ctx: &StageContext) -> StageRun {
    let cfg = ctx.topology.stages.analyze.clone();
    let evidence = ctx.topology.stages.screen.evidence.clone();
    let topics = ctx.topology.topics.clone();
    let lc = ctx.loop_config(
        STAGE,
        &[&topics.l2_requests],
        &cfg.group_id,
        cfg.batch_max_records,
        cfg.batch_max_wait_ms,
    );
    let ctx = ctx.clone();
    Box::new(move || {
        supervise_loop(&ctx.shutdown, || {
            let setup = |detail: String| RuntimeError::Setup {
                stage: STAGE,
                detail,
            };
            let analyzer = match &cfg.model {
                None => Analyzer::Fallback,
                Some(m) => {
                    let client = kusanagi_connectors::llm::LlmClient::new(
                        m.llm_config(|k| std::env::var(k).ok()),
                    )
                    .map_err(|e| setup(e.to_string()))?;
                    Analyzer::model(
                        client,
                        m.max_concurrency,
                        cfg.cache_capacity,
                        Duration::from_secs(cfg.cache_ttl_seconds),
                    )
                }
            };
            let stage = AnalyzeStage::new(
                analyzer,
                &topics.l2_verdicts,
                &topics.dead_letter,
                ctx.rt.clone(),
            )
            .with_evidence(evidence.clone())
            .with_shares(cfg.tenant_shares.clone());
            StageLoop::kafka(stage, &ctx.settings, lc.clone(), ctx.metrics.clone())
        })
    })
}
