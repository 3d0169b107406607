//! The embedded broker end to end, over TCP with librdkafka clients as
//! Kusanagi's stages use them (idempotent, `acks=all`, zstd, `linger.ms=5`):
//! produce throughput (records sent as fast as the client takes them),
//! produce latency (send to acknowledgement, records paced at
//! `LATENCY_RATE` per second, so that it shows the broker, not a queue),
//! then consume throughput (`read_committed`, everything from the start),
//! for
//! - `memory`: the engine before the journal (state in memory only; the
//!   snapshot it also wrote every 5 s is left out, which favours it),
//! - `os`: the journal written to the OS before each answer (the default),
//! - `always`: the journal fsynced before each answer.
//!
//! The modes take turns, round after round, in one process, so that they
//! share whatever else the machine is doing; the report gives each mode's
//! medians over the rounds and its ratio to `memory` in the same run.
//!
//! Then recovery: a crash image (the data directory copied while the
//! broker runs, as a SIGKILL leaves it) holding the records of a produce
//! run and no checkpoint, started again: how long until it serves, and so
//! how many journal entries a second recovery replays. A checkpoint every
//! `snapshot_interval_ms` bounds what a crash leaves to replay.
//!
//! `cargo bench -p kusanagi-connectors --bench broker` (env:
//! `BROKER_BENCH_RECORDS`, default 200000; `BROKER_BENCH_ROUNDS`, default 3).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kusanagi_connectors::kafka::{EmbeddedBroker, FlushPolicy};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

const TOPIC: &str = "bench";
const PARTITIONS: i32 = 6;
const VALUE_BYTES: usize = 200;
/// Records per second of the latency phase, and its length.
const LATENCY_RATE: u64 = 2_000;
const LATENCY_SECONDS: u64 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Memory,
    Os,
    Always,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Memory, Mode::Os, Mode::Always];

    fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory (before)",
            Mode::Os => "journal, flush os",
            Mode::Always => "journal, flush always",
        }
    }
}

/// A broker of `mode` on a free port; `_keep` holds what must outlive it.
struct Running {
    bootstrap: String,
    _broker: Option<EmbeddedBroker>,
    _dir: Option<TempDir>,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(mode: Mode, round: usize) -> Running {
    let flush = match mode {
        Mode::Memory => {
            let addr = noida::kafka::spawn("127.0.0.1:0").expect("memory broker");
            return Running {
                bootstrap: addr.to_string(),
                _broker: None,
                _dir: None,
            };
        }
        Mode::Os => FlushPolicy::Os,
        Mode::Always => FlushPolicy::Always,
    };
    let dir = std::env::temp_dir().join(format!(
        "kusanagi-broker-bench-{}-{round}-{mode:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    // Checkpoints every 5 s, as `kusanagi run` by default.
    let broker = EmbeddedBroker::start_with("127.0.0.1:0", &dir, Duration::from_secs(5), flush)
        .expect("embedded broker");
    Running {
        bootstrap: broker.addr().to_string(),
        _broker: Some(broker),
        _dir: Some(TempDir(dir)),
    }
}

fn create_topic(bootstrap: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topic");
    assert!(done.iter().all(Result::is_ok), "{done:?}");
}

/// Records each delivery's latency (the send instant rides as the opaque).
#[derive(Default)]
struct Latencies(Mutex<Vec<Duration>>);

impl ClientContext for Latencies {}

impl ProducerContext for Latencies {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        assert!(result.is_ok(), "a delivery failed: {result:?}");
        self.0.lock().unwrap().push(sent.elapsed());
    }
}

struct Figures {
    produce_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    consume_per_s: f64,
}

/// `n` values of `VALUE_BYTES` printable bytes, no two alike and about as
/// compressible as JSON events (a fixed seed: the same in every mode).
fn values(n: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x2026_1207;
    (0..n)
        .map(|_| {
            (0..VALUE_BYTES)
                .map(|i| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    // Half from a small alphabet (field names), half random.
                    if i % 2 == 0 {
                        b"event_idtargetamount"[(x >> 60) as usize % 20]
                    } else {
                        b'!' + (x >> 57) as u8 % 90
                    }
                })
                .collect()
        })
        .collect()
}

fn send(producer: &ThreadedProducer<Latencies>, key: &str, value: &[u8]) {
    let mut record = BaseRecord::with_opaque_to(TOPIC, Box::new(Instant::now()))
        .key(key)
        .payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
        }
    }
}

fn run(bootstrap: &str, records: usize, values: &[Vec<u8>]) -> Figures {
    create_topic(bootstrap);
    let context = Latencies::default();
    let producer: ThreadedProducer<Latencies> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create_with_context(context)
        .expect("producer");
    let keys: Vec<String> = (0..1_000).map(|i| format!("acct_{i:04}")).collect();
    let started = Instant::now();
    for i in 0..records {
        send(&producer, &keys[i % keys.len()], &values[i % values.len()]);
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let produce = started.elapsed();
    assert_eq!(
        producer.context().0.lock().unwrap().len(),
        records,
        "every record acknowledged"
    );
    producer.context().0.lock().unwrap().clear();

    let paced = (LATENCY_RATE * LATENCY_SECONDS) as usize;
    let started = Instant::now();
    for i in 0..paced {
        let due = started + Duration::from_micros(i as u64 * 1_000_000 / LATENCY_RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        send(
            &producer,
            &keys[i % keys.len()],
            &values[(records + i) % values.len()],
        );
    }
    producer.flush(Duration::from_secs(120)).expect("flush");
    let mut latencies = std::mem::take(&mut *producer.context().0.lock().unwrap());
    assert_eq!(latencies.len(), paced, "every paced record acknowledged");
    latencies.sort();
    let records = records + paced;
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .expect("consumer");
    consumer.subscribe(&[TOPIC]).expect("subscribe");
    let started = Instant::now();
    let mut read = 0;
    while read < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                assert_eq!(m.payload().map(<[u8]>::len), Some(VALUE_BYTES));
                read += 1;
            }
            Some(Err(e)) => panic!("consume: {e}"),
            None => assert!(
                started.elapsed() < Duration::from_secs(120),
                "consume stalled at {read}"
            ),
        }
    }
    let consume = started.elapsed();
    Figures {
        produce_per_s: records as f64 / produce.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        consume_per_s: records as f64 / consume.as_secs_f64(),
    }
}

/// Produces `records` into a broker that never checkpoints, copies its data
/// directory (a crash image), and times a broker started on the copy.
/// Returns (seconds to recover, journal bytes).
fn recovery(round: usize, records: usize, values: &[Vec<u8>]) -> (f64, u64) {
    let base = std::env::temp_dir().join(format!(
        "kusanagi-broker-bench-{}-{round}-recovery",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&base);
    let (live, image) = (base.join("live"), base.join("image"));
    let _cleanup = TempDir(base.clone());
    let broker = EmbeddedBroker::start_with(
        "127.0.0.1:0",
        &live,
        Duration::from_secs(3_600),
        FlushPolicy::Os,
    )
    .expect("embedded broker");
    run(&broker.addr().to_string(), records, values);
    std::fs::create_dir_all(&image).unwrap();
    let mut bytes = 0;
    for entry in std::fs::read_dir(&live).unwrap().flatten() {
        bytes += std::fs::copy(entry.path(), image.join(entry.file_name())).unwrap();
    }
    let started = Instant::now();
    let recovered = EmbeddedBroker::start_with(
        "127.0.0.1:0",
        &image,
        Duration::from_secs(3_600),
        FlushPolicy::Os,
    )
    .expect("recovered broker");
    let took = started.elapsed().as_secs_f64();
    drop(recovered);
    std::mem::forget(broker); // as a crash would: no last checkpoint
    (took, bytes)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it once small.
    let quick = !std::env::args().any(|a| a == "--bench");
    let records = if quick {
        2_000
    } else {
        env_or("BROKER_BENCH_RECORDS", 200_000)
    };
    let rounds = if quick {
        1
    } else {
        env_or("BROKER_BENCH_ROUNDS", 3)
    };
    let values = values(50_000);
    let mut results: Vec<(Mode, Figures)> = Vec::new();
    for round in 0..rounds {
        for mode in Mode::ALL {
            let broker = start(mode, round);
            let f = run(&broker.bootstrap, records, &values);
            eprintln!(
                "round {} {:<22} produce {:>9.0} rec/s  p50 {:>6.2} ms  p99 {:>7.2} ms  consume {:>9.0} rec/s",
                round + 1,
                mode.name(),
                f.produce_per_s,
                f.p50_ms,
                f.p99_ms,
                f.consume_per_s
            );
            results.push((mode, f));
        }
    }
    let mut recoveries = Vec::new();
    for round in 0..rounds {
        recoveries.push(recovery(round, records, &values));
    }
    let of = |mode: Mode, pick: fn(&Figures) -> f64| {
        median(
            results
                .iter()
                .filter(|(m, _)| *m == mode)
                .map(|(_, f)| pick(f))
                .collect(),
        )
    };
    println!(
        "embedded broker, {records} records of {VALUE_BYTES} B over {PARTITIONS} partitions as fast as taken, then \
         {} paced at {LATENCY_RATE}/s for the latency; median of {rounds} round(s)",
        LATENCY_RATE * LATENCY_SECONDS
    );
    println!(
        "{:<22} {:>12} {:>7} {:>10} {:>10} {:>7} {:>12} {:>7}",
        "mode", "produce/s", "ratio", "p50 ms", "p99 ms", "ratio", "consume/s", "ratio"
    );
    let base = (
        of(Mode::Memory, |f| f.produce_per_s),
        of(Mode::Memory, |f| f.p99_ms),
        of(Mode::Memory, |f| f.consume_per_s),
    );
    for mode in Mode::ALL {
        let (produce, p50, p99, consume) = (
            of(mode, |f| f.produce_per_s),
            of(mode, |f| f.p50_ms),
            of(mode, |f| f.p99_ms),
            of(mode, |f| f.consume_per_s),
        );
        println!(
            "{:<22} {:>12.0} {:>7.2} {:>10.2} {:>10.2} {:>7.2} {:>12.0} {:>7.2}",
            mode.name(),
            produce,
            produce / base.0,
            p50,
            p99,
            p99 / base.1,
            consume,
            consume / base.2
        );
    }
    let held = records as u64 + LATENCY_RATE * LATENCY_SECONDS;
    let took = median(recoveries.iter().map(|r| r.0).collect());
    let bytes = median(recoveries.iter().map(|r| r.1 as f64).collect());
    println!(
        "recovery of a crash image of {held} records ({:.1} MB of journal, no checkpoint): {took:.2} s, \
         {:.0} records/s replayed (median of {rounds})",
        bytes / 1e6,
        held as f64 / took
    );
}
