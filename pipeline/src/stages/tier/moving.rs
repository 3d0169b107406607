//! A group of tier moves on its way, as explicit states (STYLE rule 9,
//! like the archive's [`crate::stages::archive::flight::Flight`]):
//!
//! ```text
//! Planned --stage--> Staged --catalog commit--> Committed --place--> InPlace
//!                       \--conflict: staged copies deleted--> Deferred
//! ```
//!
//! - [`Moving::Planned`]: the moves the plan made; nothing written. The
//!   sources are listed in their tiers.
//! - [`Moving::Staged`]: each move's new file uploaded under its tier's
//!   `_staging/`, out of every table's glob and not listed. A crash here
//!   leaves debris: the next pass plans the same moves again, and
//!   [`Tiers::reconcile`] deletes unlisted staged objects after a day.
//! - [`Moving::Committed`]: one catalog commit lists the new files and
//!   removes their sources. The new files are still under `_staging/`, the
//!   sources still stored: a crash here is finished by the next pass's
//!   [`Tiers::reconcile`] (it moves listed staged files into place and
//!   deletes unlisted ones at final paths).
//! - [`Moving::InPlace`]: the new files at their paths, the sources
//!   deleted.
//! - [`Moving::Deferred`]: another writer changed the sources between the
//!   plan and the commit (a purge rewrote one, another tier pass moved it);
//!   nothing of the group is listed, and the next pass plans again.

use super::mover::{PassReport, Rewrite, TierError, prepare};
use super::plan::Move;
use crate::catalog::tiers::promote;
use crate::catalog::{Action, Catalog, CatalogError, FileEntry, Tiers, Unchanged, staged};

/// A move whose new file is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagedMove {
    /// The files it replaces, as the plan read them.
    pub sources: Vec<FileEntry>,
    /// The new file, in its new tier.
    pub entry: FileEntry,
}

/// Where a group of moves is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moving {
    /// Planned; nothing written.
    Planned(Vec<Move>),
    /// New files uploaded under `_staging/`, not listed.
    Staged(Vec<StagedMove>),
    /// Listed in the catalog at `version`, sources removed from it; the new
    /// files still staged, the sources still stored.
    Committed {
        /// The catalog version that lists them.
        version: u64,
        /// The moves.
        moves: Vec<StagedMove>,
    },
    /// Done.
    InPlace,
    /// Not moved in this pass: another writer changed the files.
    Deferred,
}

impl Moving {
    /// The state's name, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Moving::Planned(_) => "planned",
            Moving::Staged(_) => "staged",
            Moving::Committed { .. } => "committed",
            Moving::InPlace => "in place",
            Moving::Deferred => "deferred",
        }
    }

    /// Whether the group has reached an end state.
    pub fn is_done(&self) -> bool {
        matches!(self, Moving::InPlace | Moving::Deferred)
    }

    /// Takes the next step, counting what it did in `report`; `done(k)` is
    /// told of moves staged.
    pub async fn advance(
        self,
        catalog: &mut Catalog,
        tiers: &Tiers,
        rewrite: Rewrite,
        now_ms: i64,
        report: &mut PassReport,
        done: &mut impl FnMut(u64),
    ) -> Result<Moving, TierError> {
        match self {
            Moving::Planned(moves) => stage(tiers, moves, rewrite, now_ms, report, done).await,
            Moving::Staged(moves) => commit(catalog, tiers, moves, report).await,
            Moving::Committed { moves, .. } => place(tiers, moves, report).await,
            end => Ok(end),
        }
    }
}

/// Planned -> Staged: writes each move's new file under `_staging/`. A
/// damaged source keeps its move where it is; a source gone since the
/// plan defers it.
async fn stage(
    tiers: &Tiers,
    moves: Vec<Move>,
    rewrite: Rewrite,
    now_ms: i64,
    report: &mut PassReport,
    done: &mut impl FnMut(u64),
) -> Result<Moving, TierError> {
    let mut staged_moves = Vec::with_capacity(moves.len());
    for m in moves {
        match prepare(tiers, &m, rewrite, now_ms).await {
            Ok(entry) => staged_moves.push(StagedMove {
                sources: m.sources,
                entry,
            }),
            Err(TierError::Damaged { key, detail }) => {
                tracing::error!(file = %key, %detail, "not moving a damaged file");
                report.damaged.push(format!("{key}: {detail}"));
            }
            Err(TierError::Catalog(CatalogError::Storage(e))) if e.is_not_found() => {
                // Moved or rewritten by another writer since the plan.
                tracing::info!(error = %e, "a file changed during the pass; its move waits for the next one");
                report.deferred += 1;
            }
            Err(e) => return Err(e),
        }
        done(1);
    }
    if staged_moves.is_empty() {
        return Ok(Moving::InPlace);
    }
    Ok(Moving::Staged(staged_moves))
}

/// Staged -> Committed: one commit adds the new files and removes the
/// sources, as read (a purge may have rewritten one meanwhile: then it
/// conflicts, the staged copies are deleted and the group is deferred).
async fn commit(
    catalog: &mut Catalog,
    tiers: &Tiers,
    moves: Vec<StagedMove>,
    report: &mut PassReport,
) -> Result<Moving, TierError> {
    let mut actions = Vec::new();
    for m in &moves {
        actions.extend(
            m.sources
                .iter()
                .map(|f| Action::Unchanged(Unchanged::of(f))),
        );
        actions.push(Action::Add(m.entry.clone()));
        actions.extend(m.sources.iter().map(|f| Action::Remove(f.key())));
    }
    match catalog.commit("tier", actions).await {
        Ok(version) => Ok(Moving::Committed { version, moves }),
        Err(CatalogError::Conflict(c)) => {
            tracing::warn!(conflict = %c, "files changed during the pass; their moves wait for the next one");
            report.deferred += moves.len() as u64;
            for m in &moves {
                // Best effort: what is left is cleared after the grace period.
                let _ = tiers
                    .store(m.entry.tier)
                    .delete(&staged(&m.entry.path, &m.entry.sha256))
                    .await;
            }
            Ok(Moving::Deferred)
        }
        Err(e) => Err(e.into()),
    }
}

/// Committed -> InPlace: each new file moved to its path, its sources
/// deleted (and any copy of a source its writer had not moved into place).
async fn place(
    tiers: &Tiers,
    moves: Vec<StagedMove>,
    report: &mut PassReport,
) -> Result<Moving, TierError> {
    for m in &moves {
        let file = (m.entry.path.clone(), m.entry.sha256.clone());
        promote(tiers.store(m.entry.tier), std::slice::from_ref(&file)).await?;
        for f in &m.sources {
            if f.key() != m.entry.key() {
                let store = tiers.store(f.tier);
                store.delete(&f.path).await?;
                store.delete(&staged(&f.path, &f.sha256)).await?;
            }
        }
        report.files_moved += m.sources.len() as u64;
        report.files_written += 1;
        report.rows += m.entry.rows;
        report.bytes_written += m.entry.size_bytes;
    }
    Ok(Moving::InPlace)
}
