//! The view stage in the registry: built from the topology (its settings,
//! `[stages.view]`, are `crate::config::stages::view`).

use super::{STAGE, ViewFeed, ViewTopics};
use crate::runtime::supervise;
use crate::stages::registry::{StageContext, StageRun, StageSpec};
use std::sync::Arc;

pub use crate::config::stages::view::ViewConfig;

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`accounts`, `accounts.transitions` -> the state API (every copy reads every \
            partition and serves it all)",
    enabled: |t| t.stages.view.enabled,
    build,
};

fn build(ctx: &StageContext) -> StageRun {
    let topics = &ctx.topology.topics;
    let view_topics = ViewTopics {
        accounts: topics.accounts.clone(),
        transitions: topics.transitions.clone(),
        erasures: topics.erasures.clone(),
    };
    let ctx = ctx.clone();
    Box::new(move || {
        supervise(&ctx.shutdown, || {
            ViewFeed::new(
                &ctx.settings,
                view_topics.clone(),
                Arc::clone(&ctx.view),
                ctx.topology.stages.view.clone(),
                ctx.metrics.clone(),
            )?
            .run(&ctx.shutdown)
        })
    })
}
