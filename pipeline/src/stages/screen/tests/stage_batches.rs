//! Batches through the screen stage: windows rebuilt from the committed
//! replay point (or kept over a rebalance), and future or undecodable
//! records dead-lettered.

use kusanagi_schemas::{GameEventCodec, RecordCodec, Screening};

use super::{SEC, T0, event, feed};
use crate::runtime::replay::MemoryLog;
use crate::runtime::{AssignedPartition, InRecord, Stage};
use crate::stages::screen::{ScreenConfig, ScreenStage};

fn stage_over(log: &MemoryLog) -> ScreenStage {
    ScreenStage::new(
        ScreenConfig::default(),
        "events",
        "screenings",
        "events.dlq",
        Box::new(log.clone()),
    )
}

#[test]
fn the_stage_rebuilds_its_windows_from_the_committed_replay_point() {
    let codec = GameEventCodec::new();
    let log: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            codec.encode(&event(
                &format!("e{i}"),
                "bob",
                &format!("a{}", i % 4),
                i * 20,
                40_000,
            ))
        })
        .collect();
    let shared = MemoryLog::default();
    for value in &log {
        shared.push(None, Some(value.clone()));
    }

    let mut uninterrupted = stage_over(&shared);
    let all = feed(&mut uninterrupted, &log, 0..30);
    assert_eq!(all.len(), 30);
    assert!(
        all.iter()
            .all(|r| r.partition == Some(3) && r.key.as_deref() == Some(&b"bob"[..]))
    );

    let mut first = stage_over(&shared);
    feed(&mut first, &log, 0..17);
    let metadata = first.commit_metadata("events", 3);
    assert_eq!(metadata.as_deref(), Some("screen.v1 replay_from=0"));

    // A new copy is given the partition at the committed offset 17.
    let mut second = stage_over(&shared);
    second.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata,
    }]);
    let rest = feed(&mut second, &log, 17..30);
    assert_eq!(rest, all[17..]);
    assert_eq!(second.stats().replayed, 17);

    // A rebalance that hands the partition back at the offset this copy
    // reached keeps its windows (no replay); at any other offset, it replays.
    let mut kept = stage_over(&shared);
    feed(&mut kept, &log, 0..17);
    kept.on_revoke(&[("events".into(), 3)]);
    kept.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata: None,
    }]);
    assert_eq!(feed(&mut kept, &log, 17..30), all[17..]);
    assert_eq!(kept.stats().replayed, 0, "kept, not replayed");
    let mut moved = stage_over(&shared);
    feed(&mut moved, &log, 0..10);
    moved.on_revoke(&[("events".into(), 3)]);
    moved.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata: Some("screen.v1 replay_from=0".into()),
    }]);
    assert_eq!(feed(&mut moved, &log, 17..30), all[17..]);
    assert_eq!(
        moved.stats().replayed,
        17,
        "another copy moved it on: replayed"
    );

    // Without the replay point the windows start empty and differ.
    let mut blind = stage_over(&shared);
    blind.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata: None,
    }]);
    assert_ne!(feed(&mut blind, &log, 17..30), all[17..]);
}

#[test]
fn an_event_far_ahead_of_its_ingest_time_is_dead_lettered_not_screened() {
    let codec = GameEventCodec::new();
    let ingested_ms = (T0 - 3_600 * SEC) / 1_000; // ingested two hours before its event time...
    let log = [
        codec.encode(&event("a", "bob", "x", 0, 10)),
        codec.encode(&event("b", "bob", "x", 3_600, 10)), // ...this one is 2 h ahead
        codec.encode(&event("c", "bob", "x", 10, 10)),
    ];
    let shared = MemoryLog::default();
    let mut stage = ScreenStage::new(
        ScreenConfig {
            max_future_seconds: 7_000,
            ..ScreenConfig::default()
        },
        "events",
        "screenings",
        "events.dlq",
        Box::new(shared),
    );
    let batch: Vec<InRecord<'_>> = log
        .iter()
        .enumerate()
        .map(|(i, p)| InRecord {
            topic: "events",
            partition: 0,
            offset: i as i64,
            key: None,
            payload: Some(p),
            timestamp_ms: Some(ingested_ms),
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    let topics: Vec<&str> = out.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["screenings", "events.dlq", "screenings"]);
    let reason = out[1]
        .headers
        .iter()
        .find(|(k, _)| k == "kusanagi.dlq.reason")
        .unwrap();
    assert_eq!(reason.1, b"future_event");
    let c = RecordCodec::<Screening>::new()
        .decode(out[2].payload.as_deref().unwrap())
        .unwrap();
    assert!(!c.late, "the future event did not move the watermark");
    assert_eq!(c.window.transaction_count, 2, "a and c; not b");
    // With the check off (0), the same event is screened.
    let off = ScreenConfig {
        max_future_seconds: 0,
        ..ScreenConfig::default()
    };
    assert!(
        off.from_the_future(&event("b", "bob", "x", 3_600, 10), Some(ingested_ms))
            .is_none()
    );
}

#[test]
fn undecodable_records_are_dead_lettered_with_the_reason() {
    let shared = MemoryLog::default();
    let mut stage = stage_over(&shared);
    let out = feed(&mut stage, &[b"{\"json\":1}".to_vec()], 0..1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "events.dlq");
    let reason = out[0]
        .headers
        .iter()
        .find(|(k, _)| k == "kusanagi.dlq.reason")
        .unwrap();
    assert_eq!(reason.1, b"undecodable");
    let decoded = RecordCodec::<Screening>::new().decode(out[0].payload.as_deref().unwrap());
    assert!(decoded.is_err());
}
