//! Dead letters: a rejected record, kept whole, with why and where from.
//!
//! The value is the original bytes and the key the original key, so a
//! fixed record can be replayed as it is. Headers say what happened, in the
//! manner of Kafka Connect's `errors.deadletterqueue.context.headers`:
//!
//! | header | value |
//! |---|---|
//! | `kusanagi.dlq.reason` | stable code (`invalid_json`, `missing_field`, ...) |
//! | `kusanagi.dlq.detail` | human-readable message |
//! | `kusanagi.dlq.field` | dotted path of the offending field, when one is at fault |
//! | `kusanagi.dlq.stage` | the stage that rejected it |
//! | `kusanagi.dlq.source.topic` / `.partition` / `.offset` | where it was read |
//! | `kusanagi.dlq.original.bytes` | size of the original value |
//! | `kusanagi.dlq.truncated` | `true` when the value had to be cut to fit the topic |

use super::{InRecord, OutRecord};

/// Header carrying the reason code; the runtime counts dead letters by it.
pub const REASON_HEADER: &str = "kusanagi.dlq.reason";

/// Header naming the stage that rejected the record.
pub const STAGE_HEADER: &str = "kusanagi.dlq.stage";

/// Why a record was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection<'a> {
    /// Stable, low-cardinality code.
    pub reason: &'a str,
    /// Human-readable message.
    pub detail: String,
    /// The offending field, if one.
    pub field: Option<&'a str>,
}

/// Builds the dead letter of `source` for `topic`. Values longer than
/// `max_value_bytes` are cut to fit (and marked), so a dead letter can never
/// be too large to produce and stall its partition.
pub fn dead_letter(
    stage: &str,
    topic: &str,
    source: &InRecord<'_>,
    rejection: &Rejection<'_>,
    max_value_bytes: usize,
) -> OutRecord {
    let original = source.payload.unwrap_or_default();
    let truncated = original.len() > max_value_bytes;
    let value = &original[..original.len().min(max_value_bytes)];
    let mut headers = vec![
        (
            REASON_HEADER.to_owned(),
            rejection.reason.as_bytes().to_vec(),
        ),
        (
            "kusanagi.dlq.detail".to_owned(),
            rejection.detail.as_bytes().to_vec(),
        ),
    ];
    if let Some(field) = rejection.field {
        headers.push(("kusanagi.dlq.field".to_owned(), field.as_bytes().to_vec()));
    }
    headers.extend([
        (STAGE_HEADER.to_owned(), stage.as_bytes().to_vec()),
        (
            "kusanagi.dlq.source.topic".to_owned(),
            source.topic.as_bytes().to_vec(),
        ),
        (
            "kusanagi.dlq.source.partition".to_owned(),
            source.partition.to_string().into_bytes(),
        ),
        (
            "kusanagi.dlq.source.offset".to_owned(),
            source.offset.to_string().into_bytes(),
        ),
        (
            "kusanagi.dlq.original.bytes".to_owned(),
            original.len().to_string().into_bytes(),
        ),
    ]);
    if truncated {
        headers.push(("kusanagi.dlq.truncated".to_owned(), b"true".to_vec()));
    }
    OutRecord {
        topic: topic.to_owned(),
        partition: None,
        key: source.key.map(<[u8]>::to_vec),
        payload: Some(value.to_vec()),
        headers,
        timestamp_ms: None,
        trace: super::trace::TraceCause::None,
    }
}

/// The dead letter of a record a stage rejects as a whole, for `reason`
/// (`undecodable`, `future_event`, ...): logged at debug level with where
/// it was read, and kept whole (records of Kusanagi's own topics fit).
pub fn reject_record(
    stage: &str,
    topic: &str,
    source: &InRecord<'_>,
    reason: &str,
    detail: String,
) -> OutRecord {
    tracing::debug!(
        stage,
        topic = source.topic,
        partition = source.partition,
        offset = source.offset,
        reason,
        %detail,
        "record rejected"
    );
    dead_letter(
        stage,
        topic,
        source,
        &Rejection {
            reason,
            detail,
            field: None,
        },
        usize::MAX,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(payload: &[u8]) -> InRecord<'_> {
        InRecord {
            topic: "events.raw",
            partition: 3,
            offset: 42,
            key: Some(b"k"),
            payload: Some(payload),
            timestamp_ms: None,
            trace: None,
        }
    }

    fn header<'a>(r: &'a OutRecord, name: &str) -> Option<&'a [u8]> {
        r.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn keeps_the_original_and_says_where_from() {
        let r = dead_letter(
            "ingest",
            "events.dlq",
            &source(b"{oops"),
            &Rejection {
                reason: "invalid_json",
                detail: "EOF".into(),
                field: None,
            },
            1024,
        );
        assert_eq!(r.payload.as_deref(), Some(&b"{oops"[..]));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(header(&r, REASON_HEADER), Some(&b"invalid_json"[..]));
        assert_eq!(header(&r, "kusanagi.dlq.source.partition"), Some(&b"3"[..]));
        assert_eq!(header(&r, "kusanagi.dlq.source.offset"), Some(&b"42"[..]));
        assert_eq!(header(&r, "kusanagi.dlq.truncated"), None);
    }

    #[test]
    fn cuts_what_cannot_fit() {
        let big = vec![b'x'; 100];
        let r = dead_letter(
            "ingest",
            "events.dlq",
            &source(&big),
            &Rejection {
                reason: "too_large",
                detail: String::new(),
                field: None,
            },
            10,
        );
        assert_eq!(r.payload.as_ref().map_or(0, Vec::len), 10);
        assert_eq!(header(&r, "kusanagi.dlq.truncated"), Some(&b"true"[..]));
        assert_eq!(header(&r, "kusanagi.dlq.original.bytes"), Some(&b"100"[..]));
    }
}
