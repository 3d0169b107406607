//! The fake LLM provider: a local HTTP server that speaks the
//! OpenAI-compatible and Gemini protocols, injects the fault a prompt's
//! account id names, records every request body and can limit the requests
//! it admits per second.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// The fake provider's state: when each request arrived, what each said,
/// and an optional limit of requests per second beyond which it answers
/// 429.
#[derive(Default)]
pub(crate) struct Provider {
    pub(crate) arrivals: Mutex<Vec<Instant>>,
    pub(crate) received: Mutex<Vec<Received>>,
    pub(crate) limit_per_second: Option<usize>,
    pub(crate) window: Mutex<VecDeque<Instant>>,
}

/// One request body the provider received (refused ones included).
#[derive(Debug, Clone)]
pub(crate) struct Received {
    /// The body as it came over the wire.
    pub(crate) body: String,
    /// The user message's text: the case, as JSON.
    pub(crate) user: String,
}

impl Received {
    /// The case the user message states.
    pub(crate) fn case(&self) -> Value {
        serde_json::from_str(&self.user).expect("the user message is the case as JSON")
    }

    /// The case's `recent_events`.
    pub(crate) fn recent_events(&self) -> Vec<Value> {
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
    pub(crate) fn received(&self) -> Vec<Received> {
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

    pub(crate) fn calls(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    /// The most requests that arrived within one second of each other.
    /// The stage paces its sends exactly (N per second: the (N+1)th is sent
    /// a full second after the first); on a loaded machine the first can
    /// arrive a few ms late, so a window is taken as 950 ms. A stage sending
    /// even N+1 per second still puts N+1 arrivals in 950 ms.
    pub(crate) fn peak_per_second(&self) -> usize {
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
pub(crate) fn serve(provider: Arc<Provider>) -> SocketAddr {
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
