//! Who may call what: each route against each caller (no key, a wrong
//! key, each role, another tenant's key), keys in a bearer header, and a
//! tenant's producer kept to its own tenant's events.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{app, call};
use crate::api::ROUTES;
use crate::api::auth::hash_key;

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
    // A named tenant: its own key and keys of every tenant; another
    // tenant's key is refused (foreign_tenant).
    (
        "/api/v1/tenants/{tenant}/accounts/{id}",
        "/api/v1/tenants/game-a/accounts/acct-1",
        [401, 401, 200, 200, 200, 403, 200, 403],
    ),
    (
        "/api/v1/tenants/{tenant}/accounts/{id}/at",
        "/api/v1/tenants/game-a/accounts/acct-1/at?time=2026-11-29T00:00:00Z",
        [401, 401, 200, 200, 200, 403, 200, 403],
    ),
    (
        "/api/v1/tenants/{tenant}/accounts/{id}/versions",
        "/api/v1/tenants/game-a/accounts/acct-1/versions",
        [401, 401, 200, 200, 200, 403, 200, 403],
    ),
    (
        "/api/v1/tenants/{tenant}/accounts/{id}/verdict",
        "/api/v1/tenants/game-a/accounts/acct-1/verdict",
        [401, 401, 400, 400, 403, 403, 403, 403],
    ),
    // Erasures are the admin's alone.
    (
        "/api/v1/erasures",
        "/api/v1/erasures",
        [401, 401, 400, 403, 403, 403, 403, 403],
    ),
    // The contract: any key.
    (
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        [401, 401, 200, 200, 200, 200, 200, 200],
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
                // Another tenant's key naming a tenant: refused for that.
                403 if path.starts_with("/api/v1/tenants/")
                    && *caller == Some("key-other-tenant")
                    && !path.ends_with("/verdict") =>
                {
                    assert!(body.contains("foreign_tenant"), "{body}")
                }
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
async fn the_same_id_in_two_tenants_is_each_tenants_own_and_ambiguous_to_a_key_of_all() {
    use kusanagi_schemas::{Account, AccountKey, AccountState, EventTime};
    let services = super::services(1_000, 1_000);
    {
        let view = services.view.as_ref().unwrap();
        let mut index = view.write();
        for (tenant, state) in [
            ("game-a", AccountState::Banned),
            ("game-b", AccountState::RestrictedWithdrawal),
        ] {
            let mut a = Account::new("shared", tenant, EventTime::from_micros(1_000_000));
            (a.state, a.version) = (state, 1);
            index.apply_account(&AccountKey::new(tenant, "shared").kafka_key(), Some(a));
        }
    }
    let app = crate::api::router(services);
    let get = |key: &'static str| {
        let app = app.clone();
        async move {
            let (status, body) = call(&app, "GET", "/api/v1/accounts/shared", Some(key)).await;
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            (status, v)
        }
    };
    // Each tenant's key names its own account.
    let (status, a) = get("key-service").await;
    assert_eq!((status, a["tenant_id"].as_str()), (200, Some("game-a")));
    assert_eq!(a["state"], "BANNED");
    let (status, b) = get("key-other-tenant").await;
    assert_eq!((status, b["tenant_id"].as_str()), (200, Some("game-b")));
    assert_eq!(b["state"], "RESTRICTED_WITHDRAWAL");
    // A key of every tenant cannot tell which: 409, naming both.
    let (status, v) = get("key-viewer").await;
    assert_eq!(
        (status, v["error"].as_str()),
        (409, Some("ambiguous_account"))
    );
    let message = v["message"].as_str().unwrap();
    assert!(message.contains("game-a, game-b"), "{message}");
    // An id one tenant holds is still answered to a key of every tenant.
    let (status, _) = call(&app, "GET", "/api/v1/accounts/acct-1", Some("key-viewer")).await;
    assert_eq!(status, 200);

    // A key of every tenant names the tenant in the path; a tenant's key
    // may name only its own.
    for (key, uri, want, tenant) in [
        (
            "key-viewer",
            "/api/v1/tenants/game-b/accounts/shared",
            200,
            Some("game-b"),
        ),
        (
            "key-viewer",
            "/api/v1/tenants/game-a/accounts/shared",
            200,
            Some("game-a"),
        ),
        (
            "key-viewer",
            "/api/v1/tenants/game-c/accounts/shared",
            404,
            None,
        ),
        (
            "key-service",
            "/api/v1/tenants/game-a/accounts/shared",
            200,
            Some("game-a"),
        ),
        (
            "key-service",
            "/api/v1/tenants/game-b/accounts/shared",
            403,
            None,
        ),
    ] {
        let (status, body) = call(&app, "GET", uri, Some(key)).await;
        assert_eq!(status, want, "{key} {uri}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["tenant_id"].as_str(), tenant, "{key} {uri}");
        if status == 403 {
            assert_eq!(v["error"], "foreign_tenant");
        }
    }

    // The withdrawal check of each tenant's key follows its own account.
    for (key, want) in [
        ("key-service", 403),
        ("key-other-tenant", 423),
        ("key-admin", 409),
    ] {
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/withdrawals/check")
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"account_id":"shared"}"#))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{key}");
    }
    // ... and a key of every tenant names the tenant in the body.
    for (body, want) in [
        (r#"{"account_id":"shared","tenant_id":"game-a"}"#, 403),
        (r#"{"account_id":"shared","tenant_id":"game-b"}"#, 423),
        (r#"{"account_id":"shared","tenant_id":null}"#, 409),
    ] {
        let req = Request::builder()
            .method("POST")
            .uri("/api/v1/withdrawals/check")
            .header("x-api-key", "key-admin")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), want, "{body}");
    }
}
