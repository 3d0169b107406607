//! The account state machine (SCREENING.md, Account states), pure.
//!
//! Design. An [`Account`] moves only along the allowed edges
//! (`AccountState::can_move_to`); any other move a screening or verdict
//! asks for is *refused*: recorded as a [`Transition`] with `applied =
//! false` and the reason, never applied. `BANNED` is final.
//!
//! Verdicts walk the edges. A verdict moves the account from whatever
//! state it is in to the recommended one, one recorded move per edge:
//! escalations climb `NORMAL -> RESTRICTED_WITHDRAWAL -> UNDER_SURVEILLANCE
//! -> BANNED` as far as needed, a `NORMAL` verdict is one move down. So an
//! account released by an earlier verdict is still banned by a later one
//! that finds more evidence.
//!
//! L2 coalescing. Every screened event asks for an L2 analysis of its
//! target (unless it is `BANNED`). An account has at most one request in
//! flight; a trigger while none is in flight sends a request at once, one
//! while a request is in flight is merged into the account's queued
//! request: the union of the rules fired in the triggers' windows, the
//! largest window profile (each count the maximum), and the newest
//! trigger's id, time and evidence. When the in-flight verdict comes, the
//! queued request is sent. A burst is thus never judged on less evidence
//! than any of its events had alone.
//!
//! Stale releases. A `NORMAL` verdict on the request in flight while a
//! trigger is queued behind it (a request older than that trigger) is
//! refused with reason [`NEWER_EVIDENCE_PENDING`]: the verdict on the newest
//! evidence decides the release. Escalations apply at once.
//!
//! Operators. An operator's verdict (`analyzer = operator:<key>`) walks the
//! same edges, is never stale, and drops the requests in flight and queued:
//! the operator judged everything seen so far. A model's answer to a
//! request no longer in flight is then recorded as refused
//! ([`SUPERSEDED`]), never applied; the next screened event asks anew. With the fallback
//! analyzer's score monotone in the rules and the profile, the final state
//! does not depend on when verdicts arrive (`tests/verdict_timing.rs`).
//!
//! The in-flight id and the queued request live in the account's record on
//! the compacted `accounts` topic, so a restarted copy resumes exactly
//! where its predecessor committed.

use kusanagi_schemas::{
    Account, AccountState, EventTime, L2Request, QueuedRequest, Screening, Transition, Trigger,
    Verdict,
};

/// The refusal of a `NORMAL` verdict while newer evidence waits for its own.
pub const NEWER_EVIDENCE_PENDING: &str = "newer evidence pending";

/// The refusal of a model's verdict on a request no longer in flight (an
/// operator's verdict came in between).
pub const SUPERSEDED: &str = "request superseded";

/// The prefix of the analyzer name of an operator's verdict
/// (`operator:<key name>`), which is never stale.
const OPERATOR: &str = "operator:";

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
        evidence_events: s.evidence_events.clone(),
        coalesced: 1,
    }
}

/// `queued` merged with the later trigger `q`: the union of the rules,
/// the largest profile, and the newer trigger's (by event time; the later
/// arrival on a tie) id, time and evidence.
fn merge(queued: &mut QueuedRequest, q: QueuedRequest) {
    let rules = queued.rules.union(q.rules);
    let window = queued.window.max(q.window);
    let coalesced = queued.coalesced.saturating_add(q.coalesced);
    if q.event_time >= queued.event_time {
        *queued = q;
    }
    queued.rules = rules;
    queued.window = window;
    queued.coalesced = coalesced;
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
        evidence_events: q.evidence_events,
        coalesced: q.coalesced,
    }
}

/// Sends `q` now if nothing is in flight, else merges it into the queued
/// request.
fn trigger_l2(account: &mut Account, q: QueuedRequest, effects: &mut Effects) {
    effects.changed = true;
    if account.l2_in_flight.is_none() {
        account.l2_in_flight = Some(q.request_id.clone());
        effects.request = Some(request_from(account, q));
        return;
    }
    match &mut account.l2_queued {
        Some(queued) => merge(queued, q),
        None => account.l2_queued = Some(q),
    }
}

/// Applies one screening of `account`'s events.
pub fn apply_screening(account: &mut Account, s: &Screening) -> Effects {
    let mut effects = Effects::default();
    if !s.screened {
        return effects;
    }
    if account.state == AccountState::Normal {
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
    if account.state != AccountState::Banned {
        trigger_l2(account, queued_from(s), &mut effects);
    }
    effects
}

/// The moves from `from` to `to`, one per edge: up the escalation ladder
/// as far as `to`, or the one move down (which the machine allows only to
/// `NORMAL`, and never out of `BANNED`).
fn path(from: AccountState, to: AccountState) -> Vec<AccountState> {
    use AccountState::*;
    const LADDER: [AccountState; 4] = [Normal, RestrictedWithdrawal, UnderSurveillance, Banned];
    if from == to {
        vec![]
    } else if from < to && from != Banned {
        LADDER
            .into_iter()
            .filter(|s| *s > from && *s <= to)
            .collect()
    } else {
        vec![to]
    }
}

/// Whether `v` is the operator's (`operator:<key name>`).
fn by_operator(v: &Verdict) -> bool {
    v.analyzer.starts_with(OPERATOR)
}

/// Whether `v` is a release that newer evidence overrides: a `NORMAL`
/// verdict on the request in flight while a trigger is queued behind it.
fn stale_release(account: &Account, v: &Verdict) -> bool {
    v.recommended_action == AccountState::Normal
        && !matches!(account.state, AccountState::Normal | AccountState::Banned)
        && account.l2_queued.is_some()
}

/// Applies an L2 verdict on `account`.
pub fn apply_verdict(account: &mut Account, v: &Verdict) -> Effects {
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
    if by_operator(v) {
        for to in path(account.state, v.recommended_action) {
            if !try_move(account, step(account, to), &mut effects) {
                break;
            }
        }
        // The operator judged everything seen so far: what was waiting for
        // the model is dropped, and the next screened event asks anew.
        if account.l2_in_flight.take().is_some() | account.l2_queued.take().is_some() {
            effects.changed = true;
        }
        return effects;
    }
    if account.l2_in_flight.as_deref() != Some(v.request_id.as_str()) {
        // An answer to a request no longer in flight (an operator decided
        // since): recorded, not applied.
        if account.state != v.recommended_action {
            let mut t = step(account, v.recommended_action);
            t.refusal = Some(if account.state == AccountState::Banned {
                "BANNED is final".to_owned()
            } else {
                SUPERSEDED.to_owned()
            });
            effects.transitions.push(t);
        }
        return effects;
    }
    if stale_release(account, v) {
        let mut t = step(account, v.recommended_action);
        t.refusal = Some(NEWER_EVIDENCE_PENDING.to_owned());
        effects.transitions.push(t);
    } else {
        for to in path(account.state, v.recommended_action) {
            if !try_move(account, step(account, to), &mut effects) {
                break;
            }
        }
    }
    // Answered: the queued request (if any) goes next.
    account.l2_in_flight = None;
    effects.changed = true;
    match account.l2_queued.take() {
        Some(q) if account.state != AccountState::Banned => {
            account.l2_in_flight = Some(q.request_id.clone());
            effects.request = Some(request_from(account, q));
        }
        _ => {}
    }
    effects
}
