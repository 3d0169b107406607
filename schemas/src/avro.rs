//! Avro out: GameEvent v1 in Avro single-object encoding.
//!
//! Every value on the `events` topic is `C3 01`, the 8-byte CRC-64-AVRO
//! (Rabin) fingerprint of the writer schema, then the Avro binary datum
//! (`docs/event-contract.md` says why this wire format). A reader keeps the
//! schemas it knows by fingerprint, decodes with the writer's schema and
//! resolves to its own, so a v1 reader reads v2 data and the reverse.

use std::collections::HashMap;
use std::sync::OnceLock;

use apache_avro::Schema;
use apache_avro::headers::{HeaderBuilder, RabinFingerprintHeader};
use apache_avro::types::Value;

use crate::error::CodecError;
use crate::event::{ActionDetails, ContextMetadata, EventTime, GameEvent};

/// The Avro schema of GameEvent v1, as shipped in `avro/game_event.v1.avsc`.
pub const GAME_EVENT_V1_AVSC: &str = include_str!("../avro/game_event.v1.avsc");

/// Length of the single-object header: marker (2) + fingerprint (8).
pub const HEADER_LEN: usize = 10;

/// The parsed GameEvent v1 schema.
pub fn game_event_v1() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        Schema::parse_str(GAME_EVENT_V1_AVSC).expect("the shipped GameEvent v1 schema is valid")
    })
}

/// The single-object header (`C3 01` + fingerprint) of `schema`.
pub fn single_object_header(schema: &Schema) -> [u8; HEADER_LEN] {
    let built = RabinFingerprintHeader::from_schema(schema).build_header();
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&built[..HEADER_LEN]);
    header
}

/// Encodes and decodes GameEvents in Avro single-object encoding.
///
/// Writes with the v1 schema; reads anything written with a schema it
/// knows (v1, plus any registered with [`GameEventCodec::register_writer`]).
#[derive(Debug, Clone)]
pub struct GameEventCodec {
    header: [u8; HEADER_LEN],
    writers: HashMap<[u8; 8], Schema>,
}

impl Default for GameEventCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl GameEventCodec {
    /// A codec that knows the v1 schema.
    pub fn new() -> Self {
        let header = single_object_header(game_event_v1());
        let mut writers = HashMap::new();
        writers.insert(fingerprint_of(&header), game_event_v1().clone());
        Self { header, writers }
    }

    /// Teaches the codec a writer schema (a later or earlier version of
    /// GameEvent) so that data written with it can be read.
    pub fn register_writer(&mut self, schema: Schema) {
        let header = single_object_header(&schema);
        self.writers.insert(fingerprint_of(&header), schema);
    }

    /// Encodes `event` as a single object (header + datum).
    pub fn encode(&self, event: &GameEvent) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + event.event_id.len() * 4);
        out.extend_from_slice(&self.header);
        apache_avro::write_avro_datum_ref(game_event_v1(), &AvroView::of(event), &mut out)
            .expect("a GameEvent always matches the v1 schema");
        out
    }

    /// Decodes a single object written with any known schema into a GameEvent.
    pub fn decode(&self, bytes: &[u8]) -> Result<GameEvent, CodecError> {
        if bytes.len() >= HEADER_LEN && bytes[..HEADER_LEN] == self.header {
            return fast_decode(&bytes[HEADER_LEN..]);
        }
        let value = self.decode_value(bytes, game_event_v1())?;
        from_value(value)
    }

    /// Decodes a single object and resolves it to `reader` (schema evolution).
    pub fn decode_value(&self, bytes: &[u8], reader: &Schema) -> Result<Value, CodecError> {
        if bytes.len() < HEADER_LEN || bytes[0] != 0xC3 || bytes[1] != 0x01 {
            return Err(CodecError::NotSingleObject {
                found: bytes.iter().take(2).copied().collect(),
            });
        }
        let fingerprint: [u8; 8] = bytes[2..HEADER_LEN].try_into().expect("8 bytes");
        let writer = self
            .writers
            .get(&fingerprint)
            .ok_or(CodecError::UnknownSchema {
                fingerprint: u64::from_le_bytes(fingerprint),
            })?;
        let mut body = &bytes[HEADER_LEN..];
        let same = std::ptr::eq(writer, reader) || writer == reader;
        let value = apache_avro::from_avro_datum(writer, &mut body, (!same).then_some(reader))?;
        if !body.is_empty() {
            return Err(CodecError::Avro(format!(
                "{} trailing bytes after the datum",
                body.len()
            )));
        }
        Ok(value)
    }
}

/// A borrowed view of a GameEvent shaped like the v1 schema, written by
/// apache-avro's schema-aware serializer without building a `Value` tree.
#[derive(serde::Serialize)]
struct AvroView<'a> {
    event_id: &'a str,
    timestamp: i64,
    event_type: &'a str,
    actor_id: &'a str,
    target_id: &'a str,
    action_details: AvroActionDetails<'a>,
    context_metadata: AvroContextMetadata<'a>,
    tenant_id: &'a str,
}

#[derive(serde::Serialize)]
struct AvroActionDetails<'a> {
    currency_amount: i64,
    item_id: Option<&'a str>,
    market_avg_price: Option<i64>,
}

#[derive(serde::Serialize)]
struct AvroContextMetadata<'a> {
    actor_level: i32,
    account_age_days: i32,
    recent_chat_log: Option<&'a str>,
}

impl<'a> AvroView<'a> {
    fn of(e: &'a GameEvent) -> Self {
        let a = &e.action_details;
        let c = &e.context_metadata;
        Self {
            event_id: &e.event_id,
            timestamp: e.timestamp.as_micros(),
            event_type: &e.event_type,
            actor_id: &e.actor_id,
            target_id: &e.target_id,
            action_details: AvroActionDetails {
                currency_amount: a.currency_amount,
                item_id: a.item_id.as_deref(),
                market_avg_price: a.market_avg_price,
            },
            context_metadata: AvroContextMetadata {
                actor_level: c.actor_level,
                account_age_days: c.account_age_days,
                recent_chat_log: c.recent_chat_log.as_deref(),
            },
            tenant_id: &e.tenant_id,
        }
    }
}

fn fingerprint_of(header: &[u8; HEADER_LEN]) -> [u8; 8] {
    header[2..].try_into().expect("8 bytes")
}

#[cfg(test)]
fn optional_string(v: &Option<String>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.clone()))),
    }
}

#[cfg(test)]
fn optional_long(v: Option<i64>) -> Value {
    match v {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(i) => Value::Union(1, Box::new(Value::Long(i))),
    }
}

#[cfg(test)]
fn to_value(e: &GameEvent) -> Value {
    let a = &e.action_details;
    let c = &e.context_metadata;
    Value::Record(vec![
        ("event_id".into(), Value::String(e.event_id.clone())),
        (
            "timestamp".into(),
            Value::TimestampMicros(e.timestamp.as_micros()),
        ),
        ("event_type".into(), Value::String(e.event_type.clone())),
        ("actor_id".into(), Value::String(e.actor_id.clone())),
        ("target_id".into(), Value::String(e.target_id.clone())),
        (
            "action_details".into(),
            Value::Record(vec![
                ("currency_amount".into(), Value::Long(a.currency_amount)),
                ("item_id".into(), optional_string(&a.item_id)),
                ("market_avg_price".into(), optional_long(a.market_avg_price)),
            ]),
        ),
        (
            "context_metadata".into(),
            Value::Record(vec![
                ("actor_level".into(), Value::Int(c.actor_level)),
                ("account_age_days".into(), Value::Int(c.account_age_days)),
                (
                    "recent_chat_log".into(),
                    optional_string(&c.recent_chat_log),
                ),
            ]),
        ),
        ("tenant_id".into(), Value::String(e.tenant_id.clone())),
    ])
}

/// Reads the fields of a decoded record by name.
struct Fields(HashMap<String, Value>);

impl Fields {
    fn of(value: Value, what: &str) -> Result<Self, CodecError> {
        match value {
            Value::Record(fields) => Ok(Self(fields.into_iter().collect())),
            other => Err(CodecError::Shape(format!(
                "GameEvent {what}: expected a record, found {other:?}"
            ))),
        }
    }

    fn take(&mut self, name: &str) -> Result<Value, CodecError> {
        self.0
            .remove(name)
            .ok_or_else(|| CodecError::Shape(format!("missing field {name}")))
    }

    fn string(&mut self, name: &str) -> Result<String, CodecError> {
        match self.take(name)? {
            Value::String(s) => Ok(s),
            other => Err(shape(name, "string", &other)),
        }
    }

    fn long(&mut self, name: &str) -> Result<i64, CodecError> {
        match self.take(name)? {
            Value::Long(i) | Value::TimestampMicros(i) => Ok(i),
            other => Err(shape(name, "long", &other)),
        }
    }

    fn int(&mut self, name: &str) -> Result<i32, CodecError> {
        match self.take(name)? {
            Value::Int(i) => Ok(i),
            other => Err(shape(name, "int", &other)),
        }
    }

    fn optional(&mut self, name: &str) -> Result<Option<Value>, CodecError> {
        match self.take(name)? {
            Value::Union(_, inner) => match *inner {
                Value::Null => Ok(None),
                v => Ok(Some(v)),
            },
            Value::Null => Ok(None),
            v => Ok(Some(v)),
        }
    }

    fn optional_string(&mut self, name: &str) -> Result<Option<String>, CodecError> {
        match self.optional(name)? {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(shape(name, "string or null", &other)),
        }
    }

    fn optional_long(&mut self, name: &str) -> Result<Option<i64>, CodecError> {
        match self.optional(name)? {
            None => Ok(None),
            Some(Value::Long(i)) => Ok(Some(i)),
            Some(other) => Err(shape(name, "long or null", &other)),
        }
    }
}

fn shape(name: &str, expected: &str, found: &Value) -> CodecError {
    CodecError::Shape(format!(
        "GameEvent field {name}: expected {expected}, found {found:?}"
    ))
}

/// GameEvent v1 laid out as its Avro datum, for the fast decoder.
#[derive(serde::Deserialize)]
struct AvroEvent {
    event_id: String,
    timestamp: i64,
    event_type: String,
    actor_id: String,
    target_id: String,
    action_details: AvroAction,
    context_metadata: AvroContext,
    tenant_id: String,
}

#[derive(serde::Deserialize)]
struct AvroAction {
    currency_amount: i64,
    item_id: Option<String>,
    market_avg_price: Option<i64>,
}

#[derive(serde::Deserialize)]
struct AvroContext {
    actor_level: i32,
    account_age_days: i32,
    recent_chat_log: Option<String>,
}

fn fast_v1() -> &'static serde_avro_fast::Schema {
    static SCHEMA: OnceLock<serde_avro_fast::Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        GAME_EVENT_V1_AVSC
            .parse()
            .expect("the shipped GameEvent v1 schema is valid")
    })
}

/// A v1 datum read straight into a GameEvent (serde_avro_fast: no `Value`
/// tree, no schema resolution per record); trailing bytes are an error.
fn fast_decode(body: &[u8]) -> Result<GameEvent, CodecError> {
    use serde::Deserialize;
    // From the slice: a length past the end of the record is an error at
    // once, before anything is allocated for it.
    let mut state = serde_avro_fast::de::DeserializerState::from_slice(body, fast_v1());
    let e = AvroEvent::deserialize(state.deserializer())
        .map_err(|e| CodecError::Avro(format!("GameEvent: {e}")))?;
    let rest = std::io::BufRead::fill_buf(&mut state.into_reader()).map_or(0, <[u8]>::len);
    if rest > 0 {
        return Err(CodecError::Avro(format!(
            "{rest} trailing bytes after the datum"
        )));
    }
    Ok(GameEvent {
        event_id: e.event_id,
        timestamp: EventTime::from_micros(e.timestamp),
        event_type: e.event_type,
        actor_id: e.actor_id,
        target_id: e.target_id,
        action_details: ActionDetails {
            currency_amount: e.action_details.currency_amount,
            item_id: e.action_details.item_id,
            market_avg_price: e.action_details.market_avg_price,
        },
        context_metadata: ContextMetadata {
            actor_level: e.context_metadata.actor_level,
            account_age_days: e.context_metadata.account_age_days,
            recent_chat_log: e.context_metadata.recent_chat_log,
        },
        tenant_id: e.tenant_id,
    })
}

fn from_value(value: Value) -> Result<GameEvent, CodecError> {
    let mut f = Fields::of(value, "GameEvent")?;
    let mut a = Fields::of(f.take("action_details")?, "action_details")?;
    let mut c = Fields::of(f.take("context_metadata")?, "context_metadata")?;
    Ok(GameEvent {
        event_id: f.string("event_id")?,
        timestamp: EventTime::from_micros(f.long("timestamp")?),
        event_type: f.string("event_type")?,
        actor_id: f.string("actor_id")?,
        target_id: f.string("target_id")?,
        action_details: ActionDetails {
            currency_amount: a.long("currency_amount")?,
            item_id: a.optional_string("item_id")?,
            market_avg_price: a.optional_long("market_avg_price")?,
        },
        context_metadata: ContextMetadata {
            actor_level: c.int("actor_level")?,
            account_age_days: c.int("account_age_days")?,
            recent_chat_log: c.optional_string("recent_chat_log")?,
        },
        tenant_id: f.string("tenant_id")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GameEvent {
        GameEvent {
            event_id: "evt-1".into(),
            timestamp: EventTime::from_micros(4_070_908_800_000_000),
            event_type: "TRADE".into(),
            actor_id: "alice".into(),
            target_id: "bob".into(),
            action_details: ActionDetails {
                currency_amount: 1_000_000,
                item_id: Some("sword".into()),
                market_avg_price: None,
            },
            context_metadata: ContextMetadata {
                recent_chat_log: Some("口座に振込".into()),
                ..ContextMetadata::default()
            },
            tenant_id: "default".into(),
        }
    }

    #[test]
    fn encodes_with_single_object_header() {
        let codec = GameEventCodec::new();
        let bytes = codec.encode(&sample());
        assert_eq!(&bytes[..2], &[0xC3, 0x01]);
        assert_eq!(codec.decode(&bytes).unwrap(), sample());
    }

    #[test]
    fn the_serde_writer_matches_the_validated_value_encoder() {
        let codec = GameEventCodec::new();
        let mut bare = sample();
        bare.action_details.item_id = None;
        bare.action_details.market_avg_price = Some(7);
        bare.context_metadata.recent_chat_log = None;
        for e in [sample(), bare] {
            let reference = apache_avro::to_avro_datum(game_event_v1(), to_value(&e)).unwrap();
            assert_eq!(&codec.encode(&e)[HEADER_LEN..], &reference[..]);
        }
    }

    #[test]
    fn the_fast_decoder_reads_what_the_value_path_reads() {
        let codec = GameEventCodec::new();
        let mut bare = sample();
        bare.action_details.item_id = None;
        bare.action_details.market_avg_price = Some(7);
        bare.context_metadata.recent_chat_log = None;
        bare.event_type = String::new();
        for e in [sample(), bare] {
            let bytes = codec.encode(&e);
            let tree = codec.decode_value(&bytes, game_event_v1()).unwrap();
            assert_eq!(fast_decode(&bytes[HEADER_LEN..]).unwrap(), e);
            assert_eq!(from_value(tree).unwrap(), e);
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(codec.decode(&longer).is_err(), "a trailing byte");
            for cut in HEADER_LEN..bytes.len() {
                assert!(codec.decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn a_length_past_the_end_is_an_error_without_allocating_it() {
        let codec = GameEventCodec::new();
        let mut bytes = codec.encode(&sample())[..HEADER_LEN].to_vec();
        // event_id: a string of 2^28 bytes, then nothing.
        bytes.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x02]);
        assert!(codec.decode(&bytes).is_err());
    }

    #[test]
    fn rejects_foreign_bytes() {
        let codec = GameEventCodec::new();
        assert!(matches!(
            codec.decode(b"{\"json\": true}"),
            Err(CodecError::NotSingleObject { .. })
        ));
        let mut bytes = codec.encode(&sample());
        bytes[5] ^= 0xFF;
        assert!(matches!(
            codec.decode(&bytes),
            Err(CodecError::UnknownSchema { .. })
        ));
        let bytes = codec.encode(&sample());
        assert!(codec.decode(&bytes[..bytes.len() - 3]).is_err());
    }
}
