//! Scaling by consumer groups, as an operator sees it: two copies of the
//! screen stage share the partitions of `events`; when one is stopped
//! (scale-down, `kafka.static_membership = false`) or killed with SIGKILL,
//! the other takes its partitions over (a killed copy's once the broker
//! expires its session: `session_timeout_ms`), the lag of every partition
//! is in its metrics, and every event is screened once.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerKind, ChildGuard, Reader, TopologyFile, free_port, http, kusanagi_with_env,
    new_key, produce_all, producer, tempdir::TempDir, wait_for_port,
};
use rdkafka::Message;

const PARTITIONS: i32 = 4;
const SESSION_TIMEOUT_MS: u64 = 6_000;

fn events(from: usize, n: usize) -> Vec<(String, Vec<u8>)> {
    common::trades((from..from + n).map(|i| (format!("h-{i}"), i)), 400)
}

/// The screen stage's partitions and their lag, from a copy's `/metrics`.
#[derive(Debug, Default)]
struct Seen {
    assigned: Option<i64>,
    lag: BTreeMap<i32, i64>,
}

fn seen(addr: &str, key: &str) -> Seen {
    let (status, text) = http(addr, "GET", "/metrics", Some(key), b"");
    assert_eq!(status, 200, "{text}");
    let mut s = Seen::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("kusanagi_assigned_partitions{stage=\"screen\"} ") {
            s.assigned = v.parse().ok();
        }
        if let Some(rest) = line
            .strip_prefix("kusanagi_consumer_lag{stage=\"screen\",topic=\"events\",partition=\"")
            && let Some((p, v)) = rest.split_once("\"} ")
        {
            s.lag.insert(p.parse().unwrap(), v.parse().unwrap());
        }
    }
    s
}

fn start(dir: &Path, name: &str, topology: &Path, addr: &str) -> ChildGuard {
    let g = kusanagi_with_env(
        dir,
        name,
        topology,
        &["stage", "screen"],
        &[
            ("KUSANAGI_HTTP_LISTEN", addr),
            ("KUSANAGI_INSTANCE_ID", name),
        ],
    );
    wait_for_port(addr, Duration::from_secs(60));
    g
}

/// How copy B goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gone {
    /// SIGTERM: it finishes its batch and leaves the group.
    Stopped,
    /// SIGKILL: its session must expire in the broker.
    Killed,
}

fn handover(kind: BrokerKind, gone: Gone) {
    let broker = Broker::start(kind);
    let dir = TempDir::new("handover");
    let keys = dir.path().join("keys.toml");
    let key = new_key(&keys, "prometheus", &["viewer"], None);
    let topology = TopologyFile::new()
        .set("kafka.bootstrap", broker.bootstrap.as_str())
        .set("kafka.session_timeout_ms", SESSION_TIMEOUT_MS as i64)
        .set("kafka.static_membership", false)
        .set("topics.partitions", i64::from(PARTITIONS))
        .set("stages.screen.max_future_seconds", 0)
        .path("http.auth.keys_file", &keys)
        .write(dir.path());
    let (addr_a, addr_b) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let _a = start(dir.path(), "screen-a", &topology, &addr_a);
    let mut b = start(dir.path(), "screen-b", &topology, &addr_b);
    produce_all(&producer(&broker.bootstrap), "events", &events(0, 2_000));

    // The two copies share the partitions: two each, disjoint, every
    // partition's lag shown by its owner.
    let deadline = Instant::now() + Duration::from_secs(90);
    let (sa, sb) = loop {
        let (sa, sb) = (seen(&addr_a, &key), seen(&addr_b, &key));
        let owned: BTreeSet<i32> = sa.lag.keys().chain(sb.lag.keys()).copied().collect();
        if sa.assigned == Some(2)
            && sb.assigned == Some(2)
            && sa.lag.len() == 2
            && sb.lag.len() == 2
            && owned.len() == PARTITIONS as usize
        {
            break (sa, sb);
        }
        assert!(
            Instant::now() < deadline,
            "the copies never shared the partitions: {sa:?} {sb:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    eprintln!("shared: copy A {:?}, copy B {:?}", sa.lag, sb.lag);

    // Copy B is stopped (SIGTERM: it finishes its batch and leaves the
    // group); A takes its partitions over, and the events written to them
    // meanwhile.
    let killed = Instant::now();
    match gone {
        Gone::Stopped => assert_eq!(
            b.terminate(Duration::from_secs(60)),
            Some(0),
            "a clean stop"
        ),
        Gone::Killed => b.kill9(),
    }
    produce_all(
        &producer(&broker.bootstrap),
        "events",
        &events(2_000, 20_000),
    );
    let mut max_lag = 0;
    let mut moved = None;
    let took = loop {
        let sa = seen(&addr_a, &key);
        for p in sb.lag.keys() {
            max_lag = max_lag.max(sa.lag.get(p).copied().unwrap_or(0));
        }
        if sa.assigned == Some(PARTITIONS as i64) {
            moved.get_or_insert(killed.elapsed());
        }
        if sa.assigned == Some(PARTITIONS as i64) && sa.lag.len() == PARTITIONS as usize {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_millis(3 * SESSION_TIMEOUT_MS + 30_000),
            "copy A never took B's partitions over: {sa:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "[{kind:?}] copy A was assigned all {PARTITIONS} partitions {:?} after B was {gone:?}, and reported their lag after {took:?} (session timeout {SESSION_TIMEOUT_MS} ms)",
        moved.unwrap_or(took)
    );

    // Every event is screened exactly once, and A's lag drains to 0.
    let mut reader = Reader::new(&broker.bootstrap, &["screenings"]);
    reader.read_until(Duration::from_secs(180), |m| m.len() >= 22_000);
    reader.drain(Duration::from_secs(3));
    let codec = kusanagi_schemas::RecordCodec::<kusanagi_schemas::Screening>::new();
    let screened: Vec<String> = reader
        .messages
        .iter()
        .map(|m| codec.decode(m.payload().unwrap()).unwrap().event_id)
        .collect();
    let distinct: HashSet<&String> = screened.iter().collect();
    assert_eq!(distinct.len(), 22_000, "every event screened");
    assert_eq!(screened.len(), 22_000, "and once");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sa = seen(&addr_a, &key);
        if sa.lag.len() == PARTITIONS as usize && sa.lag.values().all(|l| *l == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copy A's lag never drained: {sa:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("largest lag copy A reported on B's former partitions: {max_lag}");
}

#[test]
fn screen_partitions_move_to_the_surviving_copy_on_noida_db() {
    handover(BrokerKind::NoidaDb, Gone::Stopped);
}

#[test]
fn screen_partitions_move_to_the_surviving_copy_on_embedded_broker() {
    handover(BrokerKind::Embedded, Gone::Stopped);
}

#[test]
fn a_killed_copys_partitions_move_when_its_session_expires_on_noida_db() {
    handover(BrokerKind::NoidaDb, Gone::Killed);
}

#[test]
fn a_killed_copys_partitions_move_when_its_session_expires_on_embedded_broker() {
    handover(BrokerKind::Embedded, Gone::Killed);
}
