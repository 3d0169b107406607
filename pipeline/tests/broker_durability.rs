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
//!   transactional id carries on;
//! - a journal whose last write was cut short recovers every acknowledged
//!   event; one with a byte flipped in its middle refuses to start, naming
//!   the file and the byte.

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

/// The broker's recovery report in its log, once written (the port may
/// answer a moment before it is: a loaded machine showed it).
fn recovery_line(log: &Path) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("embedded broker recovered"))
        {
            return line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no recovery report in {}: {text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// The newest journal file in the broker's data directory.
fn newest_journal(dir: &Path) -> std::path::PathBuf {
    let mut journals: Vec<_> = std::fs::read_dir(dir.join("data"))
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("journal-") && n.ends_with(".log"))
        })
        .collect();
    journals.sort();
    journals.pop().expect("a journal file")
}

#[test]
fn a_torn_tail_recovers_and_a_damaged_journal_refuses_to_start() {
    let dir = TempDir::new("durability-torn");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut b = broker(dir.path(), &addr, 1);
    create_topic(&addr, "events.raw");
    send(&producer(&addr), "events.raw", 0..2_000);
    b.kill9();

    // A write cut short by the crash: the first 30 bytes of a frame (its
    // header and a little of its request) after the last whole one.
    let journal = newest_journal(dir.path());
    let mut bytes = std::fs::read(&journal).unwrap();
    let frame_start = 8; // after the file's magic
    let torn = bytes[frame_start..frame_start + 30].to_vec();
    bytes.extend_from_slice(&torn);
    std::fs::write(&journal, &bytes).unwrap();
    let mut b = broker(dir.path(), &addr, 2);
    let log = recovery_line(&dir.path().join("broker-2.log"));
    assert!(
        log.contains("torn_tail=Some"),
        "the torn tail is reported: {log}"
    );
    assert_eq!(
        values(&addr, "events.raw", 2_000).len(),
        2_000,
        "every acknowledged event"
    );
    send(&producer(&addr), "events.raw", 2_000..4_000);
    b.kill9();

    // A byte flipped in the middle of the journal (a damaged disk, not a
    // crash): the broker refuses to start and says where.
    let journal = newest_journal(dir.path());
    let mut bytes = std::fs::read(&journal).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&journal, &bytes).unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kusanagi"))
        .args(["broker", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .output()
        .expect("kusanagi broker");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it does not start: {stderr}");
    let name = journal.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr.contains(name) && stderr.contains("is damaged at byte"),
        "the message names the file and where: {stderr}"
    );
}
