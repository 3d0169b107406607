//! Screening types: the L1 rules, a target's window profile, and the
//! screening of one event (topic `screenings`). `SCREENING.md` fixes their
//! meaning; `avro/screening.v1.avsc` their wire form.

use serde::{Deserialize, Serialize};

use crate::event::EventTime;
use crate::state::AccountState;

/// An L1 rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Rule {
    /// The window's total received reaches the tenant's threshold.
    R1,
    /// The window's event count reaches the tenant's threshold.
    R2,
    /// One trade far above the item's market price.
    R3,
    /// RMT slang in the actor's recent chat.
    R4,
}

impl Rule {
    /// Every rule, in order.
    pub const ALL: [Rule; 4] = [Rule::R1, Rule::R2, Rule::R3, Rule::R4];

    /// `R1` .. `R4`.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::R1 => "R1",
            Rule::R2 => "R2",
            Rule::R3 => "R3",
            Rule::R4 => "R4",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of rules, iterated in the order R1..R4.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct RuleSet(u8);

impl RuleSet {
    /// No rule.
    pub const EMPTY: RuleSet = RuleSet(0);

    /// Adds `rule`.
    pub fn insert(&mut self, rule: Rule) {
        self.0 |= rule.bit();
    }

    /// Whether `rule` is in the set.
    pub fn contains(self, rule: Rule) -> bool {
        self.0 & rule.bit() != 0
    }

    /// No rule in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Both sets' rules.
    pub fn union(self, other: RuleSet) -> RuleSet {
        RuleSet(self.0 | other.0)
    }

    /// The rules, in order.
    pub fn iter(self) -> impl Iterator<Item = Rule> {
        Rule::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// The rules as a list, in order.
    pub fn to_vec(self) -> Vec<Rule> {
        self.iter().collect()
    }

    /// `R1+R4`, or `-` for none.
    pub fn label(self) -> String {
        if self.is_empty() {
            return "-".into();
        }
        self.iter().map(Rule::as_str).collect::<Vec<_>>().join("+")
    }
}

impl FromIterator<Rule> for RuleSet {
    fn from_iter<I: IntoIterator<Item = Rule>>(iter: I) -> Self {
        let mut s = RuleSet::EMPTY;
        for r in iter {
            s.insert(r);
        }
        s
    }
}

impl Serialize for RuleSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for RuleSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Rule>::deserialize(d)?.into_iter().collect())
    }
}

/// A target's 5-minute window, as the L2 analysis sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowProfile {
    /// Sum of currency_amount received.
    pub total_received: i64,
    /// Number of distinct events.
    pub transaction_count: i32,
    /// Number of distinct senders (actor_id).
    pub distinct_senders: i32,
}

impl WindowProfile {
    /// Each count the larger of the two: the profile a merged L2 request
    /// carries, never less than any of its triggers' windows.
    pub fn max(self, other: WindowProfile) -> WindowProfile {
        WindowProfile {
            total_received: self.total_received.max(other.total_received),
            transaction_count: self.transaction_count.max(other.transaction_count),
            distinct_senders: self.distinct_senders.max(other.distinct_senders),
        }
    }
}

/// The L1 screening of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screening {
    /// The screened event.
    pub event_id: String,
    /// The event's time.
    #[serde(with = "crate::codec::micros")]
    pub event_time: EventTime,
    /// The event's tenant.
    pub tenant_id: String,
    /// The receiver: the account screened.
    pub target_id: String,
    /// The sender.
    pub actor_id: String,
    /// Any rule fired.
    pub screened: bool,
    /// Rules this event fired.
    pub triggered_rules: RuleSet,
    /// `RESTRICTED_WITHDRAWAL` when screened, else `NORMAL`.
    pub recommended_action: AccountState,
    /// R4 fired.
    pub needs_l2: bool,
    /// The window ending at this event.
    pub window: WindowProfile,
    /// Union of the rules fired by the window's events.
    pub window_rules: RuleSet,
    /// Ids of the window's events that fired a rule (newest last, at most
    /// [`Screening::MAX_EVIDENCE`]).
    pub evidence_event_ids: Vec<String>,
    /// The newest events of the window (oldest first, at most
    /// [`Screening::MAX_EVIDENCE_EVENTS`]) when the event was screened,
    /// for the L2 analysis; empty when it was not (new in v2).
    #[serde(default)]
    pub evidence_events: Vec<EvidenceEvent>,
    /// Arrived after the allowed lateness (its window may miss expired events).
    pub late: bool,
}

impl Screening {
    /// Most evidence ids one screening carries.
    pub const MAX_EVIDENCE: usize = 20;
    /// Most evidence events one screening (and so one L2 request) carries.
    pub const MAX_EVIDENCE_EVENTS: usize = 10;
}

/// One event of a target's window as the L2 analysis sees it (SCREENING.md,
/// "L2 request and prompt"): what the rules counted and what they cannot
/// read, such as the sender's chat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EvidenceEvent {
    /// The event.
    pub event_id: String,
    /// Its time.
    #[serde(with = "crate::codec::micros")]
    pub event_time: EventTime,
    /// currency_amount received.
    pub amount: i64,
    /// The item's market average price, if given.
    pub market_avg_price: Option<i64>,
    /// The item traded, if given.
    pub item_id: Option<String>,
    /// The sender (actor_id).
    pub sender_id: String,
    /// The sender's level.
    pub sender_level: i32,
    /// The sender's account age in days.
    pub sender_account_age_days: i32,
    /// The sender's recent chat (personal data); `None` when absent or
    /// left out (the tenant's `include_chat = false`).
    pub chat: Option<String>,
}
