//! `[stages.compact]`.

use serde::{Deserialize, Serialize};

/// `[stages.compact]`: the erasure purge.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
