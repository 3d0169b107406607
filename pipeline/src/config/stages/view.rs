//! The view stage's settings (`[stages.view]`).

use serde::{Deserialize, Serialize};

/// `[stages.view]`: the state API's index.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ViewConfig {
    /// Run this stage (and serve the state API) in `kusanagi run`.
    pub enabled: bool,
    /// Most versions one `GET /api/v1/accounts/{id}/versions` answer lists;
    /// a longer range answers with the first ones and `truncated: true`.
    pub max_versions: usize,
    /// Seconds between two checks for partitions added to the topics.
    pub metadata_refresh_seconds: u64,
}

impl Default for ViewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_versions: 1_000,
            metadata_refresh_seconds: 30,
        }
    }
}

impl ViewConfig {
    /// Problems as (key under `stages.view`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        if !(1..=100_000).contains(&self.max_versions) {
            p.push((
                "max_versions".into(),
                format!("expected 1..=100000, found {}", self.max_versions),
            ));
        }
        if !(1..=3_600).contains(&self.metadata_refresh_seconds) {
            p.push((
                "metadata_refresh_seconds".into(),
                format!("expected 1..=3600, found {}", self.metadata_refresh_seconds),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_pass_and_out_of_range_values_are_named() {
        assert!(ViewConfig::default().validate().is_empty());
        let bad = ViewConfig {
            max_versions: 0,
            metadata_refresh_seconds: 0,
            ..ViewConfig::default()
        };
        let keys: Vec<_> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["max_versions", "metadata_refresh_seconds"]);
    }
}
