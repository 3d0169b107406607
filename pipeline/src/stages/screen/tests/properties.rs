//! Property tests: random streams (out of order, redelivered, late) against
//! a brute-force recomputation of SCREENING.md, and rebuilds from the
//! replay point at a random cut.

use std::collections::HashSet;

use kusanagi_schemas::{
    AccountState, EvidenceEvent, GameEvent, Rule, RuleSet, Screening, WindowProfile,
};
use proptest::prelude::*;

use super::{SEC, event};
use crate::stages::screen::{PartitionWindows, Thresholds, WindowSpec, evaluate};

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
            .filter(|s| s.1.target_id == e.target_id && s.1.tenant_id == e.tenant_id)
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
                .filter(|h| h.target_id == e.target_id && h.tenant_id == e.tenant_id)
                .filter(|h| h.event_id != e.event_id)
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

/// Random streams: a few targets in two tenants (the same ids in both) and
/// senders, timestamps jittered so that events arrive out of order, some
/// very late, some delivered twice.
fn streams() -> impl Strategy<Value = Vec<GameEvent>> {
    let one = (
        0..6usize,
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
                // Ids repeat across tenants: still two events.
                &format!("e{}", i / 2),
                ["bob", "carol", "dave"][target % 3],
                ["w", "x", "y", "z"][actor],
                at,
                amount,
            );
            e.tenant_id = ["game-a", "game-b"][target / 3].into();
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
