//! Per-target 5-minute windows over one `events` partition, by event time.
//!
//! A target is an account: a tenant's `target_id` (two tenants' targets
//! with the same id are two targets, [`kusanagi_schemas::AccountKey`]).
//!
//! Design. The window of an event `e` for target `t` is every distinct
//! event (by event_id) for `t` seen so far whose timestamp lies in
//! `[ts(e) - window, ts(e)]`, `e` included (SCREENING.md). Events are kept
//! per target in event-time order, so late and out-of-order events fall
//! into place by their own timestamp.
//!
//! Bounded state. The partition's *watermark* `W` is the newest event time
//! seen in it. An event older than `W - allowed_lateness` is *late*: it is
//! still screened, over what is retained, and flagged. The state retains
//! every event with `ts >= W - allowed_lateness - 2 * window` and nothing
//! older; a target whose last event expires is dropped whole, so an idle
//! target costs nothing.
//!
//! Rebuild by replay. The state after offset `C` is a function of the
//! partition's records from [`PartitionWindows::replay_from`] (the oldest
//! retained offset) up to `C`: replaying them through [`PartitionWindows::observe`]
//! into an empty state rebuilds the same events, watermark and rules for
//! everything a non-late event can see. Why two windows of margin: an
//! event's stored rules depend on its own window, and a later non-late
//! event's window (at least `W - allowed_lateness - window`) reaches back
//! one more window to events whose own rules must be exact. Late events
//! therefore report only their own rules as `window_rules` and evidence,
//! which keeps every screening identical with or without a rebuild.
//!
//! Evidence. A screened event's screening also carries the newest events
//! of its window (at most [`Screening::MAX_EVIDENCE_EVENTS`], oldest
//! first, the event itself last) with what the L2 analysis reads and the
//! rules cannot: prices, items, the senders' levels and ages, their chat.
//! A late event carries only itself, for the reason above. Chat and item
//! ids are cut to [`MAX_EVIDENCE_CHAT_BYTES`] and [`MAX_EVIDENCE_ITEM_BYTES`].
//!
//! Duplicates. An event_id already retained for its target is a duplicate:
//! it is not counted again and gets no second screening. Deduplication
//! reaches as far back as the state does.

use std::collections::{BTreeMap, BTreeSet};

// foldhash: the window code hashes ids on every event; SipHash was a
// sixth of the stage's CPU. Its seeds are random per process.
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;

use kusanagi_schemas::{
    AccountState, EventTime, EvidenceEvent, GameEvent, RuleSet, Screening, WindowProfile,
};

use super::rules::{Thresholds, evaluate};
pub use crate::config::stages::screen::WindowSpec;

impl WindowSpec {
    /// Oldest event time retained under watermark `w`.
    fn retention_bound(&self, w: i64) -> i64 {
        w.saturating_sub(self.allowed_lateness_us)
            .saturating_sub(self.window_us.saturating_mul(2))
    }
}

/// One retained event.
#[derive(Debug, Clone)]
struct Entry {
    event_id: Arc<str>,
    actor_id: Arc<str>,
    amount: i64,
    rules: RuleSet,
    /// What an L2 request shows of the event beyond the above.
    detail: Detail,
}

/// Most bytes of a sender's chat an evidence event carries; longer chat is
/// cut at a character boundary and ends with `…`. With ids capped at 256
/// bytes by the event contract, this bounds a screening's evidence (at most
/// 10 events) to a few tens of kilobytes, far below any record limit: a
/// player cannot make a screening too large to produce.
pub const MAX_EVIDENCE_CHAT_BYTES: usize = 2_000;
/// Most bytes of an item id an evidence event carries (cut the same way).
pub const MAX_EVIDENCE_ITEM_BYTES: usize = 256;

/// `text`, cut to at most `max` bytes (plus the `…` that says so).
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The parts of a retained event only the L2 evidence needs.
#[derive(Debug, Clone)]
struct Detail {
    ts: i64,
    market_avg_price: Option<i64>,
    item_id: Option<Box<str>>,
    sender_level: i32,
    sender_account_age_days: i32,
    chat: Option<Box<str>>,
}

impl Detail {
    fn of(event: &GameEvent) -> Self {
        let (a, c) = (&event.action_details, &event.context_metadata);
        Self {
            ts: event.timestamp.as_micros(),
            market_avg_price: a.market_avg_price,
            item_id: a
                .item_id
                .as_deref()
                .map(|i| clip(i, MAX_EVIDENCE_ITEM_BYTES).into()),
            sender_level: c.actor_level,
            sender_account_age_days: c.account_age_days,
            chat: c
                .recent_chat_log
                .as_deref()
                .map(|t| clip(t, MAX_EVIDENCE_CHAT_BYTES).into()),
        }
    }
}

impl Entry {
    fn evidence(&self) -> EvidenceEvent {
        let d = &self.detail;
        EvidenceEvent {
            event_id: self.event_id.to_string(),
            event_time: EventTime::from_micros(d.ts),
            amount: self.amount,
            market_avg_price: d.market_avg_price,
            item_id: d.item_id.as_deref().map(str::to_owned),
            sender_id: self.actor_id.to_string(),
            sender_level: d.sender_level,
            sender_account_age_days: d.sender_account_age_days,
            chat: d.chat.as_deref().map(str::to_owned),
        }
    }
}

/// The event itself as evidence.
fn own_evidence(event: &GameEvent) -> EvidenceEvent {
    let (a, c) = (&event.action_details, &event.context_metadata);
    EvidenceEvent {
        event_id: event.event_id.clone(),
        event_time: event.timestamp,
        amount: a.currency_amount,
        market_avg_price: a.market_avg_price,
        item_id: a
            .item_id
            .as_deref()
            .map(|i| clip(i, MAX_EVIDENCE_ITEM_BYTES)),
        sender_id: event.actor_id.clone(),
        sender_level: c.actor_level,
        sender_account_age_days: c.account_age_days,
        chat: c
            .recent_chat_log
            .as_deref()
            .map(|t| clip(t, MAX_EVIDENCE_CHAT_BYTES)),
    }
}

/// The window of `event` over its target's retained events from `from`
/// to `ts` (this event included), and those events, oldest first.
fn window_of<'a>(
    target: Option<&'a TargetWindow>,
    event: &'a GameEvent,
    from: i64,
    ts: i64,
) -> (WindowProfile, Vec<&'a Entry>) {
    let mut window = WindowProfile {
        total_received: event.action_details.currency_amount,
        transaction_count: 1,
        distinct_senders: 1,
    };
    let mut senders: HashSet<&str> = HashSet::with_capacity(8);
    senders.insert(event.actor_id.as_str());
    let mut members: Vec<&Entry> = Vec::new();
    if let Some(t) = target {
        for entry in t
            .events
            .range((from, i64::MIN)..=(ts, i64::MAX))
            .map(|(_, e)| e)
        {
            window.total_received = window.total_received.saturating_add(entry.amount);
            window.transaction_count += 1;
            senders.insert(&entry.actor_id);
            members.push(entry);
        }
    }
    window.distinct_senders = i32::try_from(senders.len()).unwrap_or(i32::MAX);
    (window, members)
}

/// What a screening carries of its window for the L2 analysis.
struct Evidence {
    /// The newest events of the window, this one last.
    events: Vec<EvidenceEvent>,
    /// The rules fired anywhere in the window.
    window_rules: RuleSet,
    /// The newest events of the window that fired a rule.
    event_ids: Vec<String>,
}

/// The evidence of `event`, which fired `rules`, over the window events
/// `members`. A late event's evidence is itself alone.
fn evidence(members: &[&Entry], event: &GameEvent, rules: RuleSet, late: bool) -> Evidence {
    // The newest events of the window, this one last (it is newest by
    // offset among equal times), for the L2 analysis of a screened event.
    let events = if rules.is_empty() {
        vec![]
    } else if late {
        vec![own_evidence(event)]
    } else {
        let skip = (members.len() + 1).saturating_sub(Screening::MAX_EVIDENCE_EVENTS);
        let mut newest: Vec<EvidenceEvent> =
            members.iter().skip(skip).map(|e| e.evidence()).collect();
        newest.push(own_evidence(event));
        newest
    };
    if late {
        let own = if rules.is_empty() {
            vec![]
        } else {
            vec![event.event_id.clone()]
        };
        return Evidence {
            events,
            window_rules: rules,
            event_ids: own,
        };
    }
    let window_rules = members.iter().fold(rules, |acc, e| acc.union(e.rules));
    let mut event_ids: Vec<String> = members
        .iter()
        .filter(|e| !e.rules.is_empty())
        .map(|e| e.event_id.to_string())
        .collect();
    if !rules.is_empty() {
        event_ids.push(event.event_id.clone());
    }
    let skip = event_ids.len().saturating_sub(Screening::MAX_EVIDENCE);
    event_ids.drain(..skip);
    Evidence {
        events,
        window_rules,
        event_ids,
    }
}

/// One target's retained events, keyed by (event time, offset).
#[derive(Debug, Default)]
struct TargetWindow {
    events: BTreeMap<(i64, i64), Entry>,
    ids: HashSet<Arc<str>>,
}

/// A target: its tenant and its id.
type TargetKey = (Arc<str>, Arc<str>);

/// The windows of every target of one partition.
#[derive(Debug)]
pub struct PartitionWindows {
    spec: WindowSpec,
    /// Tenant -> target id -> its window.
    targets: HashMap<Arc<str>, HashMap<Arc<str>, TargetWindow>>,
    /// (event time, offset) of every retained event -> its target, for expiry.
    expiry: BTreeMap<(i64, i64), TargetKey>,
    /// Offsets of retained events: the first is where a replay starts.
    offsets: BTreeSet<i64>,
    watermark: Option<i64>,
}

impl PartitionWindows {
    /// Empty windows.
    pub fn new(spec: WindowSpec) -> Self {
        Self {
            spec,
            targets: HashMap::new(),
            expiry: BTreeMap::new(),
            offsets: BTreeSet::new(),
            watermark: None,
        }
    }

    /// Screens `event` (read at `offset`) over its target's window and
    /// keeps it. `None` for a duplicate, which changes nothing.
    pub fn observe(
        &mut self,
        offset: i64,
        event: &GameEvent,
        thresholds: &Thresholds,
    ) -> Option<Screening> {
        let ts = event.timestamp.as_micros();
        let target = self
            .targets
            .get(event.tenant_id.as_str())
            .and_then(|t| t.get(event.target_id.as_str()));
        if target.is_some_and(|t| t.ids.contains(event.event_id.as_str())) {
            return None;
        }
        let late = self
            .watermark
            .is_some_and(|w| ts < w.saturating_sub(self.spec.allowed_lateness_us));

        let from = ts.saturating_sub(self.spec.window_us);
        let (window, members) = window_of(target, event, from, ts);
        let rules = evaluate(thresholds, event, &window);
        let Evidence {
            events: evidence_events,
            window_rules,
            event_ids: evidence_event_ids,
        } = evidence(&members, event, rules, late);

        let screening = Screening {
            event_id: event.event_id.clone(),
            event_time: event.timestamp,
            tenant_id: event.tenant_id.clone(),
            target_id: event.target_id.clone(),
            actor_id: event.actor_id.clone(),
            screened: !rules.is_empty(),
            triggered_rules: rules,
            recommended_action: if rules.is_empty() {
                AccountState::Normal
            } else {
                AccountState::RestrictedWithdrawal
            },
            needs_l2: rules.contains(kusanagi_schemas::Rule::R4),
            window,
            window_rules,
            evidence_event_ids,
            evidence_events,
            late,
        };

        let watermark = self.watermark.map_or(ts, |w| w.max(ts));
        self.watermark = Some(watermark);
        if ts >= self.spec.retention_bound(watermark) {
            self.insert(offset, event, rules);
        }
        self.expire();
        Some(screening)
    }

    fn insert(&mut self, offset: i64, event: &GameEvent, rules: RuleSet) {
        let ts = event.timestamp.as_micros();
        let tenant_key: Arc<str> = match self.targets.get_key_value(event.tenant_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(event.tenant_id.as_str()),
        };
        let targets = self.targets.entry(tenant_key.clone()).or_default();
        let target_key: Arc<str> = match targets.get_key_value(event.target_id.as_str()) {
            Some((k, _)) => k.clone(),
            None => Arc::from(event.target_id.as_str()),
        };
        let event_id: Arc<str> = Arc::from(event.event_id.as_str());
        let target = targets.entry(target_key.clone()).or_default();
        target.ids.insert(event_id.clone());
        target.events.insert(
            (ts, offset),
            Entry {
                event_id,
                actor_id: Arc::from(event.actor_id.as_str()),
                amount: event.action_details.currency_amount,
                rules,
                detail: Detail::of(event),
            },
        );
        self.expiry.insert((ts, offset), (tenant_key, target_key));
        self.offsets.insert(offset);
    }

    /// Drops every event older than the retention bound, and targets left empty.
    fn expire(&mut self) {
        let Some(w) = self.watermark else { return };
        let bound = self.spec.retention_bound(w);
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 >= bound {
                break;
            }
            let (key, (tenant_key, target_key)) = entry.remove_entry();
            self.offsets.remove(&key.1);
            let Some(targets) = self.targets.get_mut(&tenant_key) else {
                continue;
            };
            if let Some(target) = targets.get_mut(&target_key) {
                if let Some(e) = target.events.remove(&key) {
                    target.ids.remove(&e.event_id);
                }
                if target.events.is_empty() {
                    targets.remove(&target_key);
                }
            }
            if targets.is_empty() {
                self.targets.remove(&tenant_key);
            }
        }
    }

    /// The offset a replay must start from to rebuild this state, given
    /// that the next record to read is at `next_offset`.
    pub fn replay_from(&self, next_offset: i64) -> i64 {
        self.offsets.first().copied().unwrap_or(next_offset)
    }

    /// Targets with retained events.
    pub fn targets(&self) -> usize {
        self.targets.values().map(HashMap::len).sum()
    }

    /// Retained events.
    pub fn retained_events(&self) -> usize {
        self.offsets.len()
    }

    /// The newest event time seen.
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark.map(EventTime::from_micros)
    }
}
