//! Schema evolution of the screening, L2 request and account records:
//! each v2 adds `evidence_events` (with a default) to v1. Both directions
//! are checked through Avro schema resolution: a v1 reader reads what v2
//! wrote (it skips the new field), and the codec reads what v1 wrote (the
//! field takes its default), so records on a topic from before an upgrade
//! still load after it.

use apache_avro::Schema;
use apache_avro::types::Value;
use kusanagi_schemas::avro::single_object_header;
use kusanagi_schemas::codec::{ACCOUNT_V1_AVSC, L2_REQUEST_V1_AVSC, SCREENING_V1_AVSC};
use kusanagi_schemas::{
    Account, AccountState, AvroRecord, EventTime, EvidenceEvent, L2Request, QueuedRequest,
    RecordCodec, Rule, RuleSet, Screening, WindowProfile,
};

const AT: i64 = 4_070_908_800_000_000;

fn evidence() -> Vec<EvidenceEvent> {
    vec![EvidenceEvent {
        event_id: "e7".into(),
        event_time: EventTime::from_micros(AT),
        amount: 150_000,
        market_avg_price: Some(1_000),
        item_id: Some("potion".into()),
        sender_id: "mule_3".into(),
        sender_level: 2,
        sender_account_age_days: 0,
        chat: Some("Dで確認".into()),
    }]
}

fn window() -> WindowProfile {
    WindowProfile {
        total_received: 1_200_000,
        transaction_count: 4,
        distinct_senders: 3,
    }
}

fn rules() -> RuleSet {
    [Rule::R1, Rule::R4].into_iter().collect()
}

/// Writes `record` with the codec (v2), reads the bytes as a v1 reader
/// would, re-writes that as v1 and reads it back with the codec.
/// Returns (what the v1 reader saw, what the codec read from v1 bytes).
fn both_ways<T: AvroRecord>(record: &T, v1_avsc: &str) -> (Value, T) {
    let v1 = Schema::parse_str(v1_avsc).unwrap();
    let codec = RecordCodec::<T>::new();
    let v2_bytes = codec.encode(record);
    assert_ne!(
        v2_bytes[..10],
        single_object_header(&v1)[..],
        "v2 has a fingerprint of its own"
    );
    // Old reader, new data: Avro resolution from the v2 writer schema.
    let seen_by_v1 =
        apache_avro::from_avro_datum(T::schema(), &mut &v2_bytes[10..], Some(&v1)).unwrap();
    // New reader, old data.
    let mut v1_bytes = single_object_header(&v1).to_vec();
    v1_bytes.extend(apache_avro::to_avro_datum(&v1, seen_by_v1.clone()).unwrap());
    let read = codec.decode(&v1_bytes).expect("the codec reads v1 records");
    (seen_by_v1, read)
}

fn field<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    match record {
        Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        other => panic!("not a record: {other:?}"),
    }
}

#[test]
fn l2_request_v1_and_v2_read_each_other() {
    let request = L2Request {
        request_id: "e7".into(),
        event_time: EventTime::from_micros(AT),
        tenant_id: "mmo-eu".into(),
        target_id: "bob".into(),
        account_state: AccountState::RestrictedWithdrawal,
        rules: rules(),
        window: window(),
        evidence_event_ids: vec!["e7".into()],
        evidence_events: evidence(),
        coalesced: 3,
    };
    let (old, new) = both_ways(&request, L2_REQUEST_V1_AVSC);
    assert_eq!(field(&old, "request_id"), Some(&Value::String("e7".into())));
    assert_eq!(field(&old, "coalesced"), Some(&Value::Int(3)));
    assert_eq!(field(&old, "evidence_events"), None, "v1 has no such field");
    assert_eq!(
        new,
        L2Request {
            evidence_events: vec![],
            ..request
        }
    );
}

#[test]
fn screening_v1_and_v2_read_each_other() {
    let screening = Screening {
        event_id: "e7".into(),
        event_time: EventTime::from_micros(AT),
        tenant_id: "default".into(),
        target_id: "bob".into(),
        actor_id: "mule_3".into(),
        screened: true,
        triggered_rules: rules(),
        recommended_action: AccountState::RestrictedWithdrawal,
        needs_l2: true,
        window: window(),
        window_rules: rules(),
        evidence_event_ids: vec!["e7".into()],
        evidence_events: evidence(),
        late: false,
    };
    let (old, new) = both_ways(&screening, SCREENING_V1_AVSC);
    assert_eq!(field(&old, "late"), Some(&Value::Boolean(false)));
    assert_eq!(
        new,
        Screening {
            evidence_events: vec![],
            ..screening
        }
    );
}

#[test]
fn account_records_of_v1_still_load() {
    let queued = QueuedRequest {
        request_id: "e9".into(),
        event_time: EventTime::from_micros(AT + 1),
        rules: rules(),
        window: window(),
        evidence_event_ids: vec!["e9".into()],
        evidence_events: evidence(),
        coalesced: 5,
    };
    let account = Account {
        state: AccountState::UnderSurveillance,
        version: 2,
        l2_in_flight: Some("e7".into()),
        l2_queued: Some(queued.clone()),
        ..Account::new("bob", "default", EventTime::from_micros(AT))
    };
    let (_, new) = both_ways(&account, ACCOUNT_V1_AVSC);
    assert_eq!(
        new,
        Account {
            l2_queued: Some(QueuedRequest {
                evidence_events: vec![],
                ..queued
            }),
            ..account
        }
    );
}

/// `fixtures/account.v1.bin`: an account record as v1 wrote it (restricted,
/// `e1` in flight, `e2` queued), which the decide stage's tests rebuild
/// state from. Regenerate with `KUSANAGI_WRITE_FIXTURES=1`.
#[test]
fn the_v1_account_fixture_is_a_v1_record() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/account.v1.bin");
    let v1 = Schema::parse_str(ACCOUNT_V1_AVSC).unwrap();
    let account = Account {
        state: AccountState::RestrictedWithdrawal,
        version: 1,
        l2_in_flight: Some("e1".into()),
        l2_queued: Some(QueuedRequest {
            request_id: "e2".into(),
            event_time: EventTime::from_micros(AT + 2),
            rules: rules(),
            window: window(),
            evidence_event_ids: vec!["e2".into()],
            evidence_events: vec![],
            coalesced: 2,
        }),
        ..Account::new("bob", "default", EventTime::from_micros(AT))
    };
    let (seen_by_v1, _) = both_ways(&account, ACCOUNT_V1_AVSC);
    let mut bytes = single_object_header(&v1).to_vec();
    bytes.extend(apache_avro::to_avro_datum(&v1, seen_by_v1).unwrap());
    if std::env::var_os("KUSANAGI_WRITE_FIXTURES").is_some() {
        std::fs::write(&path, &bytes).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "{}", path.display());
    assert_eq!(
        RecordCodec::<Account>::new().decode(&bytes).unwrap(),
        account
    );
}
