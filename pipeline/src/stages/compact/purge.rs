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

use super::rewrite::rewrite_file;
pub use super::rewrite::{Rewritten, without};
use crate::catalog::subjects::{may_hold, subject_columns};
use crate::catalog::tiers::promote;
use crate::catalog::{
    Action, Catalog, CatalogError, Erasure, FileEntry, Purge, PurgedFile, Tiers, Unchanged, staged,
};
use crate::stages::archive::Table;
use crate::stages::tier::TierError;
use crate::stages::tier::mover::Rewrite;

/// How many times a purge plans again after another writer changed its
/// files before it gives up.
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

/// Where a purge is, as explicit states (STYLE rule 9):
///
/// ```text
/// Requested --mark--> Marked --rewrite--> Staged --commit--> Committed --swap--> Swapped
///                       ^                   |  \--nothing to commit--> Clean
///                       \----conflict------/
/// ```
///
/// What a crash in each leaves, and how a rerun (which starts from
/// `Requested` and reconciles the tiers first) finishes it:
/// - `Requested`: nothing.
/// - `Marked`: the erasures recorded; readers skip the subjects' rows;
///   marking again is a no-op.
/// - `Staged`: rewrites under `_staging/`, never listed; the rerun writes
///   the same bytes under the same names and commits them.
/// - `Committed`: the catalog lists the rewrites, the old bytes are still
///   at their paths; [`Tiers::reconcile`] moves the rewrites into place,
///   and the rerun finds nothing left to remove (`Clean`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purging {
    /// Nothing done.
    Requested,
    /// The erasures are in the catalog.
    Marked,
    /// The files that held the subjects rewritten without them, staged.
    Staged {
        /// What the purge found.
        report: PurgeReport,
        /// The rewrites.
        rewritten: Vec<Rewritten>,
    },
    /// The rewrites listed in the catalog, with the purges; still staged.
    Committed {
        /// What the purge did.
        report: PurgeReport,
        /// The rewrites to move into place.
        rewritten: Vec<Rewritten>,
    },
    /// Done: the rewrites in place, emptied files deleted.
    Swapped(PurgeReport),
    /// Done: no file held the subjects and every request was already
    /// recorded as purged; nothing committed.
    Clean(PurgeReport),
}

/// What every step of one purge works on.
pub struct PurgeRun<'a> {
    /// The catalog.
    pub catalog: &'a mut Catalog,
    /// The tiers' stores.
    pub tiers: &'a Tiers,
    /// The erasures.
    pub targets: &'a [Target],
    /// How rewrites are written.
    pub rewrite: Rewrite,
    /// Commits refused so far because another writer changed the files.
    pub conflicts: usize,
}

impl Purging {
    /// The state's name, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            Purging::Requested => "requested",
            Purging::Marked => "marked",
            Purging::Staged { .. } => "staged",
            Purging::Committed { .. } => "committed",
            Purging::Swapped(_) => "swapped",
            Purging::Clean(_) => "clean",
        }
    }

    /// The crash point a test may stop at on entering this state.
    pub fn step(&self) -> Option<Step> {
        match self {
            Purging::Marked => Some(Step::Marked),
            Purging::Staged { .. } => Some(Step::Staged),
            Purging::Committed { .. } => Some(Step::Committed),
            Purging::Swapped(_) => Some(Step::Swapped),
            Purging::Requested | Purging::Clean(_) => None,
        }
    }

    /// What the purge did, once done.
    pub fn report(&self) -> Option<&PurgeReport> {
        match self {
            Purging::Swapped(r) | Purging::Clean(r) => Some(r),
            _ => None,
        }
    }

    /// Takes the next step.
    pub async fn advance(self, run: &mut PurgeRun<'_>) -> Result<Purging, TierError> {
        match self {
            Purging::Requested => {
                let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
                run.tiers.reconcile(run.catalog, &tables).await?;
                mark(run.catalog, run.targets).await?;
                Ok(Purging::Marked)
            }
            Purging::Marked => stage(run).await,
            Purging::Staged { report, rewritten } => commit(run, report, rewritten).await,
            Purging::Committed {
                mut report,
                rewritten,
            } => {
                swap(run.tiers, &rewritten, &mut report).await?;
                Ok(Purging::Swapped(report))
            }
            done @ (Purging::Swapped(_) | Purging::Clean(_)) => Ok(done),
        }
    }
}

/// Purges the subjects of `targets` from every tier, each file read and
/// rewritten once for all of them; `at(step)` is called on entering each
/// state that has a [`Step`] (a test's crash point).
pub async fn purge(
    catalog: &mut Catalog,
    tiers: &Tiers,
    targets: &[Target],
    rewrite: Rewrite,
    mut at: impl FnMut(Step),
) -> Result<PurgeReport, TierError> {
    let mut run = PurgeRun {
        catalog,
        tiers,
        targets,
        rewrite,
        conflicts: 0,
    };
    let mut state = Purging::Requested;
    loop {
        state = state.advance(&mut run).await?;
        // `Marked` again after a conflict is no new step.
        if let Some(step) = state.step()
            && !(step == Step::Marked && run.conflicts > 0)
        {
            at(step);
        }
        if let Some(report) = state.report() {
            return Ok(report.clone());
        }
    }
}

/// Marked -> Staged: plans from the catalog as it is now and rewrites each
/// file that holds a subject.
async fn stage(run: &mut PurgeRun<'_>) -> Result<Purging, TierError> {
    run.catalog.refresh().await?;
    let subjects: Vec<&str> = run.targets.iter().map(|t| t.subject.as_str()).collect();
    let (mut report, candidates) = plan(run.catalog, run.targets, &subjects);
    let mut rewritten = Vec::new();
    for f in candidates {
        report.files_opened += 1;
        if let Some(r) = rewrite_file(run.tiers, &f, &subjects, run.rewrite).await? {
            rewritten.push(r);
        }
    }
    Ok(Purging::Staged { report, rewritten })
}

/// Staged -> Committed (or Clean with nothing to commit; or back to Marked
/// when another writer changed the files, the staged copies deleted).
async fn commit(
    run: &mut PurgeRun<'_>,
    mut report: PurgeReport,
    rewritten: Vec<Rewritten>,
) -> Result<Purging, TierError> {
    let unpurged = run.targets.iter().any(|t| {
        run.catalog
            .state()
            .erasure(&t.erasure.request_id)
            .is_none_or(|e| e.purged_at_ms.is_none())
    });
    if rewritten.is_empty() && !unpurged {
        return Ok(Purging::Clean(report));
    }
    let actions = purge_actions(run.catalog, run.targets, &rewritten, &mut report);
    match run.catalog.commit("purge", actions).await {
        Ok(version) => {
            report.version = Some(version);
            Ok(Purging::Committed { report, rewritten })
        }
        Err(CatalogError::Conflict(c)) => {
            // A tier pass moved some of the files meanwhile: plan again.
            tracing::info!(conflict = %c, "files changed during the purge; planning again");
            for r in &rewritten {
                if let Some(new) = &r.new {
                    let _ = run
                        .tiers
                        .store(new.tier)
                        .delete(&staged(&new.path, &new.sha256))
                        .await;
                }
            }
            run.conflicts += 1;
            if run.conflicts >= ATTEMPTS {
                return Err(TierError::Catalog(CatalogError::Conflict(c)));
            }
            Ok(Purging::Marked)
        }
        Err(e) => Err(e.into()),
    }
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
