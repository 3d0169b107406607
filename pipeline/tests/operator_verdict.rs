//! An analyst's verdict over HTTP (`POST /api/v1/accounts/{id}/verdict`),
//! with real processes: decide and view stages on a broker (noida-db, or
//! the embedded one in its own process). A screening restricts an account;
//! the operator's BANNED verdict bans it through the state machine; an
//! operator's NORMAL afterwards is refused (BANNED is final) and recorded;
//! the audit trail holds the request and what decide did, without the
//! account id.

mod common;

use std::time::{Duration, Instant};

use common::tempdir::TempDir;
use common::{
    Broker, BrokerKind, Reader, TopologyFile, free_port, http, kusanagi_with_env, new_key,
    produce_all, producer, wait_for_port,
};
use kusanagi_schemas::{
    AccountState, AuditKind, AuditRecord, EventTime, RecordCodec, Rule, RuleSet, Screening,
    WindowProfile,
};
use rdkafka::message::Message;
use serde_json::Value;

const ACCOUNT: &str = "acct-override-7";

fn screening() -> Screening {
    let rules: RuleSet = [Rule::R2].into_iter().collect();
    Screening {
        event_id: "ev-override-1".into(),
        event_time: EventTime::from_micros(chrono::Utc::now().timestamp_micros()),
        tenant_id: "game-a".into(),
        target_id: ACCOUNT.into(),
        actor_id: "acct-sender-1".into(),
        screened: true,
        triggered_rules: rules,
        recommended_action: AccountState::RestrictedWithdrawal,
        needs_l2: false,
        window: WindowProfile {
            total_received: 1_000_000,
            transaction_count: 1,
            distinct_senders: 1,
        },
        window_rules: rules,
        evidence_event_ids: vec!["ev-override-1".into()],
        evidence_events: vec![],
        late: false,
    }
}

fn get(addr: &str, key: &str, path: &str) -> (u16, Value) {
    let (status, text) = http(addr, "GET", path, Some(key), b"");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn wait_state(addr: &str, key: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = get(addr, key, &format!("/api/v1/accounts/{ACCOUNT}"));
        if v["state"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "never {want}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn operator_verdicts(kind: BrokerKind) {
    let broker = Broker::start(kind);
    let dir = TempDir::new("override");
    let keys = dir.path().join("keys.toml");
    let operator = new_key(&keys, "analyst-kim", &["operator"], None);
    let viewer = new_key(&keys, "dashboard", &["viewer"], None);
    let topology = TopologyFile::new()
        .set("kafka.bootstrap", broker.bootstrap.as_str())
        .set("topics.partitions", 3)
        .path("http.auth.keys_file", &keys)
        .write(dir.path());
    let start = |name: &str, stage: &str| {
        let addr = format!("127.0.0.1:{}", free_port());
        let g = kusanagi_with_env(
            dir.path(),
            name,
            &topology,
            &["stage", stage],
            &[
                ("KUSANAGI_INSTANCE_ID", name),
                ("KUSANAGI_HTTP_LISTEN", &addr),
            ],
        );
        wait_for_port(&addr, Duration::from_secs(60));
        (g, addr)
    };
    let (_view, view) = start("view", "view");
    let (_decide, _) = start("decide", "decide");

    // A screening restricts the account.
    let payload = RecordCodec::<Screening>::new().encode(&screening());
    produce_all(
        &producer(&broker.bootstrap),
        "screenings",
        &[(ACCOUNT.to_owned(), payload)],
    );
    wait_state(&view, &viewer, "RESTRICTED_WITHDRAWAL");

    // A viewer may not judge; an operator may.
    let ban = br#"{"action":"BANNED","reason":"sold 40M gold on a marketplace","fraud_type":"RMT_DIRECT"}"#;
    let path = format!("/api/v1/accounts/{ACCOUNT}/verdict");
    assert_eq!(http(&view, "POST", &path, Some(&viewer), ban).0, 403);
    let (status, text) = http(&view, "POST", &path, Some(&operator), ban);
    assert_eq!(status, 202, "{text}");
    let banned: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(banned["from_state"], "RESTRICTED_WITHDRAWAL");
    wait_state(&view, &viewer, "BANNED");
    let (_, versions) = get(
        &view,
        &viewer,
        &format!("/api/v1/accounts/{ACCOUNT}/versions"),
    );
    let moves = versions["versions"].as_array().unwrap();
    let last = moves.last().unwrap();
    assert_eq!(last["to"], "BANNED", "{versions}");
    assert_eq!(
        moves[moves.len() - 2]["to"],
        "UNDER_SURVEILLANCE",
        "via surveillance"
    );
    assert!(
        last["evidence"]
            .as_str()
            .unwrap()
            .contains("operator:analyst-kim"),
        "{last}"
    );

    // BANNED is final, for an operator too: refused and recorded.
    let unban = br#"{"action":"NORMAL","reason":"appeal"}"#;
    let (status, text) = http(&view, "POST", &path, Some(&operator), unban);
    assert_eq!(status, 202, "{text}");
    let unbanned: Value = serde_json::from_str(&text).unwrap();

    // The audit trail: each request and what decide did with it.
    let mut reader = Reader::new(&broker.bootstrap, &["audit"]);
    let codec = RecordCodec::<AuditRecord>::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let audit = loop {
        reader.drain(Duration::from_secs(1));
        let audit: Vec<AuditRecord> = reader
            .of("audit")
            .filter_map(|m| codec.decode(m.payload()?).ok())
            .collect();
        if audit.len() >= 4 {
            break audit;
        }
        assert!(Instant::now() < deadline, "audit records: {audit:?}");
    };
    let of = |v: &Value, kind: AuditKind| {
        audit
            .iter()
            .find(|a| a.kind == kind && a.request_id.as_deref() == v["request_id"].as_str())
            .unwrap_or_else(|| panic!("no {kind:?} for {v}: {audit:?}"))
            .clone()
    };
    assert_eq!(of(&banned, AuditKind::AdminAction).actor, "analyst-kim");
    let applied = of(&banned, AuditKind::StateOverride);
    assert!(applied.detail.contains("-> BANNED applied"), "{applied:?}");
    let refused = of(&unbanned, AuditKind::StateOverride);
    assert!(refused.detail.contains("refused"), "{refused:?}");
    assert!(audit.iter().all(|a| !format!("{a:?}").contains(ACCOUNT)));
    wait_state(&view, &viewer, "BANNED");
}

#[test]
fn operator_verdicts_on_embedded_broker() {
    operator_verdicts(BrokerKind::Embedded);
}

#[test]
fn operator_verdicts_on_noida_db_process() {
    operator_verdicts(BrokerKind::NoidaDb);
}
