//! The tier stage's settings (`[stages.tier]`); the tier ages are in
//! `[archive]`.

use serde::{Deserialize, Serialize};

/// `[stages.tier]`: how often the stage runs a pass.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
