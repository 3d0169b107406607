//! Batches through the decide stage: what it writes, its rebuild from the
//! `accounts` changelog (a v1 record too), dead letters, another tenant's
//! screenings, erasures and operators' verdicts.

use kusanagi_schemas::{
    Account, AccountState, AuditKind, AuditRecord, ErasureRequest, EventTime, L2Request,
    RecordCodec, Rule, Screening, Transition, Verdict,
};

use super::{screening, verdict};
use crate::runtime::replay::MemoryLog;
use crate::runtime::{AssignedPartition, InRecord, OutRecord, Stage};
use crate::stages::decide::{DecideStage, DecideTopics};

use AccountState::*;

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
    changelog.push(out[2].key.clone(), out[2].payload.clone());

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
    assert_eq!(next.account(2, "default", "bob").unwrap().state, Banned);

    // An erased account's tombstone removes it on rebuild.
    changelog.push(Some(b"default\x1fbob".to_vec()), None);
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
    assert!(after.account(2, "default", "bob").is_none());
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
fn the_same_id_in_another_tenant_is_another_account() {
    let s = RecordCodec::<Screening>::new();
    let a = RecordCodec::<Account>::new();
    let mut stage = DecideStage::new(topics(), Box::new(MemoryLog::default()));
    let first = run(
        &mut stage,
        &[("screenings", s.encode(&screening("e1", 1, &[Rule::R2])))],
    );
    assert!(first.iter().any(|r| r.topic == "accounts.transitions"));
    // The same account id, screened in another tenant's traffic: its own
    // account, moved on its own, written under its own key.
    let other = Screening {
        tenant_id: "game-b".into(),
        ..screening("e2", 2, &[Rule::R2])
    };
    let out = run(&mut stage, &[("screenings", s.encode(&other))]);
    assert!(out.iter().all(|r| r.topic != "events.dlq"), "{out:?}");
    let written: Vec<_> = out.iter().filter(|r| r.topic == "accounts").collect();
    assert_eq!(written.len(), 1);
    assert_eq!(written[0].key.as_deref(), Some(&b"game-b\x1fbob"[..]));
    let b = a.decode(written[0].payload.as_ref().unwrap()).unwrap();
    assert_eq!((b.tenant_id.as_str(), b.version), ("game-b", 1));
    let one = stage.account(2, "default", "bob").unwrap();
    let two = stage.account(2, "game-b", "bob").unwrap();
    assert_eq!((one.version, two.version), (1, 1));
    assert_eq!(one.state, two.state);
}

#[test]
fn an_account_written_before_tenancy_is_rebuilt_and_moves_to_its_own_key() {
    let s = RecordCodec::<Screening>::new();
    let a = RecordCodec::<Account>::new();
    // `accounts` as a release before tenancy left it: keyed by the bare id.
    let mut before = Account::new("bob", "game-b", EventTime::from_micros(0));
    before.version = 7;
    let log = MemoryLog::default();
    log.push(Some(b"bob".to_vec()), Some(a.encode(&before)));
    let mut stage = DecideStage::new(topics(), Box::new(log));
    let other = Screening {
        tenant_id: "game-b".into(),
        ..screening("e2", 2, &[Rule::R2])
    };
    let out = run(&mut stage, &[("screenings", s.encode(&other))]);
    assert_eq!(stage.account(2, "game-b", "bob").unwrap().version, 8);
    let written: Vec<(Option<&[u8]>, bool)> = out
        .iter()
        .filter(|r| r.topic == "accounts")
        .map(|r| (r.key.as_deref(), r.payload.is_some()))
        .collect();
    assert_eq!(
        written,
        [
            (Some(&b"game-b\x1fbob"[..]), true),
            (Some(&b"bob"[..]), false)
        ],
        "the account under its own key, then the bare id's tombstone"
    );
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
        [
            "accounts.transitions",
            "l2.requests",
            "accounts",
            "accounts",
            "audit"
        ]
    );
    // The account's tombstone under its key, and the bare id's (a record
    // written before tenancy).
    assert_eq!(out[2].key.as_deref(), Some(&b"default\x1fbob"[..]));
    assert_eq!(out[3].key.as_deref(), Some(&b"bob"[..]));
    assert_eq!(
        (&out[2].payload, &out[3].payload),
        (&None, &None),
        "tombstones"
    );
    let audit = RecordCodec::<AuditRecord>::new()
        .decode(out[4].payload.as_deref().unwrap())
        .unwrap();
    assert_eq!(audit.kind, AuditKind::DeleteMarker);
    assert_eq!(audit.request_id.as_deref(), Some("er-1"));
    assert!(
        !format!("{audit:?}").contains("bob"),
        "no personal data in the audit trail: {audit:?}"
    );
    assert!(stage.account(2, "default", "bob").is_none());
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
    assert_eq!(stage.account(2, "default", "bob").unwrap().version, 1);

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
    assert!(stage.account(2, "default", "bob").is_some());
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
    assert_eq!(stage.account(2, "default", "bob").unwrap().state, Banned);
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
    assert_eq!(stage.account(2, "default", "bob").unwrap().state, Banned);
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
    let v1 = include_bytes!("../../../../../schemas/tests/fixtures/account.v1.bin");
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
    let account = stage.account(2, "default", "bob").unwrap();
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
    assert!(
        stage.account(2, "default", "bob").is_none(),
        "not brought back"
    );
}
