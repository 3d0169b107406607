//! The account index against a brute-force reading of the same history.

use kusanagi_schemas::{Account, AccountState, EventTime, Transition, Trigger};
use proptest::prelude::*;

use super::{AccountIndex, View, ViewStage, ViewTopics, Withdrawal};
use crate::runtime::{InRecord, Metrics, Stage};

const STATES: [AccountState; 4] = AccountState::ALL;

fn transition(
    account: &str,
    version: i64,
    from: AccountState,
    to: AccountState,
    applied: bool,
) -> Transition {
    Transition {
        account_id: account.into(),
        tenant_id: "t".into(),
        version,
        from_state: from,
        to_state: to,
        trigger: Trigger::L1Screening,
        rule: "R1".into(),
        event_time: EventTime::from_micros(version * 1_000),
        source_id: format!("e{version}"),
        evidence: String::new(),
        applied,
        refusal: (!applied).then(|| "illegal".into()),
    }
}

#[test]
fn state_at_a_time_follows_the_moves_in_effect_then() {
    let mut index = AccountIndex::new();
    use AccountState::*;
    assert!(index.apply_transition(transition("a", 1, Normal, RestrictedWithdrawal, true), 100));
    assert!(
        !index.apply_transition(transition("a", 1, Normal, Banned, false), 150),
        "refused"
    );
    assert!(index.apply_transition(
        transition("a", 2, RestrictedWithdrawal, UnderSurveillance, true),
        200
    ));
    assert!(
        !index.apply_transition(
            transition("a", 2, RestrictedWithdrawal, UnderSurveillance, true),
            250
        ),
        "redelivered"
    );
    assert!(index.apply_transition(transition("a", 3, UnderSurveillance, Banned, true), 300));
    assert_eq!(index.state_at("t", "a", 99), Some(Normal));
    assert_eq!(index.state_at("t", "a", 100), Some(RestrictedWithdrawal));
    assert_eq!(index.state_at("t", "a", 299), Some(UnderSurveillance));
    assert_eq!(index.state_at("t", "a", 1_000), Some(Banned));
    assert_eq!(index.state_at("t", "nobody", 1_000), None);
    let v: Vec<i64> = index
        .versions("t", "a", 100, 300)
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(v, [1, 2]);
    assert!(index.versions("t", "a", 300, 100).is_empty());
}

#[test]
fn the_latest_state_is_the_newest_version_and_a_tombstone_forgets() {
    let mut index = AccountIndex::new();
    let mut a = Account::new("a", "t", EventTime::from_micros(0));
    a.version = 2;
    a.state = AccountState::UnderSurveillance;
    index.apply_account(b"t\x1fa", Some(a.clone()));
    let mut older = a.clone();
    older.version = 1;
    older.state = AccountState::RestrictedWithdrawal;
    index.apply_account(b"t\x1fa", Some(older));
    assert_eq!(
        index.latest("t", "a"),
        Some(&a),
        "an older snapshot does not win"
    );
    index.apply_transition(
        transition(
            "a",
            1,
            AccountState::Normal,
            AccountState::RestrictedWithdrawal,
            true,
        ),
        5,
    );
    index.apply_account(b"t\x1fa", None);
    assert_eq!(index.latest("t", "a"), None);
    assert_eq!(
        index.state_at("t", "a", 10),
        None,
        "erased with its history"
    );
    // A move read after the tombstone (the other topic lagging) is not kept.
    assert!(!index.apply_transition(
        transition(
            "a",
            9,
            AccountState::Normal,
            AccountState::RestrictedWithdrawal,
            true
        ),
        5
    ));
    assert_eq!(index.state_at("t", "a", 10), None);
    assert!(index.is_empty());
    assert!(index.is_empty());
}

#[test]
fn withdrawals_are_answered_as_screening_md_says() {
    use AccountState::*;
    assert_eq!(Withdrawal::for_state(None).status(), 200);
    assert_eq!(Withdrawal::for_state(Some(Normal)).status(), 200);
    assert_eq!(
        Withdrawal::for_state(Some(RestrictedWithdrawal)).status(),
        423
    );
    assert_eq!(Withdrawal::for_state(Some(UnderSurveillance)).status(), 423);
    assert_eq!(Withdrawal::for_state(Some(Banned)).status(), 403);
}

/// Per account: (to-state index, ms after the previous move, redelivered,
/// refused) for each move.
type Moves = Vec<(usize, i64, bool, bool)>;

proptest! {
    #[test]
    fn the_index_equals_a_scan_of_the_history(
        histories in proptest::collection::vec(
            proptest::collection::vec((0..4usize, 0..50i64, any::<bool>(), any::<bool>()), 0..20),
            1..6,
        ),
        order_seed in any::<u64>(),
        probes in proptest::collection::vec(0..1_200i64, 10),
    ) {
        let histories: Vec<Moves> = histories;
        // Each account's records in its order; accounts interleaved.
        let mut streams: Vec<Vec<(Transition, i64)>> = Vec::new();
        let mut applied: Vec<Vec<(i64, i64, AccountState)>> = Vec::new();
        for (a, moves) in histories.iter().enumerate() {
            let name = format!("acct{a}");
            let (mut version, mut at, mut state) = (0i64, 0i64, AccountState::Normal);
            let mut stream = Vec::new();
            let mut kept = Vec::new();
            for &(to, gap, redelivered, refused) in moves {
                at += gap;
                let to = STATES[to];
                if refused {
                    stream.push((transition(&name, version, state, to, false), at));
                    continue;
                }
                version += 1;
                let t = transition(&name, version, state, to, true);
                stream.push((t.clone(), at));
                if redelivered {
                    stream.push((t, at + 1));
                }
                kept.push((version, at, to));
                state = to;
            }
            streams.push(stream);
            applied.push(kept);
        }
        let mut index = AccountIndex::new();
        let mut cursors = vec![0usize; streams.len()];
        let mut seed = order_seed;
        loop {
            let live: Vec<usize> = (0..streams.len()).filter(|&s| cursors[s] < streams[s].len()).collect();
            if live.is_empty() {
                break;
            }
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let s = live[(seed >> 33) as usize % live.len()];
            let (t, at) = streams[s][cursors[s]].clone();
            cursors[s] += 1;
            index.apply_transition(t, at);
        }
        for (a, kept) in applied.iter().enumerate() {
            let name = format!("acct{a}");
            for &probe in &probes {
                let want = kept.iter().rev().find(|(_, at, _)| *at <= probe).map_or(AccountState::Normal, |k| k.2);
                let known = !kept.is_empty();
                prop_assert_eq!(index.state_at("t", &name, probe), known.then_some(want));
                let (from, to) = (probe, probe + 300);
                let want: Vec<i64> = kept.iter().filter(|(_, at, _)| (from..to).contains(at)).map(|k| k.0).collect();
                let got: Vec<i64> = index.versions("t", &name, from, to).iter().map(|v| v.version).collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}

fn topics() -> ViewTopics {
    ViewTopics {
        accounts: "accounts".into(),
        transitions: "accounts.transitions".into(),
        erasures: "erasures".into(),
    }
}

fn record<'a>(
    topic: &'a str,
    offset: i64,
    key: Option<&'a [u8]>,
    payload: Option<&'a [u8]>,
) -> InRecord<'a> {
    InRecord {
        topic,
        partition: 0,
        offset,
        key,
        payload,
        timestamp_ms: Some(1_000 + offset),
        trace: None,
    }
}

#[test]
fn the_stage_applies_each_topic_skips_what_it_cannot_read_and_serves_once_caught_up() {
    use kusanagi_schemas::{ErasureRequest, RecordCodec};
    let view = std::sync::Arc::new(View::new(100));
    let metrics = Metrics::new();
    let mut stage = ViewStage::new(topics(), view.clone(), metrics.clone());
    let mut a = Account::new("a", "t", EventTime::from_micros(0));
    a.version = 1;
    a.state = AccountState::RestrictedWithdrawal;
    let account = RecordCodec::<Account>::new().encode(&a);
    let moved = RecordCodec::<Transition>::new().encode(&transition(
        "b",
        1,
        AccountState::Normal,
        AccountState::Banned,
        true,
    ));
    let erase = RecordCodec::<ErasureRequest>::new().encode(&ErasureRequest {
        request_id: "r1".into(),
        subject: "b".into(),
        requested_at: EventTime::from_micros(5_000_000),
        requested_by: "cli:test".into(),
    });
    let batch = [
        record("accounts", 0, Some(b"a"), Some(&account)),
        record("accounts", 1, None, Some(&account)), // no key
        record("accounts.transitions", 0, None, Some(&moved)),
        record("accounts.transitions", 1, None, Some(b"\xff\xff")), // not Avro
        record("accounts.transitions", 2, None, None),              // no value
    ];
    stage.process(&batch, &mut Vec::new()).unwrap();
    assert!(
        view.read_ready().is_none(),
        "not served before it caught up"
    );
    stage.on_caught_up(&metrics);
    {
        let index = view.read_ready().expect("served once caught up");
        assert_eq!(
            index.latest("t", "a").map(|a| a.state),
            Some(AccountState::RestrictedWithdrawal)
        );
        assert_eq!(index.state_at("t", "b", 10_000), Some(AccountState::Banned));
    }
    let skipped = |t| metrics.view.records_total(t, "skipped");
    assert_eq!(skipped("accounts"), 1);
    assert_eq!(skipped("accounts.transitions"), 2);
    assert_eq!(metrics.view.records_total("accounts", "applied"), 1);

    stage
        .process(
            &[record("erasures", 0, Some(b"b"), Some(&erase))],
            &mut Vec::new(),
        )
        .unwrap();
    assert_eq!(view.read().state_at("t", "b", 10_000), None, "erased");
    assert_eq!(metrics.view.records_total("erasures", "applied"), 1);

    // A restarted stage starts from an empty index, not served.
    let _again = ViewStage::new(topics(), view.clone(), metrics.clone());
    assert!(view.read_ready().is_none());
    assert!(view.read().is_empty());
}

#[test]
fn two_tenants_accounts_of_one_id_are_two_and_records_from_before_tenancy_load() {
    let mut index = AccountIndex::new();
    let account = |tenant: &str, id: &str, version: i64| {
        let mut a = Account::new(id, tenant, EventTime::from_micros(0));
        a.version = version;
        a.state = AccountState::RestrictedWithdrawal;
        a
    };
    // Before tenancy: keyed by the bare id. Then decide moved it to its own
    // key and tombstoned the bare id.
    index.apply_account(b"bob", Some(account("game-a", "bob", 4)));
    index.apply_account(b"game-a\x1fbob", Some(account("game-a", "bob", 5)));
    index.apply_account(b"bob", None);
    assert_eq!(index.latest("game-a", "bob").map(|a| a.version), Some(5));
    index.apply_account(b"game-b\x1fbob", Some(account("game-b", "bob", 1)));
    assert_eq!(index.latest("game-b", "bob").map(|a| a.version), Some(1));
    assert_eq!(index.latest("default", "bob"), None);
    let mut tenants: Vec<&str> = index.tenants_of("bob").collect();
    tenants.sort();
    assert_eq!(tenants, ["game-a", "game-b"]);
    assert_eq!(index.len(), 2);

    // An account tombstoned under its key leaves the other tenant's alone.
    index.apply_account(b"game-b\x1fbob", None);
    assert_eq!(index.latest("game-b", "bob"), None);
    assert!(index.latest("game-a", "bob").is_some());

    // An erasure before tenancy tombstoned the bare id: gone.
    index.apply_account(b"carol", Some(account("game-a", "carol", 1)));
    index.apply_account(b"carol", None);
    assert_eq!(index.latest("game-a", "carol"), None);

    // An erasure request names an id: every tenant's account of it goes.
    index.apply_account(b"game-b\x1fdave", Some(account("game-b", "dave", 1)));
    index.apply_account(b"game-a\x1fdave", Some(account("game-a", "dave", 1)));
    index.erase("dave", 7);
    assert_eq!(index.tenants_of("dave").count(), 0);
    let mut gone = index.gone("dave").unwrap().tenants.clone();
    gone.sort();
    assert_eq!(gone, ["game-a", "game-b"]);
    assert!(
        !index.apply_account(&[0xff], None),
        "a key that is not UTF-8"
    );
}
