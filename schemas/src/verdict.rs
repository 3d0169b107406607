//! L2 types: the request for an analysis (`l2.requests`) and the verdict
//! (`l2.verdicts`, Susanoh's ArbitrationResult).

use serde::{Deserialize, Serialize};

use crate::account::AccountState;
use crate::event::EventTime;
use crate::screening::{EvidenceEvent, RuleSet, WindowProfile};

/// A request for the L2 analysis of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Request {
    /// The event_id of the newest triggering event.
    pub request_id: String,
    /// Its time.
    #[serde(with = "crate::codec::micros")]
    pub event_time: EventTime,
    /// The account's tenant.
    pub tenant_id: String,
    /// The account.
    pub target_id: String,
    /// The account's state when the request was made.
    pub account_state: AccountState,
    /// Union of the rules fired in the windows of the triggers it stands
    /// for.
    pub rules: RuleSet,
    /// The largest window profile among those triggers (each count the
    /// maximum).
    pub window: WindowProfile,
    /// Ids of the newest trigger's window events that fired a rule.
    pub evidence_event_ids: Vec<String>,
    /// The newest (up to 10) events of the newest trigger's window, oldest
    /// first (new in v2; empty in requests written by v1).
    #[serde(default)]
    pub evidence_events: Vec<EvidenceEvent>,
    /// Triggering screenings this request stands for.
    pub coalesced: i32,
}

/// The kind of fraud a verdict names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FraudType {
    /// Many senders feeding one account.
    RmtSmurfing,
    /// A direct real-money trade.
    RmtDirect,
    /// Moving value to hide its origin.
    MoneyLaundering,
    /// Nothing wrong.
    Legitimate,
}

impl FraudType {
    /// The name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            FraudType::RmtSmurfing => "RMT_SMURFING",
            FraudType::RmtDirect => "RMT_DIRECT",
            FraudType::MoneyLaundering => "MONEY_LAUNDERING",
            FraudType::Legitimate => "LEGITIMATE",
        }
    }
}

/// The action a risk score calls for: ≤ 30 NORMAL, ≤ 70
/// UNDER_SURVEILLANCE, above BANNED.
pub fn action_for_score(risk_score: i32) -> AccountState {
    match risk_score {
        ..=30 => AccountState::Normal,
        31..=70 => AccountState::UnderSurveillance,
        _ => AccountState::Banned,
    }
}

/// The L2 verdict on one account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The request answered.
    pub request_id: String,
    /// The request's event time.
    #[serde(with = "crate::codec::micros")]
    pub event_time: EventTime,
    /// The account's tenant.
    pub tenant_id: String,
    /// The account.
    pub target_id: String,
    /// Fraud or not.
    pub is_fraud: bool,
    /// 0..=100.
    pub risk_score: i32,
    /// The kind of fraud.
    pub fraud_type: FraudType,
    /// NORMAL, UNDER_SURVEILLANCE or BANNED.
    pub recommended_action: AccountState,
    /// Why.
    pub reasoning: String,
    /// The events that support it.
    pub evidence_event_ids: Vec<String>,
    /// 0..=1.
    pub confidence: f64,
    /// `fallback` or `<provider>:<model>`.
    pub analyzer: String,
    /// Why the fallback analyzer answered, if it did.
    pub fallback_reason: Option<String>,
}
