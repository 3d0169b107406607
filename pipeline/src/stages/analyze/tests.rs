//! The analyze stage's own parts, without a model server: the cache's
//! profile key, verdicts in request order with dead letters in their
//! slots, and the fallback on every request a model cannot answer.

use std::num::NonZeroU32;
use std::time::Duration;

use kusanagi_connectors::llm::{LlmClient, LlmConfig, Provider};
use kusanagi_schemas::{
    AccountState, EventTime, EvidenceEvent, L2Request, RecordCodec, Rule, RuleSet, Verdict,
    WindowProfile,
};

use super::stage::{AnalyzeStage, Analyzer, ProfileKey, STAGE};
use crate::runtime::{InRecord, OutRecord, Stage};

fn request(account: &str, total: i64, chat: Option<&str>) -> L2Request {
    let evidence = |id: &str, sender: &str| EvidenceEvent {
        event_id: id.into(),
        event_time: EventTime::from_micros(1_000_000),
        amount: 30_000,
        market_avg_price: Some(1_000),
        item_id: Some("gem-pack".into()),
        sender_id: sender.into(),
        sender_level: 2,
        sender_account_age_days: 1,
        chat: chat.map(str::to_owned),
    };
    L2Request {
        request_id: format!("{account}-req"),
        event_time: EventTime::from_micros(2_000_000),
        tenant_id: "default".into(),
        target_id: account.into(),
        account_state: AccountState::RestrictedWithdrawal,
        rules: [Rule::R2, Rule::R4].into_iter().collect::<RuleSet>(),
        window: WindowProfile {
            total_received: total,
            transaction_count: 12,
            distinct_senders: 12,
        },
        evidence_event_ids: vec![format!("{account}-e1")],
        evidence_events: vec![evidence(
            &format!("{account}-e1"),
            &format!("{account}-mule"),
        )],
        coalesced: 1,
    }
}

#[test]
fn a_profile_ignores_ids_times_and_senders_but_not_what_happened() {
    let key = |r: &L2Request| ProfileKey::of(r);
    let base = request("alice", 60_400, Some("gem pack for 5k?"));
    let mut later = request("bob", 60_900, Some("gem pack for 5k?"));
    later.event_time = EventTime::from_micros(9_000_000);
    assert_eq!(key(&base), key(&later), "other ids, same case");
    assert_ne!(
        key(&base),
        key(&request("alice", 61_000, Some("gem pack for 5k?"))),
        "a total two significant digits apart"
    );
    assert_ne!(
        key(&base),
        key(&request("alice", 60_400, Some("selling gold"))),
        "other chat"
    );
    assert_ne!(key(&base), key(&request("alice", 60_400, None)), "no chat");
    let mut other_tenant = base.clone();
    other_tenant.tenant_id = "other".into();
    assert_ne!(key(&base), key(&other_tenant));
    let mut other_rules = base.clone();
    other_rules.rules = [Rule::R2].into_iter().collect();
    assert_ne!(key(&base), key(&other_rules));
    let mut other_state = base.clone();
    other_state.account_state = AccountState::UnderSurveillance;
    assert_ne!(key(&base), key(&other_state));
}

fn stage(analyzer: Analyzer) -> AnalyzeStage {
    AnalyzeStage::new(
        analyzer,
        "l2.verdicts",
        "events.dlq",
        tokio::runtime::Handle::current(),
    )
}

/// `payloads` as one batch on partition 3 through `stage`.
fn run(stage: &mut AnalyzeStage, payloads: &[Option<Vec<u8>>]) -> Vec<OutRecord> {
    let batch: Vec<InRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| InRecord {
            topic: "l2.requests",
            partition: 3,
            offset: i as i64,
            key: None,
            payload: p.as_deref(),
            timestamp_ms: None,
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    out
}

fn verdict_of(record: &OutRecord) -> Verdict {
    RecordCodec::<Verdict>::new()
        .decode(record.payload.as_deref().unwrap())
        .unwrap()
}

fn requests(accounts: &[&str]) -> Vec<Option<Vec<u8>>> {
    let codec = RecordCodec::<L2Request>::new();
    accounts
        .iter()
        .map(|a| Some(codec.encode(&request(a, 60_000, None))))
        .collect()
}

#[test]
fn verdicts_keep_the_request_order_and_dead_letters_keep_their_slots() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let mut s = stage(Analyzer::Fallback);
    let mut batch = requests(&["a", "b", "c"]);
    batch.insert(1, Some(b"not avro".to_vec()));
    batch.push(None);
    let out = run(&mut s, &batch);
    let topics: Vec<&str> = out.iter().map(|o| o.topic.as_str()).collect();
    assert_eq!(
        topics,
        [
            "l2.verdicts",
            "events.dlq",
            "l2.verdicts",
            "l2.verdicts",
            "events.dlq"
        ]
    );
    let targets: Vec<String> = out
        .iter()
        .filter(|o| o.topic == "l2.verdicts")
        .map(|o| verdict_of(o).target_id)
        .collect();
    assert_eq!(targets, ["a", "b", "c"]);
    for o in out.iter().filter(|o| o.topic == "l2.verdicts") {
        assert_eq!(o.partition, Some(3), "co-partitioned with the request");
        let v = verdict_of(o);
        assert_eq!(o.key.as_deref(), Some(v.target_id.as_bytes()));
        assert_eq!(v.fallback_reason.as_deref(), Some("no_model"));
    }
    for dead in [&out[1], &out[4]] {
        let header = |name: &str| {
            dead.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        };
        assert_eq!(header("kusanagi.dlq.stage").as_deref(), Some(STAGE));
        assert_eq!(
            header("kusanagi.dlq.reason").as_deref(),
            Some("undecodable")
        );
        assert_eq!(
            header("kusanagi.dlq.source.topic").as_deref(),
            Some("l2.requests")
        );
    }
    assert_eq!(s.stats().verdicts, 3);
    assert_eq!(s.stats().fallbacks.get("no_model"), Some(&3));
}

#[test]
fn a_model_that_cannot_be_reached_gets_the_fallback_for_every_request_in_order() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    // Nothing listens on port 9 of the loopback: every call is refused.
    let client = LlmClient::new(LlmConfig {
        provider: Provider::OpenAi,
        base_url: "http://127.0.0.1:9/v1".into(),
        model: "m".into(),
        api_key: None,
        requests_per_second: NonZeroU32::new(1000).unwrap(),
        burst: NonZeroU32::new(1000).unwrap(),
        max_concurrency: 4,
        timeout: Duration::from_secs(2),
        max_retries: 0,
        backoff: Duration::from_millis(1),
        max_output_tokens: 100,
    })
    .unwrap();
    let mut s = stage(Analyzer::model(client, 4, 100, Duration::from_secs(60)));
    let accounts = ["a", "b", "c", "d", "e", "f"];
    let out = run(&mut s, &requests(&accounts));
    let verdicts: Vec<Verdict> = out.iter().map(verdict_of).collect();
    let targets: Vec<&str> = verdicts.iter().map(|v| v.target_id.as_str()).collect();
    assert_eq!(targets, accounts);
    for v in &verdicts {
        assert_eq!(v.fallback_reason.as_deref(), Some("transport"), "{v:?}");
        assert!(v.is_fraud, "R2 and R4 with 12 senders score above 30");
    }
    assert_eq!(
        s.stats().model + s.stats().cache_hits,
        0,
        "failures are never cached"
    );
    assert_eq!(s.stats().fallbacks.get("transport"), Some(&6));
}
