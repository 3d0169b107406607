//! The decide stage's settings (`[stages.decide]`).

use serde::{Deserialize, Serialize};

/// `[stages.decide]`: group and batching.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecideConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Most records in one transaction.
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived, in
    /// milliseconds. 0 (the default): a batch is what the consumer holds,
    /// so batches grow with the load (what arrived during the previous
    /// transaction) and an idle stage adds no wait; more saves transactions
    /// at moderate rates for latency (docs/configuration.md).
    pub batch_max_wait_ms: u64,
}

impl Default for DecideConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-decide".into(),
            batch_max_records: 5_000,
            batch_max_wait_ms: 0,
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
