//! The RMT scenarios of `scenarios/rmt.json` through the stages of
//! `kusanagi run` (ingest, screen, decide, analyze with the fallback
//! analyzer) on real brokers running as their own processes: noida-db and
//! Kusanagi's embedded broker (`kusanagi broker`).
//!
//! Each broker takes the scenarios twice, as JSON on `events.raw` the way a
//! game server sends them:
//! - paced: in rounds (the first event of every scenario, then the second
//!   of each, ...), each round sent only when the last one is fully decided
//!   (every verdict back and applied);
//! - as one burst, sent while the stages were stopped, then the stages
//!   started.
//!
//! Every account must end in the state the file gives, with the rules it
//! gives, both ways. Budget: about a minute per broker; the two brokers run
//! side by side.

mod common;
mod scenarios;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerKind, ChildGuard, Reader, TopologyFile, committed, end_offsets, kusanagi,
    produce_all, producer, tempdir::TempDir,
};
use kusanagi_pipeline::config::Topology;
use kusanagi_schemas::{
    Account, AccountState, EventTime, GameEvent, L2Request, RecordCodec, RuleSet, Screening,
    Verdict,
};
use rdkafka::Message;
use scenarios::{Scenario, load};

const PARTITIONS: i32 = 3;
/// The longest a run may take to settle.
const SETTLE: Duration = Duration::from_secs(180);

fn write_topology(dir: &Path, bootstrap: &str) -> PathBuf {
    let mut topology = TopologyFile::new()
        .set("instance.id", "scenarios")
        .set("kafka.bootstrap", bootstrap)
        .set("kafka.session_timeout_ms", 6000)
        .set("topics.partitions", i64::from(PARTITIONS))
        .set("http.enabled", false);
    for off in ["archive", "tier", "view", "compact"] {
        topology = topology.set(&format!("stages.{off}.enabled"), false);
    }
    topology.write(dir)
}

/// Every scenario's events in rounds: the first of each, then the second
/// of each, and so on.
fn rounds(scenarios: &[Scenario], run: &str, t0: EventTime) -> Vec<Vec<GameEvent>> {
    let all: Vec<Vec<GameEvent>> = scenarios.iter().map(|s| s.game_events(run, t0)).collect();
    let n = all.iter().map(Vec::len).max().unwrap_or(0);
    (0..n)
        .map(|i| all.iter().filter_map(|e| e.get(i).cloned()).collect())
        .collect()
}

fn send(bootstrap: &str, events: &[GameEvent]) {
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.target_id.clone(), e.to_json().into_bytes()))
        .collect();
    produce_all(&producer(bootstrap), "events.raw", &records);
}

/// Whether group `group` has consumed every record of `topic` (the last
/// record of a partition written in transactions is a commit marker).
fn caught_up(bootstrap: &str, group: &str, topic: &str) -> bool {
    let ends = end_offsets(bootstrap, topic, PARTITIONS);
    committed(bootstrap, group, topic, PARTITIONS)
        .iter()
        .zip(&ends)
        .all(|(c, end)| *end == 0 || *c + 1 >= *end)
}

/// What the run `run` (its ids' prefix) has produced so far.
#[derive(Default)]
struct Seen {
    screenings: usize,
    fired: BTreeMap<String, RuleSet>,
    requests: usize,
    /// The most triggers one request stood for.
    most_coalesced: i32,
    verdicts: usize,
    accounts: BTreeMap<String, Account>,
}

fn seen(reader: &Reader, run: &str) -> Seen {
    let (s, r, v, a) = (
        RecordCodec::<Screening>::new(),
        RecordCodec::<L2Request>::new(),
        RecordCodec::<Verdict>::new(),
        RecordCodec::<Account>::new(),
    );
    let mut out = Seen::default();
    // Keyed by account id; in `accounts`, by tenant and account id.
    let ours = |key: Option<&[u8]>| {
        key.and_then(kusanagi_schemas::AccountKey::parse_kafka_key)
            .is_some_and(|k| match k {
                kusanagi_schemas::StoredKey::Account(k) => k.id.starts_with(run),
                kusanagi_schemas::StoredKey::Legacy(id) => id.starts_with(run),
            })
    };
    for m in reader.messages.iter().filter(|m| ours(m.key())) {
        let Some(payload) = m.payload() else { continue };
        match m.topic() {
            "screenings" => {
                let s = s.decode(payload).expect("a screening");
                out.screenings += 1;
                let fired = out.fired.entry(s.target_id.clone()).or_default();
                *fired = fired.union(s.triggered_rules);
            }
            "l2.requests" => {
                let r = r.decode(payload).expect("a request");
                out.requests += 1;
                out.most_coalesced = out.most_coalesced.max(r.coalesced);
            }
            "l2.verdicts" => {
                v.decode(payload).expect("a verdict");
                out.verdicts += 1;
            }
            "accounts" => {
                let a = a.decode(payload).expect("an account");
                out.accounts.insert(a.account_id.clone(), a);
            }
            _ => {}
        }
    }
    out
}

/// Waits until run `run`'s `sent` events are screened and decided, every
/// L2 request answered and applied: nothing in flight, nothing queued.
fn settle(bootstrap: &str, reader: &mut Reader, run: &str, sent: usize, what: &str) -> Seen {
    let deadline = Instant::now() + SETTLE;
    loop {
        // Every screening first: then the offsets decide and analyze have
        // committed tell whether they have handled everything that follows
        // from them, and a second read collects what they produced.
        reader.drain(Duration::from_millis(300));
        let screened = seen(reader, run).screenings == sent;
        let stages_idle = screened
            && caught_up(bootstrap, "kusanagi-decide", "screenings")
            && caught_up(bootstrap, "kusanagi-decide", "l2.verdicts")
            && caught_up(bootstrap, "kusanagi-analyze", "l2.requests");
        reader.drain(Duration::from_millis(300));
        let now = seen(reader, run);
        let open = now
            .accounts
            .values()
            .filter(|a| a.l2_in_flight.is_some() || a.l2_queued.is_some())
            .count();
        if stages_idle && now.requests == now.verdicts && open == 0 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not settled after {SETTLE:?}: {} of {sent} screened, {} requests, {} verdicts, \
             {open} accounts awaiting a verdict",
            now.screenings,
            now.requests,
            now.verdicts
        );
    }
}

fn check(scenarios: &[Scenario], got: &Seen, run: &str, how: &str) -> Vec<String> {
    let mut wrong = Vec::new();
    for s in scenarios {
        for (account, want) in &s.accounts {
            let id = format!("{run}{account}");
            let state = got
                .accounts
                .get(&id)
                .map_or(AccountState::Normal, |a| a.state);
            let fired = got.fired.get(&id).copied().unwrap_or_default();
            let want_rules: RuleSet = want.rules.iter().copied().collect();
            if state != want.state || fired != want_rules {
                wrong.push(format!(
                    "{how}: {} / {account}: {state} with rules {}, expected {} with {}",
                    s.name,
                    fired.label(),
                    want.state,
                    want_rules.label()
                ));
            }
        }
    }
    wrong
}

fn scenarios_on(kind: BrokerKind) {
    let scenarios = load();
    let broker = Broker::start(kind);
    let dir = TempDir::new(&format!("scenarios-{kind:?}"));
    let topology_path = write_topology(dir.path(), &broker.bootstrap);
    let topology = Topology::load(&topology_path).expect("topology");
    let settings = topology.kafka_settings(&topology.kafka.bootstrap);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kusanagi_pipeline::run::prepare_topics(&topology, &settings))
        .expect("topics");
    let mut reader = Reader::new(
        &broker.bootstrap,
        &["screenings", "l2.requests", "l2.verdicts", "accounts"],
    );
    // Ten minutes ago, whole seconds: every event is in the past.
    let now_s = chrono::Utc::now().timestamp();
    let t0 = EventTime::from_micros((now_s - 600) * 1_000_000);

    // Paced: a round goes once the last one is decided.
    let started = Instant::now();
    let mut run = kusanagi(dir.path(), "run-1", &topology_path, &["run"]);
    let paced = rounds(&scenarios, "p.", t0);
    let mut sent = 0;
    let mut settled = Seen::default();
    for (i, round) in paced.iter().enumerate() {
        send(&broker.bootstrap, round);
        sent += round.len();
        settled = settle(
            &broker.bootstrap,
            &mut reader,
            "p.",
            sent,
            &format!("[{kind:?}] paced round {}", i + 1),
        );
    }
    let paced_took = started.elapsed();
    let mut wrong = check(&scenarios, &settled, "p.", "paced");
    stop(&mut run);

    // A burst: everything at once while the stages are stopped.
    let burst: Vec<GameEvent> = rounds(&scenarios, "b.", t0).concat();
    send(&broker.bootstrap, &burst);
    let started = Instant::now();
    let mut run = kusanagi(dir.path(), "run-2", &topology_path, &["run"]);
    let settled = settle(
        &broker.bootstrap,
        &mut reader,
        "b.",
        burst.len(),
        &format!("[{kind:?}] burst"),
    );
    eprintln!(
        "[{kind:?}] {} scenarios, {sent} events: paced in {} rounds took {paced_took:?}, \
         the burst settled in {:?} with {} requests (up to {} triggers each)",
        scenarios.len(),
        paced.len(),
        started.elapsed(),
        settled.requests,
        settled.most_coalesced
    );
    wrong.extend(check(&scenarios, &settled, "b.", "burst"));
    assert!(
        settled.most_coalesced > 1,
        "[{kind:?}] the burst was not coalesced: it tested nothing a paced run does not"
    );
    stop(&mut run);
    let accounts: HashSet<&String> = scenarios.iter().flat_map(|s| s.accounts.keys()).collect();
    assert!(
        wrong.is_empty(),
        "[{kind:?}] {} of {} accounts x 2 runs ended wrong (logs in {}):\n{}",
        wrong.len(),
        accounts.len(),
        dir.path().display(),
        wrong.join("\n")
    );
}

fn stop(run: &mut ChildGuard) {
    assert_eq!(
        run.terminate(Duration::from_secs(30)),
        Some(0),
        "`kusanagi run` stops cleanly on SIGTERM"
    );
}

#[test]
fn scenarios_end_as_written_paced_and_in_a_burst_on_noida_db() {
    scenarios_on(BrokerKind::NoidaDb);
}

#[test]
fn scenarios_end_as_written_paced_and_in_a_burst_on_the_embedded_broker() {
    scenarios_on(BrokerKind::Embedded);
}
