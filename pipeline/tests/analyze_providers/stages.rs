//! The stages under test, built and fed: the analyze stage configured
//! against the fake provider, the L2 requests it is given, and batches of
//! records through any stage.

use std::net::SocketAddr;
use std::time::Duration;

use kusanagi_connectors::llm::LlmClient;
use kusanagi_pipeline::runtime::{InRecord, OutRecord, Stage};
use kusanagi_pipeline::stages::analyze::{AnalyzeStage, Analyzer, ModelConfig, ProviderKind};
use kusanagi_schemas::{
    AccountState, EventTime, EvidenceEvent, L2Request, RecordCodec, Rule, RuleSet, Verdict,
    WindowProfile,
};

pub(crate) fn model(kind: ProviderKind, addr: SocketAddr, rps: u32, burst: u32) -> ModelConfig {
    let base = match kind {
        ProviderKind::Openai => format!("http://{addr}/v1"),
        ProviderKind::Gemini => format!("http://{addr}/v1beta"),
    };
    let raw = format!(
        r#"provider = "{}"
base_url = "{base}"
model = "fake-model"
requests_per_second = {rps}
burst = {burst}
max_concurrency = 8
timeout_ms = 1000
max_retries = 2
backoff_ms = 20
"#,
        match kind {
            ProviderKind::Openai => "openai",
            ProviderKind::Gemini => "gemini",
        }
    );
    toml::from_str(&raw).expect("model config")
}

pub(crate) fn model_stage(config: &ModelConfig, cache: u64) -> AnalyzeStage {
    let client = LlmClient::new(config.llm_config(|_| None)).expect("client");
    let analyzer = Analyzer::model(
        client,
        config.max_concurrency,
        cache,
        Duration::from_secs(60),
    );
    AnalyzeStage::new(analyzer, "l2.verdicts", "events.dlq", runtime())
}

/// The process's runtime, as `kusanagi run` gives the stage its own.
pub(crate) fn runtime() -> tokio::runtime::Handle {
    static RT: std::sync::LazyLock<tokio::runtime::Runtime> =
        std::sync::LazyLock::new(|| tokio::runtime::Runtime::new().expect("a tokio runtime"));
    RT.handle().clone()
}

/// 2099-01-01T00:00:00Z, in microseconds.
pub(crate) const T0: i64 = 4_070_908_800_000_000;
pub(crate) const SEC: i64 = 1_000_000;

/// A request of `account` with two evidence events, `e1` (an item sold at
/// 30x its market price) and `e2` (with chat). What the evidence shows is
/// the same for every account, so that similar profiles stay one case.
pub(crate) fn request(account: &str, n: i32) -> L2Request {
    let evidence = |id: &str, at: i64, sender: &str| EvidenceEvent {
        event_id: id.into(),
        event_time: EventTime::from_micros(at),
        amount: 30_000,
        market_avg_price: None,
        item_id: None,
        sender_id: sender.into(),
        sender_level: 2,
        sender_account_age_days: 1,
        chat: None,
    };
    L2Request {
        request_id: format!("{account}-req"),
        event_time: EventTime::from_micros(T0),
        tenant_id: "default".into(),
        target_id: account.into(),
        account_state: AccountState::RestrictedWithdrawal,
        rules: [Rule::R2, Rule::R4].into_iter().collect::<RuleSet>(),
        window: WindowProfile {
            total_received: 60_000 + i64::from(n) * 1_000,
            transaction_count: 12 + n,
            distinct_senders: 12,
        },
        evidence_event_ids: vec!["e1".into(), "e2".into()],
        evidence_events: vec![
            EvidenceEvent {
                market_avg_price: Some(1_000),
                item_id: Some("gem-pack".into()),
                ..evidence("e1", T0 - 20 * SEC, "mule-a")
            },
            EvidenceEvent {
                chat: Some("gem pack for 5k?".into()),
                ..evidence("e2", T0, "mule-b")
            },
        ],
        coalesced: 1,
    }
}

/// The partition every test's records are on.
pub(crate) const PARTITION: i32 = 4;

/// `values` on `topic` as one batch through `stage`.
pub(crate) fn run(stage: &mut dyn Stage, topic: &str, values: &[Vec<u8>]) -> Vec<OutRecord> {
    let batch: Vec<InRecord<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| InRecord {
            topic,
            partition: PARTITION,
            offset: i as i64,
            key: None,
            payload: Some(v),
            timestamp_ms: None,
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage
        .process(&batch, &mut out)
        .expect("a batch never fails, not even on a model fault");
    out
}

/// Encoded L2 requests through the analyze stage: one verdict each, on
/// `l2.verdicts`, co-partitioned.
pub(crate) fn answer(stage: &mut AnalyzeStage, payloads: &[Vec<u8>]) -> Vec<OutRecord> {
    let out = run(stage, "l2.requests", payloads);
    assert_eq!(out.len(), payloads.len(), "one verdict per request");
    assert!(
        out.iter()
            .all(|r| r.topic == "l2.verdicts" && r.partition == Some(PARTITION))
    );
    out
}

pub(crate) fn analyse(stage: &mut AnalyzeStage, requests: &[L2Request]) -> Vec<Verdict> {
    let codec = RecordCodec::<L2Request>::new();
    let payloads: Vec<Vec<u8>> = requests.iter().map(|r| codec.encode(r)).collect();
    let verdicts = RecordCodec::<Verdict>::new();
    answer(stage, &payloads)
        .iter()
        .map(|r| verdicts.decode(r.payload.as_deref().unwrap()).unwrap())
        .collect()
}
