use std::collections::HashSet;
use std::path::PathBuf;

use kusanagi_schemas::{
    AccountState, EventTime, EvidenceEvent, GameEvent, GameEventCodec, RecordCodec, Rule, RuleSet,
    Screening, WindowProfile, parse_event,
};
use proptest::prelude::*;

use super::*;
use crate::runtime::replay::MemoryLog;
use crate::runtime::{AssignedPartition, InRecord, OutRecord, Stage};

// ---------------------------------------------------------------- golden

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/susanoh-rule-boundaries.json")
}

#[test]
fn golden_copy_is_the_shared_reference_byte_for_byte() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/susanoh-rule-boundaries.json");
    let Ok(reference) = std::fs::read(&shared) else {
        eprintln!(
            "{} is not here; checking the vendored copy only",
            shared.display()
        );
        return;
    };
    assert_eq!(
        std::fs::read(golden_path()).unwrap(),
        reference,
        "pipeline/tests/golden/ differs from ../shared/reference/"
    );
}

#[test]
fn all_twelve_golden_boundary_cases_pass() {
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden_path()).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), doc["case_count"].as_u64().unwrap() as usize);
    assert_eq!(cases.len(), 12);
    let config = ScreenConfig::default();
    let mut passed = 0;
    for case in cases {
        let name = format!("{} {}", case["rule_id"], case["variant"]);
        let mut windows = PartitionWindows::new(config.window_spec());
        let mut last = None;
        for (offset, raw) in case["events"].as_array().unwrap().iter().enumerate() {
            let event = parse_event(&serde_json::to_vec(raw).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            last = windows.observe(
                offset as i64,
                &event,
                config.thresholds_for(&event.tenant_id),
            );
        }
        let s = last.unwrap_or_else(|| panic!("{name}: no screening"));
        let expected: Vec<&str> = case["expected_triggered_rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        let got: Vec<&str> = s.triggered_rules.iter().map(Rule::as_str).collect();
        assert_eq!(got, expected, "{name}: triggered_rules");
        assert_eq!(
            s.screened,
            case["expected_screened"].as_bool().unwrap(),
            "{name}: screened"
        );
        assert_eq!(
            s.needs_l2,
            case["expected_needs_l2"].as_bool().unwrap(),
            "{name}: needs_l2"
        );
        let action = if s.screened {
            AccountState::RestrictedWithdrawal
        } else {
            AccountState::Normal
        };
        assert_eq!(s.recommended_action, action, "{name}: recommended_action");
        passed += 1;
    }
    assert_eq!(passed, 12);
}

// ------------------------------------------------------------ unit tests

const T0: i64 = 4_070_908_800_000_000; // 2099-01-01T00:00:00Z
const SEC: i64 = 1_000_000;

fn event(id: &str, target: &str, actor: &str, at_s: i64, amount: i64) -> GameEvent {
    GameEvent {
        event_id: id.into(),
        timestamp: EventTime::from_micros(T0 + at_s * SEC),
        event_type: "TRADE".into(),
        actor_id: actor.into(),
        target_id: target.into(),
        action_details: kusanagi_schemas::ActionDetails {
            currency_amount: amount,
            ..Default::default()
        },
        context_metadata: Default::default(),
        tenant_id: "default".into(),
    }
}

fn spec() -> WindowSpec {
    WindowSpec {
        window_us: 300 * SEC,
        allowed_lateness_us: 600 * SEC,
    }
}

#[test]
fn window_bounds_are_inclusive_at_both_ends() {
    let t = Thresholds {
        r1_total_received: 300,
        ..Thresholds::default()
    };
    let mut w = PartitionWindows::new(spec());
    w.observe(0, &event("a", "bob", "x", 0, 100), &t);
    w.observe(1, &event("b", "bob", "y", 300, 100), &t);
    let s = w.observe(2, &event("c", "bob", "z", 300, 100), &t).unwrap();
    assert_eq!(
        s.window,
        WindowProfile {
            total_received: 300,
            transaction_count: 3,
            distinct_senders: 3
        }
    );
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R1]);
    // 301 s later the first event is out of the window.
    let s = w.observe(3, &event("d", "bob", "x", 301, 0), &t).unwrap();
    assert_eq!(s.window.transaction_count, 3, "b, c, d");
}

#[test]
fn out_of_order_events_fall_in_place_and_duplicates_count_once() {
    let t = Thresholds::default();
    let mut w = PartitionWindows::new(spec());
    w.observe(0, &event("a", "bob", "x", 100, 10), &t);
    // Older than `a`: its window [-200, 0] does not reach `a`.
    let s = w.observe(1, &event("b", "bob", "y", 0, 10), &t).unwrap();
    assert_eq!(s.window.transaction_count, 1);
    assert!(!s.late);
    assert!(
        w.observe(2, &event("a", "bob", "x", 100, 10), &t).is_none(),
        "duplicate"
    );
    let s = w.observe(3, &event("c", "bob", "x", 150, 10), &t).unwrap();
    assert_eq!(
        s.window,
        WindowProfile {
            total_received: 30,
            transaction_count: 3,
            distinct_senders: 2
        }
    );
}

#[test]
fn late_events_are_flagged_and_idle_targets_are_reclaimed() {
    let t = Thresholds::default();
    let mut w = PartitionWindows::new(spec());
    w.observe(0, &event("a", "alice", "x", 0, 1), &t);
    w.observe(1, &event("b", "bob", "x", 1_000, 1), &t);
    assert_eq!(w.targets(), 2);
    // The watermark moves 1200 s (lateness + 2 windows) past `a`: alice goes.
    w.observe(2, &event("c", "bob", "x", 1_201, 1), &t);
    assert_eq!(w.targets(), 1);
    assert_eq!(w.retained_events(), 2);
    assert_eq!(w.replay_from(3), 1);
    let s = w.observe(3, &event("d", "carol", "x", 500, 1), &t).unwrap();
    assert!(s.late, "600 s lateness passed");
    let s = w.observe(4, &event("e", "carol", "x", 700, 1), &t).unwrap();
    assert!(!s.late);
}

#[test]
fn window_rules_and_evidence_gather_the_windows_fired_rules() {
    let t = Thresholds {
        r2_transaction_count: 2,
        ..Thresholds::default()
    };
    let mut w = PartitionWindows::new(spec());
    let mut chat = event("a", "bob", "x", 0, 5);
    chat.context_metadata.recent_chat_log = Some("口座おしえて".into());
    let s = w.observe(0, &chat, &t).unwrap();
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R4]);
    assert!(s.needs_l2);
    let s = w.observe(1, &event("b", "bob", "y", 10, 5), &t).unwrap();
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R2]);
    assert_eq!(s.window_rules.to_vec(), [Rule::R2, Rule::R4]);
    assert_eq!(s.evidence_event_ids, ["a", "b"]);
    assert!(!s.needs_l2, "needs_l2 is this event's R4 only");
}

fn stage_over(log: &MemoryLog) -> ScreenStage {
    ScreenStage::new(
        ScreenConfig::default(),
        "events",
        "screenings",
        "events.dlq",
        Box::new(log.clone()),
    )
}

fn feed(stage: &mut ScreenStage, log: &[Vec<u8>], range: std::ops::Range<usize>) -> Vec<OutRecord> {
    let batch: Vec<InRecord<'_>> = range
        .map(|i| InRecord {
            topic: "events",
            partition: 3,
            offset: i as i64,
            key: None,
            payload: Some(&log[i]),
            timestamp_ms: None,
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    out
}

#[test]
fn the_stage_rebuilds_its_windows_from_the_committed_replay_point() {
    let codec = GameEventCodec::new();
    let log: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            codec.encode(&event(
                &format!("e{i}"),
                "bob",
                &format!("a{}", i % 4),
                i * 20,
                40_000,
            ))
        })
        .collect();
    let shared = MemoryLog::default();
    for value in &log {
        shared.push(None, Some(value.clone()));
    }

    let mut uninterrupted = stage_over(&shared);
    let all = feed(&mut uninterrupted, &log, 0..30);
    assert_eq!(all.len(), 30);
    assert!(
        all.iter()
            .all(|r| r.partition == Some(3) && r.key.as_deref() == Some(&b"bob"[..]))
    );

    let mut first = stage_over(&shared);
    feed(&mut first, &log, 0..17);
    let metadata = first.commit_metadata("events", 3);
    assert_eq!(metadata.as_deref(), Some("screen.v1 replay_from=0"));

    // A new copy is given the partition at the committed offset 17.
    let mut second = stage_over(&shared);
    second.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata,
    }]);
    let rest = feed(&mut second, &log, 17..30);
    assert_eq!(rest, all[17..]);
    assert_eq!(second.stats().replayed, 17);

    // A rebalance that hands the partition back at the offset this copy
    // reached keeps its windows (no replay); at any other offset, it replays.
    let mut kept = stage_over(&shared);
    feed(&mut kept, &log, 0..17);
    kept.on_revoke(&[("events".into(), 3)]);
    kept.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata: None,
    }]);
    assert_eq!(feed(&mut kept, &log, 17..30), all[17..]);
    assert_eq!(kept.stats().replayed, 0, "kept, not replayed");
    let mut moved = stage_over(&shared);
    feed(&mut moved, &log, 0..10);
    moved.on_revoke(&[("events".into(), 3)]);
    moved.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata: Some("screen.v1 replay_from=0".into()),
    }]);
    assert_eq!(feed(&mut moved, &log, 17..30), all[17..]);
    assert_eq!(
        moved.stats().replayed,
        17,
        "another copy moved it on: replayed"
    );

    // Without the replay point the windows start empty and differ.
    let mut blind = stage_over(&shared);
    blind.on_assign(&[AssignedPartition {
        topic: "events".into(),
        partition: 3,
        committed: Some(17),
        metadata: None,
    }]);
    assert_ne!(feed(&mut blind, &log, 17..30), all[17..]);
}

#[test]
fn an_event_far_ahead_of_its_ingest_time_is_dead_lettered_not_screened() {
    let codec = GameEventCodec::new();
    let ingested_ms = (T0 - 3_600 * SEC) / 1_000; // ingested two hours before its event time...
    let log = [
        codec.encode(&event("a", "bob", "x", 0, 10)),
        codec.encode(&event("b", "bob", "x", 3_600, 10)), // ...this one is 2 h ahead
        codec.encode(&event("c", "bob", "x", 10, 10)),
    ];
    let shared = MemoryLog::default();
    let mut stage = ScreenStage::new(
        ScreenConfig {
            max_future_seconds: 7_000,
            ..ScreenConfig::default()
        },
        "events",
        "screenings",
        "events.dlq",
        Box::new(shared),
    );
    let batch: Vec<InRecord<'_>> = log
        .iter()
        .enumerate()
        .map(|(i, p)| InRecord {
            topic: "events",
            partition: 0,
            offset: i as i64,
            key: None,
            payload: Some(p),
            timestamp_ms: Some(ingested_ms),
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    let topics: Vec<&str> = out.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, ["screenings", "events.dlq", "screenings"]);
    let reason = out[1]
        .headers
        .iter()
        .find(|(k, _)| k == "kusanagi.dlq.reason")
        .unwrap();
    assert_eq!(reason.1, b"future_event");
    let c = RecordCodec::<Screening>::new()
        .decode(out[2].payload.as_deref().unwrap())
        .unwrap();
    assert!(!c.late, "the future event did not move the watermark");
    assert_eq!(c.window.transaction_count, 2, "a and c; not b");
    // With the check off (0), the same event is screened.
    let off = ScreenConfig {
        max_future_seconds: 0,
        ..ScreenConfig::default()
    };
    assert!(
        off.from_the_future(&event("b", "bob", "x", 3_600, 10), Some(ingested_ms))
            .is_none()
    );
}

#[test]
fn undecodable_records_are_dead_lettered_with_the_reason() {
    let shared = MemoryLog::default();
    let mut stage = stage_over(&shared);
    let out = feed(&mut stage, &[b"{\"json\":1}".to_vec()], 0..1);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].topic, "events.dlq");
    let reason = out[0]
        .headers
        .iter()
        .find(|(k, _)| k == "kusanagi.dlq.reason")
        .unwrap();
    assert_eq!(reason.1, b"undecodable");
    let decoded = RecordCodec::<Screening>::new().decode(out[0].payload.as_deref().unwrap());
    assert!(decoded.is_err());
}

// ------------------------------------------------------ property tests

/// SCREENING.md restated as naively as possible: for each event, scan
/// every event seen before it.
struct BruteForce {
    spec: WindowSpec,
    seen: Vec<(i64, GameEvent, RuleSet)>,
    /// Every event ever seen, never pruned: the spec's "seen so far".
    history: Vec<GameEvent>,
    watermark: Option<i64>,
}

impl BruteForce {
    fn bound(&self) -> i64 {
        self.watermark.map_or(i64::MIN, |w| {
            w - self.spec.allowed_lateness_us - 2 * self.spec.window_us
        })
    }

    fn observe(&mut self, offset: i64, e: &GameEvent, t: &Thresholds) -> Option<Screening> {
        let ts = e.timestamp.as_micros();
        let bound = self.bound();
        let w = self.spec.window_us;
        let same_target: Vec<&(i64, GameEvent, RuleSet)> = self
            .seen
            .iter()
            .filter(|s| s.1.target_id == e.target_id)
            .collect();
        let retained: Vec<&(i64, GameEvent, RuleSet)> = same_target
            .iter()
            .copied()
            .filter(|s| s.1.timestamp.as_micros() >= bound)
            .collect();
        if retained.iter().any(|s| s.1.event_id == e.event_id) {
            return None;
        }
        let late = self
            .watermark
            .is_some_and(|w| ts < w - self.spec.allowed_lateness_us);
        let in_window = |s: &(i64, GameEvent, RuleSet)| {
            let t = s.1.timestamp.as_micros();
            t >= ts - w && t <= ts
        };
        let mut members: Vec<&(i64, GameEvent, RuleSet)> =
            retained.iter().copied().filter(|s| in_window(s)).collect();
        if !late {
            // The spec's window: every distinct event seen so far. For an
            // event within the allowed lateness, retention loses nothing.
            let mut everything: Vec<&str> = self
                .history
                .iter()
                .filter(|h| h.target_id == e.target_id && h.event_id != e.event_id)
                .filter(|h| (ts - w..=ts).contains(&h.timestamp.as_micros()))
                .map(|h| h.event_id.as_str())
                .collect();
            everything.sort();
            everything.dedup();
            assert_eq!(
                everything.len(),
                members.len(),
                "retention dropped part of a non-late window"
            );
        }
        members.sort_by_key(|s| (s.1.timestamp, s.0));
        let senders: HashSet<&str> = members
            .iter()
            .map(|s| s.1.actor_id.as_str())
            .chain([e.actor_id.as_str()])
            .collect();
        let window = WindowProfile {
            total_received: members
                .iter()
                .map(|s| s.1.action_details.currency_amount)
                .sum::<i64>()
                + e.action_details.currency_amount,
            transaction_count: members.len() as i32 + 1,
            distinct_senders: senders.len() as i32,
        };
        let rules = evaluate(t, e, &window);
        let (window_rules, mut evidence) = if late {
            (
                rules,
                if rules.is_empty() {
                    vec![]
                } else {
                    vec![e.event_id.clone()]
                },
            )
        } else {
            let mut ev: Vec<String> = members
                .iter()
                .filter(|s| !s.2.is_empty())
                .map(|s| s.1.event_id.clone())
                .collect();
            if !rules.is_empty() {
                ev.push(e.event_id.clone());
            }
            (members.iter().fold(rules, |a, s| a.union(s.2)), ev)
        };
        let skip = evidence.len().saturating_sub(Screening::MAX_EVIDENCE);
        evidence.drain(..skip);
        let as_evidence = |g: &GameEvent| EvidenceEvent {
            event_id: g.event_id.clone(),
            event_time: g.timestamp,
            amount: g.action_details.currency_amount,
            market_avg_price: g.action_details.market_avg_price,
            item_id: g.action_details.item_id.clone(),
            sender_id: g.actor_id.clone(),
            sender_level: g.context_metadata.actor_level,
            sender_account_age_days: g.context_metadata.account_age_days,
            chat: g.context_metadata.recent_chat_log.clone(),
        };
        let evidence_events: Vec<EvidenceEvent> = if rules.is_empty() {
            vec![]
        } else if late {
            vec![as_evidence(e)]
        } else {
            let mut all: Vec<EvidenceEvent> = members.iter().map(|s| as_evidence(&s.1)).collect();
            all.push(as_evidence(e));
            let skip = all.len().saturating_sub(Screening::MAX_EVIDENCE_EVENTS);
            all.split_off(skip)
        };
        self.history.push(e.clone());
        self.watermark = Some(self.watermark.map_or(ts, |w| w.max(ts)));
        if ts >= self.bound() {
            self.seen.push((offset, e.clone(), rules));
        }
        let bound = self.bound();
        self.seen.retain(|s| s.1.timestamp.as_micros() >= bound);
        Some(Screening {
            event_id: e.event_id.clone(),
            event_time: e.timestamp,
            tenant_id: e.tenant_id.clone(),
            target_id: e.target_id.clone(),
            actor_id: e.actor_id.clone(),
            screened: !rules.is_empty(),
            triggered_rules: rules,
            recommended_action: if rules.is_empty() {
                AccountState::Normal
            } else {
                AccountState::RestrictedWithdrawal
            },
            needs_l2: rules.contains(Rule::R4),
            window,
            window_rules,
            evidence_event_ids: evidence,
            evidence_events,
            late,
        })
    }
}

/// Short windows, so that random streams of a few hundred events cross
/// the retention bound many times.
fn prop_spec() -> WindowSpec {
    WindowSpec {
        window_us: 60 * SEC,
        allowed_lateness_us: 30 * SEC,
    }
}

fn small_thresholds() -> Thresholds {
    Thresholds {
        r1_total_received: 1_000,
        r2_transaction_count: 4,
        r3_price_multiplier: 3,
        r4_slang: true,
    }
}

/// Random streams: a few targets and senders, timestamps jittered so that
/// events arrive out of order, some very late, some delivered twice.
fn streams() -> impl Strategy<Value = Vec<GameEvent>> {
    let one = (
        0..3usize,
        0..4usize,
        0..400i64,
        0..400i64,
        any::<bool>(),
        0..8u8,
    );
    prop::collection::vec((one, 0..10u8, any::<prop::sample::Index>()), 1..300).prop_map(|raw| {
        let mut out: Vec<GameEvent> = Vec::new();
        let mut clock = 0i64;
        for (i, ((target, actor, jitter, amount, priced, chat), kind, pick)) in
            raw.into_iter().enumerate()
        {
            clock += 3;
            if kind == 0 && !out.is_empty() {
                // At-least-once delivery: a copy of an earlier event.
                let copy = out[pick.index(out.len())].clone();
                out.push(copy);
                continue;
            }
            // Mostly near the clock, sometimes far behind it.
            let at = if kind == 1 {
                clock - jitter
            } else {
                clock - jitter / 10
            };
            let mut e = event(
                &format!("e{i}"),
                ["bob", "carol", "dave"][target],
                ["w", "x", "y", "z"][actor],
                at,
                amount,
            );
            if priced {
                e.action_details.market_avg_price = Some(100);
            }
            if chat == 0 {
                e.context_metadata.recent_chat_log = Some("5万で".into());
            }
            out.push(e);
        }
        out
    })
}

proptest! {
    #[test]
    fn windows_equal_a_brute_force_recomputation(events in streams()) {
        let t = small_thresholds();
        let mut fast = PartitionWindows::new(prop_spec());
        let mut brute = BruteForce { spec: prop_spec(), seen: vec![], history: vec![], watermark: None };
        for (offset, e) in events.iter().enumerate() {
            let offset = offset as i64;
            prop_assert_eq!(fast.observe(offset, e, &t), brute.observe(offset, e, &t), "event {}", offset);
        }
    }

    #[test]
    fn a_rebuild_from_the_replay_point_changes_no_screening(events in streams(), cut in any::<prop::sample::Index>()) {
        let t = small_thresholds();
        let cut = cut.index(events.len() + 1);
        let mut uninterrupted = PartitionWindows::new(prop_spec());
        let mut replay_from = 0;
        let mut expected = Vec::new();
        for (offset, e) in events.iter().enumerate() {
            if offset == cut {
                replay_from = uninterrupted.replay_from(offset as i64);
            }
            expected.push(uninterrupted.observe(offset as i64, e, &t));
        }
        if cut == events.len() {
            replay_from = uninterrupted.replay_from(cut as i64);
        }
        let mut rebuilt = PartitionWindows::new(prop_spec());
        for (offset, e) in events.iter().enumerate().take(cut).skip(replay_from as usize) {
            rebuilt.observe(offset as i64, e, &t);
        }
        for offset in cut..events.len() {
            prop_assert_eq!(&rebuilt.observe(offset as i64, &events[offset], &t), &expected[offset], "event {} after a cut at {}", offset, cut);
        }
    }
}

#[test]
fn per_tenant_thresholds_apply_to_their_tenant_only() {
    let mut config = ScreenConfig::default();
    config.tenants.insert(
        "strict".into(),
        Thresholds {
            r1_total_received: 10,
            ..Thresholds::default()
        },
    );
    let mut w = PartitionWindows::new(config.window_spec());
    let mut e = event("a", "bob", "x", 0, 50);
    let s = w
        .observe(0, &e, config.thresholds_for(&e.tenant_id))
        .unwrap();
    assert!(!s.screened);
    e.event_id = "b".into();
    e.tenant_id = "strict".into();
    let s = w
        .observe(1, &e, config.thresholds_for(&e.tenant_id))
        .unwrap();
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R1]);
}

#[test]
fn a_screened_event_carries_the_newest_ten_events_of_its_window() {
    let mut w = PartitionWindows::new(spec());
    let t = Thresholds::default();
    for i in 0..12 {
        let mut e = event(
            &format!("e{i:02}"),
            "bob",
            &format!("mule{i}"),
            i * 10,
            5_000,
        );
        e.context_metadata.actor_level = 2;
        e.context_metadata.account_age_days = i as i32;
        e.action_details.item_id = Some("gem".into());
        e.action_details.market_avg_price = Some(4_000);
        e.context_metadata.recent_chat_log = Some(format!("thanks {i}"));
        let s = w.observe(i, &e, &t).unwrap();
        if i < 9 {
            assert!(!s.screened && s.evidence_events.is_empty(), "{i}");
        }
    }
    // An unrelated target's event is not evidence; the 13th is R2 again.
    w.observe(12, &event("x", "carol", "m", 115, 5), &t);
    let s = w
        .observe(13, &event("e12", "bob", "mule12", 120, 5_000), &t)
        .unwrap();
    assert!(s.screened);
    let ids: Vec<&str> = s
        .evidence_events
        .iter()
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "e03", "e04", "e05", "e06", "e07", "e08", "e09", "e10", "e11", "e12"
        ],
        "the newest ten, oldest first, the event itself last"
    );
    let e = &s.evidence_events[0];
    assert_eq!(
        (
            e.amount,
            e.market_avg_price,
            e.item_id.as_deref(),
            e.sender_id.as_str(),
            e.sender_level,
            e.sender_account_age_days,
            e.chat.as_deref()
        ),
        (
            5_000,
            Some(4_000),
            Some("gem"),
            "mule3",
            2,
            3,
            Some("thanks 3")
        )
    );
    assert_eq!(e.event_time, EventTime::from_micros(T0 + 30 * SEC));
}

#[test]
fn a_tenant_with_include_chat_off_gets_no_chat_in_its_evidence() {
    let mut config = ScreenConfig::default();
    config.evidence.tenants.insert(
        "kids".into(),
        super::TenantEvidence {
            include_chat: false,
        },
    );
    let mut stage = ScreenStage::new(
        config,
        "events",
        "screenings",
        "events.dlq",
        Box::new(MemoryLog::default()),
    );
    let codec = GameEventCodec::new();
    let log: Vec<Vec<u8>> = ["default", "kids"]
        .iter()
        .enumerate()
        .map(|(i, tenant)| {
            let mut e = event(&format!("e{i}"), &format!("bob-{tenant}"), "x", 0, 5);
            e.tenant_id = (*tenant).into();
            e.context_metadata.recent_chat_log = Some("振込で".into());
            codec.encode(&e)
        })
        .collect();
    let out = feed(&mut stage, &log, 0..2);
    let screenings: Vec<Screening> = out
        .iter()
        .map(|r| {
            RecordCodec::<Screening>::new()
                .decode(r.payload.as_deref().unwrap())
                .unwrap()
        })
        .collect();
    assert!(
        screenings
            .iter()
            .all(|s| s.triggered_rules.contains(Rule::R4))
    );
    assert_eq!(
        screenings[0].evidence_events[0].chat.as_deref(),
        Some("振込で")
    );
    assert_eq!(screenings[1].evidence_events[0].chat, None);
}

#[test]
fn huge_chat_cannot_make_a_screening_too_large_to_produce() {
    // Ingest accepts events up to 1 MiB: ten of them, each with ~1 MiB of
    // slang-laden chat and a long item id, in one window.
    let mut w = PartitionWindows::new(spec());
    let t = Thresholds::default();
    let chat = format!("口座{}", "あ".repeat(340_000));
    let mut last = None;
    for i in 0..10 {
        let mut e = event(&format!("e{i}"), "bob", &format!("s{i}"), i, 5);
        e.context_metadata.recent_chat_log = Some(chat.clone());
        e.action_details.item_id = Some("i".repeat(100_000));
        last = w.observe(i, &e, &t);
    }
    let s = last.unwrap();
    assert_eq!(s.evidence_events.len(), 10);
    for e in &s.evidence_events {
        let c = e.chat.as_deref().unwrap();
        assert!(c.len() <= super::MAX_EVIDENCE_CHAT_BYTES + "…".len());
        assert!(c.starts_with("口座") && c.ends_with('…'), "cut and marked");
        assert!(e.item_id.as_deref().unwrap().len() <= super::MAX_EVIDENCE_ITEM_BYTES + 3);
    }
    let bytes = RecordCodec::<Screening>::new().encode(&s).len();
    assert!(bytes < 64 * 1024, "{bytes} bytes");
}
