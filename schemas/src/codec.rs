//! Avro single-object codecs for the screening, L2 and account topics.
//!
//! Each topic's values are `C3 01`, the CRC-64-AVRO fingerprint of the
//! writer schema, then the Avro datum, as on `events`
//! (`docs/event-contract.md`). [`RecordCodec`] writes a serde type with its
//! shipped schema through apache-avro's schema-aware serializer and reads it
//! back through apache-avro's serde deserializer. That serializer does not
//! follow named references, so no shipped schema refers to a type by name:
//! where a type would be used twice, the second use is an enum of its own
//! with the same symbols (`WindowRule`, `ToState`); a test checks that every
//! schema is free of references.

use std::marker::PhantomData;
use std::sync::OnceLock;

use apache_avro::Schema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::account::{Account, Transition};
use crate::avro::{HEADER_LEN, single_object_header};
use crate::error::CodecError;
use crate::gdpr::{AuditRecord, ErasureRequest};
use crate::screening::Screening;
use crate::verdict::{L2Request, Verdict};

/// The Avro schema of [`Screening`] (`avro/screening.v2.avsc`).
pub const SCREENING_V2_AVSC: &str = include_str!("../avro/screening.v2.avsc");
/// The first schema of [`Screening`], still read (`avro/screening.v1.avsc`).
pub const SCREENING_V1_AVSC: &str = include_str!("../avro/screening.v1.avsc");
/// The Avro schema of [`L2Request`] (`avro/l2_request.v2.avsc`).
pub const L2_REQUEST_V2_AVSC: &str = include_str!("../avro/l2_request.v2.avsc");
/// The first schema of [`L2Request`], still read (`avro/l2_request.v1.avsc`).
pub const L2_REQUEST_V1_AVSC: &str = include_str!("../avro/l2_request.v1.avsc");
/// The Avro schema of [`Verdict`] (`avro/l2_verdict.v1.avsc`).
pub const VERDICT_V1_AVSC: &str = include_str!("../avro/l2_verdict.v1.avsc");
/// The Avro schema of [`Account`] (`avro/account.v2.avsc`).
pub const ACCOUNT_V2_AVSC: &str = include_str!("../avro/account.v2.avsc");
/// The first schema of [`Account`], still read (`avro/account.v1.avsc`).
pub const ACCOUNT_V1_AVSC: &str = include_str!("../avro/account.v1.avsc");
/// The Avro schema of [`Transition`] (`avro/transition.v1.avsc`).
pub const TRANSITION_V1_AVSC: &str = include_str!("../avro/transition.v1.avsc");
/// The Avro schema of [`ErasureRequest`] (`avro/erasure.v1.avsc`).
pub const ERASURE_V1_AVSC: &str = include_str!("../avro/erasure.v1.avsc");
/// The Avro schema of [`AuditRecord`] (`avro/audit.v1.avsc`).
pub const AUDIT_V1_AVSC: &str = include_str!("../avro/audit.v1.avsc");

/// A type with a shipped Avro schema.
pub trait AvroRecord: Serialize + DeserializeOwned {
    /// The schema's text (the version this code writes).
    const AVSC: &'static str;
    /// The record's name, for errors.
    const NAME: &'static str;
    /// The parsed schema (parsed once).
    fn schema() -> &'static Schema;
    /// The same schema for the fast decoder (parsed once).
    fn fast_schema() -> &'static serde_avro_fast::Schema;
    /// Earlier versions of the schema that data may still be written with
    /// (records on a topic from before an upgrade, or from a copy not yet
    /// upgraded), by fingerprint: read and resolved to [`Self::schema`].
    fn previous() -> &'static [([u8; 8], Schema)];
}

macro_rules! avro_record {
    ($ty:ty, $avsc:expr, $name:literal $(, $previous:expr)*) => {
        impl AvroRecord for $ty {
            const AVSC: &'static str = $avsc;
            const NAME: &'static str = $name;
            fn schema() -> &'static Schema {
                static SCHEMA: OnceLock<Schema> = OnceLock::new();
                SCHEMA.get_or_init(|| {
                    Schema::parse_str($avsc).expect(concat!(
                        "the shipped ",
                        $name,
                        " schema is valid"
                    ))
                })
            }
            fn fast_schema() -> &'static serde_avro_fast::Schema {
                static SCHEMA: OnceLock<serde_avro_fast::Schema> = OnceLock::new();
                SCHEMA.get_or_init(|| {
                    $avsc.parse().expect(concat!(
                        "the shipped ",
                        $name,
                        " schema is valid"
                    ))
                })
            }
            fn previous() -> &'static [([u8; 8], Schema)] {
                static PREVIOUS: OnceLock<Vec<([u8; 8], Schema)>> = OnceLock::new();
                PREVIOUS.get_or_init(|| {
                    [$($previous),*]
                        .iter()
                        .map(|avsc: &&str| {
                            let schema = Schema::parse_str(avsc).expect(concat!(
                                "every shipped ",
                                $name,
                                " schema is valid"
                            ));
                            let header = single_object_header(&schema);
                            let fingerprint: [u8; 8] =
                                header[2..].try_into().expect("8 bytes");
                            (fingerprint, schema)
                        })
                        .collect()
                })
            }
        }
    };
}

avro_record!(Screening, SCREENING_V2_AVSC, "Screening", SCREENING_V1_AVSC);
avro_record!(
    L2Request,
    L2_REQUEST_V2_AVSC,
    "L2Request",
    L2_REQUEST_V1_AVSC
);
avro_record!(Verdict, VERDICT_V1_AVSC, "Verdict");
avro_record!(Account, ACCOUNT_V2_AVSC, "Account", ACCOUNT_V1_AVSC);
avro_record!(Transition, TRANSITION_V1_AVSC, "Transition");
avro_record!(ErasureRequest, ERASURE_V1_AVSC, "ErasureRequest");
avro_record!(AuditRecord, AUDIT_V1_AVSC, "AuditRecord");

/// Encodes and decodes one record type in Avro single-object encoding.
#[derive(Debug, Clone, Copy)]
pub struct RecordCodec<T> {
    header: [u8; HEADER_LEN],
    _type: PhantomData<fn() -> T>,
}

impl<T: AvroRecord> Default for RecordCodec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: AvroRecord> RecordCodec<T> {
    /// A codec for `T`'s shipped schema.
    pub fn new() -> Self {
        Self {
            header: single_object_header(T::schema()),
            _type: PhantomData,
        }
    }

    /// Encodes `record` as a single object.
    ///
    /// # Panics
    /// If `T` does not match its shipped schema: an internal invariant that
    /// the round-trip tests check for every type.
    pub fn encode(&self, record: &T) -> Vec<u8> {
        // apache-avro's schema-aware serde writer, straight into the
        // buffer: no `Value` tree. It does not resolve named references,
        // so each shipped schema names every type once. (serde_avro_fast's
        // writer, as fast, writes a sequence of unknown length one block
        // per item: valid Avro, but other bytes than every earlier record.)
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(&self.header);
        apache_avro::write_avro_datum_ref(T::schema(), record, &mut out)
            .unwrap_or_else(|e| panic!("{} does not match its schema: {e}", T::NAME));
        out
    }

    /// Decodes a single object written with `T`'s schema.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, CodecError> {
        if bytes.len() < HEADER_LEN || bytes[0] != 0xC3 || bytes[1] != 0x01 {
            return Err(CodecError::NotSingleObject {
                found: bytes.iter().take(2).copied().collect(),
            });
        }
        let writer = if bytes[..HEADER_LEN] == self.header {
            None
        } else {
            let fingerprint: [u8; 8] = bytes[2..HEADER_LEN].try_into().expect("8 bytes");
            let (_, schema) = T::previous()
                .iter()
                .find(|(f, _)| *f == fingerprint)
                .ok_or(CodecError::UnknownSchema {
                    fingerprint: u64::from_le_bytes(fingerprint),
                })?;
            Some(schema)
        };
        let mut body = &bytes[HEADER_LEN..];
        let Some(writer) = writer else {
            return fast_decode::<T>(body);
        };
        // An earlier version: read with it, resolved to ours.
        let value = apache_avro::from_avro_datum(writer, &mut body, Some(T::schema()))?;
        if !body.is_empty() {
            return Err(CodecError::Avro(format!(
                "{} trailing bytes after the datum",
                body.len()
            )));
        }
        apache_avro::from_value::<T>(&value)
            .map_err(|e| CodecError::Shape(format!("{}: {e}", T::NAME)))
    }
}

/// A datum of `T`'s own schema, read straight into `T` (serde_avro_fast: no
/// `Value` tree, no schema resolution per record); trailing bytes are an
/// error.
fn fast_decode<T: AvroRecord>(body: &[u8]) -> Result<T, CodecError> {
    // From the slice: a length past the end of the record is an error at
    // once, before anything is allocated for it.
    let mut state = serde_avro_fast::de::DeserializerState::from_slice(body, T::fast_schema());
    let record = T::deserialize(state.deserializer())
        .map_err(|e| CodecError::Avro(format!("{}: {e}", T::NAME)))?;
    let rest = std::io::BufRead::fill_buf(&mut state.into_reader()).map_or(0, <[u8]>::len);
    if rest > 0 {
        return Err(CodecError::Avro(format!(
            "{rest} trailing bytes after the datum"
        )));
    }
    Ok(record)
}

/// Serde of an [`EventTime`](crate::EventTime) as Avro `timestamp-micros`
/// (an i64 of microseconds).
pub mod micros {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::event::EventTime;

    /// Writes the microseconds.
    pub fn serialize<S: Serializer>(t: &EventTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.as_micros())
    }

    /// Reads the microseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EventTime, D::Error> {
        i64::deserialize(d).map(EventTime::from_micros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::{AccountState, QueuedRequest, Trigger};
    use crate::event::EventTime;
    use crate::screening::{Rule, RuleSet, WindowProfile};
    use crate::verdict::FraudType;

    fn roundtrip<T: AvroRecord + PartialEq + std::fmt::Debug>(value: T) {
        let codec = RecordCodec::<T>::new();
        let bytes = codec.encode(&value);
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(codec.decode(&bytes).unwrap(), value);
        // The fast decoder reads what apache-avro's `Value` path reads.
        let mut body = &bytes[HEADER_LEN..];
        let tree = apache_avro::from_avro_datum(T::schema(), &mut body, None).unwrap();
        assert_eq!(apache_avro::from_value::<T>(&tree).unwrap(), value);
        // A byte too many or too few is an error, not a panic.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(codec.decode(&longer).is_err(), "{}: trailing byte", T::NAME);
        for cut in HEADER_LEN..bytes.len() {
            assert!(
                codec.decode(&bytes[..cut]).is_err(),
                "{}: cut at {cut}",
                T::NAME
            );
        }
    }

    pub(crate) fn evidence() -> Vec<crate::screening::EvidenceEvent> {
        vec![
            crate::screening::EvidenceEvent {
                event_id: "e0".into(),
                event_time: EventTime::from_micros(4_070_908_800_000_000),
                amount: 150_000,
                market_avg_price: Some(1_000),
                item_id: Some("sword".into()),
                sender_id: "alice".into(),
                sender_level: 3,
                sender_account_age_days: 1,
                chat: Some("口座に5万".into()),
            },
            crate::screening::EvidenceEvent {
                event_id: "e1".into(),
                event_time: EventTime::from_micros(4_070_908_800_000_001),
                amount: 10,
                market_avg_price: None,
                item_id: None,
                sender_id: "carol".into(),
                sender_level: 80,
                sender_account_age_days: 900,
                chat: None,
            },
        ]
    }

    fn window() -> WindowProfile {
        WindowProfile {
            total_received: 1_000_000,
            transaction_count: 3,
            distinct_senders: 2,
        }
    }

    #[test]
    fn every_record_type_round_trips() {
        let at = EventTime::from_micros(4_070_908_800_000_001);
        let rules: RuleSet = [Rule::R4, Rule::R1].into_iter().collect();
        roundtrip(Screening {
            event_id: "e1".into(),
            event_time: at,
            tenant_id: "default".into(),
            target_id: "bob".into(),
            actor_id: "alice".into(),
            screened: true,
            triggered_rules: rules,
            recommended_action: AccountState::RestrictedWithdrawal,
            needs_l2: true,
            window: window(),
            window_rules: rules,
            evidence_event_ids: vec!["e0".into(), "e1".into()],
            evidence_events: evidence(),
            late: false,
        });
        roundtrip(L2Request {
            request_id: "e1".into(),
            event_time: at,
            tenant_id: "t".into(),
            target_id: "bob".into(),
            account_state: AccountState::UnderSurveillance,
            rules,
            window: window(),
            evidence_event_ids: vec![],
            evidence_events: evidence(),
            coalesced: 2,
        });
        roundtrip(Verdict {
            request_id: "e1".into(),
            event_time: at,
            tenant_id: "t".into(),
            target_id: "bob".into(),
            is_fraud: true,
            risk_score: 75,
            fraud_type: FraudType::RmtSmurfing,
            recommended_action: AccountState::Banned,
            reasoning: "口座".into(),
            evidence_event_ids: vec!["e1".into()],
            confidence: 0.6,
            analyzer: "fallback".into(),
            fallback_reason: Some("timeout".into()),
        });
        let queued = QueuedRequest {
            request_id: "e9".into(),
            event_time: at,
            rules: RuleSet::EMPTY,
            window: window(),
            evidence_event_ids: vec!["e9".into()],
            evidence_events: evidence(),
            coalesced: 4,
        };
        for l2_queued in [None, Some(queued)] {
            roundtrip(Account {
                l2_in_flight: Some("e1".into()),
                l2_queued,
                ..Account::new("bob", "t", at)
            });
        }
        roundtrip(Transition {
            account_id: "bob".into(),
            tenant_id: "t".into(),
            version: 3,
            from_state: AccountState::Banned,
            to_state: AccountState::Normal,
            trigger: Trigger::L2Verdict,
            rule: "LEGITIMATE".into(),
            event_time: at,
            source_id: "e1".into(),
            evidence: "score 10".into(),
            applied: false,
            refusal: Some("BANNED is final".into()),
        });
        roundtrip(crate::gdpr::ErasureRequest {
            request_id: "er-1".into(),
            subject: "bob".into(),
            requested_at: at,
            requested_by: "ops-admin".into(),
        });
        for (kind, hash, request) in [
            (
                crate::gdpr::AuditKind::DeleteMarker,
                Some("ab".repeat(32)),
                Some("er-1".to_owned()),
            ),
            (crate::gdpr::AuditKind::AdminAction, None, None),
        ] {
            roundtrip(crate::gdpr::AuditRecord {
                audit_id: "a-1".into(),
                at,
                kind,
                subject_hash: hash,
                actor: "ops-admin".into(),
                request_id: request,
                detail: "3 files".into(),
            });
        }
    }

    #[test]
    fn no_shipped_schema_refers_to_a_type_by_name() {
        // Every named type's first use defines it; a later bare name would
        // be a reference, which the fast writer cannot follow.
        for avsc in [
            SCREENING_V2_AVSC,
            SCREENING_V1_AVSC,
            L2_REQUEST_V2_AVSC,
            L2_REQUEST_V1_AVSC,
            VERDICT_V1_AVSC,
            ACCOUNT_V2_AVSC,
            ACCOUNT_V1_AVSC,
            TRANSITION_V1_AVSC,
            ERASURE_V1_AVSC,
            AUDIT_V1_AVSC,
        ] {
            let doc: serde_json::Value = serde_json::from_str(avsc).unwrap();
            let mut defined = Vec::new();
            fn walk(v: &serde_json::Value, defined: &mut Vec<String>) {
                match v {
                    serde_json::Value::Object(o) => {
                        if let (Some(t), Some(n)) = (
                            o.get("type").and_then(|t| t.as_str()),
                            o.get("name").and_then(|n| n.as_str()),
                        ) && matches!(t, "record" | "enum" | "fixed")
                        {
                            assert!(!defined.contains(&n.to_owned()), "{n} defined twice");
                            defined.push(n.to_owned());
                        }
                        for (k, x) in o {
                            if (k == "type" || k == "items")
                                && let Some(name) = x.as_str()
                            {
                                assert!(
                                    !defined.contains(&name.to_owned()),
                                    "a reference to {name}"
                                );
                            }
                            walk(x, defined);
                        }
                    }
                    serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, defined)),
                    _ => {}
                }
            }
            walk(&doc, &mut defined);
        }
    }

    #[test]
    fn rejects_another_types_bytes() {
        let account = RecordCodec::<Account>::new().encode(&Account::new(
            "a",
            "t",
            EventTime::from_micros(0),
        ));
        assert!(matches!(
            RecordCodec::<Transition>::new().decode(&account),
            Err(CodecError::UnknownSchema { .. })
        ));
        assert!(matches!(
            RecordCodec::<Transition>::new().decode(b"{}"),
            Err(CodecError::NotSingleObject { .. })
        ));
    }
}
