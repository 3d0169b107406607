//! Poison on every internal topic a stage consumes, with real processes:
//! `kusanagi run` (every stage) on a broker (noida-db, or the embedded one
//! in its own process). Records that are not Avro, records of another
//! topic's schema, and records without a value go to `events`,
//! `screenings`, `l2.requests`, `l2.verdicts`, `erasures`,
//! `accounts.transitions`, `audit` and `accounts`, all keyed by one
//! account. Every stage that reads a topic dead-letters each of them once
//! (reason `undecodable`, its stage, the source topic, partition and
//! offset, the original bytes), the view skips and counts what it cannot
//! read, and the partitions keep moving: a suspicious trade sent
//! afterwards for the same account (so on the same partitions) restricts
//! it, and every group's committed offsets pass the poison.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::tempdir::TempDir;
use common::{
    Broker, BrokerKind, Reader, TopologyFile, committed, free_port, header, http,
    kusanagi_with_env, new_key, produce_all, producer, wait_for_port,
};
use kusanagi_schemas::{
    AccountState, EventTime, RecordCodec, Rule, RuleSet, Screening, WindowProfile,
};
use rdkafka::message::Message;

const ACCOUNT: &str = "acct-poison-1";
const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(90);

/// Each topic a stage consumes, and the stages (their consumer groups)
/// that must dead-letter what they cannot read. `accounts` is read by the
/// view alone, which skips and counts instead.
const READERS: [(&str, &[&str]); 8] = [
    ("events", &["screen", "archive"]),
    ("screenings", &["decide", "archive"]),
    ("l2.requests", &["analyze"]),
    ("l2.verdicts", &["decide"]),
    ("erasures", &["decide", "compact"]),
    ("accounts.transitions", &["archive"]),
    ("audit", &["archive"]),
    ("accounts", &[]),
];

/// A valid screening: a record of the right kind for `screenings` only.
fn screening() -> Vec<u8> {
    let rules: RuleSet = [Rule::R2].into_iter().collect();
    RecordCodec::<Screening>::new().encode(&Screening {
        event_id: "ev-poison-screening".into(),
        // Fixed, so that the bytes sent can be compared with the dead letters'.
        event_time: EventTime::from_micros(4_070_908_800_000_000),
        tenant_id: "default".into(),
        target_id: "acct-elsewhere".into(),
        actor_id: "acct-sender".into(),
        screened: false,
        triggered_rules: rules,
        recommended_action: AccountState::Normal,
        needs_l2: false,
        window: WindowProfile {
            total_received: 1,
            transaction_count: 1,
            distinct_senders: 1,
        },
        window_rules: rules,
        evidence_event_ids: vec![],
        evidence_events: vec![],
        late: false,
    })
}

/// The poison for `topic`: bytes that are not Avro, a record of another
/// schema (a screening; for `screenings`, one cut short), and, where a
/// missing value is not a deletion, a record without a value (`accounts`
/// and `erasures` are compacted: there a tombstone is one, and the stages
/// rightly pass it by).
fn poison(topic: &str) -> Vec<Option<Vec<u8>>> {
    let s = screening();
    let other = if topic == "screenings" {
        s[..s.len() / 2].to_vec()
    } else {
        s
    };
    let mut records = vec![Some(b"\x00not avro {\"at\": all}".to_vec()), Some(other)];
    if !matches!(topic, "accounts" | "erasures") {
        records.push(None);
    }
    records
}

fn poisoned(kind: BrokerKind) {
    let broker = Broker::start(kind);
    let dir = TempDir::new("poison");
    let keys = dir.path().join("keys.toml");
    let operator = new_key(&keys, "on-call", &["operator"], None);
    // Against a cluster the erasure secrets must exist (the compact stage).
    std::fs::write(dir.path().join("salt"), format!("{}\n", "5a".repeat(32))).unwrap();
    std::fs::write(
        dir.path().join("signing.key"),
        format!("{}\n", "17".repeat(32)),
    )
    .unwrap();
    let topology = TopologyFile::new()
        .path("gdpr.salt_file", &dir.path().join("salt"))
        .path("gdpr.signing_key_file", &dir.path().join("signing.key"))
        .set("kafka.bootstrap", broker.bootstrap.as_str())
        .set("topics.partitions", PARTITIONS)
        .set("stages.archive.rotate_after_seconds", 1)
        .path("http.auth.keys_file", &keys)
        .archive_in(dir.path())
        .write(dir.path());
    let addr = format!("127.0.0.1:{}", free_port());
    let _run = kusanagi_with_env(
        dir.path(),
        "run",
        &topology,
        &["run"],
        &[("KUSANAGI_HTTP_LISTEN", &addr)],
    );
    wait_for_port(&addr, WAIT);
    let deadline = Instant::now() + WAIT;
    while http(&addr, "GET", "/healthz/ready", None, b"").0 != 200 {
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The poison, keyed by the account: one partition of every topic.
    let p = producer(&broker.bootstrap);
    let mut sent: BTreeMap<&str, usize> = BTreeMap::new();
    for (topic, _) in READERS {
        for value in poison(topic) {
            let mut record = rdkafka::producer::BaseRecord::<str, [u8]>::to(topic).key(ACCOUNT);
            if let Some(v) = &value {
                record = record.payload(v.as_slice());
            }
            common::send_waiting(&p, record);
            *sent.entry(topic).or_default() += 1;
        }
    }
    rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).expect("poison sent");

    // Then a trade for the same account, through the whole pipeline: 200
    // times the market price with payment slang in the chat (R3 and R4,
    // which the fallback keeps blocked when no model answers).
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let trade = format!(
        r#"{{"event_id":"ev-poison-trade","timestamp":"{now}","actor_id":"acct-sender","target_id":"{ACCOUNT}","action_details":{{"currency_amount":1000000,"item_id":"gem-pack","market_avg_price":5000}},"context_metadata":{{"actor_level":3,"account_age_days":2,"recent_chat_log":"1000k gems, PayPal ok?"}}}}"#
    );
    produce_all(
        &p,
        "events.raw",
        &[(ACCOUNT.to_owned(), trade.into_bytes())],
    );
    let check = format!(r#"{{"account_id":"{ACCOUNT}"}}"#);
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = http(
            &addr,
            "POST",
            "/api/v1/withdrawals/check",
            Some(&operator),
            check.as_bytes(),
        );
        // 423 restricted; 403 banned (the fallback may ban at once).
        if status == 423 || status == 403 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the trade after the poison never restricted the account: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every stage that reads a topic dead-letters each poison record once.
    let expected: usize = READERS
        .iter()
        .map(|(topic, stages)| sent[topic] * stages.len())
        .sum();
    let mut reader = Reader::new(&broker.bootstrap, &["events.dlq"]);
    let complete = reader.read_until(WAIT, |m| m.len() >= expected);
    reader.drain(Duration::from_secs(3));
    let dlq: Vec<_> = reader.of("events.dlq").collect();
    let mut got: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    // The last poisoned offset of each (topic, partition).
    let mut poisoned_at: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for m in &dlq {
        let stage = header(m, "kusanagi.dlq.stage").expect("stage header");
        let topic = header(m, "kusanagi.dlq.source.topic").expect("source topic");
        let number = |name: &str| header(m, name).and_then(|v| v.parse::<i64>().ok());
        let partition = number("kusanagi.dlq.source.partition").expect("source partition") as i32;
        let offset = number("kusanagi.dlq.source.offset").expect("source offset");
        assert_eq!(
            header(m, "kusanagi.dlq.reason").as_deref(),
            Some("undecodable"),
            "{stage} on {topic}"
        );
        assert!(
            header(m, "kusanagi.dlq.detail").is_some_and(|d| !d.is_empty()),
            "{stage} on {topic}: no detail"
        );
        assert_eq!(m.key(), Some(ACCOUNT.as_bytes()), "the original key kept");
        let original = m.payload().map(<[u8]>::to_vec);
        assert!(
            poison(&topic).iter().any(
                |p| p.as_deref().unwrap_or_default() == original.as_deref().unwrap_or_default()
            ),
            "{stage} on {topic}: the original bytes are not kept"
        );
        let last = poisoned_at
            .entry((topic.clone(), partition))
            .or_insert(offset);
        *last = (*last).max(offset);
        assert!(
            seen.insert((stage.clone(), topic.clone(), partition, offset)),
            "dead-lettered twice by {stage}: {topic}"
        );
        *got.entry((topic, stage)).or_default() += 1;
    }
    let want: BTreeMap<(String, String), usize> = READERS
        .iter()
        .flat_map(|(topic, stages)| {
            stages
                .iter()
                .map(|stage| ((topic.to_string(), stage.to_string()), sent[topic]))
        })
        .collect();
    assert!(complete, "dead letters: {got:?}, expected {want:?}");
    assert_eq!(got, want, "dead letters by (topic, stage)");

    // The view skipped what it could not read, and counted it.
    let (status, metrics) = http(&addr, "GET", "/metrics", Some(&operator), b"");
    assert_eq!(status, 200);
    let skipped = |topic: &str| {
        let prefix =
            format!("kusanagi_view_records_total{{topic=\"{topic}\",outcome=\"skipped\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(skipped("accounts"), sent["accounts"] as u64, "{metrics}");

    // Every group moved past the poison: committed beyond its offsets.
    for (topic, stages) in READERS {
        for stage in stages.iter().filter(|s| **s != "archive") {
            let group = format!("kusanagi-{stage}");
            let deadline = Instant::now() + WAIT;
            for ((t, partition), last) in poisoned_at.iter().filter(|((t, _), _)| t == topic) {
                loop {
                    let at =
                        committed(&broker.bootstrap, &group, t, PARTITIONS)[*partition as usize];
                    if at > *last {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "{group} stuck on {t}/{partition} at {at}, poison up to {last}"
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    eprintln!(
        "[{kind:?}] poison on 8 topics: {} dead letters, partitions moving",
        dlq.len()
    );
}

#[test]
fn poison_on_every_internal_topic_on_embedded_broker() {
    poisoned(BrokerKind::Embedded);
}

#[test]
fn poison_on_every_internal_topic_on_noida_db_process() {
    poisoned(BrokerKind::NoidaDb);
}
