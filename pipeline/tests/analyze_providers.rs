//! The analyze stage against a local HTTP server that speaks the
//! OpenAI-compatible and Gemini protocols and injects every fault kind: a
//! timeout, 429, 5xx, malformed JSON, schema-violating JSON, the context
//! length and the token limit. Every request gets a verdict; a fault gets
//! the fallback's, which says why. Under a provider limited to N
//! requests/s, the stage never sends more than N in any second.

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
use kusanagi_pipeline::runtime::{InRecord, Stage};
use kusanagi_pipeline::stages::analyze::{AnalyzeStage, Analyzer, ModelConfig, ProviderKind};
use kusanagi_schemas::{
    AccountState, EventTime, FraudType, L2Request, RecordCodec, Rule, RuleSet, Verdict,
    WindowProfile,
};
use serde_json::{Value, json};

/// The fake provider's state: when each request arrived, and an optional
/// limit of requests per second beyond which it answers 429.
#[derive(Default)]
struct Provider {
    arrivals: Mutex<Vec<Instant>>,
    limit_per_second: Option<usize>,
    window: Mutex<VecDeque<Instant>>,
}

impl Provider {
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

/// The account id inside a prompt names the behaviour wanted.
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
    "ok"
}

fn judgment() -> Value {
    json!({"is_fraud": true, "risk_score": 88, "fraud_type": "RMT_SMURFING",
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
    if !p.admit() {
        return (StatusCode::TOO_MANY_REQUESTS, "rate limit").into_response();
    }
    let request: Value = serde_json::from_str(&body).expect("JSON request");
    assert_eq!(
        request["response_format"]["type"], "json_schema",
        "asks for schema-constrained JSON"
    );
    let user = request["messages"][1]["content"]
        .as_str()
        .unwrap_or("")
        .to_owned();
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
        _ => (judgment().to_string(), "stop"),
    };
    axum::Json(json!({"choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": content}}]})).into_response()
}

async fn gemini(
    State(p): State<Arc<Provider>>,
    Path(action): Path<String>,
    body: String,
) -> Response {
    if !p.admit() {
        return (StatusCode::TOO_MANY_REQUESTS, "quota").into_response();
    }
    assert!(action.ends_with(":generateContent"), "{action}");
    let request: Value = serde_json::from_str(&body).expect("JSON request");
    assert_eq!(
        request["generationConfig"]["responseMimeType"],
        "application/json"
    );
    let user = request["contents"][0]["parts"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_owned();
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
        _ => (judgment().to_string(), "STOP"),
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
    AnalyzeStage::new(analyzer, "l2.verdicts", "events.dlq").expect("stage")
}

fn request(account: &str, n: i32) -> L2Request {
    L2Request {
        request_id: format!("{account}-req"),
        event_time: EventTime::from_micros(4_070_908_800_000_000),
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
        evidence_events: vec![],
        coalesced: 1,
    }
}

fn analyse(stage: &mut AnalyzeStage, requests: &[L2Request]) -> Vec<Verdict> {
    let codec = RecordCodec::<L2Request>::new();
    let payloads: Vec<Vec<u8>> = requests.iter().map(|r| codec.encode(r)).collect();
    let batch: Vec<InRecord<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| InRecord {
            topic: "l2.requests",
            partition: 4,
            offset: i as i64,
            key: None,
            payload: Some(p),
            timestamp_ms: None,
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage
        .process(&batch, &mut out)
        .expect("a batch never fails on a model fault");
    assert_eq!(out.len(), requests.len(), "one verdict per request");
    assert!(
        out.iter()
            .all(|r| r.topic == "l2.verdicts" && r.partition == Some(4))
    );
    let verdicts = RecordCodec::<Verdict>::new();
    out.iter()
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
    let mut stage = AnalyzeStage::new(Analyzer::Fallback, "l2.verdicts", "events.dlq").unwrap();
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
