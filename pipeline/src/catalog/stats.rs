//! Per table and tier, what the archive holds and how well it is
//! compressed (bytes stored against the same rows as JSON): `kusanagi
//! stats` prints it, the archive stage exports it as metrics.

use std::collections::BTreeMap;

use serde::Serialize;

use super::CatalogState;

/// One table in one tier.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TableStats {
    /// The table.
    pub table: String,
    /// The tier (`all` for the sum over tiers).
    pub tier: String,
    /// Files.
    pub files: u64,
    /// Rows.
    pub rows: u64,
    /// Bytes stored (Parquet, zstd).
    pub bytes_stored: u64,
    /// Bytes the same rows take as JSON.
    pub bytes_json: u64,
    /// `bytes_stored / bytes_json`.
    pub ratio: f64,
    /// `1 - ratio`: the fraction saved.
    pub saving: f64,
}

/// Stats per (table, tier), then per table over all tiers.
pub fn stats(state: &CatalogState) -> Vec<TableStats> {
    let mut by: BTreeMap<(String, String), TableStats> = BTreeMap::new();
    for f in state.files() {
        for tier in [f.tier.as_str(), "all"] {
            let s = by
                .entry((f.table.clone(), tier.to_owned()))
                .or_insert_with(|| TableStats {
                    table: f.table.clone(),
                    tier: tier.to_owned(),
                    ..TableStats::default()
                });
            s.files += 1;
            s.rows += f.rows;
            s.bytes_stored += f.size_bytes;
            s.bytes_json += f.json_bytes;
        }
    }
    by.into_values()
        .map(|mut s| {
            if s.bytes_json > 0 {
                s.ratio = s.bytes_stored as f64 / s.bytes_json as f64;
                s.saving = 1.0 - s.ratio;
            }
            s
        })
        .collect()
}
