//! The RMT scenarios of `scenarios/rmt.json`, read as they are, and a pure
//! model of the screening core (the screen stage's windows, decide's state
//! machine and the fallback analyzer, no I/O) that runs them with any
//! timing of verdicts.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kusanagi_pipeline::stages::analyze::fallback_verdict;
use kusanagi_pipeline::stages::decide::{apply_screening, apply_verdict};
use kusanagi_pipeline::stages::screen::{PartitionWindows, ScreenConfig, Thresholds};
use kusanagi_schemas::{
    Account, AccountState, ActionDetails, ContextMetadata, EventTime, GameEvent, L2Request, Rule,
    RuleSet,
};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    pub about: String,
    pub scenarios: Vec<Scenario>,
}

/// One scenario: its events and, per receiving account, what must happen.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub kind: String,
    pub about: String,
    pub accounts: BTreeMap<String, Expected>,
    pub events: Vec<ScenarioEvent>,
}

/// What an account's events fire and where it ends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    pub rules: Vec<Rule>,
    pub state: AccountState,
}

/// One trade.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioEvent {
    pub at_s: i64,
    pub from: String,
    pub to: String,
    pub amount: i64,
    #[serde(default)]
    pub item: Option<String>,
    #[serde(default)]
    pub price: Option<i64>,
    #[serde(default = "one")]
    pub level: i32,
    #[serde(default)]
    pub age_days: i32,
    #[serde(default)]
    pub chat: Option<String>,
}

fn one() -> i32 {
    1
}

/// The scenarios, from the data file as it is.
pub fn load() -> Vec<Scenario> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/rmt.json");
    let text = std::fs::read_to_string(&path).expect("tests/scenarios/rmt.json");
    let file: ScenarioFile =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.scenarios
}

impl Scenario {
    /// The scenario's events as GameEvents, ids and accounts prefixed with
    /// `run` (so that two runs on one broker do not meet), times from `t0`.
    pub fn game_events(&self, run: &str, t0: EventTime) -> Vec<GameEvent> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| GameEvent {
                event_id: format!("{run}{}-{:02}", self.name, i + 1),
                timestamp: EventTime::from_micros(t0.as_micros() + e.at_s * 1_000_000),
                event_type: "TRADE".into(),
                actor_id: format!("{run}{}", e.from),
                target_id: format!("{run}{}", e.to),
                action_details: ActionDetails {
                    currency_amount: e.amount,
                    item_id: e.item.clone(),
                    market_avg_price: e.price,
                },
                context_metadata: ContextMetadata {
                    actor_level: e.level,
                    account_age_days: e.age_days,
                    recent_chat_log: e.chat.clone(),
                },
                tenant_id: "default".into(),
            })
            .collect()
    }
}

/// When a request's verdict comes back: after this many more screenings
/// (0: before the next one; `usize::MAX`: after the last).
pub type Delay = usize;

/// The screening core, pure: every event of one partition screened in
/// order, decide's state machine, the fallback analyzer.
pub struct Core {
    windows: PartitionWindows,
    thresholds: Thresholds,
    offset: i64,
    /// Accounts by id.
    pub accounts: HashMap<String, Account>,
    /// Per account, the union of the rules its events fired.
    pub fired: BTreeMap<String, RuleSet>,
    /// Per account, the rules and the 5-or-more-senders flag of each
    /// screened event's window, in order.
    pub windows_seen: BTreeMap<String, Vec<(RuleSet, bool)>>,
    /// Verdicts applied.
    pub verdicts: usize,
    /// Per account, the verdicts that released it (an applied move to
    /// `NORMAL`): withdrawals were allowed from then on.
    pub releases: BTreeMap<String, usize>,
    /// Releases applied on a request older than a trigger of the same
    /// account (one that arrived after the request was sent).
    pub stale_releases: usize,
    /// Per account, the screened events seen.
    triggers: HashMap<String, usize>,
    /// Per request sent, how many triggers its account had seen then.
    sent_after: HashMap<String, usize>,
}

impl Default for Core {
    fn default() -> Self {
        let config = ScreenConfig::default();
        Self {
            windows: PartitionWindows::new(config.window_spec()),
            thresholds: Thresholds::default(),
            offset: 0,
            accounts: HashMap::new(),
            fired: BTreeMap::new(),
            windows_seen: BTreeMap::new(),
            verdicts: 0,
            releases: BTreeMap::new(),
            stale_releases: 0,
            triggers: HashMap::new(),
            sent_after: HashMap::new(),
        }
    }
}

impl Core {
    /// Screens `event` and applies the screening; the L2 request it sent.
    pub fn screen(&mut self, event: &GameEvent) -> Option<L2Request> {
        let s = self.windows.observe(self.offset, event, &self.thresholds)?;
        self.offset += 1;
        if !s.screened {
            return None;
        }
        let fired = self.fired.entry(s.target_id.clone()).or_default();
        *fired = fired.union(s.triggered_rules);
        self.windows_seen
            .entry(s.target_id.clone())
            .or_default()
            .push((s.window_rules, s.window.distinct_senders >= 5));
        *self.triggers.entry(s.target_id.clone()).or_default() += 1;
        let account = self
            .accounts
            .entry(s.target_id.clone())
            .or_insert_with(|| Account::new(&s.target_id, &s.tenant_id, s.event_time));
        let request = apply_screening(account, &s).request;
        self.note_sent(request.as_ref());
        request
    }

    fn note_sent(&mut self, request: Option<&L2Request>) {
        if let Some(r) = request {
            let seen = self.triggers.get(&r.target_id).copied().unwrap_or(0);
            self.sent_after.insert(r.request_id.clone(), seen);
        }
    }

    /// The fallback's verdict on `request`, applied; the request it released.
    pub fn answer(&mut self, request: &L2Request) -> Option<L2Request> {
        self.verdicts += 1;
        let v = fallback_verdict(request, "no_model", "");
        let account = self
            .accounts
            .get_mut(&request.target_id)
            .expect("a request names a known account");
        let effects = apply_verdict(account, &v);
        if effects
            .transitions
            .iter()
            .any(|t| t.applied && t.to_state == AccountState::Normal)
        {
            *self.releases.entry(request.target_id.clone()).or_default() += 1;
            // Stale: a trigger of the account arrived after this request went.
            let now = self.triggers.get(&request.target_id).copied().unwrap_or(0);
            let then = self
                .sent_after
                .get(&request.request_id)
                .copied()
                .unwrap_or(0);
            self.stale_releases += usize::from(now > then);
        }
        self.note_sent(effects.request.as_ref());
        effects.request
    }

    /// The state of every account.
    pub fn states(&self) -> BTreeMap<String, AccountState> {
        self.accounts
            .iter()
            .map(|(id, a)| (id.clone(), a.state))
            .collect()
    }
}

/// Verdicts not yet back: (due after screening #, order sent, request).
type Pending = Vec<(usize, usize, L2Request)>;

/// Runs `events` through a new core; each request's verdict comes back
/// after `delay(n)` more screenings, `n` counting the requests sent.
pub fn run(events: &[GameEvent], mut delay: impl FnMut(usize) -> Delay) -> Core {
    let mut core = Core::default();
    let mut pending: Pending = Vec::new();
    let mut sent = 0usize;
    let mut send = |pending: &mut Pending, at: usize, r: L2Request| {
        pending.push((at.saturating_add(delay(sent)), sent, r));
        sent += 1;
    };
    for (i, e) in events.iter().enumerate() {
        if let Some(r) = core.screen(e) {
            send(&mut pending, i, r);
        }
        deliver(&mut core, &mut pending, i, &mut send);
    }
    deliver(&mut core, &mut pending, usize::MAX, &mut send);
    core
}

/// Applies every verdict due by screening `upto`, oldest due first; a
/// request a verdict releases is sent at once (and may be due too).
fn deliver(
    core: &mut Core,
    pending: &mut Pending,
    upto: usize,
    send: &mut impl FnMut(&mut Pending, usize, L2Request),
) {
    while let Some(i) = (0..pending.len())
        .filter(|i| pending[*i].0 <= upto)
        .min_by_key(|i| (pending[*i].0, pending[*i].1))
    {
        let (_, _, r) = pending.remove(i);
        if let Some(next) = core.answer(&r) {
            send(pending, upto, next);
        }
    }
}

/// Severity, for "at least as severe".
pub fn severity(s: AccountState) -> u8 {
    match s {
        AccountState::Normal => 0,
        AccountState::RestrictedWithdrawal => 1,
        AccountState::UnderSurveillance => 2,
        AccountState::Banned => 3,
    }
}
