//! The OpenAPI document against the router it describes: the same routes
//! both ways, each documented operation served, no undocumented method on
//! a documented path, JSON answers for what nothing serves, the document
//! served as built, and `docs/openapi.json` current.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use super::super::{ROUTES, full_document, router_and_document};
use super::{call, services};

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            all.insert((method.to_ascii_uppercase(), path.clone()));
        }
    }
    all
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "acct-1")
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_served() {
    let (app, doc) = router_and_document(services(0, 0));
    let documented = operations(&doc);
    let mut expected: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    expected.insert(("GET".into(), "/healthz".into()));
    expected.insert(("GET".into(), "/healthz/ready".into()));
    assert_eq!(documented, expected);
    // A process running every stage serves what `kusanagi openapi` prints.
    let full = full_document(crate::config::HttpConfig::default().max_batch_events);
    assert_eq!(operations(&full), documented);

    for (method, path) in &documented {
        let (status, body) = call(&app, method, &concrete(path), Some("key-admin")).await;
        assert!(
            !body.contains("\"no_route\"") && !body.contains("\"method_not_allowed\""),
            "{method} {path}: {status} {body}"
        );
    }
    // Every other method of a documented path is refused as such: the
    // router has no operation the document lacks.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if documented.contains(&(method.to_owned(), path.clone())) {
                continue;
            }
            let (status, body) = call(&app, method, &concrete(path), Some("key-admin")).await;
            assert_eq!(status, 405, "{method} {path}: {body}");
            let problem: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(problem["error"], "method_not_allowed", "{method} {path}");
        }
    }
}

#[tokio::test]
async fn what_nothing_serves_is_answered_in_json() {
    let (app, _) = router_and_document(services(0, 0));
    for path in [
        "/",
        "/api/v1/accounts",
        "/api/v2/events",
        "/api/v1/accounts/a/b/c",
    ] {
        let (status, body) = call(&app, "GET", path, Some("key-admin")).await;
        assert_eq!(status, 404, "{path}");
        let problem: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(problem["error"], "no_route", "{path}: {body}");
    }
}

#[tokio::test]
async fn the_document_is_served_to_every_role_and_to_no_one_without_a_key() {
    let (app, doc) = router_and_document(services(0, 0));
    for key in [
        "key-viewer",
        "key-operator",
        "key-producer",
        "key-service",
        "key-admin",
    ] {
        let (status, body) = call(&app, "GET", "/api/v1/openapi.json", Some(key)).await;
        assert_eq!(status, 200, "{key}: {body}");
        let served: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(&served, doc.as_ref());
    }
    let (status, _) = call(&app, "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_query_or_path_that_does_not_parse_is_a_json_400() {
    let (app, _) = router_and_document(services(0, 0));
    for uri in [
        "/api/v1/accounts/acct-1/versions?after_version=soon",
        "/api/v1/accounts/acct-1/at?time=1&time=2",
        "/api/v1/accounts/%FF%FE",
    ] {
        let req = Request::builder()
            .uri(uri)
            .header("x-api-key", "key-admin")
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let problem: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{uri}: {status} {}: {e}", String::from_utf8_lossy(&bytes)));
        assert_eq!(status, 400, "{uri}: {problem}");
        assert!(
            ["invalid_query", "invalid_path"].contains(&problem["error"].as_str().unwrap()),
            "{uri}: {problem}"
        );
    }
}

#[test]
fn docs_openapi_json_is_current() {
    let want = serde_json::to_string_pretty(&full_document(
        crate::config::HttpConfig::default().max_batch_events,
    ))
    .unwrap()
        + "\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
    if std::env::var_os("KUSANAGI_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/openapi.json is not what the code documents; write it again with \
         `cargo run -p kusanagi-pipeline --bin kusanagi -- openapi > docs/openapi.json` \
         (or run this test with KUSANAGI_BLESS=1)"
    );
}
