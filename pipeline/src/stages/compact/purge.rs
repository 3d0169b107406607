//! One erasure's purge of the archive: mark the subject deleted in the
//! catalog, then rewrite every file that holds it without its rows, with
//! the archive's write protocol (see [`crate::catalog::tiers`]):
//!
//! 1. **mark**: a catalog commit records the erasure (`Erase`); from then
//!    on every reader of the catalog skips the subject's rows.
//! 2. **stage**: each file whose subject filter may hold the subject is
//!    read and checked against its SHA-256; if it holds the subject, the
//!    rows that remain are written as a new file under `_staging/`, and
//!    checked by reading it back.
//! 3. **commit**: one catalog commit removes the old entries, adds the new
//!    ones at the same paths, and records the purge (`Purge`).
//! 4. **swap**: the new objects are moved over the old ones; a file left
//!    with no rows is deleted.
//!
//! A crash before 3 leaves the old files listed and in place (the staged
//! objects are never listed, and are cleared after a day); a crash after 3
//! leaves the new files listed, and [`crate::catalog::Tiers::reconcile`],
//! which every purge runs first, finishes the swap. So a reader of the
//! catalog sees the old file set or the new one, never both or neither,
//! and a folder holds the old bytes or the new at each path. A purge run
//! again finds no rows left: it commits nothing and the certificate stays
//! the same.

use arrow_array::{Array, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray};
use bytes::Bytes;

use crate::catalog::parquet::{read_batches, sha256_hex, write_batches};
use crate::catalog::subjects::{filter_of_batches, may_hold, subject_columns};
use crate::catalog::tiers::promote;
use crate::catalog::{
    Action, Catalog, CatalogError, Erasure, FileEntry, Purge, PurgedFile, Tiers, Unchanged, staged,
};
use crate::stages::archive::Table;
use crate::stages::tier::TierError;
use crate::stages::tier::mover::{Rewrite, read_checked};

/// How often a purge plans again after another writer changed its files.
const ATTEMPTS: usize = 5;

/// The steps of a purge, where a test may stop the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The erasure is recorded in the catalog.
    Marked,
    /// The new files are uploaded under `_staging/`.
    Staged,
    /// The catalog commit of the rewrite is made.
    Committed,
    /// The new files are in place, the old ones gone.
    Swapped,
}

impl Step {
    /// Its name (`marked`, `staged`, `committed`, `swapped`).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Marked => "marked",
            Step::Staged => "staged",
            Step::Committed => "committed",
            Step::Swapped => "swapped",
        }
    }
}

/// One erasure of a purge: the request and its subject (the account id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The request, as the catalog records it.
    pub erasure: Erasure,
    /// The account id.
    pub subject: String,
}

/// What one purge did for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestReport {
    /// The request.
    pub request_id: String,
    /// Files whose filters did not rule its subject out (opened).
    pub files_opened: u64,
    /// Files rewritten or removed because they held its subject.
    pub files_rewritten: u64,
    /// Rows removed that named its subject.
    pub rows_removed: u64,
}

/// What one purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Files the catalog listed in tables that hold subjects.
    pub files_listed: u64,
    /// Files opened and read: those whose filters did not rule out every
    /// subject of the purge.
    pub files_opened: u64,
    /// Files rewritten without the subjects' rows.
    pub files_rewritten: u64,
    /// Files removed because every row was a subject's.
    pub files_removed: u64,
    /// Rows removed.
    pub rows_removed: u64,
    /// The version of the purge's commit (`None`: nothing to commit).
    pub version: Option<u64>,
    /// Per request, in the order given.
    pub requests: Vec<RequestReport>,
}

/// A file rewritten and staged, not yet committed.
struct Rewritten {
    old: FileEntry,
    new: Option<FileEntry>,
    /// Rows removed in all.
    removed: u64,
    /// Rows removed that named each subject (a row may name two).
    per_subject: Vec<u64>,
}

/// Purges the subjects of `targets` from every tier, each file read and
/// rewritten once for all of them; `at(step)` is called after each step
/// (a test's crash point).
pub async fn purge(
    catalog: &mut Catalog,
    tiers: &Tiers,
    targets: &[Target],
    rewrite: Rewrite,
    mut at: impl FnMut(Step),
) -> Result<PurgeReport, TierError> {
    let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
    tiers.reconcile(catalog, &tables).await?;
    mark(catalog, targets).await?;
    at(Step::Marked);
    let subjects: Vec<&str> = targets.iter().map(|t| t.subject.as_str()).collect();
    let mut last_conflict = None;
    for _ in 0..ATTEMPTS {
        catalog.refresh().await?;
        let (mut report, candidates) = plan(catalog, targets, &subjects);
        let mut rewritten = Vec::new();
        for f in candidates {
            report.files_opened += 1;
            if let Some(r) = rewrite_file(tiers, &f, &subjects, rewrite).await? {
                rewritten.push(r);
            }
        }
        at(Step::Staged);
        let unpurged = targets.iter().any(|t| {
            catalog
                .state()
                .erasure(&t.erasure.request_id)
                .is_none_or(|e| e.purged_at_ms.is_none())
        });
        if rewritten.is_empty() && !unpurged {
            return Ok(report);
        }
        let actions = purge_actions(catalog, targets, &rewritten, &mut report);
        match catalog.commit("purge", actions).await {
            Ok(version) => report.version = Some(version),
            Err(CatalogError::Conflict(c)) => {
                // A tier pass moved some of the files meanwhile: plan again.
                tracing::info!(conflict = %c, "files changed during the purge; planning again");
                for r in &rewritten {
                    if let Some(new) = &r.new {
                        let _ = tiers
                            .store(new.tier)
                            .delete(&staged(&new.path, &new.sha256))
                            .await;
                    }
                }
                last_conflict = Some(c);
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        at(Step::Committed);
        swap(tiers, &rewritten, &mut report).await?;
        at(Step::Swapped);
        return Ok(report);
    }
    Err(TierError::Catalog(CatalogError::Conflict(
        last_conflict.expect("a conflict ended every attempt"),
    )))
}

/// Which files may hold the subjects (their subject filters say so), and a
/// report counting them per request.
fn plan(catalog: &Catalog, targets: &[Target], subjects: &[&str]) -> (PurgeReport, Vec<FileEntry>) {
    let mut report = PurgeReport {
        requests: targets
            .iter()
            .map(|t| RequestReport {
                request_id: t.erasure.request_id.clone(),
                ..RequestReport::default()
            })
            .collect(),
        ..PurgeReport::default()
    };
    let mut candidates = Vec::new();
    for f in catalog.state().files() {
        if subject_columns(&f.table).is_empty() {
            continue;
        }
        report.files_listed += 1;
        let mut any = false;
        for (i, subject) in subjects.iter().enumerate() {
            if may_hold(f.subjects.as_deref(), subject) {
                report.requests[i].files_opened += 1;
                any = true;
            }
        }
        if any {
            candidates.push(f.clone());
        }
    }
    (report, candidates)
}

/// The purge's commit: each rewritten file swapped (as read: another purge
/// or a tier pass may have changed it), and per request what it removed.
fn purge_actions(
    catalog: &Catalog,
    targets: &[Target],
    rewritten: &[Rewritten],
    report: &mut PurgeReport,
) -> Vec<Action> {
    let mut actions = Vec::new();
    for r in rewritten {
        actions.push(Action::Unchanged(Unchanged::of(&r.old)));
        actions.push(Action::Remove(r.old.key()));
        if let Some(new) = &r.new {
            actions.push(Action::Add(new.clone()));
        }
    }
    let mut purged: Vec<&str> = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        // A request given twice in one batch is purged once.
        if purged.contains(&t.erasure.request_id.as_str()) {
            continue;
        }
        purged.push(&t.erasure.request_id);
        let files: Vec<PurgedFile> = rewritten
            .iter()
            .filter(|r| r.per_subject[i] > 0)
            .map(|r| PurgedFile {
                tier: r.old.tier,
                path: r.old.path.clone(),
                sha256_before: r.old.sha256.clone(),
                sha256_after: r.new.as_ref().map(|n| n.sha256.clone()),
                rows_before: r.old.rows,
                rows_removed: r.per_subject[i],
            })
            .collect();
        let done_before = catalog
            .state()
            .erasure(&t.erasure.request_id)
            .is_some_and(|e| e.purged_at_ms.is_some());
        report.requests[i].files_rewritten = files.len() as u64;
        report.requests[i].rows_removed = files.iter().map(|f| f.rows_removed).sum();
        if files.is_empty() && done_before {
            continue;
        }
        actions.push(Action::Purge(Purge {
            request_id: t.erasure.request_id.clone(),
            files,
            files_opened: report.requests[i].files_opened,
            files_listed: report.files_listed,
        }));
    }
    actions
}

/// After the commit: the rewritten files into place, the emptied ones
/// deleted.
async fn swap(
    tiers: &Tiers,
    rewritten: &[Rewritten],
    report: &mut PurgeReport,
) -> Result<(), TierError> {
    for r in rewritten {
        let store = tiers.store(r.old.tier);
        match &r.new {
            Some(new) => {
                promote(store, &[(new.path.clone(), new.sha256.clone())]).await?;
                report.files_rewritten += 1;
            }
            None => {
                store.delete(&r.old.path).await?;
                store.delete(&staged(&r.old.path, &r.old.sha256)).await?;
                report.files_removed += 1;
            }
        }
        report.rows_removed += r.removed;
    }
    Ok(())
}

/// Records the erasures of `targets` the catalog does not hold yet, in
/// one commit: from then on their subjects are deleted for every reader.
async fn mark(catalog: &mut Catalog, targets: &[Target]) -> Result<(), TierError> {
    for _ in 0..ATTEMPTS {
        catalog.refresh().await?;
        let mut actions: Vec<Action> = Vec::new();
        for t in targets {
            let listed = catalog.state().erasure(&t.erasure.request_id).is_some();
            let queued = actions
                .iter()
                .any(|a| matches!(a, Action::Erase(e) if e.request_id == t.erasure.request_id));
            if !listed && !queued {
                actions.push(Action::Erase(t.erasure.clone()));
            }
        }
        if actions.is_empty() {
            return Ok(());
        }
        match catalog.commit("erase", actions).await {
            Ok(_) => return Ok(()),
            // Another copy marked some of them meanwhile.
            Err(CatalogError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `f` without the rows of `subjects`, staged; `None` if it holds none.
async fn rewrite_file(
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
