//! One tiering pass: carry out the [`super::plan`] with the archive's
//! write protocol, so that a crash at any step leaves every file listed in
//! exactly one tier.
//!
//! For each move: read the source files (checking each against its
//! SHA-256 in the catalog: a damaged file is never copied on), merge them
//! into one Parquet file, upload it under the destination's `_staging/`.
//! Then, for up to [`COMMIT_EVERY`] moves at a time, one catalog commit
//! adds the new files and removes their sources; only after it are the new
//! files moved into place and the sources deleted. The states a group of
//! moves goes through, and what a crash in each leaves, are
//! [`Moving`]'s.

use bytes::Bytes;

use super::moving::Moving;
use super::plan::Move;
use crate::catalog::parquet::{read_batches, sha256_hex, write_batches};
use crate::catalog::subjects::filter_of_batches;
use crate::catalog::{Catalog, CatalogError, FileEntry, FileKey, OffsetRange, Tiers, staged};
use crate::stages::archive::Table;
use crate::stages::archive::layout::PartitionKey;

/// Moves committed together.
pub const COMMIT_EVERY: usize = 100;

/// Why a pass stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TierError {
    /// The catalog or a tier's store failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file the catalog lists is not what the catalog says.
    #[error("{key}: {detail}")]
    Damaged {
        /// The file.
        key: FileKey,
        /// What is wrong.
        detail: String,
    },
}

impl From<kusanagi_connectors::ConnectorError> for TierError {
    fn from(e: kusanagi_connectors::ConnectorError) -> Self {
        TierError::Catalog(CatalogError::Storage(e))
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Source files moved.
    pub files_moved: u64,
    /// Files written in their new tiers.
    pub files_written: u64,
    /// Rows moved.
    pub rows: u64,
    /// Bytes of the files written.
    pub bytes_written: u64,
    /// Moves left for the next pass because another writer changed their
    /// files meanwhile.
    pub deferred: u64,
    /// Files that could not be moved because they are damaged (`verify`
    /// tells more); they stay where they are.
    pub damaged: Vec<String>,
}

/// How rewritten files are written.
#[derive(Debug, Clone, Copy)]
pub struct Rewrite {
    /// zstd level of the Parquet pages.
    pub zstd_level: i32,
    /// False-positive rate of the new files' subject filters.
    pub subject_filter_fpp: f64,
}

/// Reads `f` from its tier and checks it against its catalog entry. A
/// file its writer committed but has not moved into place yet is read from
/// `_staging/`: the path is then empty (a new file) or still holds the
/// bytes it replaces (a rewrite in place, such as a purge's).
pub async fn read_checked(tiers: &Tiers, f: &FileEntry) -> Result<Bytes, TierError> {
    let store = tiers.store(f.tier);
    let in_place = match store.get(&f.path).await {
        Err(e) if e.is_not_found() => None,
        other => Some(other?),
    };
    let in_place = match in_place {
        Some(bytes) => match check(f, bytes) {
            Ok(bytes) => return Ok(bytes),
            Err(damage) => Err(damage),
        },
        None => Ok(()),
    };
    match store.get(&staged(&f.path, &f.sha256)).await {
        Ok(bytes) => check(f, bytes),
        Err(e) if e.is_not_found() => match in_place {
            Err(damage) => Err(damage),
            Ok(()) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// `bytes` if they are what the catalog lists for `f`.
fn check(f: &FileEntry, bytes: Bytes) -> Result<Bytes, TierError> {
    let damaged = |detail: String| TierError::Damaged {
        key: f.key(),
        detail,
    };
    if bytes.len() as u64 != f.size_bytes {
        return Err(damaged(format!(
            "{} bytes, the catalog says {}",
            bytes.len(),
            f.size_bytes
        )));
    }
    let sha = sha256_hex(&bytes);
    if sha != f.sha256 {
        return Err(damaged(format!(
            "SHA-256 {sha}, the catalog says {}",
            f.sha256
        )));
    }
    Ok(bytes)
}

/// The file `m` makes in its new tier, uploaded under `_staging/`.
pub(super) async fn prepare(
    tiers: &Tiers,
    m: &Move,
    rewrite: Rewrite,
    now_ms: i64,
) -> Result<FileEntry, TierError> {
    let first = &m.sources[0];
    let mut offsets: Vec<OffsetRange> = m.sources.iter().flat_map(|f| f.offsets.clone()).collect();
    offsets.sort_by(|a, b| (&a.topic, a.partition, a.first).cmp(&(&b.topic, b.partition, b.first)));
    let (bytes, path, subjects) = if m.sources.len() == 1 {
        (
            read_checked(tiers, first).await?,
            first.path.clone(),
            first.subjects.clone(),
        )
    } else {
        let Some(table) = Table::from_name(&first.table) else {
            return Err(TierError::Damaged {
                key: first.key(),
                detail: format!("unknown table {:?}", first.table),
            });
        };
        let mut batches = Vec::new();
        for f in &m.sources {
            let bytes = read_checked(tiers, f).await?;
            batches.extend(read_batches(bytes).map_err(|e| TierError::Damaged {
                key: f.key(),
                detail: format!("not readable Parquet: {e}"),
            })?);
        }
        let subjects = filter_of_batches(&first.table, &batches, rewrite.subject_filter_fpp);
        let merged = write_batches(table.schema(), &batches, rewrite.zstd_level).map_err(|e| {
            TierError::Damaged {
                key: first.key(),
                detail: format!("cannot merge: {e}"),
            }
        })?;
        let key = PartitionKey {
            table,
            tenant: first.tenant.clone(),
            dt: first.dt.clone(),
            hour: first.hour,
        };
        (Bytes::from(merged), key.file_path(&offsets), subjects)
    };
    let entry = FileEntry {
        tier: m.to,
        path,
        table: first.table.clone(),
        tenant: first.tenant.clone(),
        dt: first.dt.clone(),
        hour: first.hour,
        rows: m.sources.iter().map(|f| f.rows).sum(),
        min_event_time_us: m
            .sources
            .iter()
            .map(|f| f.min_event_time_us)
            .min()
            .unwrap_or(0),
        max_event_time_us: m
            .sources
            .iter()
            .map(|f| f.max_event_time_us)
            .max()
            .unwrap_or(0),
        size_bytes: bytes.len() as u64,
        sha256: sha256_hex(&bytes),
        json_bytes: m.sources.iter().map(|f| f.json_bytes).sum(),
        offsets,
        created_at_ms: now_ms,
        subjects,
    };
    tiers
        .store(m.to)
        .put(&staged(&entry.path, &entry.sha256), bytes)
        .await?;
    Ok(entry)
}

/// Carries out `moves`, [`COMMIT_EVERY`] at a time, each group through
/// the states of [`Moving`]; `done(moves finished)` is called as they
/// are staged.
pub async fn run_pass(
    catalog: &mut Catalog,
    tiers: &Tiers,
    moves: &[Move],
    rewrite: Rewrite,
    mut done: impl FnMut(u64),
) -> Result<PassReport, TierError> {
    let mut report = PassReport::default();
    let now_ms = chrono::Utc::now().timestamp_millis();
    for chunk in moves.chunks(COMMIT_EVERY) {
        let mut state = Moving::Planned(chunk.to_vec());
        while !state.is_done() {
            state = state
                .advance(catalog, tiers, rewrite, now_ms, &mut report, &mut done)
                .await?;
        }
    }
    Ok(report)
}
