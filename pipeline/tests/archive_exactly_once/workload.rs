//! The input: 200,000 events over 45 days, a little out of order, from a
//! small deterministic generator, and their counts per day.

use std::collections::BTreeMap;

use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent};

pub(crate) const TOTAL: usize = 200_000;
const DAYS: i64 = 45;
pub(crate) const HOUR_US: i64 = 3_600_000_000;

/// A small deterministic generator (no RNG crate needed in the test).
pub(crate) struct Lcg(pub(crate) u64);

impl Lcg {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// The events of the 45 days before `end_us`, in time order give or take
/// half an hour (so a few land in the previous hour's partition).
pub(crate) fn events(end_us: i64) -> Vec<GameEvent> {
    let span = DAYS * 24 * HOUR_US;
    let start = end_us - span;
    let step = span / TOTAL as i64;
    let mut rng = Lcg(20_261_129);
    (0..TOTAL)
        .map(|i| {
            let jitter = (rng.next() as i64 % HOUR_US) - HOUR_US / 2;
            let at = (start + i as i64 * step + jitter).clamp(start, end_us - 1);
            GameEvent {
                event_id: format!("ar-{i:06}"),
                timestamp: EventTime::from_micros(at),
                event_type: "TRADE".into(),
                actor_id: format!("p{}", rng.next() % 5_000),
                target_id: format!("acct_{}", rng.next() % 2_000),
                action_details: ActionDetails {
                    currency_amount: (rng.next() % 100_000) as i64,
                    item_id: (i % 3 == 0).then(|| format!("item_{}", i % 50)),
                    market_avg_price: (i % 2 == 0).then_some(1_000),
                },
                context_metadata: ContextMetadata {
                    actor_level: (i % 60) as i32 + 1,
                    account_age_days: (i % 400) as i32,
                    recent_chat_log: (i % 10 == 0).then(|| "gg, trade ok?".to_owned()),
                },
                tenant_id: if i % 4 == 0 { "game-b" } else { "game-a" }.into(),
            }
        })
        .collect()
}

pub(crate) fn per_day(events: &[GameEvent]) -> BTreeMap<String, u64> {
    let mut days = BTreeMap::new();
    for e in events {
        let day = e.timestamp.to_datetime().expect("time").format("%Y-%m-%d");
        *days.entry(day.to_string()).or_insert(0) += 1;
    }
    days
}
