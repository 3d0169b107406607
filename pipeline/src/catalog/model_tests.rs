use super::*;

fn progress(from: Option<i64>, to: i64) -> Action {
    test_progress(from, to)
}

fn file(tier: Tier, path: &str) -> FileEntry {
    test_entry(tier, path)
}

fn commit(version: u64, actions: Vec<Action>) -> Commit {
    Commit {
        version,
        committed_at_ms: 0,
        writer: "test".into(),
        operation: "test".into(),
        id: String::new(),
        actions,
    }
}

#[test]
fn a_rewind_moves_an_offset_back_only_from_where_the_operator_saw_it() {
    let mut s = CatalogState::default();
    s.apply(&commit(1, vec![progress(None, 100)])).unwrap();
    let rewind = |from, to| {
        Action::Rewind(Rewind {
            topic: "events".into(),
            partition: 0,
            from,
            to,
            reason: "broker lost its disk".into(),
        })
    };
    assert!(s.check(&[rewind(90, 60)]).is_err(), "not where it stands");
    assert!(s.check(&[rewind(100, 100)]).is_err(), "not back");
    assert!(s.check(&[rewind(100, 120)]).is_err(), "not forward");
    assert!(s.check(&[rewind(100, -1)]).is_err());
    assert!(
        s.check(&[rewind(100, 60), progress(Some(100), 110)])
            .is_err(),
        "and not moved twice in one commit"
    );
    assert_eq!(s.rewinds("events", 0), 0);
    s.apply(&commit(2, vec![rewind(100, 60)])).unwrap();
    assert_eq!(s.next_offset("events", 0), Some(60));
    assert_eq!(s.rewinds("events", 0), 1, "counted, for the files' names");
    let again = CatalogState::from_snapshot(s.to_snapshot());
    assert_eq!(again.rewinds("events", 0), 1, "and kept in checkpoints");
    // The archive goes on from there as from any offset.
    s.apply(&commit(3, vec![progress(Some(60), 75)])).unwrap();
    assert_eq!(s.next_offset("events", 0), Some(75));
    // A partition never archived cannot be rewound.
    assert!(
        s.check(&[Action::Rewind(Rewind {
            topic: "events".into(),
            partition: 1,
            from: 5,
            to: 0,
            reason: String::new(),
        })])
        .is_err()
    );
}

#[test]
fn commits_apply_in_order_and_all_or_nothing() {
    let mut s = CatalogState::default();
    s.apply(&commit(
        1,
        vec![Action::Add(file(Tier::Hot, "a")), progress(None, 10)],
    ))
    .unwrap();
    assert_eq!(s.next_offset("events", 0), Some(10));
    // A stale writer that read "nothing archived" is refused, and the
    // file it would add is not listed.
    let err = s
        .apply(&commit(
            2,
            vec![Action::Add(file(Tier::Hot, "b")), progress(None, 5)],
        ))
        .unwrap_err();
    assert!(matches!(
        err,
        Conflict::Progress {
            found: Some(10),
            ..
        }
    ));
    assert_eq!(s.files().count(), 1);
    assert_eq!(s.version(), 1);
    // Offsets never move backwards, nor twice in one commit.
    assert!(s.check(&[progress(Some(10), 9)]).is_err());
    assert!(
        s.check(&[progress(Some(10), 12), progress(Some(10), 14)])
            .is_err()
    );
    assert!(s.check(&[progress(Some(10), 12)]).is_ok());
    // Versions must follow each other.
    assert!(matches!(
        s.apply(&commit(3, vec![])),
        Err(Conflict::Version {
            current: 1,
            found: 3
        })
    ));
}

#[test]
fn a_move_between_tiers_is_one_commit() {
    let mut s = CatalogState::default();
    s.apply(&commit(1, vec![Action::Add(file(Tier::Hot, "a"))]))
        .unwrap();
    let moved = commit(
        2,
        vec![
            Action::Add(file(Tier::Warm, "a")),
            Action::Remove(FileKey {
                tier: Tier::Hot,
                path: "a".into(),
            }),
        ],
    );
    s.apply(&moved).unwrap();
    let tiers: Vec<Tier> = s.files().map(|f| f.tier).collect();
    assert_eq!(tiers, [Tier::Warm]);
    // Moving it again from hot is refused: it is not there any more.
    let mut again = moved.clone();
    again.version = 3;
    assert!(matches!(s.apply(&again), Err(Conflict::AlreadyListed(_))));
}

#[test]
fn a_rewrite_in_place_removes_then_adds() {
    let mut s = CatalogState::default();
    s.apply(&commit(1, vec![Action::Add(file(Tier::Cold, "a"))]))
        .unwrap();
    let key = FileKey {
        tier: Tier::Cold,
        path: "a".into(),
    };
    let mut rewritten = file(Tier::Cold, "a");
    rewritten.rows = 0;
    s.apply(&commit(
        2,
        vec![Action::Remove(key.clone()), Action::Add(rewritten)],
    ))
    .unwrap();
    assert_eq!(s.file(&key).map(|f| f.rows), Some(0));
    // Adding twice in one commit is refused.
    assert!(matches!(
        s.check(&[
            Action::Add(file(Tier::Hot, "x")),
            Action::Add(file(Tier::Hot, "x"))
        ]),
        Err(Conflict::AlreadyListed(_))
    ));
}

#[test]
fn a_snapshot_round_trips() {
    let mut s = CatalogState::default();
    s.apply(&commit(
        1,
        vec![Action::Add(file(Tier::Hot, "a")), progress(None, 3)],
    ))
    .unwrap();
    let json = serde_json::to_string(&s.to_snapshot()).unwrap();
    let back = CatalogState::from_snapshot(serde_json::from_str(&json).unwrap());
    assert_eq!(back, s);
}

fn erasure(id: &str) -> Erasure {
    Erasure {
        request_id: id.into(),
        subject_hash: format!("hash-{id}"),
        requested_at_ms: 1,
        requested_by: "test".into(),
    }
}

#[test]
fn a_file_rewritten_meanwhile_is_not_replaced_from_its_old_bytes() {
    let mut s = CatalogState::default();
    let old = file(Tier::Warm, "a");
    s.apply(&commit(1, vec![Action::Add(old.clone())])).unwrap();
    // A purge rewrites it in place (new bytes, same path).
    let mut purged = old.clone();
    purged.sha256 = "11".into();
    s.apply(&commit(
        2,
        vec![
            Action::Unchanged(Unchanged::of(&old)),
            Action::Remove(old.key()),
            Action::Add(purged.clone()),
        ],
    ))
    .unwrap();
    // A tier pass that read the old bytes cannot commit its move.
    let mut moved = old.clone();
    moved.tier = Tier::Cold;
    assert!(matches!(
        s.check(&[
            Action::Unchanged(Unchanged::of(&old)),
            Action::Add(moved.clone()),
            Action::Remove(old.key()),
        ]),
        Err(Conflict::Changed(_))
    ));
    // One that read the new bytes can.
    assert!(
        s.check(&[
            Action::Unchanged(Unchanged::of(&purged)),
            Action::Add(moved),
            Action::Remove(purged.key()),
        ])
        .is_ok()
    );
}

#[test]
fn erasures_are_recorded_once_purged_after_and_fence_stale_writers() {
    let mut s = CatalogState::default();
    assert!(matches!(
        s.check(&[Action::Purge(Purge {
            request_id: "er-1".into(),
            files: vec![],
            files_opened: 0,
            files_listed: 0,
        })]),
        Err(Conflict::NotErased(_))
    ));
    s.apply(&commit(1, vec![Action::Erase(erasure("er-1"))]))
        .unwrap();
    assert!(matches!(
        s.check(&[Action::Erase(erasure("er-1"))]),
        Err(Conflict::AlreadyErased(_))
    ));
    assert_eq!(s.erased_subjects().len(), 1);
    // A writer that filtered with no erasure known is fenced off.
    assert!(matches!(
        s.check(&[Action::ErasuresKnown(0), Action::Add(file(Tier::Hot, "n"))]),
        Err(Conflict::Erasures {
            expected: 0,
            found: 1
        })
    ));
    assert!(s.check(&[Action::ErasuresKnown(1)]).is_ok());
    s.apply(&commit(
        2,
        vec![Action::Purge(Purge {
            request_id: "er-1".into(),
            files: vec![],
            files_opened: 3,
            files_listed: 9,
        })],
    ))
    .unwrap();
    let e = s.erasure("er-1").unwrap();
    assert_eq!(
        (e.purged_in_version, e.files_opened, e.files_listed),
        (Some(2), 3, 9)
    );
    let json = serde_json::to_string(&s.to_snapshot()).unwrap();
    assert_eq!(
        CatalogState::from_snapshot(serde_json::from_str(&json).unwrap()),
        s
    );
}
