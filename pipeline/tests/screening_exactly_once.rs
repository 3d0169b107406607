//! The screen, decide and analyze stages, exactly once, on real brokers
//! running as their own processes: 50,000 events across 2,000 accounts
//! (ordinary trades out of order, duplicates, and scripted RMT accounts:
//! smurfing fan-ins, big direct trades, overpriced items, RMT slang).
//!
//! Phase 1: the screen and decide stages, each killed with SIGKILL twice at
//! random points and restarted, and a second screen copy joining midway (a
//! rebalance). `screenings`, `accounts.transitions`, `l2.requests` and the
//! latest `accounts` states must equal those of an uninterrupted run: the
//! same stage code run in this process over the same partitions.
//!
//! Phase 2: the analyze stage (the deterministic fallback analyzer, in
//! small transactions) answers the requests, and decide applies the
//! verdicts and sends the coalesced requests they release, until nothing is
//! left; meanwhile the analyze stage is killed with SIGKILL twice and the
//! decide stage once, while verdicts flow, and a second copy of each joins
//! after its first kill (rebalances). Every account's transitions and verdicts, and its
//! final state, must equal the uninterrupted run's. (Analysis starts after phase 1 so that each
//! account's verdicts come after its screenings, as in the reference: with
//! both running at once, the order in which an account's verdicts and
//! screenings meet is a race, and so is its path.)

mod common;
#[path = "screening_exactly_once/records.rs"]
mod records;
#[path = "screening_exactly_once/reference.rs"]
mod reference;
#[path = "screening_exactly_once/stages.rs"]
mod stages;
#[path = "screening_exactly_once/workload.rs"]
mod workload;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerKind, ChildGuard, Reader, committed, end_offsets, kusanagi, kusanagi_with_env,
    produce_all, producer, tempdir::TempDir,
};
use kusanagi_pipeline::config::Topology;
use kusanagi_schemas::{
    Account, AccountState, GameEventCodec, L2Request, RecordCodec, Screening, Transition, Verdict,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::Message;
use records::{by_partition, count, values};
use reference::{per_account, settle, uninterrupted};
use stages::{PARTITIONS, kill_at, write_topology};
use workload::{EVENTS, RMT, workload};

const WAIT: Duration = Duration::from_secs(600);

/// The suites run one at a time: each keeps a broker and two stage
/// processes busy, and the machine may have two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn exactly_once_across_sigkills(kind: BrokerKind) {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let broker = Broker::start(kind);
    let dir = TempDir::new("screening-eos");
    let topology_path = write_topology(dir.path(), &broker.bootstrap);
    let topology = Topology::load(&topology_path).expect("topology");
    let settings = topology.kafka_settings(&topology.kafka.bootstrap);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(kusanagi_pipeline::run::prepare_topics(&topology, &settings))
        .expect("topics");

    let events = workload();
    let codec = GameEventCodec::new();
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|e| (e.target_id.clone(), codec.encode(e)))
        .collect();
    let started = Instant::now();
    produce_all(&producer(&broker.bootstrap), "events", &records);

    let mut rng = StdRng::seed_from_u64(kind as u64 + 7);
    let distinct = {
        let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
        ids.sort();
        ids.dedup();
        ids.len()
    };
    // Progress is read from the stages' committed offsets (a cheap offset
    // fetch), so the kill points are in records the stage has committed.
    let events_end: i64 = end_offsets(&broker.bootstrap, "events", PARTITIONS)
        .iter()
        .sum();
    let mut screen_kills: Vec<i64> = (0..2)
        .map(|k| rng.random_range(k * events_end / 3 + 1_000..(k + 1) * events_end / 3))
        .collect();
    let mut decide_kills: Vec<i64> = vec![
        rng.random_range(events_end / 5..events_end * 2 / 5),
        rng.random_range(events_end / 2..events_end * 4 / 5),
    ];
    let (mut sg, mut dg) = (0u32, 0u32);
    let mut screen = kusanagi(dir.path(), "screen-0", &topology_path, &["stage", "screen"]);
    let mut decide = kusanagi(dir.path(), "decide-0", &topology_path, &["stage", "decide"]);
    let mut second_screen: Option<ChildGuard> = None;

    let deadline = Instant::now() + WAIT;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let screened: i64 = committed(&broker.bootstrap, "kusanagi-screen", "events", PARTITIONS)
            .iter()
            .sum();
        let decided: i64 = committed(
            &broker.bootstrap,
            "kusanagi-decide",
            "screenings",
            PARTITIONS,
        )
        .iter()
        .sum();
        kill_at(
            dir.path(),
            &topology_path,
            "screen",
            &mut screen,
            screened,
            &mut screen_kills,
            &mut sg,
        );
        kill_at(
            dir.path(),
            &topology_path,
            "decide",
            &mut decide,
            decided,
            &mut decide_kills,
            &mut dg,
        );
        if sg == 1 && second_screen.is_none() {
            // A second copy joins the group: a rebalance splits the
            // partitions, and each copy rebuilds the windows it is given.
            eprintln!("[it] a second screen copy joins after {screened} input offsets");
            second_screen = Some(kusanagi_with_env(
                dir.path(),
                "screen-b",
                &topology_path,
                &["stage", "screen"],
                &[("KUSANAGI_INSTANCE_ID", "it-b")],
            ));
        }
        // Done: the screen stage committed every event, and the decide
        // stage every screening (the last record of a partition is
        // followed by its transaction's commit marker).
        let screenings_end = end_offsets(&broker.bootstrap, "screenings", PARTITIONS);
        let decided_all = committed(
            &broker.bootstrap,
            "kusanagi-decide",
            "screenings",
            PARTITIONS,
        )
        .iter()
        .zip(&screenings_end)
        .all(|(c, end)| *c + 1 >= *end);
        if screened >= events_end
            && decided_all
            && screen_kills.is_empty()
            && decide_kills.is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: the screen stage committed {screened} of {events_end} events; see {}",
            dir.path().display()
        );
    }

    // The reference: the same stages over the same partitions, uninterrupted.
    let mut input = Reader::new(&broker.bootstrap, &["events"]);
    assert!(input.read_until(WAIT, |m| m.len() >= EVENTS));
    let expected = uninterrupted(&by_partition(input.of("events").collect()));
    let want_transitions: usize = expected.transitions.values().map(Vec::len).sum();

    let mut out = Reader::new(
        &broker.bootstrap,
        &[
            "screenings",
            "accounts.transitions",
            "l2.requests",
            "accounts",
        ],
    );
    let complete = out.read_until(WAIT, |m| {
        count(m, "accounts.transitions") >= want_transitions && count(m, "screenings") >= distinct
    });
    out.drain(Duration::from_secs(5));
    assert!(
        complete,
        "timed out: {} of {want_transitions} transitions, {} of {distinct} screenings; see {}",
        count(&out.messages, "accounts.transitions"),
        count(&out.messages, "screenings"),
        dir.path().display()
    );
    eprintln!(
        "[{kind:?}] pipeline done in {:?} with {sg} screen and {dg} decide restarts",
        started.elapsed()
    );
    assert_eq!((sg, dg), (2, 2), "every planned SIGKILL happened");

    let screenings = values(&by_partition(out.of("screenings").collect()));
    assert_eq!(
        screenings.values().map(Vec::len).sum::<usize>(),
        distinct,
        "one screening per distinct event"
    );
    assert_eq!(
        screenings, expected.screenings,
        "screenings equal the uninterrupted run's, partition by partition"
    );
    assert_eq!(
        values(&by_partition(out.of("accounts.transitions").collect())),
        expected.transitions,
        "transitions equal"
    );
    assert_eq!(
        values(&by_partition(out.of("l2.requests").collect())),
        expected.requests,
        "L2 requests equal"
    );
    let account_codec = RecordCodec::<Account>::new();
    let mut latest: BTreeMap<String, Account> = BTreeMap::new();
    for m in by_partition(out.of("accounts").collect())
        .values()
        .flatten()
    {
        let a = account_codec.decode(m.payload().unwrap()).unwrap();
        let key = kusanagi_schemas::AccountKey::new(&a.tenant_id, &a.account_id).kafka_key();
        assert_eq!(
            m.key(),
            Some(key.as_slice()),
            "accounts are keyed by tenant and account id"
        );
        latest.insert(a.account_id.clone(), a);
    }
    assert_eq!(latest, expected.accounts, "latest account states equal");

    // The scripted RMT accounts were caught.
    let restricted = latest
        .values()
        .filter(|a| a.state == AccountState::RestrictedWithdrawal)
        .count();
    let rmt_caught = (0..RMT)
        .filter(|i| {
            latest
                .get(&format!("acct_{i:04}"))
                .is_some_and(|a| a.state != AccountState::Normal)
        })
        .count();
    assert_eq!(rmt_caught, RMT, "every scripted RMT account is restricted");
    let screened: Vec<Screening> = screenings
        .values()
        .flatten()
        .map(|v| RecordCodec::<Screening>::new().decode(v).unwrap())
        .filter(|s| s.screened)
        .collect();
    let requests: Vec<L2Request> = values(&by_partition(out.of("l2.requests").collect()))
        .values()
        .flatten()
        .map(|v| RecordCodec::<L2Request>::new().decode(v).unwrap())
        .collect();
    assert!(
        requests
            .iter()
            .all(|r| !r.rules.is_empty() && r.target_id.starts_with("acct_")),
        "every L2 request names the rules of its window"
    );
    let r4_requests = requests.len();
    let transitions: HashMap<String, usize> =
        values(&by_partition(out.of("accounts.transitions").collect()))
            .values()
            .flatten()
            .map(|v| RecordCodec::<Transition>::new().decode(v).unwrap())
            .fold(HashMap::new(), |mut m, t| {
                *m.entry(t.account_id).or_insert(0) += 1;
                m
            });
    eprintln!(
        "[{kind:?}] {distinct} screenings ({} screened), {} transitions over {} accounts, {restricted} restricted, {r4_requests} L2 requests",
        screened.len(),
        want_transitions,
        transitions.len()
    );
    assert_eq!(
        screen.terminate(Duration::from_secs(30)),
        Some(0),
        "SIGTERM stops the screen stage cleanly"
    );
    if let Some(mut b) = second_screen {
        assert_eq!(b.terminate(Duration::from_secs(30)), Some(0));
    }

    // Phase 2: the analysis, with SIGKILLs of analyze and decide while
    // verdicts flow. Progress is again read from committed offsets.
    let settled = settle(expected);
    let want_verdicts: usize = settled.verdicts.values().map(Vec::len).sum();
    let want = want_verdicts as i64;
    let mut analyze_kills: Vec<i64> = vec![
        rng.random_range(want / 6..want / 3),
        rng.random_range(want / 2..want * 2 / 3),
    ];
    let mut decide_kills: Vec<i64> = vec![rng.random_range(want / 3..want / 2)];
    let (mut ag, mut dg2) = (0u32, dg);
    let mut analyze = kusanagi(
        dir.path(),
        "analyze-0",
        &topology_path,
        &["stage", "analyze"],
    );
    let mut second_analyze: Option<ChildGuard> = None;
    let mut second_decide: Option<ChildGuard> = None;
    let mut in_flight_at_kills = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut settled_polls = 0;
    let mut last_ends = (vec![], vec![]);
    while settled_polls < 3 {
        std::thread::sleep(Duration::from_millis(100));
        let requests_end = end_offsets(&broker.bootstrap, "l2.requests", PARTITIONS);
        let verdicts_end = end_offsets(&broker.bootstrap, "l2.verdicts", PARTITIONS);
        let analyzed = committed(
            &broker.bootstrap,
            "kusanagi-analyze",
            "l2.requests",
            PARTITIONS,
        );
        let applied = committed(
            &broker.bootstrap,
            "kusanagi-decide",
            "l2.verdicts",
            PARTITIONS,
        );
        let (analyzed_sum, applied_sum) = (analyzed.iter().sum(), applied.iter().sum());
        // How much was still to do when a stage was killed.
        let left = |done: &[i64], end: &[i64]| -> i64 {
            done.iter().zip(end).map(|(c, e)| (e - c).max(0)).sum()
        };
        let to_do = (
            left(&analyzed, &requests_end),
            left(&applied, &verdicts_end),
        );
        let before = analyze_kills.len();
        kill_at(
            dir.path(),
            &topology_path,
            "analyze",
            &mut analyze,
            analyzed_sum,
            &mut analyze_kills,
            &mut ag,
        );
        if analyze_kills.len() != before {
            in_flight_at_kills.push(("analyze", to_do));
        }
        let before = decide_kills.len();
        kill_at(
            dir.path(),
            &topology_path,
            "decide",
            &mut decide,
            applied_sum,
            &mut decide_kills,
            &mut dg2,
        );
        if decide_kills.len() != before {
            in_flight_at_kills.push(("decide", to_do));
        }
        if ag == 1 && second_analyze.is_none() {
            eprintln!("[it] a second analyze copy joins after {analyzed_sum} request offsets");
            second_analyze = Some(kusanagi_with_env(
                dir.path(),
                "analyze-b",
                &topology_path,
                &["stage", "analyze"],
                &[("KUSANAGI_INSTANCE_ID", "it-b")],
            ));
        }
        if dg2 > dg && second_decide.is_none() {
            // A rebalance of decide while verdicts flow: each copy rebuilds
            // the accounts of the partitions it is given from `accounts`.
            eprintln!("[it] a second decide copy joins after {applied_sum} verdict offsets");
            second_decide = Some(kusanagi_with_env(
                dir.path(),
                "decide-b",
                &topology_path,
                &["stage", "decide"],
                &[("KUSANAGI_INSTANCE_ID", "it-b")],
            ));
        }
        let caught_up = |done: &[i64], end: &[i64]| done.iter().zip(end).all(|(c, e)| *c + 1 >= *e);
        let quiet = caught_up(&analyzed, &requests_end)
            && caught_up(&applied, &verdicts_end)
            && analyze_kills.is_empty()
            && decide_kills.is_empty()
            && (requests_end.clone(), verdicts_end.clone()) == last_ends;
        settled_polls = if quiet { settled_polls + 1 } else { 0 };
        assert!(
            Instant::now() < deadline,
            "phase 2 timed out: analyze committed {analyzed:?} of {requests_end:?}, decide {applied:?} of {verdicts_end:?}; see {}",
            dir.path().display()
        );
        last_ends = (requests_end, verdicts_end);
    }

    let mut out = Reader::new(
        &broker.bootstrap,
        &["accounts.transitions", "l2.verdicts", "accounts"],
    );
    out.read_until(WAIT, |m| count(m, "l2.verdicts") >= want_verdicts);
    out.drain(Duration::from_secs(5));
    let t_codec = RecordCodec::<Transition>::new();
    let v_codec = RecordCodec::<Verdict>::new();
    let transitions = per_account(
        values(&by_partition(out.of("accounts.transitions").collect()))
            .values()
            .flatten(),
        |v| t_codec.decode(v).unwrap(),
        |t| t.account_id.clone(),
    );
    let verdicts = per_account(
        values(&by_partition(out.of("l2.verdicts").collect()))
            .values()
            .flatten(),
        |v| v_codec.decode(v).unwrap(),
        |v| v.target_id.clone(),
    );
    let mut latest: BTreeMap<String, Account> = BTreeMap::new();
    for m in by_partition(out.of("accounts").collect())
        .values()
        .flatten()
    {
        let a = account_codec.decode(m.payload().unwrap()).unwrap();
        latest.insert(a.account_id.clone(), a);
    }
    assert_eq!(
        verdicts.values().map(Vec::len).sum::<usize>(),
        want_verdicts,
        "one verdict per request"
    );
    assert_eq!(
        verdicts, settled.verdicts,
        "every account's verdicts equal the uninterrupted run's"
    );
    assert_eq!(
        transitions, settled.transitions,
        "every account's transitions equal"
    );
    assert_eq!(latest, settled.accounts, "final account states equal");
    let states = latest.values().fold(BTreeMap::new(), |mut m, a| {
        *m.entry(a.state.as_str()).or_insert(0) += 1;
        m
    });
    let refused = transitions
        .values()
        .flatten()
        .filter(|t| !t.applied)
        .count();
    eprintln!(
        "[{kind:?}] phase 2: {want_verdicts} verdicts with {ag} analyze and {} decide restarts (at each kill, request offsets left to analyze and verdict offsets left to apply: {in_flight_at_kills:?}); final states {states:?}; {refused} refused moves",
        dg2 - dg
    );
    assert_eq!((ag, dg2 - dg), (2, 1), "every planned SIGKILL happened");
    // The analysis moved accounts both ways: smurfing (R2, many senders)
    // into surveillance, single-rule accounts back to NORMAL.
    let moved = |to: &str| {
        transitions
            .values()
            .flatten()
            .any(|t| t.applied && t.to_state.as_str() == to)
    };
    assert!(moved("UNDER_SURVEILLANCE") && moved("NORMAL"), "{states:?}");
    for mut stage in [Some(analyze), second_analyze, Some(decide), second_decide]
        .into_iter()
        .flatten()
    {
        assert_eq!(
            stage.terminate(Duration::from_secs(30)),
            Some(0),
            "SIGTERM stops {} cleanly",
            stage.name
        );
    }
}

#[test]
fn screen_decide_and_analyze_exactly_once_across_sigkills_on_noida_db_process() {
    exactly_once_across_sigkills(BrokerKind::NoidaDb);
}

#[test]
fn screen_decide_and_analyze_exactly_once_across_sigkills_on_embedded_broker() {
    exactly_once_across_sigkills(BrokerKind::Embedded);
}
