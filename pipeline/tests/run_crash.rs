//! The whole `kusanagi run` (the embedded broker and every stage in one
//! process) SIGKILLed 5 times at random moments while two idempotent
//! producers (`acks=all`), alive across the kills, send 20,000 JSON events
//! to `events.raw`. Afterwards every acknowledged event is in `events.raw`,
//! and `events`, `screenings` and the archive (counted with DuckDB) hold
//! each exactly once.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{ChildGuard, Reader, TopologyFile, free_port, tempdir::TempDir, wait_for_port};
use kusanagi_pipeline::catalog::Catalog;
use kusanagi_pipeline::config::Topology;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

const TOTAL: usize = 20_000;
const PRODUCERS: usize = 2;
const KILLS: usize = 5;
/// Events per second, over both producers: about 20 s of sending.
const RATE: usize = 1_000;
const WAIT: Duration = Duration::from_secs(300);

fn event(i: usize) -> Vec<u8> {
    format!(
        r#"{{"event_id":"crash-{i:05}","timestamp":"2099-01-01T00:{:02}:{:02}Z","actor_id":"p{}","target_id":"acct_{}","action_details":{{"currency_amount":{},"market_avg_price":1000}},"context_metadata":{{"actor_level":3}}}}"#,
        (i / 60) % 60,
        i % 60,
        i % 331,
        i % 97,
        100 + i * 13 % 5_000
    )
    .into_bytes()
}

fn write_topology(dir: &Path, broker: &str, http: &str) -> PathBuf {
    TopologyFile::new()
        .set("instance.id", "crash")
        .set("embedded_broker.listen", broker)
        .path("embedded_broker.data_dir", &dir.join("data/broker"))
        .set("kafka.session_timeout_ms", 6000)
        .set("topics.partitions", 3)
        .set("stages.screen.max_future_seconds", 0)
        .set("stages.archive.rotate_after_seconds", 1)
        .archive_in(&dir.join("archive"))
        .set("http.listen", http)
        .write(dir)
}

fn run(dir: &Path, topology: &Path, n: usize, broker: &str) -> ChildGuard {
    let child = common::kusanagi(dir, &format!("run-{n}"), topology, &["run"]);
    wait_for_port(broker, Duration::from_secs(60));
    child
}

/// Counts acknowledgements; any failed delivery fails the test.
#[derive(Default)]
struct Acks(AtomicUsize);

impl rdkafka::ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            panic!("a delivery failed at offset {}: {e}", m.offset());
        }
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends `ids` at `rate` per second, then waits for every acknowledgement.
fn produce(bootstrap: String, ids: Vec<usize>, rate: usize) -> usize {
    let p: ThreadedProducer<Acks> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "240000")
        .set("reconnect.backoff.max.ms", "500")
        .create_with_context(Acks::default())
        .expect("producer");
    let started = Instant::now();
    for (n, i) in ids.iter().enumerate() {
        let due = started + Duration::from_secs_f64(n as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let key = format!("acct_{}", i % 97);
        let value = event(*i);
        common::send_waiting(&p, BaseRecord::to("events.raw").key(&key).payload(&value));
    }
    p.flush(Duration::from_secs(240))
        .expect("every event acknowledged");
    p.context().0.load(Ordering::Relaxed)
}

/// The event ids of `topic`, once `want` records were read (or `WAIT`).
fn event_ids(bootstrap: &str, topic: &str, want: usize) -> Vec<String> {
    let mut reader = Reader::new(bootstrap, &[topic]);
    reader.read_until(WAIT, |m| m.len() >= want);
    reader.drain(Duration::from_secs(3));
    reader
        .of(topic)
        .map(|m| {
            let payload = m.payload().unwrap_or_default();
            match topic {
                "events.raw" => {
                    let v: serde_json::Value = serde_json::from_slice(payload).expect("JSON");
                    v["event_id"].as_str().expect("event_id").to_owned()
                }
                "events" => {
                    kusanagi_schemas::GameEventCodec::new()
                        .decode(payload)
                        .expect("an event")
                        .event_id
                }
                _ => {
                    kusanagi_schemas::RecordCodec::<kusanagi_schemas::Screening>::new()
                        .decode(payload)
                        .expect("a screening")
                        .event_id
                }
            }
        })
        .collect()
}

fn assert_once(what: &str, ids: &[String]) {
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), TOTAL, "{what}: every acknowledged event");
    assert_eq!(ids.len(), TOTAL, "{what}: and each once");
}

#[test]
fn kusanagi_run_killed_5_times_loses_and_repeats_nothing() {
    let dir = TempDir::new("run-crash");
    let broker = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let topology = write_topology(dir.path(), &broker, &http);
    let mut process = run(dir.path(), &topology, 0, &broker);

    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let ids: Vec<usize> = (p..TOTAL).step_by(PRODUCERS).collect();
            let bootstrap = broker.clone();
            std::thread::spawn(move || produce(bootstrap, ids, RATE / PRODUCERS))
        })
        .collect();

    // Kills at random moments 1.5-4.5 s apart while the events flow
    // (a fixed seed, so a failure can be replayed).
    let mut seed: u64 = 20_261_207;
    for n in 1..=KILLS {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis(1_500 + (seed >> 33) % 3_000));
        process.kill9();
        eprintln!("[run-crash] kill {n} of `kusanagi run`");
        process = run(dir.path(), &topology, n, &broker);
    }
    let acked: usize = producers
        .into_iter()
        .map(|p| p.join().expect("a producer"))
        .sum();
    assert_eq!(acked, TOTAL, "every event acknowledged");

    assert_once("events.raw", &event_ids(&broker, "events.raw", TOTAL));
    assert_once("events", &event_ids(&broker, "events", TOTAL));
    assert_once("screenings", &event_ids(&broker, "screenings", TOTAL));

    // The archive: the catalog lists every event, and DuckDB counts each once.
    let loaded = Topology::load(&topology).expect("topology");
    let store = loaded.archive.open_catalog_store().expect("catalog store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let end = Instant::now() + WAIT;
    loop {
        let catalog = rt
            .block_on(Catalog::open(store.clone(), "test"))
            .expect("catalog");
        let rows: u64 = catalog
            .state()
            .files()
            .filter(|f| f.path.starts_with("events/"))
            .map(|f| f.rows)
            .sum();
        if rows >= TOTAL as u64 {
            assert_eq!(rows, TOTAL as u64, "the catalog lists each event once");
            break;
        }
        assert!(Instant::now() < end, "only {rows} events archived");
        std::thread::sleep(Duration::from_millis(500));
    }
    let hot = dir.path().join("archive/hot");
    let counts = common::duckdb_script("archive_counts.py", [Path::new("events"), hot.as_path()]);
    assert_eq!(counts["rows"], TOTAL, "DuckDB: rows");
    assert_eq!(counts["distinct_ids"], TOTAL, "DuckDB: distinct event ids");
    drop(process);
}
