use kusanagi_schemas::GameEventCodec;

use super::*;
use crate::runtime::{InRecord, OutRecord, Stage};

fn record(offset: i64, payload: &[u8]) -> InRecord<'_> {
    InRecord {
        topic: "events.raw",
        partition: 0,
        offset,
        key: None,
        payload: Some(payload),
        timestamp_ms: None,
        trace: None,
    }
}

fn header<'a>(r: &'a OutRecord, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

fn run(inputs: &[&[u8]]) -> Vec<OutRecord> {
    let mut stage = IngestStage::new("events", "events.dlq", 1000, 1 << 20);
    let batch: Vec<InRecord<'_>> = inputs
        .iter()
        .enumerate()
        .map(|(i, p)| record(i as i64, p))
        .collect();
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    out
}

#[test]
fn valid_events_become_avro_keyed_by_target() {
    let out = run(&[
        br#"{"event_id":"e1","timestamp":"2099-01-01T00:00:00Z","actor_id":"a","target_id":"bob"}"#,
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "events");
    assert_eq!(out[0].key.as_deref(), Some(&b"bob"[..]));
    let event = GameEventCodec::new()
        .decode(out[0].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(event.event_id, "e1");
    assert_eq!(header(&out[0], "content-type"), Some(CONTENT_TYPE));
}

#[test]
fn every_bad_record_is_dead_lettered_in_order_with_its_reason() {
    let big = vec![b' '; 1001];
    let out = run(&[
        b"not json",
        br#"{"event_id":"e2","timestamp":"2099-01-01T00:00:00Z","actor_id":"a"}"#,
        br#"{"event_id":"e3","timestamp":"2099-01-01T00:00:00Z","actor_id":"a","target_id":"t","action_details":{"currency_amount":-1}}"#,
        &big,
    ]);
    let reasons: Vec<_> = out
        .iter()
        .map(|r| (r.topic.as_str(), header(r, "kusanagi.dlq.reason").unwrap()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("events.dlq", "invalid_json"),
            ("events.dlq", "missing_field"),
            ("events.dlq", "invalid_value"),
            ("events.dlq", "too_large"),
        ]
    );
    assert_eq!(header(&out[1], "kusanagi.dlq.field"), Some("target_id"));
    assert_eq!(header(&out[2], "kusanagi.dlq.source.offset"), Some("2"));
    assert_eq!(
        out[3].payload.as_ref().map_or(0, Vec::len),
        1001,
        "the original bytes are kept whole"
    );
}

#[test]
fn a_tombstone_is_dead_lettered_not_dropped() {
    let mut stage = IngestStage::new("events", "events.dlq", 1000, 1 << 20);
    let batch = [InRecord {
        payload: None,
        ..record(7, b"")
    }];
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    assert_eq!(header(&out[0], "kusanagi.dlq.reason"), Some("invalid_json"));
}
