//! The archive notices a broker that went backwards (docs/operators.md,
//! "The broker went backwards"), on the real processes: `kusanagi broker`
//! and `kusanagi stage archive`.
//!
//! 1,000 events are archived; the broker is then replaced by an empty one
//! (its data directory lost) and takes 300 new events, at offsets 0..300
//! that the archive already holds. The archive stage, started again or
//! running all along, refuses the partition (its log and its metrics say
//! so) and archives nothing of it, rather than skip the new events
//! silently. The operator rewinds the catalog (`kusanagi catalog rewind`),
//! restarts the stage, and the 300 new events are archived beside the
//! 1,000.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    ChildGuard, TopologyFile, free_port, http, kusanagi_with_env, new_key, produce_all, producer,
    tempdir::TempDir, wait_for_port,
};
use kusanagi_pipeline::catalog::Catalog;
use kusanagi_pipeline::config::Topology;

const WAIT: Duration = Duration::from_secs(120);

fn events(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    common::trades((0..n).map(|i| (format!("{prefix}-{i}"), i)), 50)
}

/// `kusanagi broker` on `addr`, its data in `data`.
fn broker(dir: &Path, data: &Path, addr: &str, name: &str) -> ChildGuard {
    // The defaults: the command line gives the address and data folder.
    let topology = dir.join("broker.toml");
    std::fs::write(&topology, "").expect("topology");
    let data = data.to_str().expect("a UTF-8 temp path");
    let child = kusanagi_with_env(
        dir,
        name,
        &topology,
        &["broker", "--listen", addr, "--data-dir", data],
        &[],
    );
    wait_for_port(addr, Duration::from_secs(30));
    child
}

fn write_topology(dir: &Path, bootstrap: &str, keys: &Path) -> PathBuf {
    TopologyFile::new()
        .set("kafka.bootstrap", bootstrap)
        .set("kafka.session_timeout_ms", 6000)
        .set("topics.partitions", 1)
        .set("stages.archive.rotate_after_seconds", 1)
        .archive_in(&dir.join("archive"))
        .path("http.auth.keys_file", keys)
        .write(dir)
}

/// The catalog's next offset of `events`/0 and its rows, once `done` holds.
fn wait_for_catalog(
    topology: &Path,
    done: impl Fn(Option<i64>, u64) -> bool,
) -> (Option<i64>, u64) {
    let topology = Topology::load(topology).expect("topology");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = topology
        .archive
        .open_catalog_store()
        .expect("catalog store");
    let end = Instant::now() + WAIT;
    loop {
        if let Ok(catalog) = rt.block_on(Catalog::open(store.clone(), "test")) {
            let next = catalog.state().next_offset("events", 0);
            let rows = catalog
                .state()
                .files()
                .filter(|f| f.path.starts_with("events/"))
                .map(|f| f.rows)
                .sum();
            if done(next, rows) {
                return (next, rows);
            }
            assert!(
                Instant::now() < end,
                "the catalog stayed at {next:?}, {rows} rows"
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn archive(dir: &Path, topology: &Path, name: &str, http_addr: &str) -> ChildGuard {
    let g = kusanagi_with_env(
        dir,
        name,
        topology,
        &["stage", "archive"],
        &[("KUSANAGI_HTTP_LISTEN", http_addr)],
    );
    wait_for_port(http_addr, Duration::from_secs(60));
    g
}

#[test]
fn a_restarted_archive_refuses_a_partition_whose_broker_went_back_until_rewound() {
    went_back(false);
}

#[test]
fn a_running_archive_refuses_a_partition_whose_broker_went_back_until_rewound() {
    went_back(true);
}

/// The scenario; `running`: the archive stage runs across the broker's
/// replacement (else it is stopped before and started after).
fn went_back(running: bool) {
    let dir = TempDir::new("went-back");
    let addr = format!("127.0.0.1:{}", free_port());
    let keys = dir.path().join("keys.toml");
    let key = new_key(&keys, "prometheus", &["viewer"], None);
    let topology = write_topology(dir.path(), &addr, &keys);
    let http_addr = format!("127.0.0.1:{}", free_port());

    // 1,000 events archived.
    let mut b = broker(dir.path(), &dir.path().join("broker-1"), &addr, "broker-1");
    let mut a = archive(dir.path(), &topology, "archive-1", &http_addr);
    produce_all(&producer(&addr), "events", &events("old", 1_000));
    wait_for_catalog(&topology, |next, rows| next == Some(1_000) && rows == 1_000);
    if !running {
        assert_eq!(a.terminate(Duration::from_secs(60)), Some(0));
    }
    b.kill9();

    // An empty broker in its place; 300 new events at offsets 0..300.
    let _b = broker(dir.path(), &dir.path().join("broker-2"), &addr, "broker-2");
    let log = if running {
        let loaded = Topology::load(&topology).expect("topology");
        let settings = loaded.kafka_settings(&loaded.kafka.bootstrap);
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(kusanagi_pipeline::run::prepare_topics(&loaded, &settings))
            .expect("topics created");
        dir.path().join("archive-1.log")
    } else {
        a = archive(dir.path(), &topology, "archive-2", &http_addr);
        dir.path().join("archive-2.log")
    };
    produce_all(&producer(&addr), "events", &events("new", 300));

    // Refused: said in the log and the metrics, and nothing archived.
    let end = Instant::now() + WAIT;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("went back below the offset already archived")
    {
        assert!(
            Instant::now() < end,
            "the archive never refused the partition"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // (A running copy also rejoins the new broker's group meanwhile: the
    // partition is given up and taken on again, and checked again.)
    loop {
        let (status, metrics) = http(&http_addr, "GET", "/metrics", Some(&key), b"");
        assert_eq!(status, 200);
        if metrics
            .contains("kusanagi_archive_refused_partitions{topic=\"events\",partition=\"0\"} 1")
        {
            break;
        }
        assert!(
            Instant::now() < end,
            "the metric never showed the refusal: {metrics}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_secs(3)); // three rotation intervals
    let (next, rows) = wait_for_catalog(&topology, |_, _| true);
    assert_eq!(
        (next, rows),
        (Some(1_000), 1_000),
        "nothing skipped, nothing archived"
    );
    assert_eq!(a.terminate(Duration::from_secs(60)), Some(0));

    // A rewind past the broker's log end is refused (it would skip the
    // records between); the operator rewinds to where the new broker began
    // (it was empty).
    let rewind = |to: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kusanagi"))
            .arg("--topology")
            .arg(&topology)
            .args(["catalog", "rewind", "--topic", "events", "--partition", "0"])
            .args(["--to", to, "--reason", "broker replaced by an empty one"])
            .output()
            .expect("kusanagi catalog rewind")
    };
    let past = rewind("500");
    assert!(!past.status.success());
    assert!(
        String::from_utf8_lossy(&past.stderr).contains("past the broker's log end"),
        "{}",
        String::from_utf8_lossy(&past.stderr)
    );
    let out = rewind("0");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("archived offset 1000 -> 0"), "{said}");

    // The new events are archived beside the old.
    let _a = archive(dir.path(), &topology, "archive-3", &http_addr);
    let (next, rows) = wait_for_catalog(&topology, |next, _| next == Some(300));
    assert_eq!((next, rows), (Some(300), 1_300));
}
