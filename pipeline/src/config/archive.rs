//! `[archive]`: where the Parquet archive and its catalog live, and when
//! files move between tiers. Shared by the archive and tier stages and the
//! operator commands (`verify`, `restore`, `stats`, `catalog`).

use std::collections::BTreeMap;

use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::storage::TierStore;
use serde::{Deserialize, Serialize};

use crate::catalog::{Tier, Tiers};

/// `[archive]`: tier and catalog URLs, tier ages. Its `Debug` hides
/// secret S3 options.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// The catalog's store (an object_store URL, see below). Env:
    /// `KUSANAGI_DATA_DIR` moves the local defaults to `<dir>/archive/...`.
    pub catalog: String,
    /// The hot tier, where the archive stage writes: `memory://`, a folder
    /// (`data/archive/hot`, `file:///abs/dir`) or `s3://bucket/prefix`.
    pub hot: String,
    /// The warm tier.
    pub warm: String,
    /// The cold tier.
    pub cold: String,
    /// Files whose newest event is older than this many days move from hot
    /// to warm.
    pub warm_after_days: u32,
    /// Files whose newest event is older than this many days move to cold.
    pub cold_after_days: u32,
    /// Options for `s3://` URLs: object_store's S3 keys (`endpoint`,
    /// `region`, `access_key_id`, `secret_access_key`, `allow_http`);
    /// unset ones come from the `AWS_*` environment variables.
    pub s3: BTreeMap<String, String>,
    /// The false-positive rate of each file's subject filter (kept in its
    /// catalog entry): the share of files not holding a subject that an
    /// erasure's purge still opens.
    pub subject_filter_fpp: f64,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            catalog: "data/archive/catalog".into(),
            hot: "data/archive/hot".into(),
            warm: "data/archive/warm".into(),
            cold: "data/archive/cold".into(),
            warm_after_days: 7,
            cold_after_days: 30,
            s3: BTreeMap::new(),
            subject_filter_fpp: 0.01,
        }
    }
}

impl ArchiveConfig {
    /// The URL of `tier`.
    pub fn tier_url(&self, tier: Tier) -> &str {
        match tier {
            Tier::Hot => &self.hot,
            Tier::Warm => &self.warm,
            Tier::Cold => &self.cold,
        }
    }

    /// Opens the three tiers.
    pub fn open_tiers(&self) -> Result<Tiers, ConnectorError> {
        Ok(Tiers::new(
            self.open_tier(Tier::Hot)?,
            self.open_tier(Tier::Warm)?,
            self.open_tier(Tier::Cold)?,
        ))
    }

    /// Opens `tier`'s store.
    pub fn open_tier(&self, tier: Tier) -> Result<TierStore, ConnectorError> {
        TierStore::open(self.tier_url(tier), &self.s3)
    }

    /// Opens the catalog's store.
    pub fn open_catalog_store(&self) -> Result<TierStore, ConnectorError> {
        TierStore::open(&self.catalog, &self.s3)
    }

    /// Moves the local defaults under `dir` (`KUSANAGI_DATA_DIR`).
    pub(crate) fn relocate_defaults(&mut self, dir: &std::path::Path) {
        let defaults = Self::default();
        let moves = [
            (&mut self.catalog, defaults.catalog, "catalog"),
            (&mut self.hot, defaults.hot, "hot"),
            (&mut self.warm, defaults.warm, "warm"),
            (&mut self.cold, defaults.cold, "cold"),
        ];
        for (url, default, name) in moves {
            if *url == default {
                *url = dir.join("archive").join(name).display().to_string();
            }
        }
    }

    /// Problems as (key under `archive`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let urls = [
            ("catalog", &self.catalog),
            ("hot", &self.hot),
            ("warm", &self.warm),
            ("cold", &self.cold),
        ];
        for (key, url) in urls {
            let known = url == "memory://"
                || url.starts_with("s3://")
                || url.starts_with("file:///")
                || (!url.is_empty() && !url.contains("://"));
            if !known {
                p.push((
                    key.to_owned(),
                    format!(
                        "expected memory://, a folder, file:///abs/dir or s3://bucket/prefix, found {url:?}"
                    ),
                ));
            }
        }
        for (i, (key, url)) in urls.iter().enumerate() {
            let shared = urls[..i]
                .iter()
                .find(|(_, u)| place(u) == place(url) && url.as_str() != "memory://");
            if let Some((other, _)) = shared {
                p.push((
                    (*key).to_owned(),
                    format!(
                        "expected a place of its own, found {url:?}, the URL of archive.{other}"
                    ),
                ));
            }
        }
        if !(self.subject_filter_fpp > 0.0 && self.subject_filter_fpp < 0.5) {
            p.push((
                "subject_filter_fpp".into(),
                format!(
                    "expected a rate above 0 and below 0.5, found {}",
                    self.subject_filter_fpp
                ),
            ));
        }
        if self.warm_after_days == 0 {
            p.push((
                "warm_after_days".into(),
                "expected at least 1, found 0".into(),
            ));
        }
        if self.cold_after_days <= self.warm_after_days {
            p.push((
                "cold_after_days".into(),
                format!(
                    "expected more than warm_after_days ({}), found {}",
                    self.warm_after_days, self.cold_after_days
                ),
            ));
        }
        p
    }
}

/// Where a URL points, so that `data/x`, `./data/x/` and `file:///.../data/x`
/// compare equal (two tiers in one place would take each other's files for
/// debris).
fn place(url: &str) -> String {
    if url.contains("://") && !url.starts_with("file://") {
        return url.trim_end_matches('/').to_owned();
    }
    let path = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut normal = std::path::PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                normal.pop();
            }
            other => normal.push(other),
        }
    }
    normal.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_move_with_the_data_dir() {
        let mut c = ArchiveConfig::default();
        assert!(c.validate().is_empty());
        c.relocate_defaults(std::path::Path::new("/var/lib/k"));
        assert_eq!(c.hot, "/var/lib/k/archive/hot");
        assert_eq!(c.catalog, "/var/lib/k/archive/catalog");
    }

    #[test]
    fn bad_urls_ages_and_shared_places_are_named() {
        let c = ArchiveConfig {
            hot: "ftp://x".into(),
            warm: "s3://b/w".into(),
            cold: "s3://b/w".into(),
            warm_after_days: 10,
            cold_after_days: 10,
            ..ArchiveConfig::default()
        };
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["hot", "cold", "cold_after_days"]);
        let cwd = std::env::current_dir().unwrap();
        let aliased = ArchiveConfig {
            warm: "./data/archive/hot/".into(),
            cold: format!("file://{}", cwd.join("data/archive/x/../hot").display()),
            ..ArchiveConfig::default()
        };
        let keys: Vec<String> = aliased.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["warm", "cold"], "the same folder, spelt three ways");
    }
}
