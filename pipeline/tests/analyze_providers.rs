//! The analyze stage against a local HTTP server that speaks the
//! OpenAI-compatible and Gemini protocols and injects every fault kind: a
//! timeout, 429, 5xx, malformed JSON, schema-violating JSON, the context
//! length and the token limit. Every request gets a verdict; a fault gets
//! the fallback's, which says why. Under a provider limited to N
//! requests/s, the stage never sends more than N in any second.
//!
//! The provider records every request body it receives, so the tests also
//! show what a model is told: events screened and decided by the real
//! screen and decide stages (in this process, no broker) reach it as the
//! case's `recent_events`, with the senders' chat, and with no chat at all
//! when the tenant's `include_chat` is off.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kusanagi_connectors::llm::LlmClient;
use kusanagi_pipeline::runtime::{InRecord, NoHistory, OutRecord, Stage};
use kusanagi_pipeline::stages::analyze::{AnalyzeStage, Analyzer, ModelConfig, ProviderKind};
use kusanagi_pipeline::stages::decide::{DecideStage, DecideTopics};
use kusanagi_pipeline::stages::screen::{ScreenConfig, ScreenStage, TenantEvidence};
use kusanagi_schemas::{
    AccountState, ActionDetails, ContextMetadata, EventTime, EvidenceEvent, FraudType, GameEvent,
    GameEventCodec, L2Request, RecordCodec, Rule, RuleSet, Verdict, WindowProfile,
};
use serde_json::{Value, json};

/// The fake provider's state: when each request arrived, what each said,
/// and an optional limit of requests per second beyond which it answers
/// 429.
#[derive(Default)]
struct Provider {
    arrivals: Mutex<Vec<Instant>>,
    received: Mutex<Vec<Received>>,
    limit_per_second: Option<usize>,
    window: Mutex<VecDeque<Instant>>,
}

/// One request body the provider received (refused ones included).
#[derive(Debug, Clone)]
struct Received {
    /// The body as it came over the wire.
    body: String,
    /// The user message's text: the case, as JSON.
    user: String,
}

impl Received {
    /// The case the user message states.
    fn case(&self) -> Value {
        serde_json::from_str(&self.user).expect("the user message is the case as JSON")
    }

    /// The case's `recent_events`.
    fn recent_events(&self) -> Vec<Value> {
        self.case()["recent_events"]
            .as_array()
            .unwrap_or_else(|| panic!("no recent_events in the case: {}", self.user))
            .clone()
    }
}

impl Provider {
    fn record(&self, body: &str, user: &str) {
        self.received.lock().unwrap().push(Received {
            body: body.to_owned(),
            user: user.to_owned(),
        });
    }

    /// Every request body received so far, in arrival order.
    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn admit(&self) -> bool {
        let now = Instant::now();
        self.arrivals.lock().unwrap().push(now);
        let Some(limit) = self.limit_per_second else {
            return true;
        };
        let mut w = self.window.lock().unwrap();
        while w
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            w.pop_front();
        }
        if w.len() >= limit {
            return false;
        }
        w.push_back(now);
        true
    }

    fn calls(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// The most requests that arrived within any one second.
    /// The most requests that arrived within one second of each other.
    /// The stage paces its sends exactly (N per second: the (N+1)th is sent
    /// a full second after the first); on a loaded machine the first can
    /// arrive a few ms late, so a window is taken as 950 ms. A stage sending
    /// even N+1 per second still puts N+1 arrivals in 950 ms.
    fn peak_per_second(&self) -> usize {
        let a = self.arrivals.lock().unwrap();
        (0..a.len())
            .map(|i| {
                a[i..]
                    .iter()
                    .take_while(|t| t.duration_since(a[i]) < Duration::from_millis(950))
                    .count()
            })
            .max()
            .unwrap_or(0)
    }
}

/// The account id inside a prompt names the behaviour wanted: a fault
/// (`fault-<kind>`), a surveillance answer (`surveil-`), else a ban.
fn behaviour(prompt: &str) -> &'static str {
    for fault in [
        "timeout",
        "429",
        "500",
        "malformed",
        "schema",
        "context",
        "tokens",
    ] {
        if prompt.contains(&format!("fault-{fault}")) {
            return fault;
        }
    }
    if prompt.contains("surveil-") {
        return "surveil";
    }
    "ok"
}

/// The model's answer: a ban (risk 88), or surveillance (risk 50) for a
/// `surveil-` account, which leaves it open to the request its verdict
/// releases.
fn judgment(kind: &str) -> Value {
    let risk = if kind == "surveil" { 50 } else { 88 };
    json!({"is_fraud": true, "risk_score": risk, "fraud_type": "RMT_SMURFING",
           "reasoning": "twelve mules in two minutes", "evidence_event_ids": ["e1", "invented"], "confidence": 0.91})
}

async fn fault(kind: &str) -> Option<Response> {
    match kind {
        "timeout" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            None
        }
        "429" => Some(
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "0")],
                "slow down",
            )
                .into_response(),
        ),
        "500" => Some((StatusCode::INTERNAL_SERVER_ERROR, "upstream overloaded").into_response()),
        _ => None,
    }
}

async fn openai(State(p): State<Arc<Provider>>, body: String) -> Response {
    let admitted = p.admit();
    let request: Value = serde_json::from_str(&body).expect("JSON request");
    let user = request["messages"][1]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    p.record(&body, &user);
    if !admitted {
        return (StatusCode::TOO_MANY_REQUESTS, "rate limit").into_response();
    }
    assert_eq!(
        request["response_format"]["type"], "json_schema",
        "asks for schema-constrained JSON"
    );
    assert_eq!(request["messages"][1]["role"], "user");
    let kind = behaviour(&user);
    if let Some(r) = fault(kind).await {
        return r;
    }
    let (content, finish) = match kind {
        "malformed" => ("{\"is_fraud\": tru".to_owned(), "stop"),
        "schema" => (
            json!({"is_fraud": true, "risk_score": 250}).to_string(),
            "stop",
        ),
        "tokens" => ("{\"is_fraud\": true, \"risk".to_owned(), "length"),
        "context" => {
            let e = json!({"error": {"code": "context_length_exceeded", "message": "This model's maximum context length is 8192 tokens"}});
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        _ => (judgment(kind).to_string(), "stop"),
    };
    axum::Json(json!({"choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}]})).into_response()
}

async fn gemini(
    State(p): State<Arc<Provider>>,
    Path(action): Path<String>,
    body: String,
) -> Response {
    let admitted = p.admit();
    let request: Value = serde_json::from_str(&body).expect("JSON request");
    let user = request["contents"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    p.record(&body, &user);
    if !admitted {
        return (StatusCode::TOO_MANY_REQUESTS, "quota").into_response();
    }
    assert!(action.ends_with(":generateContent"), "{action}");
    assert_eq!(
        request["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(request["contents"][0]["role"], "user");
    let kind = behaviour(&user);
    if let Some(r) = fault(kind).await {
        return r;
    }
    let (text, finish) = match kind {
        "malformed" => ("not json at all".to_owned(), "STOP"),
        "schema" => (json!({"is_fraud": "maybe"}).to_string(), "STOP"),
        "tokens" => ("{\"is_fraud\"".to_owned(), "MAX_TOKENS"),
        "context" => {
            let e = json!({"error": {"code": 400, "message": "The input token count exceeds the maximum number of tokens allowed"}});
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        _ => (judgment(kind).to_string(), "STOP"),
    };
    axum::Json(
        json!({"candidates": [{"finishReason": finish, "content": {"parts": [{"text": text}]}}]}),
    )
    .into_response()
}

/// Starts the fake provider on 127.0.0.1:0 in its own runtime thread.
fn serve(provider: Arc<Provider>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/v1/chat/completions", post(openai))
                .route("/v1beta/models/{action}", post(gemini))
                .with_state(provider);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn model(kind: ProviderKind, addr: SocketAddr, rps: u32, burst: u32) -> ModelConfig {
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

fn model_stage(config: &ModelConfig, cache: u64) -> AnalyzeStage {
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
fn runtime() -> tokio::runtime::Handle {
    static RT: std::sync::LazyLock<tokio::runtime::Runtime> =
        std::sync::LazyLock::new(|| tokio::runtime::Runtime::new().expect("a tokio runtime"));
    RT.handle().clone()
}

/// 2099-01-01T00:00:00Z, in microseconds.
const T0: i64 = 4_070_908_800_000_000;
const SEC: i64 = 1_000_000;

/// A request of `account` with two evidence events, `e1` (an item sold at
/// 30x its market price) and `e2` (with chat). What the evidence shows is
/// the same for every account, so that similar profiles stay one case.
fn request(account: &str, n: i32) -> L2Request {
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
const PARTITION: i32 = 4;

/// `values` on `topic` as one batch through `stage`.
fn run(stage: &mut dyn Stage, topic: &str, values: &[Vec<u8>]) -> Vec<OutRecord> {
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
fn answer(stage: &mut AnalyzeStage, payloads: &[Vec<u8>]) -> Vec<OutRecord> {
    let out = run(stage, "l2.requests", payloads);
    assert_eq!(out.len(), payloads.len(), "one verdict per request");
    assert!(
        out.iter()
            .all(|r| r.topic == "l2.verdicts" && r.partition == Some(PARTITION))
    );
    out
}

fn analyse(stage: &mut AnalyzeStage, requests: &[L2Request]) -> Vec<Verdict> {
    let codec = RecordCodec::<L2Request>::new();
    let payloads: Vec<Vec<u8>> = requests.iter().map(|r| codec.encode(r)).collect();
    let verdicts = RecordCodec::<Verdict>::new();
    answer(stage, &payloads)
        .iter()
        .map(|r| verdicts.decode(r.payload.as_deref().unwrap()).unwrap())
        .collect()
}

fn every_fault_gets_a_fallback_that_says_why(kind: ProviderKind) {
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let mut stage = model_stage(&model(kind, addr, 1_000, 1_000), 0);
    let faults = [
        ("timeout", "timeout"),
        ("429", "rate_limited"),
        ("500", "server_error"),
        ("malformed", "malformed_json"),
        ("schema", "schema_violation"),
        ("context", "context_length"),
        ("tokens", "token_limit"),
    ];
    let mut requests: Vec<L2Request> = faults
        .iter()
        .enumerate()
        .map(|(i, (f, _))| request(&format!("fault-{f}-{i}"), i as i32))
        .collect();
    requests.push(request("acct-ok", 99));
    let verdicts = analyse(&mut stage, &requests);
    for ((fault, reason), v) in faults.iter().zip(&verdicts) {
        assert_eq!(
            v.fallback_reason.as_deref(),
            Some(*reason),
            "{kind:?} {fault}: {}",
            v.reasoning
        );
        assert_eq!(v.analyzer, "fallback");
        assert!(v.reasoning.contains(reason), "{}", v.reasoning);
        // R2 + R4 with 12 senders: 20 + 30 + 15.
        assert_eq!(
            (v.risk_score, v.fraud_type, v.recommended_action),
            (65, FraudType::RmtSmurfing, AccountState::UnderSurveillance)
        );
    }
    let ok = verdicts.last().unwrap();
    let name = match kind {
        ProviderKind::Openai => "openai:fake-model",
        ProviderKind::Gemini => "gemini:fake-model",
    };
    assert_eq!(
        (ok.analyzer.as_str(), ok.fallback_reason.as_deref()),
        (name, None)
    );
    assert_eq!(
        (ok.risk_score, ok.recommended_action),
        (88, AccountState::Banned)
    );
    assert_eq!(
        ok.evidence_event_ids,
        ["e1"],
        "an invented evidence id is dropped"
    );
    // 429 and 500 were retried twice each: 3 attempts; the rest once.
    assert_eq!(provider.calls(), 3 + 3 + 6, "{kind:?} attempts");
    // Every attempt told the model the request's evidence events.
    let received = provider.received();
    assert_eq!(received.len(), provider.calls());
    for r in &received {
        let events = r.recent_events();
        let ids: Vec<&str> = events
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["e1", "e2"], "{kind:?}: {}", r.user);
        assert_eq!(events[0]["market_avg_price"], 1_000);
        assert_eq!(events[1]["chat"], "gem pack for 5k?");
    }
}

#[test]
fn every_fault_gets_a_fallback_that_says_why_openai() {
    every_fault_gets_a_fallback_that_says_why(ProviderKind::Openai);
}

#[test]
fn every_fault_gets_a_fallback_that_says_why_gemini() {
    every_fault_gets_a_fallback_that_says_why(ProviderKind::Gemini);
}

#[test]
fn similar_profiles_are_answered_from_the_cache() {
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let mut stage = model_stage(&model(ProviderKind::Openai, addr, 1_000, 1_000), 100);
    let first = analyse(&mut stage, &[request("acct-a", 1)]);
    // Another account, same rules and counts, a total within two significant digits.
    let mut similar = request("acct-b", 1);
    similar.window.total_received += 400;
    let second = analyse(&mut stage, &[similar]);
    assert_eq!(
        provider.calls(),
        1,
        "the second request was not re-analysed"
    );
    assert_eq!(second[0].target_id, "acct-b");
    assert_eq!(second[0].request_id, "acct-b-req");
    assert_eq!(second[0].risk_score, first[0].risk_score);
    assert_eq!(stage.stats().cache_hits, 1);
    analyse(&mut stage, &[request("acct-c", 7)]);
    assert_eq!(provider.calls(), 2, "a different profile is analysed");
}

#[test]
fn chat_written_before_a_tenant_turned_it_off_does_not_reach_the_model() {
    // A request already on `l2.requests` with chat, for a tenant whose
    // include_chat is now off: the analyze stage leaves the chat out.
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let mut off = kusanagi_pipeline::stages::screen::EvidenceConfig::default();
    off.tenants.insert(
        "default".into(),
        TenantEvidence {
            include_chat: false,
        },
    );
    let mut stage =
        model_stage(&model(ProviderKind::Openai, addr, 1_000, 1_000), 0).with_evidence(off);
    let with_chat = request("acct-old", 1);
    assert!(with_chat.evidence_events.iter().any(|e| e.chat.is_some()));
    analyse(&mut stage, &[with_chat]);
    let received = provider.received();
    assert_eq!(received.len(), 1);
    assert!(
        !received[0].body.contains("gem pack for 5k"),
        "{}",
        received[0].body
    );
    assert_eq!(
        received[0].recent_events().len(),
        2,
        "the events are still there"
    );
}

#[test]
fn the_stage_never_exceeds_the_providers_rate_and_loses_no_request() {
    const N: u32 = 5;
    let provider = Arc::new(Provider {
        limit_per_second: Some(N as usize),
        ..Provider::default()
    });
    let addr = serve(provider.clone());
    let mut stage = model_stage(&model(ProviderKind::Openai, addr, N, 1), 0);
    // Open the connection first, so that its setup does not delay one
    // request into the next one's second; then count from a clean slate.
    analyse(&mut stage, &[request("acct-warm", 99)]);
    std::thread::sleep(Duration::from_millis(1_100));
    provider.arrivals.lock().unwrap().clear();
    let requests: Vec<L2Request> = (0..15).map(|i| request(&format!("acct-{i}"), i)).collect();
    let started = Instant::now();
    let verdicts = analyse(&mut stage, &requests);
    let took = started.elapsed();
    assert_eq!(verdicts.len(), 15);
    assert!(
        provider.peak_per_second() <= N as usize,
        "peak {} requests in one second",
        provider.peak_per_second()
    );
    assert!(
        verdicts.iter().all(|v| v.fallback_reason.is_none()),
        "paced at the provider's rate, nothing was refused"
    );
    assert!(
        took >= Duration::from_millis(2_500),
        "15 requests at 5/s take about 3 s, took {took:?}"
    );
    eprintln!(
        "15 requests at {N}/s: {took:?}, peak {} per second",
        provider.peak_per_second()
    );

    // A stage configured faster than the provider allows: the provider
    // refuses the excess, the stage retries, and what still fails gets the
    // fallback, which says why. Nothing is lost.
    let provider = Arc::new(Provider {
        limit_per_second: Some(2),
        ..Provider::default()
    });
    let addr = serve(provider.clone());
    let mut config = model(ProviderKind::Openai, addr, 50, 50);
    config.max_retries = 1;
    let mut stage = model_stage(&config, 0);
    let verdicts = analyse(&mut stage, &requests);
    let limited = verdicts
        .iter()
        .filter(|v| v.fallback_reason.as_deref() == Some("rate_limited"))
        .count();
    let answered = verdicts
        .iter()
        .filter(|v| v.fallback_reason.is_none())
        .count();
    assert_eq!(limited + answered, 15, "every request has a verdict");
    assert!(
        limited > 0 && answered > 0,
        "{limited} rate limited, {answered} answered"
    );
}

#[test]
fn an_undecodable_request_is_dead_lettered_and_the_rest_answered() {
    let mut stage = AnalyzeStage::new(Analyzer::Fallback, "l2.verdicts", "events.dlq", runtime());
    let good = RecordCodec::<L2Request>::new().encode(&request("acct-1", 1));
    let batch = [
        InRecord {
            topic: "l2.requests",
            partition: 0,
            offset: 0,
            key: None,
            payload: Some(b"junk"),
            timestamp_ms: None,
            trace: None,
        },
        InRecord {
            topic: "l2.requests",
            partition: 0,
            offset: 1,
            key: None,
            payload: Some(&good),
            timestamp_ms: None,
            trace: None,
        },
    ];
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].topic, "events.dlq");
    let reason = out[0]
        .headers
        .iter()
        .find(|(k, _)| k == "kusanagi.dlq.reason")
        .unwrap();
    assert_eq!(reason.1, b"undecodable");
    let v = RecordCodec::<Verdict>::new()
        .decode(out[1].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        (v.target_id.as_str(), v.fallback_reason.as_deref()),
        ("acct-1", Some("no_model"))
    );
}

/// The fan-in's tenant and receiving account (`surveil-`: the fake model
/// answers surveillance, which leaves the account open to a second request).
const TENANT: &str = "kids-game";
const TARGET: &str = "surveil-fanin";
/// RMT slang, which R4 fires on: "please transfer to my bank account".
const SLANG: &str = "口座に振込おねがい";
/// Innocent chat, which no rule fires on.
const INNOCENT: &str = "いつもありがとう、またクエスト行こう";

/// A fan-in: 12 fresh low-level senders pay `TARGET` within 2 minutes (one
/// every 10 s). `fanin-04`'s sender asks for a bank transfer (R4),
/// `fanin-09`'s says thanks, the even ones sell a `gem-pack` with a known
/// market price. R2 (10 events in the window) fires from `fanin-10` on.
fn fan_in() -> Vec<GameEvent> {
    (1..=12i64)
        .map(|i| GameEvent {
            event_id: format!("fanin-{i:02}"),
            timestamp: EventTime::from_micros(T0 + (i - 1) * 10 * SEC),
            event_type: "TRADE".into(),
            actor_id: format!("mule-{i:02}"),
            target_id: TARGET.into(),
            action_details: ActionDetails {
                currency_amount: 5_000 + i * 100,
                item_id: (i % 2 == 0).then(|| "gem-pack".into()),
                market_avg_price: (i % 2 == 0).then_some(1_200),
            },
            context_metadata: ContextMetadata {
                actor_level: 1 + (i % 3) as i32,
                account_age_days: i as i32,
                recent_chat_log: match i {
                    4 => Some(SLANG.into()),
                    9 => Some(INNOCENT.into()),
                    _ => None,
                },
            },
            tenant_id: TENANT.into(),
        })
        .collect()
}

/// What the case should say of `e` among its `recent_events`: every key
/// that has a value, `chat` only `with_chat`.
fn as_recent_event(e: &GameEvent, with_chat: bool) -> Value {
    let mut o = json!({
        "event_id": e.event_id,
        "time": e.timestamp.to_rfc3339(),
        "amount": e.action_details.currency_amount,
        "sender_id": e.actor_id,
        "sender_level": e.context_metadata.actor_level,
        "sender_account_age_days": e.context_metadata.account_age_days,
    });
    if let Some(price) = e.action_details.market_avg_price {
        o["market_avg_price"] = json!(price);
    }
    if let Some(item) = &e.action_details.item_id {
        o["item_id"] = json!(item);
    }
    if with_chat && let Some(chat) = &e.context_metadata.recent_chat_log {
        o["chat"] = json!(chat);
    }
    o
}

fn decide_topics() -> DecideTopics {
    DecideTopics::of(&kusanagi_pipeline::config::TopicsConfig::default())
}

/// The payloads `out` sends to `l2.requests`.
fn l2_requests(out: Vec<OutRecord>) -> Vec<Vec<u8>> {
    out.into_iter()
        .filter(|r| r.topic == "l2.requests")
        .filter_map(|r| r.payload)
        .collect()
}

/// The fan-in through the real stages, in this process: screen (with
/// `config`), decide, and analyze against the fake `kind` provider, whose
/// verdicts go back to decide. The first screened event (`fanin-04`, R4)
/// asks for L2 at once; the triggers while that is in flight (`fanin-10`
/// to `fanin-12`, R2) merge into one request, which its verdict releases.
/// Returns the two request bodies the provider received.
fn fan_in_through_the_stages(kind: ProviderKind, config: ScreenConfig) -> Vec<Received> {
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let codec = GameEventCodec::new();
    let events: Vec<Vec<u8>> = fan_in().iter().map(|e| codec.encode(e)).collect();
    let mut screen = ScreenStage::new(
        config,
        "events",
        "screenings",
        "events.dlq",
        Box::new(NoHistory),
    );
    let screenings = run(&mut screen, "events", &events);
    assert_eq!(screenings.len(), 12, "one screening per event");
    assert!(screenings.iter().all(|r| r.topic == "screenings"));
    let screenings: Vec<Vec<u8>> = screenings.into_iter().filter_map(|r| r.payload).collect();

    let mut decide = DecideStage::new(decide_topics(), Box::new(NoHistory));
    let mut analyze = model_stage(&model(kind, addr, 1_000, 1_000), 0);
    let verdicts = RecordCodec::<Verdict>::new();
    let mut requests = l2_requests(run(&mut decide, "screenings", &screenings));
    for (round, request_id) in ["fanin-04", "fanin-12"].into_iter().enumerate() {
        assert_eq!(
            requests.len(),
            1,
            "{kind:?} round {round}: one request in flight"
        );
        let answered: Vec<Vec<u8>> = answer(&mut analyze, &requests)
            .into_iter()
            .filter_map(|r| r.payload)
            .collect();
        let v = verdicts.decode(&answered[0]).unwrap();
        assert_eq!(
            (v.request_id.as_str(), v.fallback_reason.as_deref()),
            (request_id, None),
            "{kind:?} round {round}: the model answered ({})",
            v.reasoning
        );
        requests = l2_requests(run(&mut decide, "l2.verdicts", &answered));
        assert_eq!(
            decide.account(PARTITION, TARGET).unwrap().state,
            AccountState::UnderSurveillance
        );
    }
    assert!(requests.is_empty(), "nothing left to ask");
    let received = provider.received();
    assert_eq!(received.len(), 2, "{kind:?}: one body per request");
    received
}

fn the_provider_receives_the_windows_events_and_chat(kind: ProviderKind) {
    // Another tenant keeps its chat out; this one lets it in (the default).
    let mut config = ScreenConfig::default();
    config.evidence.tenants.insert(
        "other-game".into(),
        TenantEvidence {
            include_chat: false,
        },
    );
    let received = fan_in_through_the_stages(kind, config);
    let events = fan_in();

    // fanin-04's request: its window so far, itself last.
    let first = received[0].case();
    assert_eq!(
        (&first["tenant_id"], &first["account_id"]),
        (&json!(TENANT), &json!(TARGET))
    );
    assert_eq!(first["rules_fired"], json!(["R4"]));
    let expected: Vec<Value> = events[..4]
        .iter()
        .map(|e| as_recent_event(e, true))
        .collect();
    assert_eq!(received[0].recent_events(), expected, "{kind:?}");

    // The request fanin-04's verdict released: the newest trigger's
    // (fanin-12), over the union of the window's rules and its whole
    // profile, with the newest 10 of the window's 12 events, itself last.
    let second = received[1].case();
    assert_eq!(second["rules_fired"], json!(["R2", "R4"]));
    assert_eq!(
        second["window"],
        json!({"minutes": 5, "total_received": 67_800, "transaction_count": 12, "distinct_senders": 12})
    );
    assert_eq!(
        second["evidence_event_ids"],
        json!(["fanin-04", "fanin-10", "fanin-11", "fanin-12"])
    );
    assert_eq!(second["triggers_coalesced"], 3);
    let recent = received[1].recent_events();
    let expected: Vec<Value> = events[2..]
        .iter()
        .map(|e| as_recent_event(e, true))
        .collect();
    assert_eq!(recent, expected, "{kind:?}");
    // The same, spelled out.
    assert_eq!(recent.len(), 10);
    assert_eq!(
        recent[9],
        json!({"event_id": "fanin-12", "time": "2099-01-01T00:01:50Z", "amount": 6_200,
               "market_avg_price": 1_200, "item_id": "gem-pack", "sender_id": "mule-12",
               "sender_level": 1, "sender_account_age_days": 12})
    );
    assert_eq!(
        recent[0],
        json!({"event_id": "fanin-03", "time": "2099-01-01T00:00:20Z", "amount": 5_300,
               "sender_id": "mule-03", "sender_level": 1, "sender_account_age_days": 3})
    );
    assert_eq!(
        (recent[1]["event_id"].as_str(), recent[1]["chat"].as_str()),
        (Some("fanin-04"), Some(SLANG))
    );
    assert_eq!(
        (recent[6]["event_id"].as_str(), recent[6]["chat"].as_str()),
        (Some("fanin-09"), Some(INNOCENT))
    );
    assert_eq!(recent.iter().filter(|e| e.get("chat").is_some()).count(), 2);
    // And on the wire.
    assert!(received[1].body.contains(SLANG) && received[1].body.contains(INNOCENT));
}

fn no_chat_reaches_the_provider_when_the_tenant_keeps_it_out(kind: ProviderKind) {
    let mut config = ScreenConfig::default();
    config.evidence.tenants.insert(
        TENANT.into(),
        TenantEvidence {
            include_chat: false,
        },
    );
    let received = fan_in_through_the_stages(kind, config);
    let events = fan_in();
    // The rules still read the chat (R4 fired), the model gets none of it.
    assert_eq!(received[0].case()["rules_fired"], json!(["R4"]));
    for (r, window) in received.iter().zip([&events[..4], &events[2..]]) {
        for text in [SLANG, INNOCENT] {
            assert!(
                !r.body.contains(text) && !r.user.contains(text),
                "{kind:?}: {text} reached the provider: {}",
                r.body
            );
        }
        assert!(
            !r.user.contains("chat"),
            "{kind:?}: no chat key in the case: {}",
            r.user
        );
        let recent = r.recent_events();
        assert!(recent.iter().all(|e| e.get("chat").is_none()));
        // Every event is still there, with all but its chat.
        let expected: Vec<Value> = window.iter().map(|e| as_recent_event(e, false)).collect();
        assert_eq!(recent, expected, "{kind:?}");
    }
    assert_eq!(received[1].recent_events().len(), 10);
}

#[test]
fn the_provider_receives_the_windows_events_and_chat_openai() {
    the_provider_receives_the_windows_events_and_chat(ProviderKind::Openai);
}

#[test]
fn the_provider_receives_the_windows_events_and_chat_gemini() {
    the_provider_receives_the_windows_events_and_chat(ProviderKind::Gemini);
}

#[test]
fn no_chat_reaches_the_provider_when_the_tenant_keeps_it_out_openai() {
    no_chat_reaches_the_provider_when_the_tenant_keeps_it_out(ProviderKind::Openai);
}

#[test]
fn no_chat_reaches_the_provider_when_the_tenant_keeps_it_out_gemini() {
    no_chat_reaches_the_provider_when_the_tenant_keeps_it_out(ProviderKind::Gemini);
}
