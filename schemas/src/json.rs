//! JSON intake: the Susanoh `GameEventLog` shape, defaults applied.
//!
//! Parsing goes through [`serde_json::Value`] and reads each field by hand so
//! that every rejection names the exact field, what was expected and what
//! was found. Unknown fields are ignored, as the prototype's pydantic model
//! does, so producers can add fields before Kusanagi knows them.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};

use crate::error::InvalidEvent;
use crate::event::{
    ActionDetails, ContextMetadata, DEFAULT_EVENT_TYPE, DEFAULT_TENANT, EventTime, GameEvent,
};

/// Longest accepted id (`event_id`, `actor_id`, `target_id`), in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest accepted `tenant_id`, in bytes.
pub const MAX_TENANT_BYTES: usize = 128;

/// Parses and validates one JSON event.
pub fn parse_event(bytes: &[u8]) -> Result<GameEvent, InvalidEvent> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| InvalidEvent::Malformed {
        detail: e.to_string(),
    })?;
    event_from_value(&value)
}

/// Validates one event that is already parsed as JSON (one element of an
/// HTTP batch, say).
pub fn event_from_value(value: &Value) -> Result<GameEvent, InvalidEvent> {
    let obj = value.as_object().ok_or(InvalidEvent::NotAnObject {
        found: type_name(value),
    })?;
    let action = optional_object(obj, "action_details")?;
    let context = optional_object(obj, "context_metadata")?;
    Ok(GameEvent {
        event_id: required_id(obj, "event_id", "event_id", MAX_ID_BYTES)?,
        timestamp: timestamp(obj)?,
        event_type: optional_string(obj, "event_type", "event_type")?
            .map(|t| non_empty(t, "event_type"))
            .transpose()?
            .unwrap_or_else(|| DEFAULT_EVENT_TYPE.to_owned()),
        actor_id: required_id(obj, "actor_id", "actor_id", MAX_ID_BYTES)?,
        target_id: required_id(obj, "target_id", "target_id", MAX_ID_BYTES)?,
        action_details: match action {
            None => ActionDetails::default(),
            Some(a) => ActionDetails {
                currency_amount: optional_non_negative(
                    a,
                    "currency_amount",
                    "action_details.currency_amount",
                )?
                .unwrap_or(0),
                item_id: optional_string(a, "item_id", "action_details.item_id")?,
                market_avg_price: optional_non_negative(
                    a,
                    "market_avg_price",
                    "action_details.market_avg_price",
                )?,
            },
        },
        context_metadata: match context {
            None => ContextMetadata::default(),
            Some(c) => {
                let defaults = ContextMetadata::default();
                ContextMetadata {
                    actor_level: optional_i32(c, "actor_level", "context_metadata.actor_level")?
                        .unwrap_or(defaults.actor_level),
                    account_age_days: optional_i32(
                        c,
                        "account_age_days",
                        "context_metadata.account_age_days",
                    )?
                    .unwrap_or(defaults.account_age_days),
                    recent_chat_log: optional_string(
                        c,
                        "recent_chat_log",
                        "context_metadata.recent_chat_log",
                    )?,
                }
            }
        },
        tenant_id: match optional_string(obj, "tenant_id", "tenant_id")? {
            None => DEFAULT_TENANT.to_owned(),
            Some(t) => {
                let t = bounded(non_empty(t, "tenant_id")?, "tenant_id", MAX_TENANT_BYTES)?;
                if !crate::key::valid_tenant(&t) {
                    return Err(invalid(
                        "tenant_id",
                        "a tenant id without control characters",
                        format!("{t:?}"),
                    ));
                }
                t
            }
        },
    })
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value at `key`, treating JSON `null` as absent.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

fn wrong_type(path: &str, expected: &'static str, found: &Value) -> InvalidEvent {
    InvalidEvent::WrongType {
        field: path.to_owned(),
        expected,
        found: type_name(found).to_owned(),
    }
}

fn invalid(path: &str, expected: &'static str, found: impl ToString) -> InvalidEvent {
    let mut found = found.to_string();
    if found.len() > 64 {
        let cut = (0..=61)
            .rev()
            .find(|i| found.is_char_boundary(*i))
            .unwrap_or(0);
        found.truncate(cut);
        found.push_str("...");
    }
    InvalidEvent::InvalidValue {
        field: path.to_owned(),
        expected,
        found,
    }
}

fn optional_object<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, InvalidEvent> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(wrong_type(key, "an object", other)),
    }
}

fn optional_string(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, InvalidEvent> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(path, "a string", other)),
    }
}

fn non_empty(s: String, path: &str) -> Result<String, InvalidEvent> {
    if s.trim().is_empty() {
        Err(invalid(path, "a non-empty string", format!("{s:?}")))
    } else {
        Ok(s)
    }
}

fn bounded(s: String, path: &str, max: usize) -> Result<String, InvalidEvent> {
    if s.len() > max {
        Err(invalid(
            path,
            "a string of at most 256 bytes (128 for tenant_id)",
            format!("{} bytes", s.len()),
        ))
    } else {
        Ok(s)
    }
}

fn required_id(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
    max: usize,
) -> Result<String, InvalidEvent> {
    let s = optional_string(obj, key, path)?.ok_or_else(|| InvalidEvent::MissingField {
        field: path.to_owned(),
    })?;
    bounded(non_empty(s, path)?, path, max)
}

fn optional_integer(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<i64>, InvalidEvent> {
    match present(obj, key) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Ok(Some(i)),
            None if n.is_u64() => Err(invalid(path, "an integer that fits in int64", n)),
            None => Err(InvalidEvent::WrongType {
                field: path.to_owned(),
                expected: "an integer",
                found: format!("the fraction {n}"),
            }),
        },
        Some(other) => Err(wrong_type(path, "an integer", other)),
    }
}

fn optional_non_negative(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<i64>, InvalidEvent> {
    match optional_integer(obj, key, path)? {
        Some(i) if i < 0 => Err(invalid(path, "an integer >= 0", i)),
        other => Ok(other),
    }
}

fn optional_i32(
    obj: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<i32>, InvalidEvent> {
    match optional_non_negative(obj, key, path)? {
        None => Ok(None),
        Some(i) => i32::try_from(i)
            .map(Some)
            .map_err(|_| invalid(path, "an integer between 0 and 2147483647", i)),
    }
}

fn timestamp(obj: &Map<String, Value>) -> Result<EventTime, InvalidEvent> {
    let raw = optional_string(obj, "timestamp", "timestamp")?.ok_or_else(|| {
        InvalidEvent::MissingField {
            field: "timestamp".to_owned(),
        }
    })?;
    parse_timestamp(&raw).ok_or_else(|| {
        invalid(
            "timestamp",
            "an RFC 3339 time such as 2099-01-01T00:00:00Z",
            &raw,
        )
    })
}

/// Parses RFC 3339 (any offset, converted to UTC); a time with no offset is
/// taken as UTC, as the Susanoh prototype's producers often send one.
pub fn parse_timestamp(raw: &str) -> Option<EventTime> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(EventTime::from(t.with_timezone(&Utc)));
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| EventTime::from(t.and_utc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Value {
        serde_json::json!({
            "event_id": "e1",
            "timestamp": "2099-01-01T00:00:00Z",
            "actor_id": "a",
            "target_id": "t",
        })
    }

    fn rejection(mut doc: Value, edit: impl FnOnce(&mut Map<String, Value>)) -> InvalidEvent {
        edit(doc.as_object_mut().unwrap());
        event_from_value(&doc).unwrap_err()
    }

    #[test]
    fn defaults_are_applied() {
        let e = event_from_value(&minimal()).unwrap();
        assert_eq!(e.event_type, "TRADE");
        assert_eq!(e.tenant_id, "default");
        assert_eq!(e.action_details, ActionDetails::default());
        assert_eq!(e.context_metadata.actor_level, 1);
        assert_eq!(e.context_metadata.account_age_days, 0);
    }

    #[test]
    fn a_tenant_id_has_no_control_characters() {
        for bad in ["game\u{1f}a", "game\na", "\u{7f}"] {
            let e = rejection(minimal(), |o| {
                o.insert("tenant_id".into(), Value::from(bad));
            });
            assert!(
                matches!(&e, InvalidEvent::InvalidValue { field, .. } if field == "tenant_id"),
                "{bad:?}: {e:?}"
            );
        }
        let mut doc = minimal();
        doc["tenant_id"] = Value::from("ゲーム-1");
        assert_eq!(event_from_value(&doc).unwrap().tenant_id, "ゲーム-1");
    }

    #[test]
    fn nulls_mean_defaults() {
        let mut doc = minimal();
        let o = doc.as_object_mut().unwrap();
        o.insert("action_details".into(), Value::Null);
        o.insert("tenant_id".into(), Value::Null);
        o.insert(
            "context_metadata".into(),
            serde_json::json!({"recent_chat_log": null}),
        );
        let e = event_from_value(&doc).unwrap();
        assert_eq!(e.tenant_id, "default");
        assert_eq!(e.context_metadata.recent_chat_log, None);
    }

    #[test]
    fn every_rejection_names_its_field() {
        let missing = rejection(minimal(), |o| {
            o.remove("target_id");
        });
        assert_eq!(missing.reason(), "missing_field");
        assert_eq!(missing.field(), Some("target_id"));

        let negative = rejection(minimal(), |o| {
            o.insert(
                "action_details".into(),
                serde_json::json!({"currency_amount": -5}),
            );
        });
        assert_eq!(negative.reason(), "invalid_value");
        assert_eq!(negative.field(), Some("action_details.currency_amount"));

        let wrong = rejection(minimal(), |o| {
            o.insert(
                "context_metadata".into(),
                serde_json::json!({"actor_level": "high"}),
            );
        });
        assert_eq!(wrong.reason(), "wrong_type");
        assert_eq!(wrong.field(), Some("context_metadata.actor_level"));

        let fraction = rejection(minimal(), |o| {
            o.insert(
                "action_details".into(),
                serde_json::json!({"currency_amount": 1.5}),
            );
        });
        assert_eq!(fraction.reason(), "wrong_type");

        let huge = rejection(minimal(), |o| {
            o.insert(
                "action_details".into(),
                serde_json::json!({"currency_amount": u64::MAX}),
            );
        });
        assert_eq!(huge.reason(), "invalid_value");

        let empty = rejection(minimal(), |o| {
            o.insert("actor_id".into(), Value::String("  ".into()));
        });
        assert_eq!(empty.field(), Some("actor_id"));

        let bad_time = rejection(minimal(), |o| {
            o.insert("timestamp".into(), Value::String("yesterday".into()));
        });
        assert_eq!(bad_time.field(), Some("timestamp"));
        assert_eq!(bad_time.reason(), "invalid_value");
    }

    #[test]
    fn syntax_errors_are_not_field_errors() {
        let e = parse_event(b"{\"event_id\": ").unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
        assert!(e.is_syntax());
        let e = parse_event(b"[1, 2]").unwrap_err();
        assert_eq!(e.reason(), "not_an_object");
        let e = parse_event(&[0xff, 0xfe]).unwrap_err();
        assert_eq!(e.reason(), "invalid_json");
    }

    #[test]
    fn timestamps_are_normalised_to_utc() {
        let a = parse_timestamp("2099-01-01T09:00:00+09:00").unwrap();
        let b = parse_timestamp("2099-01-01T00:00:00Z").unwrap();
        let naive = parse_timestamp("2099-01-01T00:00:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(naive, b);
        assert!(parse_timestamp("2099-13-01T00:00:00Z").is_none());
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut doc = minimal();
        doc.as_object_mut()
            .unwrap()
            .insert("platform".into(), Value::String("ios".into()));
        assert!(event_from_value(&doc).is_ok());
    }
}
