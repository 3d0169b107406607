//! The state machine: which moves a screening or a verdict makes from
//! each state, how triggers coalesce into one L2 request, and which
//! verdicts are refused (stale, superseded, out of `BANNED`).

use kusanagi_schemas::{AccountState, Rule, Screening, Verdict, WindowProfile};

use super::{bob, screening, verdict};
use crate::stages::decide::{
    Effects, NEWER_EVIDENCE_PENDING, SUPERSEDED, apply_screening, apply_verdict,
};

use AccountState::*;

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
