//! The embedded broker keeps what it acknowledged across `kill -9`
//! (`kusanagi broker`, its own process, SIGKILLed and restarted on the same
//! data directory and port), through its journal (`docs/broker.md`):
//! - 20,000 events from an idempotent producer (`acks=all`), every one
//!   acknowledged, the broker killed at once (well inside its checkpoint
//!   interval), restarted; the same producer (alive across the kill) and a
//!   new one send 10,000 more: a `read_committed` reader counts each of the
//!   30,000 once;
//! - a transaction open when the broker is killed: its records are never
//!   seen by `read_committed` readers, and a new producer with the same
//!   transactional id carries on.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use common::{
    ChildGuard, Reader, free_port, kusanagi_with_env, produce_all, producer, tempdir::TempDir,
    wait_for_port,
};
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};

/// `kusanagi broker` on `addr`, its data in `<dir>/data` (the same for
/// every generation, so a restart recovers what the last one left).
fn broker(dir: &Path, addr: &str, generation: u32) -> ChildGuard {
    let topology = dir.join("topology.toml");
    std::fs::write(&topology, "").expect("topology");
    let data = dir.join("data");
    let data = data.to_str().expect("a UTF-8 temp path");
    let child = kusanagi_with_env(
        dir,
        &format!("broker-{generation}"),
        &topology,
        &["broker", "--listen", addr, "--data-dir", data],
        &[],
    );
    wait_for_port(addr, Duration::from_secs(30));
    child
}

fn create_topic(addr: &str, topic: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let done = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        ))
        .expect("create topic");
    assert!(done.iter().all(|r| r.is_ok()), "{done:?}");
}

/// Sends `ev-<i>` for each `i` of `range`, keyed by itself, and waits for
/// every acknowledgement.
fn send(p: &ThreadedProducer<DefaultProducerContext>, topic: &str, range: std::ops::Range<u32>) {
    let records: Vec<(String, Vec<u8>)> = range
        .map(|i| {
            let value = format!("ev-{i:06}");
            (value.clone(), value.into_bytes())
        })
        .collect();
    produce_all(p, topic, &records);
}

fn values(addr: &str, topic: &str, want: usize) -> Vec<String> {
    let mut reader = Reader::new(addr, &[topic]);
    reader.read_until(Duration::from_secs(60), |m| m.len() >= want);
    reader.drain(Duration::from_secs(2));
    reader
        .of(topic)
        .map(|m| String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap())
        .collect()
}

#[test]
fn kill_9_loses_no_acknowledged_event() {
    let dir = TempDir::new("durability");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut b = broker(dir.path(), &addr, 1);
    create_topic(&addr, "events.raw");
    let live = producer(&addr);
    send(&live, "events.raw", 0..20_000);
    b.kill9(); // every event acknowledged, no checkpoint since the topic was made
    let _b = broker(dir.path(), &addr, 2);
    // The producer that lived across the kill goes on, and a new one.
    send(&live, "events.raw", 20_000..25_000);
    send(&producer(&addr), "events.raw", 25_000..30_000);
    let got = values(&addr, "events.raw", 30_000);
    let distinct: HashSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), 30_000, "every acknowledged event is there");
    assert_eq!(got.len(), 30_000, "and each once");
}

#[test]
fn a_transaction_open_at_kill_9_is_never_read_and_its_id_carries_on() {
    let dir = TempDir::new("durability-txn");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut b = broker(dir.path(), &addr, 1);
    create_topic(&addr, "out");
    let txn = |id: &str| -> ThreadedProducer<DefaultProducerContext> {
        let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("transactional.id", id)
            .create()
            .expect("transactional producer");
        p.init_transactions(Duration::from_secs(30)).expect("init");
        p
    };
    let first = txn("stage-a");
    first.begin_transaction().unwrap();
    send(&first, "out", 0..100);
    first.commit_transaction(Duration::from_secs(30)).unwrap();
    first.begin_transaction().unwrap();
    send(&first, "out", 100..200); // acknowledged, never committed
    b.kill9();
    drop(first);
    let _b = broker(dir.path(), &addr, 2);
    let next = txn("stage-a");
    next.begin_transaction().unwrap();
    send(&next, "out", 200..300);
    next.commit_transaction(Duration::from_secs(30)).unwrap();
    let got = values(&addr, "out", 200);
    let want: Vec<String> = (0..100)
        .chain(200..300)
        .map(|i| format!("ev-{i:06}"))
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(
        sorted, want,
        "the open transaction's records are never read"
    );
}
