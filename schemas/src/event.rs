//! GameEvent v1: the one event every stage reads.
//!
//! The field list is fixed by `SCREENING.md`; the Avro schema
//! (`avro/game_event.v1.avsc`) and the JSON Schema
//! (`json/game_event.v1.schema.json`) describe the same record.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::Serialize;

/// The tenant an event belongs to when the producer names none.
pub const DEFAULT_TENANT: &str = "default";
/// The event type when the producer names none.
pub const DEFAULT_EVENT_TYPE: &str = "TRADE";
/// The actor level when the producer gives none.
pub const DEFAULT_ACTOR_LEVEL: i32 = 1;

/// Event time: microseconds since the Unix epoch, UTC.
///
/// Kept as an integer so that ordering, window arithmetic and the Avro
/// `timestamp-micros` encoding are exact; rendered as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

impl EventTime {
    /// The event time `micros` microseconds after the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (rounded towards negative infinity),
    /// as Kafka record timestamps carry them.
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// The same instant as a chrono UTC time, if chrono can represent it.
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        Utc.timestamp_micros(self.0).single()
    }

    /// RFC 3339 in UTC with a `Z` suffix and only as many fractional digits
    /// as needed (none, 3 or 6): the canonical JSON form.
    pub fn to_rfc3339(self) -> String {
        match self.to_datetime() {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            None => self.0.to_string(),
        }
    }
}

impl From<DateTime<Utc>> for EventTime {
    fn from(t: DateTime<Utc>) -> Self {
        Self(t.timestamp_micros())
    }
}

impl Serialize for EventTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// What was traded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ActionDetails {
    /// Currency moved from actor to target; never negative.
    pub currency_amount: i64,
    /// The item traded, if any.
    pub item_id: Option<String>,
    /// The item's market average price, if known.
    pub market_avg_price: Option<i64>,
}

/// What the game server knows about the actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextMetadata {
    /// The actor's level.
    pub actor_level: i32,
    /// Age of the actor's account in days.
    pub account_age_days: i32,
    /// Recent chat of the actor: free text and personal data.
    pub recent_chat_log: Option<String>,
}

impl Default for ContextMetadata {
    fn default() -> Self {
        Self {
            actor_level: DEFAULT_ACTOR_LEVEL,
            account_age_days: 0,
            recent_chat_log: None,
        }
    }
}

/// One game-economy event (GameEvent v1), keyed in Kafka by `target_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GameEvent {
    /// Unique per event; at-least-once producers may repeat it.
    pub event_id: String,
    /// Event time; drives windows and archive partitions.
    pub timestamp: EventTime,
    /// The kind of event, `TRADE` unless said otherwise.
    pub event_type: String,
    /// The sender.
    pub actor_id: String,
    /// The receiver: windows, partitions and account state are keyed by it.
    pub target_id: String,
    /// What was traded.
    pub action_details: ActionDetails,
    /// What the game server knows about the actor.
    pub context_metadata: ContextMetadata,
    /// The game or tenant.
    pub tenant_id: String,
}

impl GameEvent {
    /// The Kafka key of this event: its `target_id`, so that one account's
    /// events, screenings and verdicts share a partition number.
    pub fn kafka_key(&self) -> &[u8] {
        self.target_id.as_bytes()
    }

    /// The canonical JSON form (the shape producers send, defaults filled in).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("GameEvent always serializes to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_renders_canonical_rfc3339() {
        assert_eq!(
            EventTime::from_micros(0).to_rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            EventTime::from_micros(1_500).to_rfc3339(),
            "1970-01-01T00:00:00.001500Z"
        );
        assert_eq!(
            EventTime::from_micros(4_070_908_800_000_000).to_rfc3339(),
            "2099-01-01T00:00:00Z"
        );
    }

    #[test]
    fn millis_round_down_before_the_epoch() {
        assert_eq!(EventTime::from_micros(-1).as_millis(), -1);
        assert_eq!(EventTime::from_micros(1_999).as_millis(), 1);
    }
}
