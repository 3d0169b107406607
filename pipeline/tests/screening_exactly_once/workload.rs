//! The input: 50,000 trades across 2,000 accounts, out of order, with
//! duplicates and scripted RMT accounts.

use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ACCOUNTS: usize = 2_000;
pub(crate) const EVENTS: usize = 50_000;
pub(crate) const RMT: usize = 400;
const T0: i64 = 4_070_908_800_000_000; // 2099-01-01T00:00:00Z
const SEC: i64 = 1_000_000;

fn event(id: String, target: usize, actor: String, at_us: i64, amount: i64) -> GameEvent {
    GameEvent {
        event_id: id,
        timestamp: EventTime::from_micros(at_us),
        event_type: "TRADE".into(),
        actor_id: actor,
        target_id: format!("acct_{target:04}"),
        action_details: ActionDetails {
            currency_amount: amount,
            item_id: None,
            market_avg_price: None,
        },
        context_metadata: ContextMetadata::default(),
        tenant_id: "default".into(),
    }
}

/// The input: ordinary trades spread over ~80 minutes of event time with
/// up to 40 s of jitter (out of order), 0.2% very late, 1% redelivered, and 400 scripted
/// RMT accounts (`acct_0000`..`acct_0399`), each active twice.
pub(crate) fn workload() -> Vec<GameEvent> {
    let mut rng = StdRng::seed_from_u64(20_261_129);
    let mut out: Vec<GameEvent> = Vec::with_capacity(EVENTS);
    let mut n = 0usize;
    while out.len() < EVENTS {
        let i = out.len();
        let clock = T0 + (i as i64) * 100_000;
        if i % 100 == 99 {
            let copy = out[i - rng.random_range(1..50)].clone();
            out.push(copy);
            continue;
        }
        n += 1;
        // Up to 40 s out of order; one event in 500 arrives 25 minutes
        // late (past the allowed lateness: screened over what is retained).
        let jitter = if i % 500 == 250 {
            1_500 * SEC
        } else {
            rng.random_range(0..40 * SEC)
        };
        let target = rng.random_range(RMT..ACCOUNTS);
        let mut e = event(
            format!("ev-{n:06}"),
            target,
            format!("player_{}", rng.random_range(0..5_000)),
            clock - jitter,
            rng.random_range(100..20_000),
        );
        if i.is_multiple_of(62) && i / 62 < 2 * RMT {
            // A scripted RMT account every 62 events, each twice, ~40
            // minutes apart: the second round finds the account restricted
            // with an L2 request in flight (state a restarted stage must
            // have rebuilt, or it would restrict and ask again).
            let rmt = (i / 62) % RMT;
            match rmt % 4 {
                0 => {
                    // Smurfing: 12 senders within two minutes (R2).
                    for s in 0..12 {
                        n += 1;
                        out.push(event(
                            format!("ev-{n:06}"),
                            rmt,
                            format!("mule_{rmt}_{s}"),
                            clock + s * 10 * SEC,
                            5_000,
                        ));
                    }
                }
                1 => e.action_details.currency_amount = 1_500_000, // R1
                2 => {
                    e.action_details.currency_amount = 150_000; // R3
                    e.action_details.market_avg_price = Some(1_000);
                }
                _ => e.context_metadata.recent_chat_log = Some("口座に5万おねがい".into()), // R4
            }
            if !rmt.is_multiple_of(4) {
                e.target_id = format!("acct_{rmt:04}");
            }
        }
        out.push(e);
    }
    out.truncate(EVENTS);
    out
}
