//! The account state machine (SCREENING.md, Account states), pure.
//!
//! Design. An [`Account`] moves only along the allowed edges
//! (`AccountState::can_move_to`); any other move a screening or verdict
//! asks for is *refused*: recorded as a [`Transition`] with `applied =
//! false` and the reason, never applied. `BANNED` is final.
//!
//! L2 coalescing. An account has at most one L2 request in flight. A
//! trigger while none is in flight sends a request at once; a trigger while
//! one is in flight replaces the account's queued trigger if it is newer
//! (by event time), and counts as coalesced. When the in-flight request's
//! verdict comes, the queued trigger (if any) is sent. The request carries
//! the union of the rules fired in the window of its (newest) triggering
//! event and that window's profile, as the screen stage computed them.
//! Both the in-flight id and the queued trigger live in the account's
//! record on the compacted `accounts` topic, so a restarted copy resumes
//! exactly where its predecessor committed.

use kusanagi_schemas::{
    Account, AccountState, EventTime, L2Request, QueuedRequest, Screening, Transition, Trigger,
    Verdict,
};

/// What applying one screening or verdict did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// Moves, applied or refused, in order.
    pub transitions: Vec<Transition>,
    /// An L2 request to send.
    pub request: Option<L2Request>,
    /// The account's record changed (state, version or L2 bookkeeping).
    pub changed: bool,
}

fn transition(
    account: &Account,
    to: AccountState,
    trigger: Trigger,
    rule: String,
    at: EventTime,
    source_id: &str,
    evidence: String,
) -> Transition {
    Transition {
        account_id: account.account_id.clone(),
        tenant_id: account.tenant_id.clone(),
        version: account.version,
        from_state: account.state,
        to_state: to,
        trigger,
        rule,
        event_time: at,
        source_id: source_id.to_owned(),
        evidence,
        applied: false,
        refusal: None,
    }
}

/// Moves `account` to `to` if the machine allows it, else records the
/// refusal. Returns whether it moved.
fn try_move(account: &mut Account, mut t: Transition, effects: &mut Effects) -> bool {
    if account.state.can_move_to(t.to_state) {
        account.state = t.to_state;
        account.version += 1;
        account.updated_at = account.updated_at.max(t.event_time);
        t.version = account.version;
        t.applied = true;
        effects.changed = true;
        effects.transitions.push(t);
        true
    } else {
        let why = if account.state == AccountState::Banned {
            "BANNED is final".to_owned()
        } else {
            format!("{} -> {} is not an allowed move", account.state, t.to_state)
        };
        t.refusal = Some(why);
        effects.transitions.push(t);
        false
    }
}

fn queued_from(s: &Screening) -> QueuedRequest {
    QueuedRequest {
        request_id: s.event_id.clone(),
        event_time: s.event_time,
        rules: s.window_rules,
        window: s.window,
        evidence_event_ids: s.evidence_event_ids.clone(),
        coalesced: 1,
    }
}

fn request_from(account: &Account, q: QueuedRequest) -> L2Request {
    L2Request {
        request_id: q.request_id,
        event_time: q.event_time,
        tenant_id: account.tenant_id.clone(),
        target_id: account.account_id.clone(),
        account_state: account.state,
        rules: q.rules,
        window: q.window,
        evidence_event_ids: q.evidence_event_ids,
        coalesced: q.coalesced,
    }
}

/// Sends `q` now if nothing is in flight, else keeps the newer of `q` and
/// the queued trigger.
fn trigger_l2(account: &mut Account, q: QueuedRequest, effects: &mut Effects) {
    effects.changed = true;
    if account.l2_in_flight.is_none() {
        account.l2_in_flight = Some(q.request_id.clone());
        effects.request = Some(request_from(account, q));
        return;
    }
    match &mut account.l2_queued {
        Some(queued) => {
            let coalesced = queued.coalesced.saturating_add(1);
            if q.event_time >= queued.event_time {
                *queued = q;
            }
            queued.coalesced = coalesced;
        }
        None => account.l2_queued = Some(q),
    }
}

/// Applies one screening of `account`'s events.
pub fn apply_screening(account: &mut Account, s: &Screening) -> Effects {
    let mut effects = Effects::default();
    if !s.screened {
        return effects;
    }
    let before = account.state;
    if before == AccountState::Normal {
        let t = transition(
            account,
            AccountState::RestrictedWithdrawal,
            Trigger::L1Screening,
            s.triggered_rules.label(),
            s.event_time,
            &s.event_id,
            format!(
                "window: {} received from {} senders in {} events; window rules {}",
                s.window.total_received,
                s.window.distinct_senders,
                s.window.transaction_count,
                s.window_rules.label()
            ),
        );
        try_move(account, t, &mut effects);
    }
    let wants_l2 = s.needs_l2 || before != AccountState::Normal;
    if wants_l2 && account.state != AccountState::Banned {
        trigger_l2(account, queued_from(s), &mut effects);
    }
    effects
}

/// Applies an L2 verdict on `account`.
pub fn apply_verdict(account: &mut Account, v: &Verdict) -> Effects {
    use AccountState::*;
    let mut effects = Effects::default();
    let evidence = format!(
        "risk {} ({}), confidence {:.2}, by {}{}",
        v.risk_score,
        v.fraud_type.as_str(),
        v.confidence,
        v.analyzer,
        v.fallback_reason
            .as_deref()
            .map(|r| format!(" (fallback: {r})"))
            .unwrap_or_default()
    );
    let step = |account: &Account, to| {
        transition(
            account,
            to,
            Trigger::L2Verdict,
            v.fraud_type.as_str().to_owned(),
            v.event_time,
            &v.request_id,
            evidence.clone(),
        )
    };
    let target = v.recommended_action;
    if account.state != target {
        let path: &[AccountState] = match (account.state, target) {
            (RestrictedWithdrawal, Banned) => &[UnderSurveillance, Banned],
            _ => &[target],
        };
        for &to in path {
            if !try_move(account, step(account, to), &mut effects) {
                break;
            }
        }
    }
    if account.l2_in_flight.as_deref() == Some(v.request_id.as_str()) {
        account.l2_in_flight = None;
        effects.changed = true;
        match account.l2_queued.take() {
            Some(q) if account.state != Banned => {
                account.l2_in_flight = Some(q.request_id.clone());
                effects.request = Some(request_from(account, q));
            }
            _ => {}
        }
    }
    effects
}
