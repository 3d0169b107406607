//! An erased account (gone for its tenant, unknown to others) and what an
//! operator's verdict needs (a known account, a valid body).

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{app, call};

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
