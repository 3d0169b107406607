//! OpenTelemetry traces of a `kusanagi run --demo` (every stage, embedded
//! broker) exported over OTLP/HTTP: an event that is screened has one trace
//! whose spans chain ingest -> screen -> decide -> analyze -> decide, each
//! the child of the one before (the context travelled in Kafka headers).
//!
//! The receiving end is a minimal OTLP/HTTP endpoint in this test (no
//! OpenTelemetry Collector can be installed here): it decodes the real
//! exporter's protobuf requests with the OTLP message definitions.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{free_port, tempdir::TempDir};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    service: String,
}

/// Accepts OTLP/HTTP protobuf exports on a free port; returns the URL.
fn receiver(spans: Arc<Mutex<Vec<Received>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let spans = Arc::clone(&spans);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let req = ExportTraceServiceRequest::decode(body.as_slice())
                        .expect("an OTLP protobuf export");
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|a| a.key == "service.name")
                            .and_then(|a| a.value.as_ref())
                            .map(|v| format!("{:?}", v.value))
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for s in ss.spans {
                                spans.lock().unwrap().push(Received {
                                    name: s.name,
                                    trace_id: s.trace_id,
                                    span_id: s.span_id,
                                    parent: s.parent_span_id,
                                    service: service.clone(),
                                });
                            }
                        }
                    }
                    let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if stream.write_all(ok.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/v1/traces")
}

#[test]
fn an_event_s_trace_spans_ingest_screen_decide_and_analyze() {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let endpoint = receiver(Arc::clone(&spans));
    let dir = TempDir::new("traces");
    let topology = dir.path().join("topology.toml");
    std::fs::write(
        &topology,
        format!(
            "[embedded_broker]\nlisten = \"127.0.0.1:{}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n\
             [telemetry]\ntraces = true\nsample_ratio = 1.0\notlp_endpoint = \"{endpoint}\"\nservice_name = \"kusanagi-it\"\n",
            free_port(),
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .arg("--topology")
        .arg(&topology)
        .args([
            "run",
            "--demo",
            "--demo-events",
            "600",
            "--demo-rate",
            "300",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The exporter flushed at shutdown; give the receiver a moment.
    std::thread::sleep(Duration::from_millis(500));

    let spans = spans.lock().unwrap().clone();
    assert!(spans.iter().all(|s| s.service.contains("kusanagi-it")));
    let by_id: HashMap<&[u8], &Received> =
        spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let count = |name: &str| spans.iter().filter(|s| s.name == name).count();
    eprintln!(
        "spans: ingest {}, screen {}, decide {}, analyze {}",
        count("ingest"),
        count("screen"),
        count("decide"),
        count("analyze")
    );
    assert!(
        count("ingest") > 500,
        "every valid demo event starts a trace"
    );
    assert!(count("screen") > 500);

    // Walk up from each analyze span: decide <- screen <- ingest, one trace.
    let chain = |s: &Received| -> Vec<String> {
        let mut names = vec![s.name.clone()];
        let mut at = s;
        while let Some(p) = by_id.get(at.parent.as_slice()) {
            assert_eq!(p.trace_id, s.trace_id, "a parent in another trace");
            names.push(p.name.clone());
            at = p;
        }
        names
    };
    let analyzed: Vec<Vec<String>> = spans
        .iter()
        .filter(|s| s.name == "analyze")
        .map(chain)
        .collect();
    assert!(
        !analyzed.is_empty(),
        "some demo events reach the L2 analysis"
    );
    for c in &analyzed {
        // analyze <- decide (<- analyze <- decide: a verdict that queued
        // another analysis) ... <- screen <- ingest.
        let (head, tail) = c.split_at(c.len() - 2);
        assert_eq!(tail, ["screen", "ingest"], "{c:?}");
        assert!(head.len() % 2 == 0, "{c:?}");
        for pair in head.chunks(2) {
            assert_eq!(pair, ["analyze", "decide"], "{c:?}");
        }
    }
    // And the verdict applied by decide continues the same trace.
    let after_verdict = spans
        .iter()
        .filter(|s| s.name == "decide")
        .map(chain)
        .filter(|c| c.len() >= 5 && c[1] == "analyze")
        .count();
    assert!(
        after_verdict > 0,
        "decide applying a verdict is in the event's trace"
    );
    let roots = spans.iter().filter(|s| s.parent.is_empty()).count();
    assert_eq!(roots, count("ingest"), "traces start at ingest only");
}
