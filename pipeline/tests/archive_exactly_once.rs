//! The archive stage, exactly once, on real brokers running as their own
//! processes, with its catalog on the real S3-protocol server: 200,000
//! events over 45 simulated days go into `events` (45 days of traffic in
//! fast-forward, a little out of order); while they flow the archive stage
//! is SIGKILLed at 5 random moments and restarted, and a second copy joins
//! midway (a rebalance). At the end the catalog lists exactly 200,000
//! rows, the hot tier's folder holds exactly the catalog's files, and
//! DuckDB counts 200,000 distinct event ids with the generator's per-day
//! counts and typed columns.
//!
//! Then the operator commands, as processes: `kusanagi tier` moves the
//! files to warm (local) and cold (S3) by age and DuckDB, reading all three
//! tiers, still counts every event once; `kusanagi verify` passes, and fails
//! naming the file once one byte of it is flipped; `kusanagi restore`
//! returns exactly a 3-day range that spans two tiers, in event-time order;
//! `kusanagi stats` reports the compression.

mod common;
#[path = "archive_exactly_once/processes.rs"]
mod processes;
#[path = "archive_exactly_once/stored.rs"]
mod stored;
#[path = "archive_exactly_once/workload.rs"]
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use common::{Broker, BrokerKind, S3Bucket, produce_all, producer, tempdir::TempDir};
use kusanagi_pipeline::catalog::Tier;
use kusanagi_pipeline::config::Topology;
use kusanagi_schemas::{EventTime, GameEvent, GameEventCodec};
use processes::{PARTITIONS, cli, stage, write_topology};
use stored::{WAIT, catalog, duckdb_counts, files_under, runtime, wait_for_rows};
use workload::{HOUR_US, Lcg, TOTAL, events, per_day};

fn archive_exactly_once(kind: BrokerKind) {
    let broker = Broker::start(kind);
    let dir = TempDir::new("archive-eos");
    let bucket = S3Bucket::create("kusanagi-archive");
    let topology_path = write_topology(dir.path(), &broker.bootstrap, &bucket);
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

    operator_commands(
        dir.path(),
        &topology_path,
        &topology,
        (&broker.bootstrap, &bucket.name),
        now_us,
        &events,
    );
}

fn operator_commands(
    dir: &Path,
    topology_path: &Path,
    topology: &Topology,
    (bootstrap, bucket): (&str, &str),
    now_us: i64,
    events: &[GameEvent],
) {
    const DAY_US: i64 = 24 * HOUR_US;
    let now = EventTime::from_micros(now_us).to_rfc3339();
    let (ok, _) = cli(topology_path, &["tier", "--now", &now]);
    assert!(ok, "kusanagi tier");

    // Hot holds at most 7 days, warm at most 30, cold the rest (by each
    // file's newest event: a file is one hour of one tenant).
    let catalog = catalog(topology);
    let mut per_tier = BTreeMap::new();
    for f in catalog.state().files() {
        let age = now_us - f.max_event_time_us;
        let fits = match f.tier {
            Tier::Hot => age <= 7 * DAY_US,
            Tier::Warm => age > 7 * DAY_US && age <= 30 * DAY_US,
            Tier::Cold => age > 30 * DAY_US,
        };
        assert!(fits, "{} is {} days old", f.key(), age / DAY_US);
        *per_tier.entry(f.tier).or_insert(0u64) += f.rows;
    }
    eprintln!("rows per tier after `kusanagi tier`: {per_tier:?}");
    assert_eq!(per_tier.len(), 3, "every tier holds files");
    assert_eq!(per_tier.values().sum::<u64>(), TOTAL as u64);
    for (tier, folder) in [(Tier::Hot, "archive/hot"), (Tier::Warm, "archive/warm")] {
        let listed: BTreeSet<String> = catalog
            .state()
            .files()
            .filter(|f| f.tier == tier)
            .map(|f| f.path.clone())
            .collect();
        assert_eq!(
            files_under(&dir.join(folder), "events"),
            listed,
            "{tier} folder = catalog"
        );
    }

    // DuckDB over every tier, cold read from S3.
    let cold = format!("s3://{bucket}/cold");
    let counts = duckdb_counts(
        "events",
        &[
            &dir.join("archive/hot"),
            &dir.join("archive/warm"),
            Path::new(&cold),
        ],
    );
    eprintln!(
        "DuckDB over hot, warm and cold (S3): {} rows, {} distinct event ids",
        counts["rows"], counts["distinct_ids"]
    );
    assert_eq!(counts["rows"], TOTAL as u64);
    assert_eq!(counts["distinct_ids"], TOTAL as u64);
    let want: serde_json::Value = serde_json::to_value(per_day(events)).expect("json");
    assert_eq!(counts["per_day"], want);

    // verify passes; one flipped byte fails it and names the file.
    let (ok, out) = cli(topology_path, &["verify"]);
    assert!(ok, "verify on a sound archive: {out}");
    let victim = catalog
        .state()
        .files()
        .find(|f| f.tier == Tier::Warm)
        .expect("a warm file")
        .path
        .clone();
    let victim_path = dir.join("archive/warm").join(&victim);
    let mut bytes = std::fs::read(&victim_path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&victim_path, &bytes).expect("write");
    let (ok, out) = cli(topology_path, &["verify"]);
    assert!(!ok, "verify must fail on a flipped byte");
    assert!(out.contains(&victim), "verify names {victim}: {out}");
    bytes[middle] ^= 0x01;
    std::fs::write(&victim_path, &bytes).expect("write");
    assert!(cli(topology_path, &["verify"]).0, "sound again");

    // restore: three days across the warm/cold boundary, exactly, in order.
    let day = |us: i64| {
        EventTime::from_micros(us)
            .to_datetime()
            .expect("time")
            .format("%Y-%m-%d")
            .to_string()
    };
    let (from, to) = (day(now_us - 31 * DAY_US), day(now_us - 29 * DAY_US));
    let out_dir = dir.join("restored");
    let restore = |target: &[&str]| {
        let mut args = vec!["restore", "--from", &from, "--to", &to];
        args.extend_from_slice(target);
        cli(topology_path, &args).0
    };
    assert!(
        restore(&["--out", &out_dir.display().to_string()]),
        "restore"
    );
    let lines = std::fs::read_to_string(out_dir.join("events.jsonl")).expect("restored file");
    let restored: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let want: BTreeSet<String> = events
        .iter()
        .filter(|e| {
            let d = day(e.timestamp.as_micros());
            d >= from && d <= to
        })
        .map(|e| e.event_id.clone())
        .collect();
    let got: BTreeSet<String> = restored
        .iter()
        .map(|v| v["event_id"].as_str().expect("event_id").to_owned())
        .collect();
    assert_eq!(restored.len(), want.len(), "no duplicates");
    assert_eq!(got, want, "exactly the range");
    let times: Vec<&str> = restored
        .iter()
        .map(|v| v["timestamp"].as_str().expect("ts"))
        .collect();
    let parsed: Vec<i64> = times
        .iter()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .expect("rfc3339")
                .timestamp_micros()
        })
        .collect();
    assert!(
        parsed.windows(2).all(|w| w[0] <= w[1]),
        "in event-time order"
    );
    eprintln!("restore {from}..{to}: {} events", restored.len());

    // The same range back into a topic, as Avro events keyed by target_id.
    assert!(
        restore(&["--to-topic", "events.restored"]),
        "restore --to-topic"
    );
    let mut reader = common::Reader::new(bootstrap, &["events.restored"]);
    assert!(
        reader.read_until(WAIT, |m| m.len() >= want.len()),
        "restored events arrive"
    );
    reader.drain(Duration::from_secs(2));
    let codec = GameEventCodec::new();
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    let mut got = BTreeSet::new();
    for m in &reader.messages {
        use rdkafka::Message;
        let e = codec
            .decode(m.payload().expect("value"))
            .expect("Avro event");
        assert_eq!(m.key(), Some(e.target_id.as_bytes()));
        per_partition
            .entry(m.partition())
            .or_default()
            .push(e.timestamp.as_micros());
        assert!(got.insert(e.event_id), "once each");
    }
    assert_eq!(got, want, "the topic holds exactly the range");
    for times in per_partition.values() {
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "in event-time order per partition"
        );
    }

    let (ok, out) = cli(topology_path, &["stats", "--json"]);
    assert!(ok, "stats");
    let stats: serde_json::Value = serde_json::from_str(&out).expect("stats JSON");
    let all = stats
        .as_array()
        .expect("array")
        .iter()
        .find(|s| s["table"] == "events" && s["tier"] == "all")
        .expect("events, all tiers")
        .clone();
    eprintln!(
        "compression of events: {} bytes stored for {} bytes of JSON, saving {:.1}%",
        all["bytes_stored"],
        all["bytes_json"],
        all["saving"].as_f64().unwrap_or(0.0) * 100.0
    );
    assert!(
        all["saving"].as_f64().unwrap_or(0.0) > 0.7,
        "at least the seed's 70% saving"
    );
}

#[test]
fn archive_exactly_once_across_sigkills_on_noida_db_process() {
    archive_exactly_once(BrokerKind::NoidaDb);
}

#[test]
fn archive_exactly_once_across_sigkills_on_embedded_broker() {
    archive_exactly_once(BrokerKind::Embedded);
}
