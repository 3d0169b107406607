//! The archive stage's settings (`[stages.archive]`).

use serde::{Deserialize, Serialize};

/// `[stages.archive]`: when open files are written, and how.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveStageConfig {
    /// Run this stage in `kusanagi run`.
    pub enabled: bool,
    /// Consumer group shared by every copy of the stage.
    pub group_id: String,
    /// Write every open file once one holds this many bytes of records (as
    /// read from Kafka).
    pub rotate_after_bytes: usize,
    /// Write every open file once the oldest row in them has been in Kafka
    /// this long, in seconds (counted from its Kafka timestamp, or from
    /// the start of the last rotation if later): how far the archive may
    /// lag behind Kafka, plus the time a rotation takes.
    pub rotate_after_seconds: u64,
    /// Write every open file once all of them hold this many bytes: the
    /// stage's memory bound.
    pub max_buffered_bytes: usize,
    /// zstd level of the Parquet pages (1 fast .. 22 small).
    pub zstd_level: i32,
}

impl Default for ArchiveStageConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            group_id: "kusanagi-archive".into(),
            rotate_after_bytes: 64 * 1024 * 1024,
            rotate_after_seconds: 300,
            max_buffered_bytes: 256 * 1024 * 1024,
            zstd_level: 6,
        }
    }
}

impl ArchiveStageConfig {
    /// Problems as (key under `stages.archive`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = crate::config::check_group_id(&self.group_id);
        if self.rotate_after_bytes == 0 {
            p.push((
                "rotate_after_bytes".into(),
                "expected at least 1, found 0".into(),
            ));
        }
        if self.max_buffered_bytes < self.rotate_after_bytes {
            p.push((
                "max_buffered_bytes".into(),
                format!(
                    "expected at least rotate_after_bytes ({}), found {}",
                    self.rotate_after_bytes, self.max_buffered_bytes
                ),
            ));
        }
        if !(1..=86_400).contains(&self.rotate_after_seconds) {
            p.push((
                "rotate_after_seconds".into(),
                format!("expected 1..=86400, found {}", self.rotate_after_seconds),
            ));
        }
        if !(1..=22).contains(&self.zstd_level) {
            p.push((
                "zstd_level".into(),
                format!("expected 1..=22, found {}", self.zstd_level),
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_setting_is_named() {
        assert!(ArchiveStageConfig::default().validate().is_empty());
        let bad = ArchiveStageConfig {
            group_id: " ".into(),
            rotate_after_bytes: 100,
            max_buffered_bytes: 10,
            rotate_after_seconds: 0,
            zstd_level: 23,
            ..ArchiveStageConfig::default()
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "group_id",
                "max_buffered_bytes",
                "rotate_after_seconds",
                "zstd_level"
            ]
        );
    }
}
