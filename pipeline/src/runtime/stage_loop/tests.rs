//! The loop on in-memory ports (`fakes`): a small broker model and a
//! producer whose commits can be made to fail. What a rebalance, an
//! aborted transaction, a fenced producer or a failed sink commit does
//! to the loop shows here in milliseconds.

mod fakes;
mod stages;

use std::time::Duration;

use fakes::{Event, World, tp};
use stages::{FakeSink, FakeStage, Told};

use super::*;
use crate::runtime::output::OutputFailure;
use crate::runtime::sink::SinkFailure;
use crate::runtime::source::RebalanceEvent;

fn config() -> LoopConfig {
    LoopConfig {
        stage: "test",
        input_topics: vec!["in".into()],
        group_id: "g".into(),
        transactional_id: "g-a".into(),
        batch_max_records: 3,
        batch_max_wait: Duration::from_millis(5),
    }
}

fn assign(parts: &[i32]) -> Event {
    Event::Rebalance(RebalanceEvent::Assigned(
        parts.iter().map(|p| tp(*p)).collect(),
    ))
}

fn revoke(parts: &[i32]) -> Event {
    Event::Rebalance(RebalanceEvent::Revoked(
        parts.iter().map(|p| tp(*p)).collect(),
    ))
}

/// Runs `stage` until the world's script is done and its logs are read.
fn run(world: &World, stage: FakeStage) -> (Result<(), RuntimeError>, FakeStage) {
    run_with(world, stage, config())
}

fn run_with(
    world: &World,
    stage: FakeStage,
    config: LoopConfig,
) -> (Result<(), RuntimeError>, FakeStage) {
    let shutdown = Shutdown::new();
    let (source, output) = world.ports(&shutdown);
    let mut l = StageLoop::new(stage, config, Metrics::new(), source, output);
    let result = l.run(&shutdown);
    (result, l.stage)
}

fn each_once(world: &World, partitions: &[(i32, usize)]) {
    let mut produced = world.produced();
    produced.sort();
    let mut expected: Vec<String> = partitions
        .iter()
        .flat_map(|(p, n)| (0..*n).map(move |i| format!("{p}:{i}")))
        .collect();
    expected.sort();
    assert_eq!(produced, expected, "every record produced exactly once");
}

#[test]
fn every_record_is_produced_once_and_its_offset_committed_with_it() {
    let world = World::with_logs(&[(0, 7), (1, 5)]);
    world.at(0, assign(&[0, 1]));
    let (result, stage) = run(&world, FakeStage::default());
    result.unwrap();
    each_once(&world, &[(0, 7), (1, 5)]);
    let s = world.0.borrow();
    assert_eq!(s.committed[&tp(0)], 7);
    assert_eq!(s.committed[&tp(1)], 5);
    assert_eq!(
        stage.told,
        [Told::Assign(vec![(tp(0), None), (tp(1), None)])]
    );
}

#[test]
fn an_aborted_transaction_rewinds_to_the_committed_offsets_and_loses_nothing() {
    let world = World::with_logs(&[(0, 10)]);
    world.at(0, assign(&[0]));
    world.0.borrow_mut().transact_failures.extend([
        OutputFailure::Abortable {
            operation: "commit_transaction",
            detail: "coordinator moved".into(),
        },
        OutputFailure::Abortable {
            operation: "produce",
            detail: "timed out".into(),
        },
    ]);
    let (result, stage) = run(&world, FakeStage::default());
    result.unwrap();
    each_once(&world, &[(0, 10)]);
    let s = world.0.borrow();
    assert_eq!(s.aborts, 2);
    assert_eq!(
        s.seeks,
        [(tp(0), None), (tp(0), None)],
        "back to the committed offsets"
    );
    assert_eq!(stage.told.iter().filter(|t| **t == Told::Rewind).count(), 2);
    assert_eq!(stage.processed, 10 + 3 + 3, "the failed batches came again");
}

#[test]
fn a_fenced_producer_stops_the_loop_with_nothing_more_committed() {
    let world = World::with_logs(&[(0, 9)]);
    world.at(0, assign(&[0]));
    {
        let mut s = world.0.borrow_mut();
        s.transact_failures.push_back(OutputFailure::Abortable {
            operation: "x",
            detail: "y".into(),
        });
        s.transact_failures.push_back(OutputFailure::Fenced {
            operation: "commit_transaction",
        });
    }
    let (result, _) = run(&world, FakeStage::default());
    let err = result.unwrap_err();
    assert!(
        matches!(err, RuntimeError::Fenced { ref transactional_id, .. } if transactional_id == "g-a"),
        "{err}"
    );
    assert!(!err.is_retriable());
    assert!(world.produced().is_empty());
    assert!(!world.0.borrow().committed.contains_key(&tp(0)));
}

#[test]
fn a_fenced_consumer_stops_the_loop() {
    let world = World::with_logs(&[(0, 2)]);
    world.at(0, assign(&[0])).at(2, Event::PollError("fenced"));
    let (result, _) = run(&world, FakeStage::default());
    assert!(matches!(result, Err(RuntimeError::Fenced { .. })));
}

#[test]
fn a_retriable_stage_error_retries_the_batch_and_a_users_error_stops() {
    let world = World::with_logs(&[(0, 4)]);
    world.at(0, assign(&[0]));
    let mut stage = FakeStage::default();
    stage
        .process_failures
        .push_back(StageError::external("test", "model unreachable"));
    let (result, _) = run(&world, stage);
    result.unwrap();
    each_once(&world, &[(0, 4)]);

    let world = World::with_logs(&[(0, 4)]);
    world.at(0, assign(&[0]));
    let mut stage = FakeStage::default();
    stage
        .process_failures
        .push_back(StageError::user("test", "no API key"));
    let (result, _) = run(&world, stage);
    assert!(matches!(result, Err(RuntimeError::Stage(ref e)) if e.message == "no API key"));
    assert!(world.produced().is_empty());
}

#[test]
fn records_polled_before_a_rebalance_are_dropped_and_come_again_from_the_committed_offset() {
    let world = World::with_logs(&[(0, 6), (1, 6)]);
    // While the first batch is gathered (2 of 3 records in), partition 1
    // goes to another copy: the 2 records are dropped and come again.
    world
        .at(0, assign(&[0, 1]))
        .at_once(2, revoke(&[0, 1]))
        .at_once(2, assign(&[0]));
    let (result, stage) = run(&world, FakeStage::default());
    result.unwrap();
    each_once(&world, &[(0, 6)]);
    assert_eq!(
        stage.told,
        [
            Told::Assign(vec![(tp(0), None), (tp(1), None)]),
            Told::Revoke(vec![tp(0), tp(1)]),
            Told::Assign(vec![(tp(0), None)]),
        ]
    );
}

#[test]
fn a_lost_assignment_revokes_every_partition_the_copy_owned() {
    let world = World::with_logs(&[(0, 2), (1, 2)]);
    world
        .at(0, assign(&[0, 1]))
        .at(4, Event::Rebalance(RebalanceEvent::Lost));
    let (result, stage) = run(&world, FakeStage::default());
    result.unwrap();
    assert_eq!(stage.told.last(), Some(&Told::Revoke(vec![tp(0), tp(1)])));
}

fn sink_of(stage: &FakeStage) -> &FakeSink {
    stage.sink.as_ref().unwrap()
}

#[test]
fn a_sink_reads_from_its_own_offsets_and_moves_them_with_each_commit() {
    let world = World::with_logs(&[(0, 10)]);
    world.at(0, assign(&[0]));
    // The group says 2, the sink says 6: the sink wins.
    world.0.borrow_mut().committed.insert(tp(0), 2);
    let mut stage = FakeStage::sink();
    stage.sink.as_mut().unwrap().offsets.insert(tp(0), 6);
    let (result, stage) = run(&world, stage);
    result.unwrap();
    let sink = sink_of(&stage);
    assert_eq!(sink.rows, ["0:6", "0:7", "0:8", "0:9"]);
    assert_eq!(sink.offsets[&tp(0)], 10);
    assert_eq!(stage.told[0], Told::Assign(vec![(tp(0), Some(6))]));
    let s = world.0.borrow();
    assert_eq!(s.seeks, [(tp(0), Some(6))]);
    assert_eq!(
        s.async_commits.last(),
        Some(&("in".to_owned(), 0, 10)),
        "lag shows in the group"
    );
}

#[test]
fn a_failed_sink_commit_drops_what_was_read_and_reads_it_again() {
    let world = World::with_logs(&[(0, 8)]);
    world.at(0, assign(&[0]));
    let mut stage = FakeStage::sink();
    stage.sink.as_mut().unwrap().commit_failures.extend([
        SinkFailure::Failed(StageError::external("test", "503 from the store")),
        SinkFailure::Conflict("another copy".into()),
    ]);
    let (result, stage) = run(&world, stage);
    result.unwrap();
    let sink = sink_of(&stage);
    let expected: Vec<String> = (0..8).map(|i| format!("0:{i}")).collect();
    assert_eq!(sink.rows, expected, "each row once, in order");
    assert_eq!(sink.offsets[&tp(0)], 8);
    assert_eq!(stage.told.iter().filter(|t| **t == Told::Rewind).count(), 2);
    assert!(
        world
            .0
            .borrow()
            .seeks
            .iter()
            .filter(|(_, o)| o.is_none())
            .count()
            >= 3
    );
}

#[test]
fn dead_letters_are_delivered_before_the_commit_that_moves_past_them() {
    let world = World::with_logs(&[(0, 6)]);
    world.at(0, assign(&[0])).set(0, 1, "0:bad");
    world.0.borrow_mut().fail_deliveries = true;
    let (result, stage) = run(&world, FakeStage::sink());
    result.unwrap();
    let sink = sink_of(&stage);
    assert_eq!(sink.rows, ["0:0", "0:2", "0:3", "0:4", "0:5"]);
    assert_eq!(sink.offsets[&tp(0)], 6);
    let s = world.0.borrow();
    assert_eq!(
        s.sent.len(),
        1,
        "the dead letter sent again after the failed delivery, once"
    );
}

#[test]
fn a_log_that_ends_below_the_sinks_offset_is_refused_until_revoked() {
    let world = World::with_logs(&[(0, 3), (1, 4)]);
    world.at(0, assign(&[0, 1])).at(5, revoke(&[0, 1]));
    let mut stage = FakeStage::sink();
    // The sink archived up to 9 of partition 0, whose log now ends at 3.
    stage.sink.as_mut().unwrap().offsets.insert(tp(0), 9);
    let (result, stage) = run(&world, stage);
    result.unwrap();
    let sink = sink_of(&stage);
    assert_eq!(
        sink.rows,
        ["1:0", "1:1", "1:2", "1:3"],
        "partition 0 not read"
    );
    assert_eq!(sink.offsets[&tp(0)], 9);
    assert_eq!(sink.refused, [(tp(0), true), (tp(0), false)]);
    assert!(world.0.borrow().paused.is_empty(), "resumed when given up");
}

#[test]
fn records_that_come_back_from_an_earlier_offset_are_kept_and_the_partition_refused() {
    let world = World::with_logs(&[(0, 3)]);
    world.at(0, assign(&[0]));
    // Once 3 records were read (open, not yet committed), the broker loses
    // all but 1 and the consumer starts again from the log's start.
    world.at(3, Event::Truncate(tp(0), 1));
    let (result, stage) = run(&world, FakeStage::sink());
    result.unwrap();
    let sink = sink_of(&stage);
    assert_eq!(
        sink.rows,
        ["0:0", "0:1", "0:2"],
        "what was read before is archived"
    );
    assert_eq!(sink.offsets[&tp(0)], 3);
    let reasons: Vec<&str> = sink.commits.iter().map(|(r, _)| *r).collect();
    assert_eq!(reasons, ["broker"]);
    assert_eq!(sink.refused, [(tp(0), true)]);
    assert!(world.0.borrow().paused.contains(&tp(0)));
}

#[test]
fn a_revoke_commits_what_was_read_first() {
    let world = World::with_logs(&[(0, 3)]);
    world.at(0, assign(&[0])).at(3, revoke(&[0]));
    let (result, stage) = run(&world, FakeStage::sink());
    result.unwrap();
    let sink = sink_of(&stage);
    assert_eq!(sink.rows, ["0:0", "0:1", "0:2"]);
    assert_eq!(sink.commits[0].0, "rebalance");
}

#[test]
fn a_partition_the_sink_cannot_place_yet_is_paused_then_read_from_the_sinks_offset() {
    let world = World::with_logs(&[(0, 10)]);
    world.at(0, assign(&[0]));
    world.0.borrow_mut().committed.insert(tp(0), 2);
    let mut stage = FakeStage::sink();
    let sink = stage.sink.as_mut().unwrap();
    sink.offsets.insert(tp(0), 6);
    sink.positions_failures = 2;
    let (result, stage) = run(&world, stage);
    result.unwrap();
    // Resumed before the seek: a resume after it would restart at the
    // group's offset (2), and those records would look like the broker
    // going back.
    let sink = sink_of(&stage);
    assert_eq!(sink.rows, ["0:6", "0:7", "0:8", "0:9"]);
    assert!(sink.refused.is_empty());
    assert!(world.0.borrow().paused.is_empty());
}

#[test]
fn a_seek_that_did_not_take_drops_the_rest_of_its_batch_and_reads_from_the_sinks_offset() {
    let world = World::with_logs(&[(0, 10)]);
    world.at(0, assign(&[0]));
    // The group says 2 (its commit lagged the sink's at a kill), the sink 6,
    // and the first seek fails: records come from 2 until a seek takes.
    {
        let mut s = world.0.borrow_mut();
        s.committed.insert(tp(0), 2);
        s.fail_seeks = 1;
    }
    let mut stage = FakeStage::sink();
    stage.sink.as_mut().unwrap().offsets.insert(tp(0), 6);
    let (result, stage) = run(&world, stage);
    result.unwrap();
    let sink = sink_of(&stage);
    assert_eq!(sink.rows, ["0:6", "0:7", "0:8", "0:9"]);
    assert!(
        sink.refused.is_empty(),
        "records fetched before the seek are not the broker going back"
    );
}

#[test]
fn after_its_wait_a_batch_still_takes_what_the_consumer_holds() {
    let world = World::with_logs(&[(0, 7)]);
    world.at(0, assign(&[0]));
    let no_wait = LoopConfig {
        batch_max_wait: Duration::ZERO,
        ..config()
    };
    let (result, stage) = run_with(&world, FakeStage::default(), no_wait);
    result.unwrap();
    each_once(&world, &[(0, 7)]);
    assert_eq!(
        stage.batches,
        [3, 3, 1],
        "full batches, not one record each"
    );
}

#[test]
fn a_sink_is_told_it_caught_up_once_it_processed_what_its_partitions_held() {
    let world = World::with_logs(&[(0, 7), (1, 5)]);
    world.at(0, assign(&[0, 1]));
    let (result, stage) = run(&world, FakeStage::sink());
    result.unwrap();
    assert_eq!(
        stage.caught_up,
        [12],
        "once, after every record was handed over"
    );
}

#[test]
fn a_partition_placed_later_is_caught_up_on_too_and_empty_ones_at_once() {
    let world = World::with_logs(&[(0, 4), (1, 3), (2, 0)]);
    world
        .at(0, assign(&[2]))
        .at(0, assign(&[0]))
        .at(4, assign(&[1]));
    let (result, stage) = run(&world, FakeStage::sink());
    result.unwrap();
    assert_eq!(stage.caught_up, [4, 7]);
}

#[test]
fn a_sink_held_in_memory_stops_to_rebuild_when_the_broker_went_back() {
    let world = World::with_logs(&[(0, 3)]);
    world.at(0, assign(&[0]));
    world.at(3, Event::Truncate(tp(0), 1));
    let mut stage = FakeStage::sink();
    stage.sink.as_mut().unwrap().in_memory = true;
    let (result, stage) = run(&world, stage);
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::WentBack {
                read_to: 3,
                came_back_at: 0,
                partition: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_retriable(), "the supervisor starts it again");
    assert!(sink_of(&stage).refused.is_empty(), "not refused: rebuilt");
}
