//! One key over its rate limit is answered 429 with `Retry-After` while the
//! others are served; a request over the time limit is answered 503;
//! headers past the HTTP server's limits (100 fields; about 400 KB, checked
//! between reads) are answered 431 by a real server.

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

/// Sends `head` (a request without body) to a real server of [`super::app`]
/// and reads the status line of the answer.
async fn raw_status(head: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, super::app()).await.unwrap();
    });
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the status line is in, the server closes, or 10 s pass.
    let read = async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    server.abort();
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_owned()
}

fn head(extra_headers: usize, value_bytes: usize) -> String {
    let mut h = String::from(
        "GET /api/v1/accounts/acct-1 HTTP/1.1\r\nhost: x\r\nx-api-key: key-viewer\r\n",
    );
    for i in 0..extra_headers {
        h.push_str(&format!("x-extra-{i}: {}\r\n", "v".repeat(value_bytes)));
    }
    h.push_str("\r\n");
    h
}

#[tokio::test]
async fn headers_past_the_server_s_limits_are_answered_431() {
    // Within the limits: served.
    assert_eq!(raw_status(&head(90, 10)).await, "HTTP/1.1 200 OK");
    // More than 100 fields.
    assert_eq!(
        raw_status(&head(120, 10)).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // 2 MB of header values, in few fields. (The size limit, about
    // 400 KB, is checked between reads: one read that takes in a whole
    // head of 480 KB, as on a busy machine, gets it served.)
    assert_eq!(
        raw_status(&head(8, 250_000)).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}
