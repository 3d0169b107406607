//! Each transition of a group of tier moves, and recovery from each state
//! a crash can leave, on an archive in memory.

use super::moving::Moving;
use crate::catalog::{Action, Tier};
use crate::stages::archive::fixture::{Ev, MemoryArchive};
use crate::stages::tier::mover::run_pass;
use crate::stages::tier::mover::{PassReport, Rewrite};
use crate::stages::tier::plan::plan;

const HOUR_US: i64 = 3_600_000_000;
/// Far past every tier's age: the plan sends everything to cold.
const NOW_US: i64 = 400 * 24 * HOUR_US;
const REWRITE: Rewrite = Rewrite {
    zstd_level: 3,
    subject_filter_fpp: 0.01,
};

/// Two small hot files of hour 0 (merged into one cold file by a move)
/// and one of hour 1.
async fn archive() -> MemoryArchive {
    let mut a = MemoryArchive::new("tier@test").await;
    let first: [Ev; 3] = [("a", "b", 1), ("c", "b", 2), ("a", "d", 3)];
    let second: [Ev; 2] = [("e", "b", 10), ("a", "f", 11)];
    let third: [Ev; 1] = [("g", "h", HOUR_US + 5)];
    a.add_file(&first).await;
    a.add_file(&second).await;
    a.add_file(&third).await;
    a
}

fn planned(a: &MemoryArchive) -> Moving {
    Moving::Planned(plan(a.catalog.state(), NOW_US, 7, 30))
}

async fn step(a: &mut MemoryArchive, state: Moving, report: &mut PassReport) -> Moving {
    state
        .advance(&mut a.catalog, &a.tiers, REWRITE, 0, report, &mut |_| {})
        .await
        .unwrap()
}

fn staged_objects(objects: &[String]) -> usize {
    objects
        .iter()
        .filter(|p| p.starts_with("_staging/"))
        .count()
}

#[tokio::test]
async fn a_group_goes_planned_staged_committed_in_place() {
    let mut a = archive().await;
    let rows = a.rows().await;
    let hot = a.listed(Tier::Hot);
    assert_eq!(hot.len(), 3);
    let mut report = PassReport::default();

    let state = planned(&a);
    let Moving::Planned(moves) = &state else {
        unreachable!()
    };
    assert_eq!(moves.len(), 2, "one move per hour: {moves:?}");

    let state = step(&mut a, state, &mut report).await;
    assert_eq!(state.name(), "staged");
    let cold = a.objects(Tier::Cold).await;
    assert_eq!(staged_objects(&cold), 2, "{cold:?}");
    assert_eq!(cold.len(), 2, "nothing at a final path yet: {cold:?}");
    assert_eq!(a.listed(Tier::Hot), hot, "the sources are still listed");

    let state = step(&mut a, state, &mut report).await;
    let Moving::Committed { version, moves } = &state else {
        panic!("{}", state.name())
    };
    assert_eq!(*version, 4, "three archive commits, then the move's");
    assert_eq!(moves.len(), 2);
    assert!(a.listed(Tier::Hot).is_empty());
    assert_eq!(a.listed(Tier::Cold).len(), 2);
    assert_eq!(a.objects(Tier::Hot).await, hot, "sources still stored");

    let state = step(&mut a, state, &mut report).await;
    assert_eq!(state.name(), "in place");
    assert!(state.is_done());
    assert!(a.objects(Tier::Hot).await.is_empty(), "sources deleted");
    assert_eq!(a.objects(Tier::Cold).await, a.listed(Tier::Cold));
    assert_eq!(a.rows().await, rows, "every row moved once");
    assert_eq!(
        (report.files_moved, report.files_written, report.rows),
        (3, 2, 6)
    );
    assert_eq!((report.deferred, report.damaged.len()), (0, 0));
}

#[tokio::test]
async fn a_crash_when_staged_leaves_the_sources_listed_and_the_next_pass_moves_them() {
    let mut a = archive().await;
    let rows = a.rows().await;
    let mut report = PassReport::default();
    let state = planned(&a);
    let state = step(&mut a, state, &mut report).await;
    assert_eq!(state.name(), "staged");
    drop(state); // the crash

    assert_eq!(a.rows().await, rows, "readers see the hot files");
    let moves = plan(a.catalog.state(), NOW_US, 7, 30);
    let report = run_pass(&mut a.catalog, &a.tiers, &moves, REWRITE, |_| {})
        .await
        .unwrap();
    assert_eq!(report.files_moved, 3);
    assert_eq!(a.rows().await, rows);
    let cold = a.objects(Tier::Cold).await;
    assert_eq!(
        staged_objects(&cold),
        0,
        "the rerun writes the same bytes under the same staged names: {cold:?}"
    );
    assert!(a.objects(Tier::Hot).await.is_empty());
}

#[tokio::test]
async fn a_crash_when_committed_is_finished_by_reconcile() {
    let mut a = archive().await;
    let rows = a.rows().await;
    let mut report = PassReport::default();
    let state = planned(&a);
    let state = step(&mut a, state, &mut report).await;
    let state = step(&mut a, state, &mut report).await;
    assert_eq!(state.name(), "committed");
    drop(state); // the crash

    let done = a
        .tiers
        .reconcile(&mut a.catalog, &["events"])
        .await
        .unwrap();
    assert_eq!(done.promoted.len(), 2, "{done:?}");
    assert_eq!(done.deleted.len(), 3, "the sources: {done:?}");
    assert!(a.objects(Tier::Hot).await.is_empty());
    assert_eq!(a.objects(Tier::Cold).await, a.listed(Tier::Cold));
    assert_eq!(a.rows().await, rows);
    assert!(
        plan(a.catalog.state(), NOW_US, 7, 30).is_empty(),
        "nothing left to move"
    );
}

#[tokio::test]
async fn a_source_changed_before_the_commit_defers_the_group_and_deletes_its_staged_copies() {
    let mut a = archive().await;
    let mut report = PassReport::default();
    let state = planned(&a);
    let state = step(&mut a, state, &mut report).await;
    // A purge removes one of the sources between the stage and the commit.
    let mut purge = a.other_writer("purge@test").await;
    let gone = purge.state().files().next().unwrap().key();
    purge
        .commit("purge", vec![Action::Remove(gone)])
        .await
        .unwrap();

    let state = step(&mut a, state, &mut report).await;
    assert_eq!(state.name(), "deferred");
    assert!(state.is_done());
    assert_eq!(report.deferred, 2);
    assert!(
        a.objects(Tier::Cold).await.is_empty(),
        "staged copies deleted"
    );
    assert!(a.listed(Tier::Cold).is_empty());
    assert_eq!(
        a.listed(Tier::Hot).len(),
        2,
        "the rest stay where they were"
    );
}

#[tokio::test]
async fn a_damaged_source_keeps_its_move_where_it_is_and_the_others_go_on() {
    let mut a = archive().await;
    let hour_one = a
        .catalog
        .state()
        .files()
        .find(|f| f.hour == 1)
        .unwrap()
        .clone();
    let hot = a.tiers.store(Tier::Hot);
    hot.put(&hour_one.path, bytes::Bytes::from_static(b"PAR1 cut"))
        .await
        .unwrap();

    let moves = plan(a.catalog.state(), NOW_US, 7, 30);
    let report = run_pass(&mut a.catalog, &a.tiers, &moves, REWRITE, |_| {})
        .await
        .unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert!(report.damaged[0].contains(&hour_one.path), "{report:?}");
    assert_eq!(report.files_moved, 2);
    assert_eq!(a.listed(Tier::Hot), vec![hour_one.path.clone()]);
    assert_eq!(a.listed(Tier::Cold).len(), 1);
}

#[tokio::test]
async fn an_end_state_stays_where_it_is() {
    let mut a = archive().await;
    let mut report = PassReport::default();
    for end in [Moving::InPlace, Moving::Deferred] {
        let name = end.name();
        let after = step(&mut a, end, &mut report).await;
        assert_eq!(after.name(), name);
    }
    assert_eq!(report, PassReport::default());
}
