//! Account types: the state machine's states, an account's latest state
//! (compacted topic `accounts`) and its transitions (`accounts.transitions`).

use serde::{Deserialize, Serialize};

use crate::event::EventTime;
use crate::screening::{EvidenceEvent, RuleSet, WindowProfile};
pub use crate::state::AccountState;

/// The triggers seen while an L2 request was in flight, merged into one
/// request sent when that verdict comes: the union of their windows' rules,
/// the largest window profile (each count the maximum), and the newest
/// trigger's id, time and evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRequest {
    /// The newest triggering event.
    pub request_id: String,
    /// Its time.
    #[serde(with = "crate::codec::micros")]
    pub event_time: EventTime,
    /// Union of the rules fired in the triggers' windows.
    pub rules: RuleSet,
    /// The largest window profile among the triggers.
    pub window: WindowProfile,
    /// Evidence ids from the newest trigger's window.
    pub evidence_event_ids: Vec<String>,
    /// The newest trigger's evidence events (new in v2; empty in records
    /// written by v1).
    #[serde(default)]
    pub evidence_events: Vec<EvidenceEvent>,
    /// Triggers this request stands for.
    pub coalesced: i32,
}

/// The latest state of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The account (a `target_id`).
    pub account_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Where it stands.
    pub state: AccountState,
    /// Number of applied transitions.
    pub version: i64,
    /// Event time of the last change.
    #[serde(with = "crate::codec::micros")]
    pub updated_at: EventTime,
    /// The L2 request awaiting a verdict.
    pub l2_in_flight: Option<String>,
    /// The trigger to send once that verdict comes.
    pub l2_queued: Option<QueuedRequest>,
}

impl Account {
    /// A new account in `NORMAL`.
    pub fn new(account_id: &str, tenant_id: &str, at: EventTime) -> Self {
        Self {
            account_id: account_id.to_owned(),
            tenant_id: tenant_id.to_owned(),
            state: AccountState::Normal,
            version: 0,
            updated_at: at,
            l2_in_flight: None,
            l2_queued: None,
        }
    }
}

/// What caused a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trigger {
    /// An L1 screening.
    L1Screening,
    /// An L2 verdict.
    L2Verdict,
}

/// One move of an account, applied or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The account.
    pub account_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The account's version after the move (unchanged when refused).
    pub version: i64,
    /// State before.
    pub from_state: AccountState,
    /// State asked for.
    pub to_state: AccountState,
    /// What caused it.
    pub trigger: Trigger,
    /// The rules (`R1+R4`) or the verdict's fraud type.
    pub rule: String,
    /// The cause's event time.
    #[serde(with = "crate::codec::micros")]
    pub event_time: EventTime,
    /// The event_id (L1) or request_id (L2) behind the move.
    pub source_id: String,
    /// A short summary of the evidence.
    pub evidence: String,
    /// Applied (`true`) or refused.
    pub applied: bool,
    /// Why it was refused.
    pub refusal: Option<String>,
}
