//! The history routes: bad times and ranges named, a rebuilding copy's
//! 503, long histories in pages by version, and moves past the topic's
//! retention not guessed.

use std::sync::Arc;

use kusanagi_schemas::{Account, EventTime};

use super::{app, call, key, moved};
use crate::api::{Keys, Services, router};
use crate::config::Role;
use crate::runtime::Metrics;
use crate::stages::view::View;

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
    view.write().apply_account(b"a", Some(a));
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
    view.write().apply_account(b"a", Some(a));
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
    view.write().apply_account(b"a", Some(a));
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
