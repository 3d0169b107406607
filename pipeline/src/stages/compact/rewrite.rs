//! One file of a purge: read, checked, and written again without the
//! subjects' rows, under `_staging/` (see [`super::purge`] for the states
//! around it).

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use bytes::Bytes;

use crate::catalog::parquet::{read_batches, sha256_hex, write_batches};
use crate::catalog::subjects::{filter_of_batches, subject_columns};
use crate::catalog::{FileEntry, Tiers, staged};
use crate::stages::archive::Table;
use crate::stages::tier::TierError;
use crate::stages::tier::mover::{Rewrite, read_checked};

/// A file rewritten and staged, not yet committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The file as the catalog listed it.
    pub old: FileEntry,
    /// Its rewrite (`None`: every row was a subject's; the file goes).
    pub new: Option<FileEntry>,
    /// Rows removed in all.
    pub removed: u64,
    /// Rows removed that named each subject (a row may name two).
    pub per_subject: Vec<u64>,
}

/// `f` without the rows of `subjects`, staged; `None` if it holds none.
pub async fn rewrite_file(
    tiers: &Tiers,
    f: &FileEntry,
    subjects: &[&str],
    rewrite: Rewrite,
) -> Result<Option<Rewritten>, TierError> {
    let damaged = |detail: String| TierError::Damaged {
        key: f.key(),
        detail,
    };
    let Some(table) = Table::from_name(&f.table) else {
        return Err(damaged(format!("unknown table {:?}", f.table)));
    };
    let bytes = read_checked(tiers, f).await?;
    let batches = read_batches(bytes).map_err(|e| damaged(format!("not readable Parquet: {e}")))?;
    let mut kept = Vec::with_capacity(batches.len());
    let mut removed = 0u64;
    let mut per_subject = vec![0u64; subjects.len()];
    for batch in &batches {
        let (batch, gone) = without(&f.table, batch, subjects, &mut per_subject)
            .map_err(|e| damaged(format!("cannot filter: {e}")))?;
        removed += gone;
        if batch.num_rows() > 0 {
            kept.push(batch);
        }
    }
    if removed == 0 {
        return Ok(None);
    }
    let rows: u64 = kept.iter().map(|b| b.num_rows() as u64).sum();
    if rows == 0 {
        return Ok(Some(Rewritten {
            old: f.clone(),
            new: None,
            removed,
            per_subject,
        }));
    }
    let out = write_batches(table.schema(), &kept, rewrite.zstd_level)
        .map_err(|e| damaged(format!("cannot write the rewrite: {e}")))?;
    let out = Bytes::from(out);
    // The new file is checked before it may replace the old one.
    let back: u64 = read_batches(out.clone())
        .map_err(|e| damaged(format!("the rewrite does not read back: {e}")))?
        .iter()
        .map(|b| b.num_rows() as u64)
        .sum();
    if back != rows {
        return Err(damaged(format!(
            "the rewrite reads back {back} rows, expected {rows}"
        )));
    }
    let (min, max) = time_bounds(&kept, table.time_column());
    let new = FileEntry {
        rows,
        min_event_time_us: min.unwrap_or(f.min_event_time_us),
        max_event_time_us: max.unwrap_or(f.max_event_time_us),
        size_bytes: out.len() as u64,
        sha256: sha256_hex(&out),
        json_bytes: f.json_bytes * rows / f.rows.max(1),
        subjects: filter_of_batches(&f.table, &kept, rewrite.subject_filter_fpp),
        created_at_ms: chrono::Utc::now().timestamp_millis(),
        ..f.clone()
    };
    tiers
        .store(new.tier)
        .put(&staged(&new.path, &new.sha256), out)
        .await?;
    Ok(Some(Rewritten {
        old: f.clone(),
        new: Some(new),
        removed,
        per_subject,
    }))
}

/// `batch` without the rows whose subject columns hold one of
/// `subjects`, and how many were removed; `per_subject[i]` counts the
/// removed rows that name `subjects[i]`.
pub fn without(
    table: &str,
    batch: &RecordBatch,
    subjects: &[&str],
    per_subject: &mut [u64],
) -> Result<(RecordBatch, u64), arrow_schema::ArrowError> {
    let columns: Vec<&StringArray> = subject_columns(table)
        .iter()
        .filter_map(|c| batch.column_by_name(c))
        .filter_map(|c| c.as_any().downcast_ref::<StringArray>())
        .collect();
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let mut hit = false;
            for (s, subject) in subjects.iter().enumerate() {
                if columns
                    .iter()
                    .any(|c| c.is_valid(i) && c.value(i) == *subject)
                {
                    per_subject[s] += 1;
                    hit = true;
                }
            }
            Some(!hit)
        })
        .collect();
    let removed = keep.false_count() as u64;
    if removed == 0 {
        return Ok((batch.clone(), 0));
    }
    Ok((
        arrow_select::filter::filter_record_batch(batch, &keep)?,
        removed,
    ))
}

fn time_bounds(batches: &[RecordBatch], column: &str) -> (Option<i64>, Option<i64>) {
    let mut min = None::<i64>;
    let mut max = None::<i64>;
    for b in batches {
        if let Some(t) = b
            .column_by_name(column)
            .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>())
        {
            for v in t.iter().flatten() {
                min = Some(min.map_or(v, |m| m.min(v)));
                max = Some(max.map_or(v, |m| m.max(v)));
            }
        }
    }
    (min, max)
}
