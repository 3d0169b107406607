//! Each transition of a purge, and recovery from each state a crash can
//! leave, on an archive in memory.

use super::purge::{PurgeReport, PurgeRun, Purging, Step, Target, purge};
use crate::catalog::{Action, Erasure, Tier};
use crate::stages::archive::fixture::{Ev, MemoryArchive};
use crate::stages::tier::mover::Rewrite;

const HOUR_US: i64 = 3_600_000_000;
const REWRITE: Rewrite = Rewrite {
    zstd_level: 3,
    subject_filter_fpp: 0.01,
};

/// Four hot files: `a` in five rows of three of them (one holds only
/// `a`'s rows), none in the third.
async fn archive() -> MemoryArchive {
    let mut m = MemoryArchive::new("compact@test").await;
    let files: [&[Ev]; 4] = [
        &[("a", "b", 1), ("c", "b", 2), ("a", "d", 3)],
        &[("e", "b", 10), ("f", "a", 11)],
        &[("g", "h", HOUR_US + 5)],
        &[("a", "a", 2 * HOUR_US + 5), ("a", "i", 2 * HOUR_US + 6)],
    ];
    for f in files {
        m.add_file(f).await;
    }
    m
}

fn targets() -> Vec<Target> {
    vec![Target {
        erasure: Erasure {
            request_id: "req-1".into(),
            subject_hash: "hash-of-a".into(),
            requested_at_ms: 1,
            requested_by: "test".into(),
        },
        subject: "a".into(),
    }]
}

/// The rows left once `a` is purged.
fn without_a(rows: &[(String, String)]) -> Vec<(String, String)> {
    rows.iter()
        .filter(|(actor, target)| actor != "a" && target != "a")
        .cloned()
        .collect()
}

/// One step of a purge of `targets()`.
async fn step(m: &mut MemoryArchive, state: Purging) -> Purging {
    let targets = targets();
    let mut run = PurgeRun {
        catalog: &mut m.catalog,
        tiers: &m.tiers,
        targets: &targets,
        rewrite: REWRITE,
        conflicts: 0,
    };
    state.advance(&mut run).await.unwrap()
}

/// Advances a fresh purge of `targets()` until it enters `name`.
async fn run_until(m: &mut MemoryArchive, name: &str) -> Purging {
    let mut state = Purging::Requested;
    while state.name() != name {
        assert!(state.report().is_none(), "{name} never reached");
        state = step(m, state).await;
    }
    state
}

async fn purge_all(m: &mut MemoryArchive) -> PurgeReport {
    purge(&mut m.catalog, &m.tiers, &targets(), REWRITE, |_| {})
        .await
        .unwrap()
}

fn erasure(m: &MemoryArchive) -> Option<crate::catalog::ErasureState> {
    m.catalog.state().erasure("req-1").cloned()
}

#[tokio::test]
async fn a_purge_goes_marked_staged_committed_swapped() {
    let mut m = archive().await;
    let before = m.rows().await;
    let listed = m.listed(Tier::Hot);

    let state = run_until(&mut m, "marked").await;
    assert_eq!(state.step(), Some(Step::Marked));
    let marked = erasure(&m).expect("the erasure is in the catalog");
    assert_eq!(marked.purged_at_ms, None);
    assert_eq!(m.rows().await, before, "no file touched yet");

    let state = step(&mut m, state).await;
    let Purging::Staged { report, rewritten } = &state else {
        unreachable!()
    };
    assert_eq!(rewritten.len(), 3, "{rewritten:?}");
    assert_eq!(rewritten.iter().filter(|r| r.new.is_none()).count(), 1);
    assert_eq!(report.files_listed, 4);
    assert!((3..=4).contains(&report.files_opened), "{report:?}");
    let staged_objects = |objects: Vec<String>| {
        objects
            .into_iter()
            .filter(|p| p.starts_with("_staging/"))
            .count()
    };
    assert_eq!(staged_objects(m.objects(Tier::Hot).await), 2);
    assert_eq!(m.listed(Tier::Hot), listed, "nothing committed");

    let state = step(&mut m, state).await;
    let Purging::Committed { report, .. } = &state else {
        unreachable!()
    };
    assert!(report.version.is_some());
    assert_eq!(m.listed(Tier::Hot).len(), 3, "the emptied file is unlisted");
    let purged = erasure(&m).unwrap();
    assert!(purged.purged_at_ms.is_some());
    // a b, a d; f a; a a, a i.
    assert_eq!(purged.files.iter().map(|f| f.rows_removed).sum::<u64>(), 5);

    let state = step(&mut m, state).await;
    assert_eq!(state.name(), "swapped");
    let report = state.report().expect("done").clone();
    assert_eq!(
        (
            report.files_rewritten,
            report.files_removed,
            report.rows_removed
        ),
        (2, 1, 5)
    );
    assert_eq!(m.rows().await, without_a(&before));
    assert_eq!(m.objects(Tier::Hot).await, m.listed(Tier::Hot), "no debris");
}

#[tokio::test]
async fn a_rerun_after_a_crash_in_any_state_ends_the_same() {
    for crash in ["marked", "staged", "committed"] {
        let mut m = archive().await;
        let before = m.rows().await;
        drop(run_until(&mut m, crash).await);

        let report = purge_all(&mut m).await;
        assert_eq!(m.rows().await, without_a(&before), "crash when {crash}");
        assert_eq!(
            m.objects(Tier::Hot).await,
            m.listed(Tier::Hot),
            "no debris after a crash when {crash}"
        );
        let e = erasure(&m).unwrap();
        assert!(e.purged_at_ms.is_some(), "crash when {crash}");
        assert_eq!(
            e.files.iter().map(|f| f.rows_removed).sum::<u64>(),
            5,
            "every removed row certified once, crash when {crash}"
        );
        if crash == "committed" {
            assert_eq!(report.version, None, "the rerun finds nothing to commit");
        }
    }
}

#[tokio::test]
async fn a_finished_purge_run_again_commits_nothing() {
    let mut m = archive().await;
    purge_all(&mut m).await;
    let version = m.catalog.state().version();
    let again = run_until(&mut m, "clean").await;
    assert_eq!(again.step(), None);
    let report = again.report().unwrap();
    assert_eq!((report.version, report.rows_removed), (None, 0));
    assert_eq!(m.catalog.state().version(), version);
}

#[tokio::test]
async fn a_conflict_when_staged_goes_back_to_marked_and_deletes_the_staged_copies() {
    let mut m = archive().await;
    let before = m.rows().await;
    let targets = targets();
    let state = run_until(&mut m, "staged").await;
    // A tier pass removes one of the files being rewritten meanwhile.
    let Purging::Staged { rewritten, .. } = &state else {
        unreachable!()
    };
    let moved = rewritten
        .iter()
        .find(|r| r.new.is_some())
        .unwrap()
        .old
        .key();
    let mut tier = m.other_writer("tier@test").await;
    tier.commit("tier", vec![Action::Remove(moved.clone())])
        .await
        .unwrap();

    let mut run = PurgeRun {
        catalog: &mut m.catalog,
        tiers: &m.tiers,
        targets: &targets,
        rewrite: REWRITE,
        conflicts: 0,
    };
    let state = state.advance(&mut run).await.unwrap();
    assert_eq!(state.name(), "marked");
    assert_eq!(run.conflicts, 1);
    let mut state = state;
    while state.report().is_none() {
        state = state.advance(&mut run).await.unwrap();
    }
    assert_eq!(state.name(), "swapped");
    let remaining: Vec<_> = without_a(&before);
    let rows = m.rows().await;
    assert!(rows.iter().all(|r| r.0 != "a" && r.1 != "a"), "{rows:?}");
    assert!(
        rows.len() < remaining.len(),
        "the removed file's rows are gone"
    );
    let hot = m.objects(Tier::Hot).await;
    assert!(
        hot.iter().all(|p| !p.starts_with("_staging/")),
        "the first attempt's staged copies are deleted: {hot:?}"
    );
}
