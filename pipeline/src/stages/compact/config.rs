//! `[stages.compact]`.

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
}

impl Default for CompactStageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-compact".into(),
            zstd_level: 6,
        }
    }
}

impl CompactStageConfig {
    /// Problems as (key under `stages.compact`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = crate::config::check_group_id(&self.group_id);
        if !(1..=22).contains(&self.zstd_level) {
            p.push((
                "zstd_level".into(),
                format!("expected 1..=22, found {}", self.zstd_level),
            ));
        }
        p
    }
}
