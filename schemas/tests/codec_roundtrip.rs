//! Property test: any valid event round-trips JSON -> Avro -> JSON unchanged.

use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent, GameEventCodec};
use proptest::prelude::*;

/// Event times between 1970 and 2200, at micro-, milli- or second precision.
fn event_time() -> impl Strategy<Value = EventTime> {
    (0i64..7_258_118_400, 0u32..3, 0i64..1_000_000).prop_map(|(secs, precision, micros)| {
        let fraction = match precision {
            0 => 0,
            1 => micros / 1_000 * 1_000,
            _ => micros,
        };
        EventTime::from_micros(secs * 1_000_000 + fraction)
    })
}

fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9_]{0,30}",
        "\\PC{1,20}".prop_filter("not blank", |s| !s.trim().is_empty()),
    ]
}

fn event() -> impl Strategy<Value = GameEvent> {
    (
        (id(), event_time(), id(), id(), id(), id()),
        (
            0i64..=i64::MAX,
            proptest::option::of(id()),
            proptest::option::of(0i64..=i64::MAX),
        ),
        (
            0i32..=i32::MAX,
            0i32..=i32::MAX,
            proptest::option::of("\\PC{0,80}"),
        ),
    )
        .prop_map(
            |(
                (event_id, timestamp, event_type, actor_id, target_id, tenant_id),
                (currency_amount, item_id, market_avg_price),
                (actor_level, account_age_days, recent_chat_log),
            )| GameEvent {
                event_id,
                timestamp,
                event_type,
                actor_id,
                target_id,
                action_details: ActionDetails {
                    currency_amount,
                    item_id,
                    market_avg_price,
                },
                context_metadata: ContextMetadata {
                    actor_level,
                    account_age_days,
                    recent_chat_log,
                },
                tenant_id: tenant_id.chars().take(100).collect(),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_to_avro_to_json_is_unchanged(e in event()) {
        let codec = GameEventCodec::new();
        let json = e.to_json();
        let parsed = kusanagi_schemas::parse_event(json.as_bytes()).expect("valid JSON event");
        prop_assert_eq!(&parsed, &e);
        let avro = codec.encode(&parsed);
        let back = codec.decode(&avro).expect("decodes");
        prop_assert_eq!(&back, &e);
        prop_assert_eq!(back.to_json(), json);
    }
}
