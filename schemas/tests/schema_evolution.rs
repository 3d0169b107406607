//! Schema evolution: a v1 reader reads what a v2 writer (v1 plus an optional
//! field) wrote, and a v2 reader reads what v1 wrote.

use apache_avro::Schema;
use apache_avro::types::Value;
use kusanagi_schemas::avro::{game_event_v1, single_object_header};
use kusanagi_schemas::{GameEventCodec, parse_event};

const V2: &str = include_str!("fixtures/game_event.v2.avsc");

fn v2() -> Schema {
    Schema::parse_str(V2).expect("v2 fixture parses")
}

fn sample_json() -> &'static [u8] {
    br#"{"event_id":"e-42","timestamp":"2099-01-01T00:00:05Z","actor_id":"a","target_id":"t",
        "action_details":{"currency_amount":700,"market_avg_price":5},
        "context_metadata":{"recent_chat_log":"hi"},"tenant_id":"game-7"}"#
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    match record {
        Value::Record(fields) => &fields.iter().find(|(n, _)| n == name).expect(name).1,
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
fn v1_reader_reads_v2_data() {
    let event = parse_event(sample_json()).unwrap();
    // Write with v2: the v1 fields plus client_platform = "ios".
    let v2 = v2();
    let Value::Record(mut fields) = apache_avro::from_avro_datum(
        game_event_v1(),
        &mut &GameEventCodec::new().encode(&event)[10..],
        None,
    )
    .unwrap() else {
        panic!("record expected")
    };
    fields.push((
        "client_platform".into(),
        Value::Union(1, Box::new(Value::String("ios".into()))),
    ));
    let mut bytes = single_object_header(&v2).to_vec();
    bytes.extend(apache_avro::to_avro_datum(&v2, Value::Record(fields)).unwrap());

    let plain = GameEventCodec::new();
    assert!(
        plain.decode(&bytes).is_err(),
        "an unregistered writer schema is refused"
    );

    let mut codec = GameEventCodec::new();
    codec.register_writer(v2);
    assert_eq!(codec.decode(&bytes).unwrap(), event);
}

#[test]
fn v2_reader_reads_v1_data_with_the_default() {
    let event = parse_event(sample_json()).unwrap();
    let bytes = GameEventCodec::new().encode(&event);
    let value = GameEventCodec::new().decode_value(&bytes, &v2()).unwrap();
    assert_eq!(
        field(&value, "client_platform"),
        &Value::Union(0, Box::new(Value::Null))
    );
    assert_eq!(field(&value, "event_id"), &Value::String("e-42".into()));
    assert_eq!(field(&value, "tenant_id"), &Value::String("game-7".into()));
}

#[test]
fn the_json_schema_and_the_avro_schema_name_the_same_fields() {
    let json: serde_json::Value =
        serde_json::from_str(kusanagi_schemas::GAME_EVENT_V1_JSON_SCHEMA).unwrap();
    let mut json_fields: Vec<String> = json["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    json_fields.sort();
    let Schema::Record(record) = game_event_v1() else {
        panic!("record schema")
    };
    let mut avro_fields: Vec<String> = record.fields.iter().map(|f| f.name.clone()).collect();
    avro_fields.sort();
    assert_eq!(json_fields, avro_fields);
}
