//! Every route walked with no key, a wrong key, each role and another
//! tenant's key, against the router a process serves.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_schemas::{Account, AccountState, EventTime, GameEventCodec};
use tower::ServiceExt;

use super::auth::hash_key;
use super::{EventsApi, Keys, ROUTES, Services, router};
use crate::config::{KeyConfig, Role};
use crate::runtime::Metrics;
use crate::stages::view::View;

fn key(name: &str, roles: &[Role], tenant: Option<&str>) -> KeyConfig {
    KeyConfig {
        name: name.into(),
        sha256: hash_key(&format!("key-{name}")),
        roles: roles.to_vec(),
        tenant: tenant.map(str::to_owned),
    }
}

fn moved(account: &str, tenant: &str, version: i64) -> kusanagi_schemas::Transition {
    kusanagi_schemas::Transition {
        account_id: account.into(),
        tenant_id: tenant.into(),
        version,
        from_state: AccountState::Normal,
        to_state: AccountState::RestrictedWithdrawal,
        trigger: kusanagi_schemas::Trigger::L1Screening,
        rule: "R1".into(),
        event_time: EventTime::from_micros(0),
        source_id: format!("e{version}"),
        evidence: String::new(),
        applied: true,
        refusal: None,
    }
}

fn app() -> axum::Router {
    let keys = Keys::of(vec![
        key("admin", &[Role::Admin], None),
        key("operator", &[Role::Operator], None),
        key("viewer", &[Role::Viewer], None),
        key("producer", &[Role::Producer], Some("game-a")),
        key("service", &[Role::Service], Some("game-a")),
        key(
            "other-tenant",
            &[Role::Viewer, Role::Service, Role::Producer],
            Some("game-b"),
        ),
    ]);
    let view = Arc::new(View::new(10));
    let mut a = Account::new("acct-1", "game-a", EventTime::from_micros(1_000_000));
    a.state = AccountState::RestrictedWithdrawal;
    a.version = 1;
    view.write().apply_account("acct-1", Some(a));
    view.write()
        .apply_transition(moved("acct-1", "game-a", 1), 1_000_000);
    let gone = Account::new("acct-gone", "game-a", EventTime::from_micros(0));
    view.write().apply_account("acct-gone", Some(gone));
    view.write().erase("acct-gone", 1_795_000_000_000);
    view.set_ready(true);
    let metrics = Metrics::new();
    // Never reached: every events request below is refused or invalid.
    let producer = KafkaSettings::new("127.0.0.1:1")
        .producer_config()
        .create()
        .unwrap();
    let events = EventsApi {
        producer,
        codec: GameEventCodec::new(),
        topic: "events".into(),
        max_event_bytes: 1 << 20,
        max_batch_events: 10,
        metrics: metrics.clone(),
    };
    router(Services {
        metrics,
        keys: Arc::new(keys),
        events: Some(Arc::new(events)),
        view: Some(Arc::clone(&view)),
        erasures: Some(Arc::new(super::ErasuresApi {
            producer: KafkaSettings::new("127.0.0.1:1")
                .producer_config()
                .create()
                .unwrap(),
            topic: "erasures".into(),
            metrics: Metrics::new(),
        })),
        overrides: Some(Arc::new(super::OverridesApi {
            producer: KafkaSettings::new("127.0.0.1:1")
                .producer_config()
                .create()
                .unwrap(),
            verdicts: "l2.verdicts".into(),
            audit: "audit".into(),
            view: Arc::clone(&view),
            metrics: Metrics::new(),
        })),
        max_body_bytes: 1 << 20,
    })
}

async fn call(app: &axum::Router, method: &str, uri: &str, key: Option<&str>) -> (u16, String) {
    let body = match uri {
        "/api/v1/events" => Body::from("not json"),
        "/api/v1/withdrawals/check" => Body::from(r#"{"account_id":"acct-1"}"#),
        "/api/v1/erasures" => Body::from("not json"),
        _ => Body::empty(),
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// What each caller gets from each route, written out (not derived from
/// `ROUTES`): 401 no or wrong key, 403 role missing, else the route's own
/// answer for the account `acct-1` of tenant `game-a` (RESTRICTED).
const EXPECTED: &[(&str, &str, [u16; 8])] = &[
    // route, uri: none, wrong, admin, operator, viewer, producer, service, other-tenant
    (
        "/api/v1/events",
        "/api/v1/events",
        [401, 401, 400, 403, 403, 400, 403, 400],
    ),
    (
        "/api/v1/accounts/{id}",
        "/api/v1/accounts/acct-1",
        [401, 401, 200, 200, 200, 403, 200, 404],
    ),
    (
        "/api/v1/accounts/{id}/at",
        "/api/v1/accounts/acct-1/at?time=2026-11-29T00:00:00Z",
        [401, 401, 200, 200, 200, 403, 200, 404],
    ),
    (
        "/api/v1/accounts/{id}/versions",
        "/api/v1/accounts/acct-1/versions",
        [401, 401, 200, 200, 200, 403, 200, 404],
    ),
    (
        "/api/v1/withdrawals/check",
        "/api/v1/withdrawals/check",
        [401, 401, 423, 423, 403, 403, 423, 200],
    ),
    // Operators' verdicts: a role of its own; a body is needed.
    (
        "/api/v1/accounts/{id}/verdict",
        "/api/v1/accounts/acct-1/verdict",
        [401, 401, 400, 400, 403, 403, 403, 403],
    ),
    // Erasures are the admin's alone.
    (
        "/api/v1/erasures",
        "/api/v1/erasures",
        [401, 401, 400, 403, 403, 403, 403, 403],
    ),
    // A tenant-bound key sees no cross-tenant figures.
    (
        "/metrics",
        "/metrics",
        [401, 401, 200, 200, 200, 403, 403, 403],
    ),
];

const CALLERS: [Option<&str>; 8] = [
    None,
    Some("wrong"),
    Some("key-admin"),
    Some("key-operator"),
    Some("key-viewer"),
    Some("key-producer"),
    Some("key-service"),
    Some("key-other-tenant"),
];

#[tokio::test]
async fn every_route_answers_each_caller_as_its_roles_and_tenant_allow() {
    let app = app();
    for access in ROUTES {
        assert!(
            EXPECTED.iter().any(|(path, ..)| *path == access.path),
            "{} is not walked by this test",
            access.path
        );
    }
    for (path, uri, want) in EXPECTED {
        let method = ROUTES.iter().find(|r| r.path == *path).unwrap().method;
        for (caller, want) in CALLERS.iter().zip(want) {
            let (status, body) = call(&app, method, uri, *caller).await;
            assert_eq!(status, *want, "{method} {uri} with {caller:?}: {body}");
            match status {
                401 => assert!(body.contains("unauthorized"), "{body}"),
                403 if *path != "/api/v1/withdrawals/check" || *caller == Some("key-viewer") => {
                    assert!(body.contains("forbidden"), "{body}")
                }
                _ => {}
            }
        }
    }
    // The health checks alone need no key.
    assert_eq!(call(&app, "GET", "/healthz", None).await.0, 200);
    assert_eq!(call(&app, "GET", "/healthz/ready", None).await.0, 200);
}

#[tokio::test]
async fn a_key_is_also_read_from_a_bearer_header_and_a_hash_is_no_key() {
    let app = app();
    let req = |auth: &str| {
        Request::builder()
            .uri("/api/v1/accounts/acct-1")
            .header("authorization", auth)
            .body(Body::empty())
            .unwrap()
    };
    let ok = app.clone().oneshot(req("Bearer key-viewer")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let hashed = format!("Bearer {}", hash_key("key-viewer"));
    let no = app.clone().oneshot(req(&hashed)).await.unwrap();
    assert_eq!(no.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_tenant_producer_cannot_publish_another_tenants_events() {
    let app = app();
    let event = r#"{"event_id":"e1","timestamp":"2099-01-01T00:00:00Z","actor_id":"a","target_id":"t","tenant_id":"game-b","action_details":{"currency_amount":1}}"#;
    let req = Request::builder()
        .method("POST")
        .uri("/api/v1/events")
        .header("x-api-key", "key-producer")
        .body(Body::from(event))
        .unwrap();
    let resp = app.oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "foreign_tenant");
    assert_eq!(v["errors"][0]["field"], "tenant_id");
}

#[tokio::test]
async fn bad_times_and_ranges_are_named_and_a_rebuilding_copy_answers_503() {
    let app = app();
    let admin = Some("key-admin");
    for (uri, error) in [
        ("/api/v1/accounts/acct-1/at", "missing_time"),
        ("/api/v1/accounts/acct-1/at?time=yesterday", "invalid_time"),
        ("/api/v1/accounts/acct-1/versions?from=x", "invalid_time"),
        (
            "/api/v1/accounts/acct-1/versions?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
            "invalid_range",
        ),
    ] {
        let (status, body) = call(&app, "GET", uri, admin).await;
        assert_eq!(status, 400, "{uri}: {body}");
        assert!(body.contains(error), "{uri}: {body}");
    }
    let (status, body) = call(&app, "GET", "/api/v1/accounts/nobody", admin).await;
    assert_eq!((status, body.contains("not_found")), (404, true), "{body}");
    // Milliseconds since the epoch are a time too.
    let (status, body) = call(&app, "GET", "/api/v1/accounts/acct-1/at?time=0", admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""state":"NORMAL""#), "{body}");

    let keys = Keys::of(vec![key("admin", &[Role::Admin], None)]);
    let rebuilding = router(Services {
        metrics: Metrics::new(),
        keys: Arc::new(keys),
        events: None,
        view: Some(Arc::new(View::new(10))),
        erasures: None,
        overrides: None,
        max_body_bytes: 1 << 20,
    });
    for (method, uri) in [
        ("GET", "/api/v1/accounts/acct-1"),
        ("POST", "/api/v1/withdrawals/check"),
        ("GET", "/healthz/ready"),
    ] {
        let (status, body) = call(&rebuilding, method, uri, admin).await;
        assert_eq!(status, 503, "{uri}: {body}");
    }
    assert_eq!(call(&rebuilding, "GET", "/healthz", None).await.0, 200);
}

#[tokio::test]
async fn a_long_history_is_answered_in_pages() {
    let view = Arc::new(View::new(3));
    for v in 1..=5 {
        view.write().apply_transition(moved("a", "t", v), v * 1_000);
    }
    let mut a = Account::new("a", "t", EventTime::from_micros(0));
    a.version = 5;
    view.write().apply_account("a", Some(a));
    view.set_ready(true);
    let app = router(Services {
        metrics: Metrics::new(),
        keys: Arc::new(Keys::of(vec![key("admin", &[Role::Admin], None)])),
        events: None,
        view: Some(view),
        erasures: None,
        overrides: None,
        max_body_bytes: 1 << 20,
    });
    let (_, body) = call(
        &app,
        "GET",
        "/api/v1/accounts/a/versions",
        Some("key-admin"),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["versions"].as_array().unwrap().len(), 3);
    assert_eq!(v["truncated"], true);
    assert_eq!(v["next_after_version"], 3);
    let (_, body) = call(
        &app,
        "GET",
        "/api/v1/accounts/a/versions?after_version=3",
        Some("key-admin"),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let page: Vec<_> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_i64())
        .collect();
    assert_eq!(page, [Some(4), Some(5)], "the next page, by version");
    assert_eq!(v["truncated"], false);
    assert!(v.get("next_after_version").is_none());
    let (_, body) = call(
        &app,
        "GET",
        "/api/v1/accounts/a/versions?from=4000",
        Some("key-admin"),
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let versions: Vec<_> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["version"].as_i64())
        .collect();
    assert_eq!(versions, [Some(4), Some(5)]);
    assert_eq!(v["truncated"], false);
}

#[tokio::test]
async fn moves_past_the_topic_s_retention_are_not_guessed() {
    let view = Arc::new(View::new(10));
    // Versions 1 and 2 aged out of accounts.transitions; 3..=5 are held.
    for v in 3..=5 {
        view.write().apply_transition(moved("a", "t", v), v * 1_000);
    }
    let mut a = Account::new("a", "t", EventTime::from_micros(0));
    a.version = 5;
    view.write().apply_account("a", Some(a));
    view.set_ready(true);
    let app = router(Services {
        metrics: Metrics::new(),
        keys: Arc::new(Keys::of(vec![key("admin", &[Role::Admin], None)])),
        events: None,
        view: Some(view),
        erasures: None,
        overrides: None,
        max_body_bytes: 1 << 20,
    });
    let admin = Some("key-admin");
    let (status, body) = call(&app, "GET", "/api/v1/accounts/a/at?time=2500", admin).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("history_expired"), "{body}");
    let (status, body) = call(&app, "GET", "/api/v1/accounts/a/at?time=4500", admin).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""version":4"#), "{body}");
}

#[tokio::test]
async fn moves_sharing_one_time_are_paged_by_version() {
    let view = Arc::new(View::new(2));
    for v in 1..=5 {
        view.write().apply_transition(moved("a", "t", v), 7_000);
    }
    let mut a = Account::new("a", "t", EventTime::from_micros(0));
    a.version = 5;
    view.write().apply_account("a", Some(a));
    view.set_ready(true);
    let app = router(Services {
        metrics: Metrics::new(),
        keys: Arc::new(Keys::of(vec![key("admin", &[Role::Admin], None)])),
        events: None,
        view: Some(view),
        erasures: None,
        overrides: None,
        max_body_bytes: 1 << 20,
    });
    let mut seen = Vec::new();
    let mut uri = "/api/v1/accounts/a/versions".to_owned();
    for _ in 0..5 {
        let (_, body) = call(&app, "GET", &uri, Some("key-admin")).await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        seen.extend(
            v["versions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["version"].as_i64().unwrap()),
        );
        match v["next_after_version"].as_i64() {
            Some(n) => uri = format!("/api/v1/accounts/a/versions?after_version={n}"),
            None => break,
        }
    }
    assert_eq!(seen, [1, 2, 3, 4, 5], "every version once, in three pages");
}

#[tokio::test]
async fn an_erased_account_is_gone_for_its_tenant_and_unknown_to_others() {
    let app = app();
    for uri in [
        "/api/v1/accounts/acct-gone",
        "/api/v1/accounts/acct-gone/at?time=0",
        "/api/v1/accounts/acct-gone/versions",
    ] {
        let (status, body) = call(&app, "GET", uri, Some("key-admin")).await;
        assert_eq!(status, 410, "{uri}: {body}");
        assert!(body.contains("erased"), "{body}");
        assert_eq!(
            call(&app, "GET", uri, Some("key-other-tenant")).await.0,
            404
        );
    }
    let req = |key: &'static str| {
        Request::builder()
            .method("POST")
            .uri("/api/v1/withdrawals/check")
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"account_id":"acct-gone"}"#))
            .unwrap()
    };
    assert_eq!(
        app.clone()
            .oneshot(req("key-service"))
            .await
            .unwrap()
            .status(),
        410
    );
    assert_eq!(
        app.clone()
            .oneshot(req("key-other-tenant"))
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body) = call(&app, "POST", "/api/v1/erasures", Some("key-admin")).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn an_operator_verdict_needs_a_known_account_and_a_valid_body() {
    let app = app();
    let post = |uri: &str, body: &'static str| {
        Request::builder()
            .method("POST")
            .uri(uri)
            .header("x-api-key", "key-operator")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };
    let answer = |r: axum::response::Response| async move {
        let status = r.status().as_u16();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };
    let ban = r#"{"action":"BANNED","reason":"sold gold for cash","fraud_type":"RMT_DIRECT"}"#;
    for (uri, body, status, error) in [
        ("/api/v1/accounts/nobody/verdict", ban, 404, "not_found"),
        ("/api/v1/accounts/acct-gone/verdict", ban, 410, "erased"),
        (
            "/api/v1/accounts/acct-1/verdict",
            r#"{"action":"BANNED","reason":"x"}"#,
            422,
            "invalid_verdict",
        ),
        (
            "/api/v1/accounts/acct-1/verdict",
            r#"{"action":"FROZEN","reason":"x"}"#,
            400,
            "invalid_request",
        ),
    ] {
        let (got, text) = answer(app.clone().oneshot(post(uri, body)).await.unwrap()).await;
        assert_eq!(got, status, "{uri} {body}: {text}");
        assert!(text.contains(error), "{text}");
    }
}
