//! `kusanagi verify`: re-reads every file the catalog lists and checks its
//! size, SHA-256 and row count (every page decoded), and that each tier's
//! table folders hold nothing the catalog does not list (a glob would see
//! it). Reads only; a clean archive gives an empty problem list. Safe to
//! run beside the writers: folders are listed before the catalog is read
//! again, and a file a tier pass moved meanwhile is not a problem.

use crate::catalog::parquet::count_rows;
use crate::catalog::{Catalog, CatalogError, FileEntry, Tier, Tiers};
use crate::stages::tier::TierError;
use crate::stages::tier::mover::read_checked;

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Files checked.
    pub files: u64,
    /// Rows counted.
    pub rows: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Every problem, one line each, naming the file.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether the archive is as the catalog says.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The files `verify` checks: all, or those of `table` / `tier`.
pub fn selected<'a>(
    catalog: &'a Catalog,
    table: Option<&'a str>,
    tier: Option<Tier>,
) -> impl Iterator<Item = &'a FileEntry> + 'a {
    catalog
        .state()
        .files()
        .filter(move |f| table.is_none_or(|t| f.table == t))
        .filter(move |f| tier.is_none_or(|t| f.tier == t))
}

/// Checks `files`; `done(bytes)` is called after each.
pub async fn verify(
    tiers: &Tiers,
    catalog: &mut Catalog,
    files: Vec<FileEntry>,
    tables: &[&str],
    mut done: impl FnMut(u64),
) -> Result<VerifyReport, CatalogError> {
    let mut report = VerifyReport::default();
    let mut in_folders = Vec::new();
    for tier in Tier::ALL {
        for table in tables {
            for (path, _) in tiers.store(tier).list(table).await? {
                in_folders.push(crate::catalog::FileKey { tier, path });
            }
        }
    }
    catalog.refresh().await?;
    for f in &files {
        report.files += 1;
        match read_checked(tiers, f).await {
            Ok(bytes) => {
                report.bytes += bytes.len() as u64;
                match count_rows(bytes) {
                    Ok(rows) if rows == f.rows => report.rows += rows,
                    Ok(rows) => report.problems.push(format!(
                        "{}: {rows} rows, the catalog says {}",
                        f.key(),
                        f.rows
                    )),
                    Err(e) => report
                        .problems
                        .push(format!("{}: not readable Parquet: {e}", f.key())),
                }
            }
            Err(TierError::Damaged { key, detail }) => {
                report.problems.push(format!("{key}: {detail}"));
            }
            Err(TierError::Catalog(CatalogError::Storage(e))) => {
                catalog.refresh().await?;
                if e.is_not_found() && catalog.state().file(&f.key()).is_none() {
                    report.files -= 1; // moved by a tier pass meanwhile
                } else {
                    report
                        .problems
                        .push(format!("{}: cannot read: {e}", f.key()));
                }
            }
            Err(TierError::Catalog(e)) => return Err(e),
        }
        done(f.size_bytes);
    }
    for key in in_folders {
        if catalog.state().file(&key).is_none() {
            report.problems.push(format!(
                "{key}: not in the catalog (left by an interrupted move; `kusanagi tier` removes it)"
            ));
        }
    }
    Ok(report)
}
