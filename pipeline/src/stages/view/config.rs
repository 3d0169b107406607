//! The view stage in the registry: built from the topology (its settings,
//! `[stages.view]`, are `crate::config::stages::view`).

use std::sync::Arc;
use std::time::Duration;

use super::{STAGE, ViewStage, ViewTopics};
use crate::runtime::kafka::KafkaReader;
use crate::runtime::output::NoOutput;
use crate::runtime::{StageLoop, supervise_loop};
use crate::stages::registry::{StageContext, StageRun, StageSpec};

pub use crate::config::stages::view::ViewConfig;

/// The stage in the registry.
pub const SPEC: StageSpec = StageSpec {
    name: STAGE,
    about: "`accounts`, `accounts.transitions` -> the state API (every copy reads every \
            partition and serves it all)",
    enabled: |t| t.stages.view.enabled,
    build,
};

/// Most records applied under one write lock. The view waits for no
/// batch to fill: it applies what the consumer holds as soon as it has it.
const BATCH_RECORDS: usize = 4_096;

fn build(ctx: &StageContext) -> StageRun {
    let topics = &ctx.topology.topics;
    let view_topics = ViewTopics {
        accounts: topics.accounts.clone(),
        transitions: topics.transitions.clone(),
        erasures: topics.erasures.clone(),
    };
    let inputs = view_topics.inputs();
    let names: Vec<&str> = inputs.iter().map(String::as_str).collect();
    // No group is joined: the id only names the copy in logs.
    let lc = ctx.loop_config(STAGE, &names, "kusanagi-view", BATCH_RECORDS, 0);
    let refresh = Duration::from_secs(ctx.topology.stages.view.metadata_refresh_seconds);
    let ctx = ctx.clone();
    Box::new(move || {
        supervise_loop(&ctx.shutdown, || {
            let stage = ViewStage::new(
                view_topics.clone(),
                Arc::clone(&ctx.view),
                ctx.metrics.clone(),
            );
            let reader = KafkaReader::new(STAGE, &ctx.settings, &inputs, refresh, &ctx.metrics)?;
            Ok(StageLoop::new(
                stage,
                lc.clone(),
                ctx.metrics.clone(),
                reader,
                NoOutput,
            ))
        })
    })
}
