//! The evidence a screening carries: the newest events of its window, chat
//! left out for a tenant that asks so, and huge fields cut to size.

use kusanagi_schemas::{EventTime, GameEventCodec, RecordCodec, Rule, Screening};

use super::{SEC, T0, event, feed, spec};
use crate::runtime::replay::MemoryLog;
use crate::stages::screen::{
    MAX_EVIDENCE_CHAT_BYTES, MAX_EVIDENCE_ITEM_BYTES, PartitionWindows, ScreenConfig, ScreenStage,
    TenantEvidence, Thresholds,
};

#[test]
fn a_screened_event_carries_the_newest_ten_events_of_its_window() {
    let mut w = PartitionWindows::new(spec());
    let t = Thresholds::default();
    for i in 0..12 {
        let mut e = event(
            &format!("e{i:02}"),
            "bob",
            &format!("mule{i}"),
            i * 10,
            5_000,
        );
        e.context_metadata.actor_level = 2;
        e.context_metadata.account_age_days = i as i32;
        e.action_details.item_id = Some("gem".into());
        e.action_details.market_avg_price = Some(4_000);
        e.context_metadata.recent_chat_log = Some(format!("thanks {i}"));
        let s = w.observe(i, &e, &t).unwrap();
        if i < 9 {
            assert!(!s.screened && s.evidence_events.is_empty(), "{i}");
        }
    }
    // An unrelated target's event is not evidence; the 13th is R2 again.
    w.observe(12, &event("x", "carol", "m", 115, 5), &t);
    let s = w
        .observe(13, &event("e12", "bob", "mule12", 120, 5_000), &t)
        .unwrap();
    assert!(s.screened);
    let ids: Vec<&str> = s
        .evidence_events
        .iter()
        .map(|e| e.event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "e03", "e04", "e05", "e06", "e07", "e08", "e09", "e10", "e11", "e12"
        ],
        "the newest ten, oldest first, the event itself last"
    );
    let e = &s.evidence_events[0];
    assert_eq!(
        (
            e.amount,
            e.market_avg_price,
            e.item_id.as_deref(),
            e.sender_id.as_str(),
            e.sender_level,
            e.sender_account_age_days,
            e.chat.as_deref()
        ),
        (
            5_000,
            Some(4_000),
            Some("gem"),
            "mule3",
            2,
            3,
            Some("thanks 3")
        )
    );
    assert_eq!(e.event_time, EventTime::from_micros(T0 + 30 * SEC));
}

#[test]
fn a_tenant_with_include_chat_off_gets_no_chat_in_its_evidence() {
    let mut config = ScreenConfig::default();
    config.evidence.tenants.insert(
        "kids".into(),
        TenantEvidence {
            include_chat: false,
        },
    );
    let mut stage = ScreenStage::new(
        config,
        "events",
        "screenings",
        "events.dlq",
        Box::new(MemoryLog::default()),
    );
    let codec = GameEventCodec::new();
    let log: Vec<Vec<u8>> = ["default", "kids"]
        .iter()
        .enumerate()
        .map(|(i, tenant)| {
            let mut e = event(&format!("e{i}"), &format!("bob-{tenant}"), "x", 0, 5);
            e.tenant_id = (*tenant).into();
            e.context_metadata.recent_chat_log = Some("振込で".into());
            codec.encode(&e)
        })
        .collect();
    let out = feed(&mut stage, &log, 0..2);
    let screenings: Vec<Screening> = out
        .iter()
        .map(|r| {
            RecordCodec::<Screening>::new()
                .decode(r.payload.as_deref().unwrap())
                .unwrap()
        })
        .collect();
    assert!(
        screenings
            .iter()
            .all(|s| s.triggered_rules.contains(Rule::R4))
    );
    assert_eq!(
        screenings[0].evidence_events[0].chat.as_deref(),
        Some("振込で")
    );
    assert_eq!(screenings[1].evidence_events[0].chat, None);
}

#[test]
fn huge_chat_cannot_make_a_screening_too_large_to_produce() {
    // Ingest accepts events up to 1 MiB: ten of them, each with ~1 MiB of
    // slang-laden chat and a long item id, in one window.
    let mut w = PartitionWindows::new(spec());
    let t = Thresholds::default();
    let chat = format!("口座{}", "あ".repeat(340_000));
    let mut last = None;
    for i in 0..10 {
        let mut e = event(&format!("e{i}"), "bob", &format!("s{i}"), i, 5);
        e.context_metadata.recent_chat_log = Some(chat.clone());
        e.action_details.item_id = Some("i".repeat(100_000));
        last = w.observe(i, &e, &t);
    }
    let s = last.unwrap();
    assert_eq!(s.evidence_events.len(), 10);
    for e in &s.evidence_events {
        let c = e.chat.as_deref().unwrap();
        assert!(c.len() <= MAX_EVIDENCE_CHAT_BYTES + "…".len());
        assert!(c.starts_with("口座") && c.ends_with('…'), "cut and marked");
        assert!(e.item_id.as_deref().unwrap().len() <= MAX_EVIDENCE_ITEM_BYTES + 3);
    }
    let bytes = RecordCodec::<Screening>::new().encode(&s).len();
    assert!(bytes < 64 * 1024, "{bytes} bytes");
}
