//! Synthetic game traffic: ordinary trades with the RMT patterns the
//! screening stages look for, and a few malformed records for the
//! dead-letter path. Deterministic for a seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// What a generated record represents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// An ordinary trade between players.
    Normal,
    /// One of many small transfers from distinct senders to one mule account.
    SmurfingFanIn,
    /// One very large transfer, or one far above the item's market price.
    BigDirectTrade,
    /// A trade whose chat uses real-money-trading slang.
    SlangChat,
    /// A record that is not a valid event.
    Malformed,
}

impl Pattern {
    /// A short label for the summary.
    pub fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal trades",
            Self::SmurfingFanIn => "smurfing fan-in transfers",
            Self::BigDirectTrade => "big direct trades",
            Self::SlangChat => "RMT slang in chat",
            Self::Malformed => "malformed records",
        }
    }
}

/// One generated record for `events.raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Kafka key (the target, when there is one).
    pub key: String,
    /// The JSON bytes.
    pub json: Vec<u8>,
    /// What it represents.
    pub pattern: Pattern,
}

/// Players trading: enough that ordinary trades do not add up to ten for one
/// receiver within five minutes at the demo's rates (R2 would fire on everyone).
const PLAYERS: usize = 50_000;
const NORMAL_CHAT: [&str; 5] = [
    "gg, thanks for the trade",
    "selling potions, cheap",
    "need a healer for the raid",
    "wts iron sword",
    "see you at the guild hall",
];
const SLANG_CHAT: [&str; 5] = [
    "5kでD確認お願いします",
    "PayPalで送金するので口座教えて",
    "銀行振込で入金確認したら渡す",
    "10万で売ります、振込先は後で",
    "りょ。今から送金",
];

/// Generates the traffic of one demo run.
#[derive(Debug)]
pub struct Traffic {
    rng: SmallRng,
    run_id: String,
    seq: u64,
    /// Senders still to send in the current fan-in burst, its mule, and
    /// whether the burst's last sender talks RMT slang.
    burst: Option<(usize, String, bool)>,
}

impl Traffic {
    /// Traffic for run `run_id` (prefix of every event id), from `seed`.
    pub fn new(run_id: &str, seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            run_id: run_id.to_owned(),
            seq: 0,
            burst: None,
        }
    }

    fn player(&mut self) -> String {
        format!("player_{:05}", self.rng.random_range(0..PLAYERS))
    }

    /// The next record, stamped with event time `now` (RFC 3339).
    pub fn next_record(&mut self, now: &str) -> Generated {
        self.seq += 1;
        let event_id = format!("{}-{:08}", self.run_id, self.seq);
        if let Some((left, mule, slang)) = self.burst.take() {
            if left > 1 {
                self.burst = Some((left - 1, mule.clone(), slang));
            }
            let sender = format!("smurf_{:04}", self.rng.random_range(0..10_000));
            // The last transfer of half the bursts comes with slang: R1,
            // R2 and R4 together, which the analysis bans.
            let chat = (left == 1 && slang)
                .then(|| SLANG_CHAT[self.rng.random_range(0..SLANG_CHAT.len())]);
            return self.fan_in(&event_id, now, &sender, &mule, chat);
        }
        let roll = self.rng.random_range(0..1_000);
        match roll {
            0..=4 => self.malformed(&event_id, now),
            5..=6 => {
                let mule = format!("mule_{:04}", self.rng.random_range(0..1_000));
                let slang = self.rng.random_bool(0.5);
                self.burst = Some((11, mule.clone(), slang));
                let sender = self.player();
                self.fan_in(&event_id, now, &sender, &mule, None)
            }
            7..=21 => {
                let (a, t) = (self.player(), self.player());
                let amount = if roll % 2 == 0 { 1_500_000 } else { 300_000 };
                self.trade(
                    &event_id,
                    now,
                    &a,
                    &t,
                    amount,
                    2_000,
                    None,
                    Pattern::BigDirectTrade,
                )
            }
            22..=36 => {
                let (a, t) = (self.player(), self.player());
                let chat = SLANG_CHAT[self.rng.random_range(0..SLANG_CHAT.len())];
                self.trade(
                    &event_id,
                    now,
                    &a,
                    &t,
                    5_000,
                    4_000,
                    Some(chat),
                    Pattern::SlangChat,
                )
            }
            _ => {
                let (a, t) = (self.player(), self.player());
                let amount = self.rng.random_range(100..20_000);
                let price = self.rng.random_range(1_000..50_000);
                let chat = (self.rng.random_range(0..4) == 0)
                    .then(|| NORMAL_CHAT[self.rng.random_range(0..NORMAL_CHAT.len())]);
                self.trade(&event_id, now, &a, &t, amount, price, chat, Pattern::Normal)
            }
        }
    }

    /// One transfer of a fan-in burst: just under the R1 threshold's tenth,
    /// so a dozen of them in five minutes trip R1 and R2 together.
    fn fan_in(
        &mut self,
        event_id: &str,
        now: &str,
        sender: &str,
        mule: &str,
        chat: Option<&str>,
    ) -> Generated {
        self.trade(
            event_id,
            now,
            sender,
            mule,
            95_000,
            20_000,
            chat,
            Pattern::SmurfingFanIn,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn trade(
        &mut self,
        event_id: &str,
        now: &str,
        actor: &str,
        target: &str,
        amount: i64,
        market_price: i64,
        chat: Option<&str>,
        pattern: Pattern,
    ) -> Generated {
        let doc = json!({
            "event_id": event_id,
            "timestamp": now,
            "event_type": "TRADE",
            "actor_id": actor,
            "target_id": target,
            "action_details": {
                "currency_amount": amount,
                "item_id": format!("itm_{:03}", self.rng.random_range(0..200)),
                "market_avg_price": market_price,
            },
            "context_metadata": {
                "actor_level": self.rng.random_range(1..99),
                "account_age_days": self.rng.random_range(0..2_000),
                "recent_chat_log": chat,
            },
            "tenant_id": "demo",
        });
        Generated {
            key: target.to_owned(),
            json: doc.to_string().into_bytes(),
            pattern,
        }
    }

    fn malformed(&mut self, event_id: &str, now: &str) -> Generated {
        let json = match self.seq % 4 {
            0 => format!("{{\"event_id\": \"{event_id}\", \"timestamp\": \"{now}\", "),
            1 => json!({"event_id": event_id, "timestamp": now, "actor_id": "player_0001"})
                .to_string(),
            2 => json!({"event_id": event_id, "timestamp": now, "actor_id": "a", "target_id": "b",
                        "action_details": {"currency_amount": -500}})
            .to_string(),
            _ => json!({"event_id": event_id, "timestamp": now, "actor_id": "a", "target_id": "b",
                        "context_metadata": {"actor_level": "ninety"}})
            .to_string(),
        };
        Generated {
            key: "malformed".into(),
            json: json.into_bytes(),
            pattern: Pattern::Malformed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kusanagi_schemas::parse_event;

    #[test]
    fn patterns_validate_as_intended() {
        let mut t = Traffic::new("demo-x", 7);
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..5_000 {
            let g = t.next_record("2099-01-01T00:00:00.000Z");
            let valid = parse_event(&g.json).is_ok();
            assert_eq!(valid, g.pattern != Pattern::Malformed, "{g:?}");
            *seen.entry(g.pattern).or_insert(0) += 1;
        }
        for p in [
            Pattern::Normal,
            Pattern::SmurfingFanIn,
            Pattern::BigDirectTrade,
            Pattern::SlangChat,
            Pattern::Malformed,
        ] {
            assert!(
                seen.get(&p).copied().unwrap_or(0) > 0,
                "{p:?} never generated"
            );
        }
    }

    #[test]
    fn a_seed_gives_the_same_traffic() {
        let mut a = Traffic::new("r", 1);
        let mut b = Traffic::new("r", 1);
        for _ in 0..100 {
            assert_eq!(a.next_record("t"), b.next_record("t"));
        }
    }

    #[test]
    fn fan_in_bursts_reach_one_mule_from_many_senders() {
        let mut t = Traffic::new("r", 3);
        let mut by_mule: std::collections::HashMap<String, std::collections::HashSet<String>> =
            Default::default();
        for _ in 0..20_000 {
            let g = t.next_record("2099-01-01T00:00:00Z");
            if g.pattern == Pattern::SmurfingFanIn {
                let e = parse_event(&g.json).unwrap();
                by_mule.entry(e.target_id).or_default().insert(e.actor_id);
            }
        }
        assert!(by_mule.values().any(|senders| senders.len() >= 10));
    }
}
