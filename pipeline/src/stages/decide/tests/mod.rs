//! The decide stage's unit tests: the state machine's moves, a property
//! test over random inputs, and batches through the stage. Shared here:
//! screenings and verdicts for the account `bob`, and `bob` himself.

mod properties;
mod stage_batches;
mod transitions;

use kusanagi_schemas::{
    Account, AccountState, EventTime, FraudType, Rule, RuleSet, Screening, Verdict, WindowProfile,
    action_for_score,
};

use AccountState::*;

pub(super) fn screening(id: &str, at: i64, rules: &[Rule]) -> Screening {
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

pub(super) fn verdict(request_id: &str, score: i32) -> Verdict {
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

pub(super) fn bob() -> Account {
    Account::new("bob", "default", EventTime::from_micros(0))
}
