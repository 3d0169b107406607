use kusanagi_schemas::{
    Account, AccountState, AuditKind, AuditRecord, ErasureRequest, EventTime, FraudType, L2Request,
    RecordCodec, Rule, RuleSet, Screening, Transition, Verdict, WindowProfile, action_for_score,
};
use proptest::prelude::*;

use super::*;
use crate::runtime::replay::MemoryLog;
use crate::runtime::{AssignedPartition, InRecord, OutRecord, Stage};

use AccountState::*;

fn screening(id: &str, at: i64, rules: &[Rule]) -> Screening {
    let set: RuleSet = rules.iter().copied().collect();
    Screening {
        event_id: id.into(),
        event_time: EventTime::from_micros(at),
        tenant_id: "default".into(),
        target_id: "bob".into(),
        actor_id: "alice".into(),
        screened: !set.is_empty(),
        triggered_rules: set,
        recommended_action: if set.is_empty() {
            Normal
        } else {
            RestrictedWithdrawal
        },
        needs_l2: set.contains(Rule::R4),
        window: WindowProfile {
            total_received: 10,
            transaction_count: 1,
            distinct_senders: 1,
        },
        window_rules: set,
        evidence_event_ids: vec![id.into()],
        evidence_events: vec![],
        late: false,
    }
}

fn verdict(request_id: &str, score: i32) -> Verdict {
    Verdict {
        request_id: request_id.into(),
        event_time: EventTime::from_micros(0),
        tenant_id: "default".into(),
        target_id: "bob".into(),
        is_fraud: score > 30,
        risk_score: score,
        fraud_type: if score > 30 {
            FraudType::RmtDirect
        } else {
            FraudType::Legitimate
        },
        recommended_action: action_for_score(score),
        reasoning: "test".into(),
        evidence_event_ids: vec![],
        confidence: 0.6,
        analyzer: "fallback".into(),
        fallback_reason: Some("no_model".into()),
    }
}

fn bob() -> Account {
    Account::new("bob", "default", EventTime::from_micros(0))
}

fn moves(effects: &Effects) -> Vec<(AccountState, AccountState, bool)> {
    effects
        .transitions
        .iter()
        .map(|t| (t.from_state, t.to_state, t.applied))
        .collect()
}

#[test]
fn every_screened_event_restricts_a_normal_account_and_asks_for_l2() {
    let mut a = bob();
    let e = apply_screening(&mut a, &screening("e1", 1, &[Rule::R1, Rule::R3]));
    assert_eq!(moves(&e), [(Normal, RestrictedWithdrawal, true)]);
    assert_eq!(e.transitions[0].rule, "R1+R3");
    assert_eq!(e.transitions[0].version, 1);
    let sent = e.request.expect("restricted, so reviewed: no R4 needed");
    assert_eq!(
        (sent.request_id.as_str(), sent.account_state),
        ("e1", RestrictedWithdrawal)
    );
    assert_eq!(a.l2_in_flight.as_deref(), Some("e1"));
    // Screened again while one is in flight: no move, queued.
    let e = apply_screening(&mut a, &screening("e2", 2, &[Rule::R2]));
    assert!(e.transitions.is_empty() && e.request.is_none());
    assert_eq!(a.l2_queued.as_ref().unwrap().request_id, "e2");
}

#[test]
fn unscreened_events_change_nothing() {
    let mut a = bob();
    assert_eq!(
        apply_screening(&mut a, &screening("e1", 1, &[])),
        Effects::default()
    );
    assert_eq!(a, bob());
}

fn with_window(mut s: Screening, senders: i32, count: i32, total: i64) -> Screening {
    s.window = WindowProfile {
        total_received: total,
        transaction_count: count,
        distinct_senders: senders,
    };
    s
}

#[test]
fn triggers_merge_into_one_request_with_the_union_and_the_largest_window() {
    let mut a = bob();
    apply_screening(&mut a, &screening("e1", 10, &[Rule::R4]));
    let triggers = [
        with_window(screening("e2", 30, &[Rule::R2]), 6, 12, 60_000),
        with_window(screening("e3", 20, &[Rule::R1]), 2, 3, 1_500_000),
        with_window(screening("e4", 40, &[Rule::R4]), 1, 2, 9_000),
    ];
    for t in &triggers {
        let e = apply_screening(&mut a, t);
        assert!(e.request.is_none(), "{} is merged", t.event_id);
    }
    let queued = a.l2_queued.clone().unwrap();
    assert_eq!(
        (queued.request_id.as_str(), queued.coalesced),
        ("e4", 3),
        "the newest trigger by event time names the request"
    );
    assert_eq!(queued.rules.label(), "R1+R2+R4", "the union");
    assert_eq!(
        queued.window,
        WindowProfile {
            total_received: 1_500_000,
            transaction_count: 12,
            distinct_senders: 6,
        },
        "each count the largest"
    );
    // The verdict on e1 escalates at once and sends the merged request.
    let e = apply_verdict(&mut a, &verdict("e1", 60));
    assert_eq!(moves(&e), [(RestrictedWithdrawal, UnderSurveillance, true)]);
    let sent = e.request.unwrap();
    assert_eq!(
        (sent.request_id.as_str(), sent.coalesced, sent.account_state),
        ("e4", 3, UnderSurveillance)
    );
    assert_eq!(a.l2_in_flight.as_deref(), Some("e4"));
    assert!(a.l2_queued.is_none());
}

#[test]
fn a_stale_release_is_refused_and_the_newest_evidence_decides() {
    let mut a = bob();
    apply_screening(&mut a, &screening("e1", 1, &[Rule::R4]));
    apply_screening(&mut a, &screening("e2", 2, &[Rule::R1, Rule::R2, Rule::R4]));
    // e1's window alone scores low: it would release a fraudster.
    let e = apply_verdict(&mut a, &verdict("e1", 30));
    assert_eq!(moves(&e), [(RestrictedWithdrawal, Normal, false)]);
    assert_eq!(
        e.transitions[0].refusal.as_deref(),
        Some(NEWER_EVIDENCE_PENDING)
    );
    assert_eq!(a.state, RestrictedWithdrawal);
    assert_eq!(e.request.unwrap().request_id, "e2", "the queued one goes");
    // An answer to a request no longer in flight is recorded, not applied.
    let e = apply_verdict(&mut a, &verdict("old", 0));
    assert_eq!(moves(&e), [(RestrictedWithdrawal, Normal, false)]);
    assert_eq!(e.transitions[0].refusal.as_deref(), Some(SUPERSEDED));
    assert_eq!(a.l2_in_flight.as_deref(), Some("e2"));
    // e2's verdict bans, from where the account stands.
    let e = apply_verdict(&mut a, &verdict("e2", 80));
    assert_eq!(
        moves(&e),
        [
            (RestrictedWithdrawal, UnderSurveillance, true),
            (UnderSurveillance, Banned, true)
        ]
    );
    // With nothing newer pending, a release applies.
    let mut b = bob();
    apply_screening(&mut b, &screening("e1", 1, &[Rule::R1]));
    let e = apply_verdict(&mut b, &verdict("e1", 30));
    assert_eq!(moves(&e), [(RestrictedWithdrawal, Normal, true)]);
    assert!(b.l2_in_flight.is_none());
}

#[test]
fn a_ban_goes_through_surveillance_and_is_final() {
    let mut a = bob();
    apply_screening(&mut a, &screening("e1", 1, &[Rule::R4]));
    apply_screening(&mut a, &screening("e2", 2, &[Rule::R4]));
    let e = apply_verdict(&mut a, &verdict("e1", 90));
    assert_eq!(
        moves(&e),
        [
            (RestrictedWithdrawal, UnderSurveillance, true),
            (UnderSurveillance, Banned, true)
        ]
    );
    assert_eq!(a.version, 3);
    assert!(e.request.is_none(), "no analysis of a banned account");
    assert!(a.l2_queued.is_none() && a.l2_in_flight.is_none());
    // A later recovery verdict is refused and recorded.
    let e = apply_verdict(&mut a, &verdict("e9", 0));
    assert_eq!(moves(&e), [(Banned, Normal, false)]);
    assert_eq!(e.transitions[0].refusal.as_deref(), Some("BANNED is final"));
    assert_eq!(e.transitions[0].version, 3);
    assert_eq!(a.state, Banned);
    // Nor do screenings move or analyse it.
    let e = apply_screening(&mut a, &screening("e10", 3, &[Rule::R1, Rule::R4]));
    assert!(e.transitions.is_empty() && e.request.is_none());
}

fn operator(request_id: &str, score: i32) -> Verdict {
    Verdict {
        analyzer: "operator:alice".into(),
        ..verdict(request_id, score)
    }
}

#[test]
fn a_verdict_walks_the_edges_from_any_state() {
    // From NORMAL (an operator's verdict on an account never restricted):
    // one move per edge.
    let mut a = bob();
    let e = apply_verdict(&mut a, &operator("op-1", 50));
    assert_eq!(
        moves(&e),
        [
            (Normal, RestrictedWithdrawal, true),
            (RestrictedWithdrawal, UnderSurveillance, true)
        ]
    );
    let e = apply_verdict(&mut a, &operator("op-2", 50));
    assert!(e.transitions.is_empty(), "already there");
    let mut a = bob();
    let e = apply_verdict(&mut a, &operator("op-3", 99));
    assert_eq!(e.transitions.len(), 3);
    assert_eq!((a.state, a.version), (Banned, 3));
    // Out of BANNED nothing moves: refused and recorded.
    let e = apply_verdict(&mut a, &operator("op-4", 50));
    assert_eq!(moves(&e), [(Banned, UnderSurveillance, false)]);
    assert_eq!(e.transitions[0].refusal.as_deref(), Some("BANNED is final"));
    assert_eq!(a.version, 3);
    // A model's ban of a restricted account: two moves.
    let mut b = bob();
    apply_screening(&mut b, &screening("e1", 1, &[Rule::R4]));
    let e = apply_verdict(&mut b, &verdict("e1", 99));
    assert_eq!(
        moves(&e),
        [
            (RestrictedWithdrawal, UnderSurveillance, true),
            (UnderSurveillance, Banned, true)
        ]
    );
}

#[test]
fn an_operators_verdict_drops_what_waited_for_the_model() {
    let mut a = bob();
    apply_screening(&mut a, &screening("e1", 1, &[Rule::R4]));
    apply_screening(&mut a, &screening("e2", 2, &[Rule::R2]));
    let e = apply_verdict(&mut a, &operator("op-1", 0));
    assert_eq!(moves(&e), [(RestrictedWithdrawal, Normal, true)]);
    assert!(e.request.is_none() && e.changed);
    assert!(a.l2_in_flight.is_none() && a.l2_queued.is_none());
    // The model's late answer does not undo the operator's release.
    let e = apply_verdict(&mut a, &verdict("e1", 60));
    assert_eq!(moves(&e), [(Normal, UnderSurveillance, false)]);
    assert_eq!(e.transitions[0].refusal.as_deref(), Some(SUPERSEDED));
    assert_eq!(a.state, Normal);
    // New evidence asks anew.
    let e = apply_screening(&mut a, &screening("e3", 3, &[Rule::R1]));
    assert_eq!(e.request.unwrap().request_id, "e3");
}

// ------------------------------------------------------ property test

#[derive(Debug, Clone)]
enum Input {
    Screen(i64, Vec<Rule>),
    Verdict(usize, i32),
}

fn inputs() -> impl Strategy<Value = Vec<Input>> {
    let rule = prop::sample::select(Rule::ALL.to_vec());
    let input = prop_oneof![
        (0..1_000i64, prop::collection::vec(rule, 0..3)).prop_map(|(t, r)| Input::Screen(t, r)),
        (0..40usize, 0..=100i32).prop_map(|(i, s)| Input::Verdict(i, s)),
    ];
    prop::collection::vec(input, 0..80)
}

proptest! {
    #[test]
    fn no_sequence_makes_an_illegal_move_and_banned_is_final(inputs in inputs()) {
        let mut a = bob();
        let mut sent: Vec<String> = Vec::new();
        let mut banned = false;
        for (i, input) in inputs.into_iter().enumerate() {
            let before = a.clone();
            let effects = match input {
                Input::Screen(t, rules) => apply_screening(&mut a, &screening(&format!("e{i}"), t, &rules)),
                Input::Verdict(which, score) => {
                    // A verdict for a request that was sent, or a stray one.
                    let id = sent.get(which).cloned().unwrap_or_else(|| format!("stray{which}"));
                    apply_verdict(&mut a, &verdict(&id, score))
                }
            };
            let mut state = before.state;
            let mut version = before.version;
            for t in &effects.transitions {
                prop_assert_eq!(t.from_state, state);
                if t.applied {
                    prop_assert!(state.can_move_to(t.to_state), "applied an illegal move {:?}", t);
                    state = t.to_state;
                    version += 1;
                    prop_assert_eq!(t.version, version);
                    prop_assert!(t.refusal.is_none());
                } else if t.refusal.as_deref() == Some(NEWER_EVIDENCE_PENDING) {
                    prop_assert_eq!(t.to_state, Normal, "only releases wait for newer evidence");
                    prop_assert!(before.l2_queued.is_some());
                } else if t.refusal.as_deref() == Some(SUPERSEDED) {
                    prop_assert!(before.l2_in_flight.as_deref() != Some(t.source_id.as_str()));
                } else {
                    prop_assert!(!state.can_move_to(t.to_state), "refused a legal move {:?}", t);
                    prop_assert!(t.refusal.is_some());
                    prop_assert_eq!(t.version, version);
                }
            }
            prop_assert_eq!(a.state, state);
            prop_assert_eq!(a.version, version);
            if banned {
                prop_assert_eq!(a.state, Banned, "left BANNED");
                prop_assert!(effects.request.is_none());
            }
            banned |= a.state == Banned;
            if let Some(r) = &effects.request {
                prop_assert_eq!(a.l2_in_flight.as_deref(), Some(r.request_id.as_str()));
                sent.push(r.request_id.clone());
            }
            prop_assert!(a.l2_queued.is_none() || a.l2_in_flight.is_some(), "a queued trigger with nothing in flight");
        }
    }
}

// ------------------------------------------------------------ the stage

fn topics() -> DecideTopics {
    DecideTopics::of(&crate::config::TopicsConfig::default())
}

fn run(stage: &mut DecideStage, records: &[(&'static str, Vec<u8>)]) -> Vec<OutRecord> {
    let batch: Vec<InRecord<'_>> = records
        .iter()
        .enumerate()
        .map(|(i, (topic, payload))| InRecord {
            topic,
            partition: 2,
            offset: i as i64,
            key: Some(b"bob"),
            payload: Some(payload),
            timestamp_ms: None,
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    out
}

#[test]
fn the_stage_writes_moves_requests_and_the_latest_state_and_rebuilds_from_it() {
    let s = RecordCodec::<Screening>::new();
    let v = RecordCodec::<Verdict>::new();
    let changelog = MemoryLog::default();
    let mut stage = DecideStage::new(topics(), Box::new(changelog.clone()));
    let out = run(
        &mut stage,
        &[
            ("screenings", s.encode(&screening("e1", 1, &[Rule::R4]))),
            ("screenings", s.encode(&screening("e2", 2, &[]))),
            ("screenings", s.encode(&screening("e3", 3, &[Rule::R2]))),
        ],
    );
    let shape: Vec<(&str, Option<i32>)> = out
        .iter()
        .map(|r| (r.topic.as_str(), r.partition))
        .collect();
    assert_eq!(
        shape,
        [
            ("accounts.transitions", Some(2)),
            ("l2.requests", Some(2)),
            ("accounts", Some(2)),
        ],
        "one move, one request (e3 coalesced), the account once per batch"
    );
    let request = RecordCodec::<L2Request>::new()
        .decode(out[1].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(request.request_id, "e1");
    let account = RecordCodec::<Account>::new()
        .decode(out[2].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(account.state, RestrictedWithdrawal);
    assert_eq!(account.l2_queued.as_ref().unwrap().request_id, "e3");
    let moved = RecordCodec::<Transition>::new()
        .decode(out[0].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(
        (moved.source_id.as_str(), moved.rule.as_str()),
        ("e1", "R4")
    );
    changelog.push(Some(b"bob".to_vec()), out[2].payload.clone());

    // A new copy rebuilds bob from the changelog and carries on.
    let mut next = DecideStage::new(topics(), Box::new(changelog.clone()));
    next.on_assign(&[AssignedPartition {
        topic: "screenings".into(),
        partition: 2,
        committed: Some(3),
        metadata: None,
    }]);
    let out = run(&mut next, &[("l2.verdicts", v.encode(&verdict("e1", 95)))]);
    assert_eq!(next.stats().rebuilt, 1);
    let kinds: Vec<&str> = out.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        kinds,
        ["accounts.transitions", "accounts.transitions", "accounts"],
        "banned: two moves, no request for e3"
    );
    assert_eq!(next.account(2, "bob").unwrap().state, Banned);

    // An erased account's tombstone removes it on rebuild.
    changelog.push(Some(b"bob".to_vec()), None);
    let mut after = DecideStage::new(topics(), Box::new(changelog.clone()));
    after.on_assign(&[AssignedPartition {
        topic: "screenings".into(),
        partition: 2,
        committed: None,
        metadata: None,
    }]);
    run(&mut after, &[]);
    let _ = run(
        &mut after,
        &[("screenings", s.encode(&screening("e5", 5, &[])))],
    );
    assert!(after.account(2, "bob").is_none());
}

#[test]
fn undecodable_inputs_are_dead_lettered() {
    let mut stage = DecideStage::new(topics(), Box::new(MemoryLog::default()));
    let out = run(
        &mut stage,
        &[
            ("screenings", b"junk".to_vec()),
            ("l2.verdicts", b"junk".to_vec()),
        ],
    );
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|r| r.topic == "events.dlq"));
}

#[test]
fn another_tenant_cannot_move_an_account_it_does_not_hold() {
    let s = RecordCodec::<Screening>::new();
    let mut stage = DecideStage::new(topics(), Box::new(MemoryLog::default()));
    let first = run(
        &mut stage,
        &[("screenings", s.encode(&screening("e1", 1, &[Rule::R2])))],
    );
    assert!(first.iter().any(|r| r.topic == "accounts.transitions"));
    // The same account id, screened in another tenant's traffic.
    let foreign = Screening {
        tenant_id: "game-b".into(),
        ..screening("e2", 2, &[Rule::R2])
    };
    let out = run(&mut stage, &[("screenings", s.encode(&foreign))]);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].topic, "events.dlq");
    let reason = out[0]
        .headers
        .iter()
        .find(|(k, _)| k == "kusanagi.dlq.reason")
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
    assert_eq!(reason.as_deref(), Some("tenant_mismatch"));
}

#[test]
fn an_erasure_drops_the_account_tombstones_it_and_leaves_a_delete_marker() {
    let s = RecordCodec::<Screening>::new();
    let e = RecordCodec::<ErasureRequest>::new();
    let erase = ErasureRequest {
        request_id: "er-1".into(),
        subject: "bob".into(),
        requested_at: EventTime::from_micros(9),
        requested_by: "cli:test".into(),
    };
    let mut stage = DecideStage::new(topics(), Box::new(MemoryLog::default()));
    // Screened, then erased in the same batch: no state is written after
    // the tombstone.
    let out = run(
        &mut stage,
        &[
            ("screenings", s.encode(&screening("e1", 1, &[Rule::R2]))),
            ("erasures", e.encode(&erase)),
        ],
    );
    let shape: Vec<&str> = out.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        shape,
        ["accounts.transitions", "l2.requests", "accounts", "audit"]
    );
    assert_eq!(out[2].key.as_deref(), Some(&b"bob"[..]));
    assert_eq!(out[2].payload, None, "a tombstone");
    let audit = RecordCodec::<AuditRecord>::new()
        .decode(out[3].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(audit.kind, AuditKind::DeleteMarker);
    assert_eq!(audit.request_id.as_deref(), Some("er-1"));
    assert!(
        !format!("{audit:?}").contains("bob"),
        "no personal data in the audit trail: {audit:?}"
    );
    assert!(stage.account(2, "bob").is_none());
    assert_eq!(stage.stats().erased, 1);

    // A later screening of the id starts a new account.
    let out = run(
        &mut stage,
        &[("screenings", s.encode(&screening("e2", 2, &[Rule::R2])))],
    );
    assert!(
        out.iter()
            .any(|r| r.topic == "accounts" && r.payload.is_some())
    );
    assert_eq!(stage.account(2, "bob").unwrap().version, 1);

    // A withdrawn request (a tombstone on `erasures`) undoes nothing, and
    // junk is dead-lettered.
    let batch = [
        InRecord {
            topic: "erasures",
            partition: 2,
            offset: 7,
            key: Some(b"bob"),
            payload: None,
            timestamp_ms: None,
            trace: None,
        },
        InRecord {
            topic: "erasures",
            partition: 2,
            offset: 8,
            key: Some(b"bob"),
            payload: Some(b"junk"),
            timestamp_ms: None,
            trace: None,
        },
    ];
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "events.dlq");
    assert!(stage.account(2, "bob").is_some());
}

#[test]
fn an_operator_verdict_is_applied_by_the_rules_and_audited() {
    let s = RecordCodec::<Screening>::new();
    let v = RecordCodec::<Verdict>::new();
    let mut stage = DecideStage::new(topics(), Box::new(MemoryLog::default()));
    run(
        &mut stage,
        &[("screenings", s.encode(&screening("e1", 1, &[Rule::R2])))],
    );
    let ban = Verdict {
        analyzer: "operator:alice".into(),
        request_id: "op-1".into(),
        ..verdict("e1", 95)
    };
    let out = run(&mut stage, &[("l2.verdicts", v.encode(&ban))]);
    assert_eq!(stage.account(2, "bob").unwrap().state, Banned);
    let audit: Vec<AuditRecord> = out
        .iter()
        .filter(|r| r.topic == "audit")
        .map(|r| {
            RecordCodec::<AuditRecord>::new()
                .decode(r.payload.as_deref().unwrap())
                .unwrap()
        })
        .collect();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].kind, AuditKind::StateOverride);
    assert_eq!(audit[0].actor, "operator:alice");
    assert!(
        audit[0]
            .detail
            .contains("UNDER_SURVEILLANCE -> BANNED applied"),
        "{}",
        audit[0].detail
    );
    assert!(!audit[0].detail.contains("bob"));
    // BANNED is final, for an operator too: the move is refused and audited.
    let unban = Verdict {
        request_id: "op-2".into(),
        recommended_action: Normal,
        ..ban
    };
    let out = run(&mut stage, &[("l2.verdicts", v.encode(&unban))]);
    assert_eq!(stage.account(2, "bob").unwrap().state, Banned);
    let text = format!("{out:?}");
    assert!(out.iter().any(|r| r.topic == "audit"), "{text}");
    // A model's verdict is not an override.
    let model = Verdict {
        request_id: "e9".into(),
        ..verdict("e9", 10)
    };
    let out = run(&mut stage, &[("l2.verdicts", v.encode(&model))]);
    assert!(out.iter().all(|r| r.topic != "audit"));
}

#[test]
fn an_account_record_written_by_v1_is_rebuilt_and_its_queued_request_sent() {
    // Restricted, `e1` in flight, `e2` queued: as the previous version
    // wrote it (schemas/tests/fixtures/account.v1.bin).
    let v1 = include_bytes!("../../../../schemas/tests/fixtures/account.v1.bin");
    let changelog = MemoryLog::default();
    changelog.push(Some(b"bob".to_vec()), Some(v1.to_vec()));
    let mut stage = DecideStage::new(topics(), Box::new(changelog));
    stage.on_assign(&[AssignedPartition {
        topic: "screenings".into(),
        partition: 2,
        committed: Some(9),
        metadata: None,
    }]);
    let v = RecordCodec::<Verdict>::new();
    let out = run(&mut stage, &[("l2.verdicts", v.encode(&verdict("e1", 50)))]);
    assert_eq!(stage.stats().rebuilt, 1);
    let request = out
        .iter()
        .find(|r| r.topic == "l2.requests")
        .map(|r| {
            RecordCodec::<L2Request>::new()
                .decode(r.payload.as_deref().unwrap())
                .unwrap()
        })
        .expect("the queued request goes out");
    assert_eq!((request.request_id.as_str(), request.coalesced), ("e2", 2));
    assert_eq!(request.rules.label(), "R1+R4");
    assert!(request.evidence_events.is_empty(), "v1 kept no evidence");
    let account = stage.account(2, "bob").unwrap();
    assert_eq!(account.state, UnderSurveillance);
    assert_eq!(account.l2_in_flight.as_deref(), Some("e2"));
    // It is written back as v2.
    let written = out.iter().find(|r| r.topic == "accounts").unwrap();
    assert_ne!(written.payload.as_deref().unwrap()[..10], v1[..10]);
}

#[test]
fn a_verdict_for_an_account_erased_meanwhile_leaves_no_trace() {
    let s = RecordCodec::<Screening>::new();
    let v = RecordCodec::<Verdict>::new();
    let e = RecordCodec::<ErasureRequest>::new();
    let mut stage = DecideStage::new(topics(), Box::new(MemoryLog::default()));
    let erase = ErasureRequest {
        request_id: "er-1".into(),
        subject: "bob".into(),
        requested_at: EventTime::from_micros(9),
        requested_by: "cli:test".into(),
    };
    run(
        &mut stage,
        &[
            ("screenings", s.encode(&screening("e1", 1, &[Rule::R4]))),
            ("erasures", e.encode(&erase)),
        ],
    );
    // The analysis of e1 was in flight when bob was erased.
    let out = run(&mut stage, &[("l2.verdicts", v.encode(&verdict("e1", 90)))]);
    assert!(out.is_empty(), "{out:?}");
    assert!(stage.account(2, "bob").is_none(), "not brought back");
}
