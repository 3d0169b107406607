//! `kusanagi run --demo` end to end on the embedded broker, and the
//! broker's data surviving a restart.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{ChildGuard, Reader, free_port, tempdir::TempDir, wait_for_port};

#[test]
fn the_demo_runs_end_to_end_and_the_broker_keeps_its_data() {
    let dir = TempDir::new("demo");
    let broker_addr = format!("127.0.0.1:{}", free_port());
    let topology = dir.path().join("local.toml");
    std::fs::write(
        &topology,
        format!(
            "[embedded_broker]\nlisten = \"{broker_addr}\"\n[http]\nlisten = \"127.0.0.1:{}\"\n",
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
            "3000",
            "--demo-rate",
            "3000",
        ])
        .current_dir(dir.path())
        .output()
        .expect("kusanagi runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("embedded Kafka-protocol broker listening on"),
        "{stdout}"
    );
    assert!(stdout.contains("Kusanagi demo summary"), "{stdout}");
    assert!(
        stdout.contains("every record accounted for, exactly once"),
        "{stdout}"
    );
    let ingested: usize = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("ingested"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the summary gives the ingested count");
    assert!(ingested > 2_900, "{stdout}");

    // The screening stages ran on the same traffic: every event screened,
    // accounts restricted and analysed, and the analysis acted on them.
    let count = |line: &str, label: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.trim().starts_with(line))
            .unwrap_or_else(|| panic!("no `{line}` line in\n{stdout}"));
        let words: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let at = words
            .iter()
            .position(|w| *w == label)
            .unwrap_or_else(|| panic!("no `{label}` in {line}"));
        words[at - 1]
            .parse()
            .unwrap_or_else(|_| panic!("no count before `{label}` in {line}"))
    };
    let screened = count("screened", "of");
    assert!(screened > 0, "{stdout}");
    let restricted = count("accounts", "restricted");
    let analysed = count("accounts", "analysed");
    let banned = count("accounts", "banned");
    let recovered = count("accounts", "recovered");
    assert!(restricted > 0 && analysed > 0, "{stdout}");
    assert!(
        banned > 0 && recovered > 0,
        "the fallback analysis bans smurfing with slang and clears slang alone:\n{stdout}"
    );

    // The archive stage wrote every event (a clean stop archives what was
    // read), and the screenings and transitions, under ./data/archive.
    assert!(stdout.contains("archived: "), "{stdout}");
    let stats = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .arg("--topology")
        .arg(&topology)
        .args(["stats", "--json"])
        .current_dir(dir.path())
        .output()
        .expect("kusanagi stats runs");
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats JSON");
    let rows = |table: &str| {
        stats
            .as_array()
            .expect("array")
            .iter()
            .find(|s| s["table"] == table && s["tier"] == "all")
            .and_then(|s| s["rows"].as_u64())
            .unwrap_or(0)
    };
    assert_eq!(rows("events"), ingested as u64, "every event archived once");
    assert_eq!(
        rows("screenings"),
        ingested as u64,
        "one screening per event"
    );
    assert!(rows("transitions") >= restricted, "every move archived");

    // Every DuckDB query of docs/analysts.md runs on this archive and
    // returns rows.
    let queries = Command::new(common::harness_python())
        .arg(common::workspace().join("pipeline/tests/duckdb/analyst_queries.py"))
        .arg(common::workspace().join("docs/analysts.md"))
        .arg(dir.path().join("data/archive/hot"))
        .output()
        .expect("python runs");
    assert!(
        queries.status.success(),
        "the analysts' queries: {}{}",
        String::from_utf8_lossy(&queries.stdout),
        String::from_utf8_lossy(&queries.stderr)
    );

    // Restart the broker alone on the same data: every ingested event is still there.
    let data = dir.path().join("data/broker");
    assert!(
        data.join("kafka.json").exists(),
        "the broker saved its state"
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .args(["broker", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .spawn()
        .expect("broker restarts");
    let _broker = ChildGuard {
        child,
        name: "broker".into(),
    };
    wait_for_port(&addr, Duration::from_secs(30));
    let mut reader = Reader::new(&addr, &["events"]);
    reader.read_until(Duration::from_secs(60), |m| m.len() >= ingested);
    reader.drain(Duration::from_secs(2));
    assert_eq!(reader.messages.len(), ingested, "events after a restart");
}
