//! No secret is ever printed. `kusanagi run` on the embedded broker with
//! distinctive secrets: a SASL password in `[kafka.properties]`, an S3
//! secret key in `[archive.s3]`, the LLM's API key (its model unreachable,
//! so every call fails and is logged), an API key used over HTTP and a
//! wrong one tried; debug logs on. Then the CLI (`check-config`, `catalog
//! ls`, `verify`). Every line any of them printed is searched for every
//! secret.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::tempdir::TempDir;
use common::{free_port, http, kusanagi_with_env, new_key, wait_for_port};

const KAFKA_SECRET: &str = "kafka-secret-9f3a1c77";
const S3_SECRET: &str = "s3-secret-4be0d912";
const LLM_SECRET: &str = "llm-secret-c5d8e201";

#[test]
fn no_secret_reaches_the_logs_or_the_cli() {
    let dir = TempDir::new("secrets");
    let keys = dir.path().join("keys.toml");
    let api_key = new_key(&keys, "game-server", &["admin"], None);
    let addr = format!("127.0.0.1:{}", free_port());
    let dead_llm = format!("127.0.0.1:{}", free_port());
    let topology = dir.path().join("topology.toml");
    std::fs::write(
        &topology,
        format!(
            r#"[embedded_broker]
listen = "127.0.0.1:{broker}"

[kafka.properties]
"sasl.username" = "kusanagi"
"sasl.password" = "{KAFKA_SECRET}"

[archive.s3]
access_key_id = "AKIATEST"
secret_access_key = "{S3_SECRET}"

[http.auth]
keys_file = "{keys}"

[stages.analyze.model]
provider = "openai"
base_url = "http://{dead_llm}/v1"
model = "m"
api_key_env = "KUSANAGI_TEST_LLM_KEY"
timeout_ms = 500
max_retries = 1
backoff_ms = 10
"#,
            broker = free_port(),
            keys = keys.display(),
        ),
    )
    .unwrap();
    let env = [
        ("KUSANAGI_HTTP_LISTEN", addr.as_str()),
        ("KUSANAGI_TEST_LLM_KEY", LLM_SECRET),
        ("RUST_LOG", "debug,librdkafka=debug,h2=info,hyper=info"),
    ];
    let mut run = kusanagi_with_env(dir.path(), "run", &topology, &["run"], &env);
    wait_for_port(&addr, Duration::from_secs(60));

    // Traffic that reaches the model: a suspicious trade, so the analyze
    // stage calls the (unreachable) provider and logs the failures.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let trade = format!(
        r#"{{"event_id":"ev-secret-1","timestamp":"{now}","actor_id":"a1","target_id":"acct-secret","action_details":{{"currency_amount":1000000,"item_id":"gem","market_avg_price":5000}},"context_metadata":{{"recent_chat_log":"PayPal ok?"}}}}"#
    );
    let (status, body) = http(
        &addr,
        "POST",
        "/api/v1/events",
        Some(&api_key),
        trade.as_bytes(),
    );
    assert_eq!(status, 202, "{body}");
    let check = br#"{"account_id":"acct-secret"}"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(
        http(
            &addr,
            "POST",
            "/api/v1/withdrawals/check",
            Some(&api_key),
            check
        )
        .0,
        423 | 403
    ) {
        assert!(Instant::now() < deadline, "the trade was never decided");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The fallback answered for the model: its calls failed and were logged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let log = dir.path().join("run.log");
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&dead_llm)
    {
        assert!(Instant::now() < deadline, "no failed model call was logged");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        http(&addr, "GET", "/metrics", Some("a-wrong-key"), b"").0,
        401
    );
    run.terminate(Duration::from_secs(30));

    // The CLI on the same topology.
    let mut printed = vec![std::fs::read_to_string(&log).unwrap()];
    for args in [
        &["check-config"][..],
        &["catalog", "ls"][..],
        &["verify"][..],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
            .arg("--topology")
            .arg(&topology)
            .args(args)
            .current_dir(dir.path())
            .envs(env)
            .output()
            .unwrap();
        printed.push(String::from_utf8_lossy(&out.stdout).into_owned());
        printed.push(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let lines: usize = printed.iter().map(|p| p.lines().count()).sum();
    for text in &printed {
        for secret in [KAFKA_SECRET, S3_SECRET, LLM_SECRET, api_key.as_str()] {
            if let Some(line) = text.lines().find(|l| l.contains(secret)) {
                panic!("a secret was printed: {line}");
            }
        }
    }
    assert!(
        printed[1].contains("<redacted>"),
        "check-config: {}",
        printed[1]
    );
    eprintln!("no secret in {lines} printed lines");
}
