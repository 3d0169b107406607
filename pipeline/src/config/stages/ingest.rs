//! The ingest stage's settings (`[stages.ingest]`).

use crate::config::{KafkaConfig, TopicsConfig};
use serde::{Deserialize, Serialize};

/// `[stages.ingest]`: validation limits and batching.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Largest raw JSON event accepted, in bytes; larger ones are
    /// dead-lettered as `too_large`.
    pub max_event_bytes: usize,
    /// Most records in one transaction.
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived, in
    /// milliseconds. 0 (the default): a batch is what the consumer holds,
    /// so batches grow with the load (what arrived during the previous
    /// transaction) and an idle stage adds no wait; more saves transactions
    /// at moderate rates for latency (docs/configuration.md).
    pub batch_max_wait_ms: u64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-ingest".into(),
            max_event_bytes: 1024 * 1024,
            batch_max_records: 5_000,
            batch_max_wait_ms: 0,
        }
    }
}

impl IngestConfig {
    /// Problems as (key under `stages.ingest`, message).
    pub fn validate(&self, kafka: &KafkaConfig, _topics: &TopicsConfig) -> Vec<(String, String)> {
        let mut p = crate::config::check_loop(
            &self.group_id,
            self.batch_max_records,
            self.batch_max_wait_ms,
        );
        if self.max_event_bytes == 0 || self.max_event_bytes > kafka.message_max_bytes as usize {
            p.push((
                "max_event_bytes".into(),
                format!(
                    "expected 1..={} (kafka.message_max_bytes), found {}",
                    kafka.message_max_bytes, self.max_event_bytes
                ),
            ));
        }
        p
    }
}
