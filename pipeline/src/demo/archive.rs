//! An archive of demo traffic written directly with the archive stage's
//! own file writer and catalog (no Kafka), spread over the hot, warm and
//! cold tiers: for tests, benches and load tests that need a big archive
//! quickly.

use std::time::Instant;

use kusanagi_schemas::{EventTime, GameEvent, parse_event};

use super::Traffic;
use crate::catalog::{Action, Catalog, Tier};
use crate::config::ArchiveConfig;
use crate::stages::archive::Table;
use crate::stages::archive::file::write_file;
use crate::stages::archive::layout::PartitionKey;
use crate::stages::archive::open_files::OpenFile;
use crate::stages::archive::table::{Record, Row};

/// Why the demo archive could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoArchiveError {
    /// The catalog refused or failed a commit.
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    /// A tier could not be opened or written.
    #[error(transparent)]
    Storage(#[from] kusanagi_connectors::ConnectorError),
    /// A Parquet file could not be written.
    #[error("writing a demo file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// `hours` hours of demo traffic from 2099-01-01, `per_hour` events each
/// (an event every 3600/per_hour seconds), `files_per_hour` files per
/// hour; the first third of the hours in cold, the next in warm, the rest
/// in hot. Returns every event written.
pub async fn write_demo_archive(
    config: &ArchiveConfig,
    hours: i64,
    per_hour: usize,
    files_per_hour: usize,
) -> Result<Vec<GameEvent>, DemoArchiveError> {
    let tiers = config.open_tiers()?;
    let mut catalog = Catalog::open(config.open_catalog_store()?, "demo-archive").await?;
    let mut traffic = Traffic::new("demo-archive", 7);
    let start = 4_070_908_800_000_000i64; // 2099-01-01T00:00:00Z
    let step_us = 3_600_000_000 / per_hour as i64;
    let mut all = Vec::new();
    let mut offset = 0i64;
    let mut actions = Vec::new();
    for h in 0..hours {
        let tier = match 3 * h / hours {
            0 => Tier::Cold,
            1 => Tier::Warm,
            _ => Tier::Hot,
        };
        let mut rows = Vec::with_capacity(per_hour);
        for i in 0..per_hour as i64 {
            let at = EventTime::from_micros(start + h * 3_600_000_000 + i * step_us);
            let g = traffic.next_record(&at.to_rfc3339());
            let Ok(e) = parse_event(&g.json) else {
                continue;
            };
            offset += 1;
            all.push(e.clone());
            rows.push(Row {
                record: Record::Event(e),
                partition: 0,
                offset,
            });
        }
        let size = rows.len().div_ceil(files_per_hour).max(1);
        for part in rows.chunks(size) {
            let first = &part[0];
            let key = PartitionKey::of(
                Table::Events,
                first.record.tenant(),
                first.record.event_time_us(),
            );
            let open = OpenFile {
                json_bytes: part.iter().map(|r| r.record.json_len() as u64).sum(),
                bytes: 0,
                rows: part.to_vec(),
                opened_at: Instant::now(),
            };
            let mut w = write_file(&key, "events", open, 3, config.subject_filter_fpp, 0)?;
            w.entry.tier = tier;
            tiers.store(tier).put(&w.entry.path, w.bytes).await?;
            actions.push(Action::Add(w.entry));
            if actions.len() >= 500 {
                catalog
                    .commit("demo-archive", std::mem::take(&mut actions))
                    .await?;
            }
        }
    }
    if !actions.is_empty() {
        catalog.commit("demo-archive", actions).await?;
    }
    Ok(all)
}
