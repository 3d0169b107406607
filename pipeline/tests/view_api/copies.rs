//! A view copy as operators run it: started as its own process, waited on
//! until ready, and asked over HTTP (a JSON answer, a metric's value).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{ChildGuard, http, kusanagi_with_env, wait_for_port};

pub(crate) fn json(addr: &str, method: &str, path: &str, key: &str, body: &[u8]) -> (u16, Value) {
    let (status, text) = http(addr, method, path, Some(key), body);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, v)
}

pub(crate) fn wait_ready(addr: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if http(addr, "GET", "/healthz/ready", None, b"").0 == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{addr} never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn metric(addr: &str, key: &str, line_start: &str) -> Option<f64> {
    let (_, text) = http(addr, "GET", "/metrics", Some(key), b"");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn start_view(dir: &Path, name: &str, topology: &Path, addr: &str) -> ChildGuard {
    let g = kusanagi_with_env(
        dir,
        name,
        topology,
        &["stage", "view"],
        &[
            ("KUSANAGI_HTTP_LISTEN", addr),
            ("KUSANAGI_INSTANCE_ID", name),
        ],
    );
    wait_for_port(addr, Duration::from_secs(60));
    g
}
