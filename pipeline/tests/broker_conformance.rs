//! The one piece of Apache Kafka's transaction semantics every
//! exactly-once suite leans on after a crash, checked on each broker the
//! suites run on: a `read_committed` consumer that starts *after* an
//! aborted transaction of a producer still reads that producer's later
//! committed records, and one that starts *inside* the aborted transaction
//! still skips its records.
//!
//! A stage that restarts keeps its transactional id, so its producer id:
//! its restart aborts the transaction the killed copy left open, then the
//! same producer writes on. If a broker reports that old aborted
//! transaction to a fetch that starts past its abort marker, librdkafka
//! drops every later batch of the producer and the consumer's partition
//! stalls for good (docs/testing.md, "noida-db and aborted transactions").

mod common;

use std::time::{Duration, Instant};

use common::{Broker, BrokerKind};
use kusanagi_connectors::kafka::{EmbeddedBroker, KafkaSettings, TopicSpec, ensure_topics};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

const TOPIC: &str = "conformance";
const PER_TXN: usize = 5;

fn transactional_producer(bootstrap: &str, id: &str) -> ThreadedProducer<DefaultProducerContext> {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", id)
        .set("linger.ms", "0")
        .create()
        .expect("transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions");
    producer
}

/// Writes `PER_TXN` records named `{tag}-{i}`, one batch each, inside the
/// producer's open transaction.
fn write(producer: &ThreadedProducer<DefaultProducerContext>, tag: &str) {
    for i in 0..PER_TXN {
        let value = format!("{tag}-{i}");
        producer
            .send(BaseRecord::to(TOPIC).partition(0).key("k").payload(&value))
            .expect("queued");
        producer.flush(Duration::from_secs(30)).expect("acked");
    }
}

/// How a transaction of the tests ends.
enum Ends {
    Committed,
    Aborted,
}

/// One transaction of `write`'s records named `{tag}-{i}`, ended as `ends`.
fn transaction(producer: &ThreadedProducer<DefaultProducerContext>, tag: &str, ends: Ends) {
    producer.begin_transaction().expect("begin");
    write(producer, tag);
    let timeout = Duration::from_secs(30);
    match ends {
        Ends::Committed => producer.commit_transaction(timeout).expect("commit"),
        Ends::Aborted => producer.abort_transaction(timeout).expect("abort"),
    }
}

/// Everything a fresh `read_committed` consumer reads from `from` until the
/// partition has been quiet for a while.
fn read_from(bootstrap: &str, from: i64) -> Vec<(i64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("conformance-{from}"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Offset(from))
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let mut got = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < Duration::from_secs(5) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("fetch");
            let value = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            got.push((m.offset(), value));
            last = Instant::now();
        }
    }
    got
}

fn values(read: &[(i64, String)]) -> Vec<&str> {
    read.iter().map(|(_, v)| v.as_str()).collect()
}

fn names(tag: &str) -> Vec<String> {
    (0..PER_TXN).map(|i| format!("{tag}-{i}")).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The one-partition topic the tests write.
fn create_topic(bootstrap: &str) {
    let settings = KafkaSettings::new(bootstrap.to_owned());
    let topic = TopicSpec {
        name: TOPIC.into(),
        partitions: 1,
        replication_factor: 1,
        configs: vec![],
    };
    runtime()
        .block_on(ensure_topics(&settings, &[topic]))
        .expect("topic");
}

/// Makes the topic, then the history: a committed transaction, an aborted
/// one, one left open by a copy that "dies" and is aborted by its restart
/// (same transactional id, so the same producer id), and a committed one
/// of the restarted copy.
fn write_history(bootstrap: &str) {
    create_topic(bootstrap);
    let first = transactional_producer(bootstrap, "conformance-t");
    transaction(&first, "committed-a", Ends::Committed);
    transaction(&first, "aborted-b", Ends::Aborted);
    first.begin_transaction().expect("begin");
    write(&first, "left-open-c");
    // The first copy "dies" with its transaction open; the restart aborts it.
    std::mem::forget(first);
    let second = transactional_producer(bootstrap, "conformance-t");
    transaction(&second, "committed-d", Ends::Committed);
}

/// What `read_committed` readers from every offset of interest get.
fn check_reads(bootstrap: &str, broker: &str) {
    let all = read_from(bootstrap, 0);
    let mut want: Vec<String> = names("committed-a");
    want.extend(names("committed-d"));
    assert_eq!(values(&all), want, "from offset 0 on {broker}");
    let first_d = all[PER_TXN].0;
    let last_a = all[PER_TXN - 1].0;

    // From the first offset after every aborted record and marker: the
    // producer's committed records must still come.
    let after = read_from(bootstrap, first_d);
    assert_eq!(
        values(&after),
        names("committed-d"),
        "a read_committed reader from offset {first_d} (past two aborted transactions of the same producer) on {broker}"
    );
    // From inside the aborted transactions: their records stay hidden.
    for from in [last_a + 1, last_a + 3, first_d - 3, first_d - 1] {
        let inside = read_from(bootstrap, from);
        assert_eq!(
            values(&inside),
            names("committed-d"),
            "a read_committed reader from offset {from} on {broker}"
        );
    }
}

fn reads_past_an_aborted_transaction(kind: BrokerKind) {
    let broker = Broker::start(kind);
    write_history(&broker.bootstrap);
    check_reads(&broker.bootstrap, &format!("{kind:?}"));
}

/// Removes every `abort_markers` list from a saved broker state (as a
/// snapshot saved before they were kept looks); returns how many entries
/// they held.
fn strip_abort_markers(v: &mut serde_json::Value) -> usize {
    match v {
        serde_json::Value::Object(map) => {
            let held = map
                .remove("abort_markers")
                .and_then(|m| m.as_array().map(Vec::len))
                .unwrap_or(0);
            held + map.values_mut().map(strip_abort_markers).sum::<usize>()
        }
        serde_json::Value::Array(items) => items.iter_mut().map(strip_abort_markers).sum(),
        _ => 0,
    }
}

#[test]
fn read_committed_reads_past_an_aborted_transaction_on_noida_db_process() {
    reads_past_an_aborted_transaction(BrokerKind::NoidaDb);
}

#[test]
fn read_committed_reads_past_an_aborted_transaction_on_embedded_broker() {
    reads_past_an_aborted_transaction(BrokerKind::Embedded);
}

/// A broker state saved before abort markers were kept is read again: the
/// markers are found in the log, and readers behave the same.
#[test]
fn an_embedded_broker_state_saved_without_abort_markers_reads_the_same() {
    let dir = common::tempdir::TempDir::new("conformance-snapshot");
    let broker =
        EmbeddedBroker::start("127.0.0.1:0", dir.path(), Duration::from_secs(60)).expect("broker");
    write_history(&broker.addr().to_string());
    drop(broker); // saves kafka.json
    let path = dir.path().join("kafka.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("saved state")).expect("json");
    assert_eq!(
        strip_abort_markers(&mut state),
        2,
        "the saved state held the markers of both aborted transactions"
    );
    std::fs::write(&path, serde_json::to_vec(&state).expect("json")).expect("rewrite");
    let restarted = EmbeddedBroker::start("127.0.0.1:0", dir.path(), Duration::from_secs(60))
        .expect("broker restarts from the old state");
    check_reads(
        &restarted.addr().to_string(),
        "an embedded broker restarted from an old state",
    );
}

/// Keeps the client's latest statistics (librdkafka's JSON).
#[derive(Default)]
struct LatestStats(std::sync::Mutex<Option<serde_json::Value>>);

impl rdkafka::ClientContext for LatestStats {
    fn stats_raw(&self, statistics: &[u8]) {
        if let Ok(v) = serde_json::from_slice(statistics) {
            *self.0.lock().unwrap() = Some(v);
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LatestStats {}

fn idle_consumer_waits_in_the_broker(kind: BrokerKind) {
    let broker = Broker::start(kind);
    write_history(&broker.bootstrap);
    let consumer: BaseConsumer<LatestStats> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "conformance-idle")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "500")
        .set("statistics.interval.ms", "500")
        .create_with_context(LatestStats::default())
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::End)
        .expect("offset");
    consumer.assign(&tpl).expect("assign");
    let fetches = || -> u64 {
        let stats = consumer.context().0.lock().unwrap().clone();
        stats
            .and_then(|s| {
                s["brokers"].as_object().map(|brokers| {
                    brokers
                        .values()
                        .map(|b| b["req"]["Fetch"].as_u64().unwrap_or(0))
                        .sum()
                })
            })
            .unwrap_or(0)
    };
    // Settle, then count the fetches of 4 idle seconds.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        assert!(consumer.poll(Duration::from_millis(100)).is_none());
    }
    let before = fetches();
    let idle = Instant::now() + Duration::from_secs(4);
    while Instant::now() < idle {
        assert!(consumer.poll(Duration::from_millis(100)).is_none());
    }
    let during = fetches() - before;
    // With the fetch held up to fetch.wait.max.ms (500 ms), about 8; a broker
    // answering empty fetches at once gets thousands.
    assert!(
        during <= 40,
        "an idle read_committed consumer sent {during} fetches in 4 s on {kind:?}: the broker does not wait max_wait_ms for records"
    );
    assert!(during >= 2, "the statistics counted {during} fetches");
}

#[test]
fn an_idle_consumer_waits_in_the_broker_on_noida_db_process() {
    idle_consumer_waits_in_the_broker(BrokerKind::NoidaDb);
}

#[test]
fn an_idle_consumer_waits_in_the_broker_on_embedded_broker() {
    idle_consumer_waits_in_the_broker(BrokerKind::Embedded);
}

/// Records deleted up to the middle of an aborted transaction (DeleteRecords,
/// as retention may cut too): the rest of that transaction stays hidden.
fn truncation_inside_an_aborted_transaction(kind: BrokerKind) {
    let broker = Broker::start(kind);
    create_topic(&broker.bootstrap);
    let producer = transactional_producer(&broker.bootstrap, "conformance-cut");
    transaction(&producer, "aborted-x", Ends::Aborted); // offsets 0..=4, its abort marker at 5
    transaction(&producer, "committed-y", Ends::Committed);
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .expect("admin");
    let mut before = TopicPartitionList::new();
    before
        .add_partition_offset(TOPIC, 0, Offset::Offset(2))
        .expect("offset");
    let deleted = runtime()
        .block_on(admin.delete_records(&before, &AdminOptions::new()))
        .expect("DeleteRecords");
    assert!(
        deleted.elements().iter().all(|e| e.error().is_ok()),
        "DeleteRecords on {kind:?}: {deleted:?}"
    );
    for from in [2, 3] {
        assert_eq!(
            values(&read_from(&broker.bootstrap, from)),
            names("committed-y"),
            "a read_committed reader from offset {from}, after the log start moved to 2 (inside an aborted transaction), on {kind:?}"
        );
    }
}

#[test]
fn truncation_inside_an_aborted_transaction_hides_its_rest_on_noida_db_process() {
    truncation_inside_an_aborted_transaction(BrokerKind::NoidaDb);
}

#[test]
fn truncation_inside_an_aborted_transaction_hides_its_rest_on_embedded_broker() {
    truncation_inside_an_aborted_transaction(BrokerKind::Embedded);
}
