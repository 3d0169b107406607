//! Property test: no sequence of screenings and verdicts makes an illegal
//! move, refusals are recorded, versions count applied moves, and
//! `BANNED` is final.

use kusanagi_schemas::{AccountState, Rule};
use proptest::prelude::*;

use super::{bob, screening, verdict};
use crate::stages::decide::{NEWER_EVIDENCE_PENDING, SUPERSEDED, apply_screening, apply_verdict};

use AccountState::*;

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
