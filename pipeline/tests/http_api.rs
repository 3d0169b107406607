//! `POST /api/v1/events`, `/healthz` and `/metrics` of a `kusanagi stage
//! ingest` process on the embedded broker (its own process).

mod common;

use std::time::Duration;

use common::{
    Broker, BrokerKind, Reader, TopologyFile, free_port, http, kusanagi, new_key, tempdir::TempDir,
    wait_for_port,
};
use kusanagi_schemas::GameEventCodec;
use rdkafka::Message;

fn event(id: &str, amount: i64) -> String {
    format!(
        r#"{{"event_id":"{id}","timestamp":"2099-01-01T00:00:00Z","actor_id":"a","target_id":"acct_{id}","action_details":{{"currency_amount":{amount}}}}}"#
    )
}

#[test]
fn http_intake_validates_publishes_and_reports() {
    let broker = Broker::start(BrokerKind::Embedded);
    let dir = TempDir::new("http");
    let addr = format!("127.0.0.1:{}", free_port());
    let keys = dir.path().join("keys.toml");
    let producer = new_key(&keys, "game-server", &["producer"], None);
    let viewer = new_key(&keys, "prometheus", &["viewer"], None);
    let topology = TopologyFile::new()
        .set("instance.id", "http-it")
        .set("kafka.bootstrap", broker.bootstrap.as_str())
        .set("topics.partitions", 2)
        .set("http.listen", addr.as_str())
        .path("http.auth.keys_file", &keys)
        .write(dir.path());
    let _stage = kusanagi(dir.path(), "ingest", &topology, &["stage", "ingest"]);
    wait_for_port(&addr, Duration::from_secs(60));
    let post = |body: &[u8]| http(&addr, "POST", "/api/v1/events", Some(&producer), body);

    // Without a key, or with a key lacking the producer role, nothing is published.
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/events",
        None,
        event("h-0", 1).as_bytes(),
    );
    assert_eq!(status, 401, "{body}");
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/events",
        Some(&viewer),
        event("h-0", 1).as_bytes(),
    );
    assert_eq!(status, 403, "{body}");

    let (status, body) = post(event("h-1", 10).as_bytes());
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["event_ids"], serde_json::json!(["h-1"]));

    let batch = format!(
        "[{},{},{}]",
        event("h-2", 1),
        event("h-3", 2),
        event("h-4", 3)
    );
    let (status, body) = post(batch.as_bytes());
    assert_eq!(status, 202, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event_ids"], serde_json::json!(["h-2", "h-3", "h-4"]));

    // One bad event fails the whole batch and names its index and field.
    let batch = format!("[{},{}]", event("h-5", 1), event("h-6", -7));
    let (status, body) = post(batch.as_bytes());
    assert_eq!(status, 422, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["errors"][0]["index"], 1);
    assert_eq!(v["errors"][0]["field"], "action_details.currency_amount");
    assert_eq!(v["errors"][0]["reason"], "invalid_value");

    let (status, body) =
        post(br#"{"event_id":"x","timestamp":"2099-01-01T00:00:00Z","actor_id":"a"}"#);
    assert_eq!(status, 422, "{body}");
    assert!(body.contains(r#""field":"target_id""#), "{body}");

    let (status, body) = post(b"{\"event_id\": ");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_json"), "{body}");

    let (status, body) = http(&addr, "GET", "/healthz", None, b"");
    assert_eq!((status, body.trim()), (200, "ok"));

    assert_eq!(http(&addr, "GET", "/metrics", None, b"").0, 401);
    let (status, metrics) = http(&addr, "GET", "/metrics", Some(&viewer), b"");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"kusanagi_http_requests_total{route="/api/v1/events",status="202"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kusanagi_http_events_total{stage="ingest",outcome="accepted"} 4"#),
        "{metrics}"
    );

    // Exactly the four accepted events reached `events`, as Avro, keyed by target.
    let mut reader = Reader::new(&broker.bootstrap, &["events"]);
    reader.read_until(Duration::from_secs(30), |m| m.len() >= 4);
    reader.drain(Duration::from_secs(2));
    let codec = GameEventCodec::new();
    let mut ids: Vec<String> = reader
        .messages
        .iter()
        .map(|m| {
            let e = codec.decode(m.payload().unwrap()).unwrap();
            assert_eq!(m.key(), Some(e.target_id.as_bytes()));
            e.event_id
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["h-1", "h-2", "h-3", "h-4"]);
}
