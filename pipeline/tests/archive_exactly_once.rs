//! The archive stage, exactly once, on real brokers running as their own
//! processes, with its catalog on the real S3-protocol server: 200,000
//! events over 45 simulated days go into `events` (45 days of traffic in
//! fast-forward, a little out of order); while they flow the archive stage
//! is SIGKILLed at 5 random moments and restarted, and a second copy joins
//! midway (a rebalance). At the end the catalog lists exactly 200,000
//! rows, the hot tier's folder holds exactly the catalog's files, and
//! DuckDB counts 200,000 distinct event ids with the generator's per-day
//! counts and typed columns.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerKind, ChildGuard, harness_python, kusanagi_with_env, produce_all, producer,
    s3_bucket, tempdir::TempDir,
};
use kusanagi_pipeline::catalog::{Catalog, Tier};
use kusanagi_pipeline::config::Topology;
use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent, GameEventCodec};

const TOTAL: usize = 200_000;
const DAYS: i64 = 45;
const PARTITIONS: i32 = 3;
const WAIT: Duration = Duration::from_secs(300);
const HOUR_US: i64 = 3_600_000_000;

/// A small deterministic generator (no RNG crate needed in the test).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// The events of the 45 days before `end_us`, in time order give or take
/// half an hour (so a few land in the previous hour's partition).
fn events(end_us: i64) -> Vec<GameEvent> {
    let span = DAYS * 24 * HOUR_US;
    let start = end_us - span;
    let step = span / TOTAL as i64;
    let mut rng = Lcg(20_261_129);
    (0..TOTAL)
        .map(|i| {
            let jitter = (rng.next() as i64 % HOUR_US) - HOUR_US / 2;
            let at = (start + i as i64 * step + jitter).clamp(start, end_us - 1);
            GameEvent {
                event_id: format!("ar-{i:06}"),
                timestamp: EventTime::from_micros(at),
                event_type: "TRADE".into(),
                actor_id: format!("p{}", rng.next() % 5_000),
                target_id: format!("acct_{}", rng.next() % 2_000),
                action_details: ActionDetails {
                    currency_amount: (rng.next() % 100_000) as i64,
                    item_id: (i % 3 == 0).then(|| format!("item_{}", i % 50)),
                    market_avg_price: (i % 2 == 0).then_some(1_000),
                },
                context_metadata: ContextMetadata {
                    actor_level: (i % 60) as i32 + 1,
                    account_age_days: (i % 400) as i32,
                    recent_chat_log: (i % 10 == 0).then(|| "gg, trade ok?".to_owned()),
                },
                tenant_id: if i % 4 == 0 { "game-b" } else { "game-a" }.into(),
            }
        })
        .collect()
}

fn per_day(events: &[GameEvent]) -> BTreeMap<String, u64> {
    let mut days = BTreeMap::new();
    for e in events {
        let day = e.timestamp.to_datetime().expect("time").format("%Y-%m-%d");
        *days.entry(day.to_string()).or_insert(0) += 1;
    }
    days
}

fn write_topology(dir: &Path, bootstrap: &str, s3: &str, bucket: &str) -> PathBuf {
    let path = dir.join("topology.toml");
    let hot = dir.join("archive/hot");
    let warm = dir.join("archive/warm");
    std::fs::write(
        &path,
        format!(
            r#"
[instance]
id = "it"

[kafka]
bootstrap = "{bootstrap}"
session_timeout_ms = 6000

[topics]
partitions = {PARTITIONS}

[stages.archive]
rotate_after_seconds = 2

[archive]
catalog = "s3://{bucket}/catalog"
hot = "{}"
warm = "{}"
cold = "s3://{bucket}/cold"

[archive.s3]
{s3}
[http]
enabled = false
"#,
            hot.display(),
            warm.display()
        ),
    )
    .expect("topology");
    path
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The catalog as the operator commands see it.
fn catalog(topology: &Topology) -> Catalog {
    let store = topology
        .archive
        .open_catalog_store()
        .expect("catalog store");
    runtime()
        .block_on(Catalog::open(store, "test"))
        .expect("catalog opens")
}

/// Waits until the catalog lists `at_least` rows.
fn wait_for_rows(catalog: &mut Catalog, at_least: u64) {
    let rt = runtime();
    let end = Instant::now() + WAIT;
    loop {
        rt.block_on(catalog.refresh()).expect("catalog refresh");
        let rows: u64 = catalog.state().files().map(|f| f.rows).sum();
        if rows >= at_least {
            return;
        }
        assert!(
            Instant::now() < end,
            "only {rows} rows archived after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every Parquet file under `root/<table>`, relative to `root`.
fn files_under(root: &Path, table: &str) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root.join(table), &mut found);
    found
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            p.strip_prefix(root)
                .expect("under root")
                .display()
                .to_string()
        })
        .collect()
}

fn duckdb_counts(table: &str, folders: &[&Path]) -> serde_json::Value {
    let script = common::workspace().join("pipeline/tests/duckdb/archive_counts.py");
    let out = std::process::Command::new(harness_python())
        .arg(script)
        .arg(table)
        .args(folders)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "DuckDB script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the DuckDB script")
}

fn stage(dir: &Path, name: &str, topology: &Path, instance: &str) -> ChildGuard {
    kusanagi_with_env(
        dir,
        name,
        topology,
        &["stage", "archive"],
        &[("KUSANAGI_INSTANCE_ID", instance)],
    )
}

fn archive_exactly_once(kind: BrokerKind) {
    let broker = Broker::start(kind);
    let dir = TempDir::new("archive-eos");
    let (s3, bucket) = s3_bucket("kusanagi-archive");
    let topology_path = write_topology(dir.path(), &broker.bootstrap, &s3, &bucket);
    let topology = Topology::load(&topology_path).expect("topology loads");
    let settings = topology.kafka_settings(&topology.kafka.bootstrap);
    runtime()
        .block_on(kusanagi_pipeline::run::prepare_topics(&topology, &settings))
        .expect("topics created");

    let now_us = chrono::Utc::now().timestamp_micros();
    let events = events(now_us);
    let codec = GameEventCodec::new();
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.target_id.clone(), codec.encode(e)))
        .collect();
    // The load flows at about 4,000 events/s while the stage is killed.
    let bootstrap = broker.bootstrap.clone();
    let load = std::thread::spawn(move || {
        let p = producer(&bootstrap);
        for chunk in records.chunks(2_000) {
            produce_all(&p, "events", chunk);
            std::thread::sleep(Duration::from_millis(500));
        }
    });

    // Five SIGKILLs at random moments; a second copy joins after the second.
    let mut seed = Lcg(now_us as u64);
    let mut progress = catalog(&topology);
    let rt = runtime();
    let mut a = stage(dir.path(), "archive-a-0", &topology_path, "it-a");
    let mut b = None;
    for kill in 1..=5 {
        std::thread::sleep(Duration::from_millis(3_000 + seed.next() % 6_000));
        a.kill9();
        rt.block_on(progress.refresh()).expect("catalog refresh");
        let rows: u64 = progress.state().files().map(|f| f.rows).sum();
        eprintln!("[{kind:?}] kill {kill}: SIGKILL of the archive stage with {rows} rows archived");
        if kill == 2 {
            b = Some(stage(dir.path(), "archive-b", &topology_path, "it-b"));
            eprintln!("[{kind:?}] a second copy joined");
        }
        a = stage(
            dir.path(),
            &format!("archive-a-{kill}"),
            &topology_path,
            "it-a",
        );
    }
    load.join().expect("the load was produced");
    wait_for_rows(&mut progress, TOTAL as u64);
    // Nothing more comes: every offset is archived.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        a.terminate(Duration::from_secs(30)),
        Some(0),
        "SIGTERM stops copy a"
    );
    if let Some(mut b) = b {
        assert_eq!(
            b.terminate(Duration::from_secs(30)),
            Some(0),
            "SIGTERM stops copy b"
        );
    }

    let catalog = catalog(&topology);
    let state = catalog.state();
    let rows: u64 = state.files().map(|f| f.rows).sum();
    assert_eq!(rows, TOTAL as u64, "the catalog lists every event once");
    let ends = common::end_offsets(&broker.bootstrap, "events", PARTITIONS);
    for (p, end) in ends.iter().enumerate() {
        assert_eq!(
            state.next_offset("events", p as i32),
            Some(*end),
            "partition {p} archived to its end"
        );
    }
    // The hot folder holds exactly the catalog's files: nothing half
    // written or uncommitted is visible to a glob.
    let hot = dir.path().join("archive/hot");
    let listed: BTreeSet<String> = state
        .files()
        .filter(|f| f.tier == Tier::Hot)
        .map(|f| f.path.clone())
        .collect();
    assert_eq!(files_under(&hot, "events"), listed, "hot folder = catalog");

    let counts = duckdb_counts("events", &[&hot]);
    eprintln!(
        "[{kind:?}] DuckDB: {} rows, {} distinct event ids, {} days, {} files",
        counts["rows"],
        counts["distinct_ids"],
        counts["per_day"].as_object().map_or(0, |d| d.len()),
        listed.len()
    );
    assert_eq!(counts["rows"], TOTAL as u64, "no duplicates");
    assert_eq!(counts["distinct_ids"], TOTAL as u64, "no event lost");
    let want: serde_json::Value = serde_json::to_value(per_day(&events)).expect("json");
    assert_eq!(
        counts["per_day"], want,
        "per-day counts equal the generator's"
    );
    assert_eq!(
        counts["rows_in_wrong_dt"], 0,
        "every row in its day's folder"
    );
    assert_eq!(counts["types"]["timestamp"], "TIMESTAMP");
    assert_eq!(counts["types"]["currency_amount"], "BIGINT");
    assert_eq!(counts["types"]["dt"], "DATE");
}

#[test]
fn archive_exactly_once_across_sigkills_on_noida_db_process() {
    archive_exactly_once(BrokerKind::NoidaDb);
}

#[test]
fn archive_exactly_once_across_sigkills_on_embedded_broker() {
    archive_exactly_once(BrokerKind::Embedded);
}
