//! Validation of raw JSON records into Avro events, or dead letters.

use kusanagi_schemas::{GameEvent, GameEventCodec, InvalidEvent, parse_event};

use crate::runtime::dead_letter::{Rejection, dead_letter};
use crate::runtime::trace::TraceCause;
use crate::runtime::{InRecord, OutRecord, Stage, StageError};

/// The stage's name in metrics and logs.
pub const STAGE: &str = "ingest";

/// Content type header on every record of the `events` topic.
pub const CONTENT_TYPE: &str = "application/vnd.kusanagi.game-event.v1+avro";

/// Headroom under the producer's record limit kept for dead-letter headers.
const HEADER_ROOM_BYTES: usize = 64 * 1024;

/// Validates one raw record: size first, then the JSON contract.
pub fn validate(payload: Option<&[u8]>, max_event_bytes: usize) -> Result<GameEvent, InvalidEvent> {
    let bytes = payload.unwrap_or_default();
    if bytes.len() > max_event_bytes {
        return Err(InvalidEvent::TooLarge {
            bytes: bytes.len(),
            limit: max_event_bytes,
        });
    }
    if payload.is_none() {
        return Err(InvalidEvent::Malformed {
            detail: "the record has no value".into(),
        });
    }
    parse_event(bytes)
}

/// The `events` record of a valid event: Avro, keyed by `target_id`, in
/// the producer's trace if it sent one, else in a new one (sampled).
pub fn event_record(
    codec: &GameEventCodec,
    topic: &str,
    event: &GameEvent,
    producer_trace: Option<&[u8]>,
) -> OutRecord {
    OutRecord {
        topic: topic.to_owned(),
        partition: None,
        key: Some(event.kafka_key().to_vec()),
        payload: Some(codec.encode(event)),
        headers: vec![("content-type".into(), CONTENT_TYPE.as_bytes().to_vec())],
        timestamp_ms: None,
        trace: match producer_trace {
            Some(t) => TraceCause::Parent(t.to_vec()),
            None => TraceCause::Root,
        },
    }
}

/// `events.raw` -> `events` (valid, Avro) and `events.dlq` (the rest).
#[derive(Debug)]
pub struct IngestStage {
    codec: GameEventCodec,
    events_topic: String,
    dead_letter_topic: String,
    max_event_bytes: usize,
    max_dead_letter_bytes: usize,
}

impl IngestStage {
    /// A stage writing to `events_topic` and `dead_letter_topic`, accepting
    /// events up to `max_event_bytes`, whose dead letters must fit in
    /// `max_record_bytes` (the smaller of the producer's and the topic's limit).
    pub fn new(
        events_topic: &str,
        dead_letter_topic: &str,
        max_event_bytes: usize,
        max_record_bytes: usize,
    ) -> Self {
        Self {
            codec: GameEventCodec::new(),
            events_topic: events_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            max_event_bytes,
            max_dead_letter_bytes: max_record_bytes.saturating_sub(HEADER_ROOM_BYTES).max(1024),
        }
    }

    fn one(&self, record: &InRecord<'_>) -> OutRecord {
        match validate(record.payload, self.max_event_bytes) {
            Ok(event) => event_record(&self.codec, &self.events_topic, &event, record.trace),
            Err(invalid) => {
                tracing::debug!(
                    topic = record.topic,
                    partition = record.partition,
                    offset = record.offset,
                    error = %invalid,
                    "record rejected"
                );
                dead_letter(
                    STAGE,
                    &self.dead_letter_topic,
                    record,
                    &Rejection {
                        reason: invalid.reason(),
                        detail: invalid.to_string(),
                        field: invalid.field(),
                    },
                    self.max_dead_letter_bytes,
                )
            }
        }
    }
}

impl Stage for IngestStage {
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        out.extend(batch.iter().map(|r| self.one(r)));
        Ok(())
    }
}
