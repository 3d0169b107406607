use super::*;

fn p(n: i32) -> (String, i32) {
    ("events".to_owned(), n)
}

fn bounds(low: i64, high: i64) -> Option<LogBounds> {
    Some(LogBounds { low, high })
}

#[test]
fn a_partition_is_read_from_the_sinks_offset_and_its_ranges_follow_what_was_taken() {
    let mut pos = Positions::default();
    pos.assign(p(0));
    assert_eq!(pos.unplaced(), vec![p(0)]);
    assert_eq!(
        pos.place(&p(0), Some(10), bounds(0, 20), true),
        Placement::Read(Some(10))
    );
    assert!(!pos.has_progress());
    assert_eq!(pos.admit(&p(0), 10), Admit::Take);
    assert_eq!(
        pos.admit(&p(0), 12),
        Admit::Take,
        "gaps (transaction markers) are fine"
    );
    assert!(pos.has_progress());
    assert_eq!(
        pos.ranges(),
        vec![ReadRange {
            topic: "events".into(),
            partition: 0,
            from: Some(10),
            to: 13
        }]
    );
    assert_eq!(pos.committed(), vec![("events".to_owned(), 0, 13)]);
    assert!(!pos.has_progress());
    assert!(pos.ranges().is_empty());
}

#[test]
fn a_log_that_ends_below_the_sinks_offset_is_refused_and_stays_so() {
    let mut pos = Positions::default();
    pos.assign(p(1));
    assert_eq!(
        pos.place(&p(1), Some(500), bounds(0, 120), true),
        Placement::Refuse {
            durable: Some(500),
            log_end: 120
        }
    );
    assert_eq!(pos.admit(&p(1), 120), Admit::Drop);
    assert!(pos.unplaced().is_empty());
    assert!(
        pos.remove(&p(1)),
        "a refused partition must be resumed when it goes"
    );
}

#[test]
fn aged_out_records_and_an_unanswered_broker_still_read() {
    let mut pos = Positions::default();
    assert_eq!(
        pos.place(&p(0), Some(5), bounds(50, 90), true),
        Placement::Read(Some(5))
    );
    assert_eq!(pos.place(&p(1), None, None, true), Placement::Read(None));
    assert_eq!(pos.admit(&p(1), 0), Admit::Take);
}

#[test]
fn a_seek_that_did_not_take_drops_the_next_record_and_seeks_again() {
    let mut pos = Positions::default();
    pos.place(&p(0), Some(7), bounds(0, 9), true);
    pos.seek_failed(&p(0));
    assert_eq!(pos.admit(&p(0), 3), Admit::Reseek(Some(7)));
    assert_eq!(pos.admit(&p(0), 7), Admit::Take);
    assert_eq!(pos.ranges()[0].to, 8);
}

#[test]
fn a_record_from_before_the_read_position_means_the_broker_went_back() {
    let mut pos = Positions::default();
    pos.place(&p(0), Some(100), bounds(0, 200), true);
    assert_eq!(pos.admit(&p(0), 100), Admit::Take);
    assert_eq!(pos.admit(&p(0), 101), Admit::Take);
    assert_eq!(pos.admit(&p(0), 0), Admit::WentBack { read_to: 102 });
    // Nothing read from a fresh placement: the sink's offset is the bar.
    pos.place(&p(2), Some(40), bounds(0, 41), true);
    assert_eq!(pos.admit(&p(2), 39), Admit::WentBack { read_to: 40 });
    pos.refuse(&p(2), 0);
    assert_eq!(
        pos.state("events", 2),
        Some(PartitionState::Refused { log_end: 0 })
    );
}

#[test]
fn clearing_returns_the_refused_partitions_and_unassigned_records_are_dropped() {
    let mut pos = Positions::default();
    pos.place(&p(0), Some(1), bounds(0, 1), true);
    pos.place(&p(1), Some(9), bounds(0, 2), true);
    assert_eq!(pos.clear(), vec![p(1)]);
    assert_eq!(pos.admit(&p(0), 1), Admit::Drop);
    assert!(pos.partitions().is_empty());
}
