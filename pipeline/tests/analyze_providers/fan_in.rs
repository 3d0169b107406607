//! The fan-in: 12 senders paying one account within 2 minutes, what its
//! cases should tell the model, and its run through the real screen, decide
//! and analyze stages against the fake provider.

use std::sync::Arc;

use kusanagi_pipeline::runtime::{NoHistory, OutRecord};
use kusanagi_pipeline::stages::analyze::ProviderKind;
use kusanagi_pipeline::stages::decide::{DecideStage, DecideTopics};
use kusanagi_pipeline::stages::screen::{ScreenConfig, ScreenStage};
use kusanagi_schemas::{
    AccountState, ActionDetails, ContextMetadata, EventTime, GameEvent, GameEventCodec,
    RecordCodec, Verdict,
};
use serde_json::{Value, json};

use crate::provider::{Provider, Received, serve};
use crate::stages::{PARTITION, SEC, T0, answer, model, model_stage, run};

/// The fan-in's tenant and receiving account (`surveil-`: the fake model
/// answers surveillance, which leaves the account open to a second request).
pub(crate) const TENANT: &str = "kids-game";
pub(crate) const TARGET: &str = "surveil-fanin";
/// RMT slang, which R4 fires on: "please transfer to my bank account".
pub(crate) const SLANG: &str = "口座に振込おねがい";
/// Innocent chat, which no rule fires on.
pub(crate) const INNOCENT: &str = "いつもありがとう、またクエスト行こう";

/// A fan-in: 12 fresh low-level senders pay `TARGET` within 2 minutes (one
/// every 10 s). `fanin-04`'s sender asks for a bank transfer (R4),
/// `fanin-09`'s says thanks, the even ones sell a `gem-pack` with a known
/// market price. R2 (10 events in the window) fires from `fanin-10` on.
pub(crate) fn fan_in() -> Vec<GameEvent> {
    (1..=12i64)
        .map(|i| GameEvent {
            event_id: format!("fanin-{i:02}"),
            timestamp: EventTime::from_micros(T0 + (i - 1) * 10 * SEC),
            event_type: "TRADE".into(),
            actor_id: format!("mule-{i:02}"),
            target_id: TARGET.into(),
            action_details: ActionDetails {
                currency_amount: 5_000 + i * 100,
                item_id: (i % 2 == 0).then(|| "gem-pack".into()),
                market_avg_price: (i % 2 == 0).then_some(1_200),
            },
            context_metadata: ContextMetadata {
                actor_level: 1 + (i % 3) as i32,
                account_age_days: i as i32,
                recent_chat_log: match i {
                    4 => Some(SLANG.into()),
                    9 => Some(INNOCENT.into()),
                    _ => None,
                },
            },
            tenant_id: TENANT.into(),
        })
        .collect()
}

/// What the case should say of `e` among its `recent_events`: every key
/// that has a value, `chat` only `with_chat`.
pub(crate) fn as_recent_event(e: &GameEvent, with_chat: bool) -> Value {
    let mut o = json!({
        "event_id": e.event_id,
        "time": e.timestamp.to_rfc3339(),
        "amount": e.action_details.currency_amount,
        "sender_id": e.actor_id,
        "sender_level": e.context_metadata.actor_level,
        "sender_account_age_days": e.context_metadata.account_age_days,
    });
    if let Some(price) = e.action_details.market_avg_price {
        o["market_avg_price"] = json!(price);
    }
    if let Some(item) = &e.action_details.item_id {
        o["item_id"] = json!(item);
    }
    if with_chat && let Some(chat) = &e.context_metadata.recent_chat_log {
        o["chat"] = json!(chat);
    }
    o
}

fn decide_topics() -> DecideTopics {
    DecideTopics::of(&kusanagi_pipeline::config::TopicsConfig::default())
}

/// The payloads `out` sends to `l2.requests`.
fn l2_requests(out: Vec<OutRecord>) -> Vec<Vec<u8>> {
    out.into_iter()
        .filter(|r| r.topic == "l2.requests")
        .filter_map(|r| r.payload)
        .collect()
}

/// The fan-in through the real stages, in this process: screen (with
/// `config`), decide, and analyze against the fake `kind` provider, whose
/// verdicts go back to decide. The first screened event (`fanin-04`, R4)
/// asks for L2 at once; the triggers while that is in flight (`fanin-10`
/// to `fanin-12`, R2) merge into one request, which its verdict releases.
/// Returns the two request bodies the provider received.
pub(crate) fn fan_in_through_the_stages(kind: ProviderKind, config: ScreenConfig) -> Vec<Received> {
    let provider = Arc::new(Provider::default());
    let addr = serve(provider.clone());
    let codec = GameEventCodec::new();
    let events: Vec<Vec<u8>> = fan_in().iter().map(|e| codec.encode(e)).collect();
    let mut screen = ScreenStage::new(
        config,
        "events",
        "screenings",
        "events.dlq",
        Box::new(NoHistory),
    );
    let screenings = run(&mut screen, "events", &events);
    assert_eq!(screenings.len(), 12, "one screening per event");
    assert!(screenings.iter().all(|r| r.topic == "screenings"));
    let screenings: Vec<Vec<u8>> = screenings.into_iter().filter_map(|r| r.payload).collect();

    let mut decide = DecideStage::new(decide_topics(), Box::new(NoHistory));
    let mut analyze = model_stage(&model(kind, addr, 1_000, 1_000), 0);
    let verdicts = RecordCodec::<Verdict>::new();
    let mut requests = l2_requests(run(&mut decide, "screenings", &screenings));
    for (round, request_id) in ["fanin-04", "fanin-12"].into_iter().enumerate() {
        assert_eq!(
            requests.len(),
            1,
            "{kind:?} round {round}: one request in flight"
        );
        let answered: Vec<Vec<u8>> = answer(&mut analyze, &requests)
            .into_iter()
            .filter_map(|r| r.payload)
            .collect();
        let v = verdicts.decode(&answered[0]).unwrap();
        assert_eq!(
            (v.request_id.as_str(), v.fallback_reason.as_deref()),
            (request_id, None),
            "{kind:?} round {round}: the model answered ({})",
            v.reasoning
        );
        requests = l2_requests(run(&mut decide, "l2.verdicts", &answered));
        assert_eq!(
            decide.account(PARTITION, TENANT, TARGET).unwrap().state,
            AccountState::UnderSurveillance
        );
    }
    assert!(requests.is_empty(), "nothing left to ask");
    let received = provider.received();
    assert_eq!(received.len(), 2, "{kind:?}: one body per request");
    received
}
