//! One key over its rate limit is answered 429 with `Retry-After` while the
//! others are served; a request over the time limit is answered 503.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use tower::ServiceExt;

use super::{app_with_rate_limit, call};
use crate::api::with_request_timeout;

#[tokio::test]
async fn an_abusive_key_is_slowed_while_the_others_are_served() {
    let app = app_with_rate_limit(5, 5);
    let lookup = "/api/v1/accounts/acct-1";
    for i in 0..5 {
        let (status, body) = call(&app, "GET", lookup, Some("key-viewer")).await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let resp = app
        .clone()
        .oneshot(
            Request::builder()
                .uri(lookup)
                .header("x-api-key", "key-viewer")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let (status, body) = call(&app, "GET", lookup, Some("key-viewer")).await;
    assert_eq!(status, 429);
    assert!(
        body.contains("rate_limited") && body.contains("`viewer`"),
        "{body}"
    );
    // Another key, and the health checks, are served meanwhile.
    for _ in 0..5 {
        assert_eq!(call(&app, "GET", lookup, Some("key-operator")).await.0, 200);
    }
    assert_eq!(call(&app, "GET", "/healthz", None).await.0, 200);
    // The abusive key is served again once its budget refills.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(call(&app, "GET", lookup, Some("key-viewer")).await.0, 200);
}

#[tokio::test]
async fn without_a_limit_a_key_is_never_refused_for_its_rate() {
    let app = app_with_rate_limit(0, 0);
    for _ in 0..50 {
        assert_eq!(
            call(&app, "GET", "/api/v1/accounts/acct-1", Some("key-viewer"))
                .await
                .0,
            200
        );
    }
}

#[tokio::test]
async fn a_request_over_the_time_limit_is_answered_503() {
    let app = with_request_timeout(
        Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/fast", get(|| async { "ok" })),
        Duration::from_millis(100),
    );
    let get = |uri: &str| Request::builder().uri(uri).body(Body::empty()).unwrap();
    let slow = app.clone().oneshot(get("/slow")).await.unwrap();
    assert_eq!(slow.status().as_u16(), 503);
    let body = http_body_util::BodyExt::collect(slow.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("longer than 100 ms"));
    assert_eq!(
        app.oneshot(get("/fast")).await.unwrap().status().as_u16(),
        200
    );
}
