//! The per-target windows: inclusive bounds, out-of-order and duplicate
//! events, lateness and reclaiming idle targets, the rules a window fired,
//! and per-tenant thresholds.

use kusanagi_schemas::{Rule, WindowProfile};

use super::{event, spec};
use crate::stages::screen::{PartitionWindows, ScreenConfig, Thresholds};

#[test]
fn window_bounds_are_inclusive_at_both_ends() {
    let t = Thresholds {
        r1_total_received: 300,
        ..Thresholds::default()
    };
    let mut w = PartitionWindows::new(spec());
    w.observe(0, &event("a", "bob", "x", 0, 100), &t);
    w.observe(1, &event("b", "bob", "y", 300, 100), &t);
    let s = w.observe(2, &event("c", "bob", "z", 300, 100), &t).unwrap();
    assert_eq!(
        s.window,
        WindowProfile {
            total_received: 300,
            transaction_count: 3,
            distinct_senders: 3
        }
    );
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R1]);
    // 301 s later the first event is out of the window.
    let s = w.observe(3, &event("d", "bob", "x", 301, 0), &t).unwrap();
    assert_eq!(s.window.transaction_count, 3, "b, c, d");
}

#[test]
fn out_of_order_events_fall_in_place_and_duplicates_count_once() {
    let t = Thresholds::default();
    let mut w = PartitionWindows::new(spec());
    w.observe(0, &event("a", "bob", "x", 100, 10), &t);
    // Older than `a`: its window [-200, 0] does not reach `a`.
    let s = w.observe(1, &event("b", "bob", "y", 0, 10), &t).unwrap();
    assert_eq!(s.window.transaction_count, 1);
    assert!(!s.late);
    assert!(
        w.observe(2, &event("a", "bob", "x", 100, 10), &t).is_none(),
        "duplicate"
    );
    let s = w.observe(3, &event("c", "bob", "x", 150, 10), &t).unwrap();
    assert_eq!(
        s.window,
        WindowProfile {
            total_received: 30,
            transaction_count: 3,
            distinct_senders: 2
        }
    );
}

#[test]
fn late_events_are_flagged_and_idle_targets_are_reclaimed() {
    let t = Thresholds::default();
    let mut w = PartitionWindows::new(spec());
    w.observe(0, &event("a", "alice", "x", 0, 1), &t);
    w.observe(1, &event("b", "bob", "x", 1_000, 1), &t);
    assert_eq!(w.targets(), 2);
    // The watermark moves 1200 s (lateness + 2 windows) past `a`: alice goes.
    w.observe(2, &event("c", "bob", "x", 1_201, 1), &t);
    assert_eq!(w.targets(), 1);
    assert_eq!(w.retained_events(), 2);
    assert_eq!(w.replay_from(3), 1);
    let s = w.observe(3, &event("d", "carol", "x", 500, 1), &t).unwrap();
    assert!(s.late, "600 s lateness passed");
    let s = w.observe(4, &event("e", "carol", "x", 700, 1), &t).unwrap();
    assert!(!s.late);
}

#[test]
fn window_rules_and_evidence_gather_the_windows_fired_rules() {
    let t = Thresholds {
        r2_transaction_count: 2,
        ..Thresholds::default()
    };
    let mut w = PartitionWindows::new(spec());
    let mut chat = event("a", "bob", "x", 0, 5);
    chat.context_metadata.recent_chat_log = Some("口座おしえて".into());
    let s = w.observe(0, &chat, &t).unwrap();
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R4]);
    assert!(s.needs_l2);
    let s = w.observe(1, &event("b", "bob", "y", 10, 5), &t).unwrap();
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R2]);
    assert_eq!(s.window_rules.to_vec(), [Rule::R2, Rule::R4]);
    assert_eq!(s.evidence_event_ids, ["a", "b"]);
    assert!(!s.needs_l2, "needs_l2 is this event's R4 only");
}

#[test]
fn per_tenant_thresholds_apply_to_their_tenant_only() {
    let mut config = ScreenConfig::default();
    config.tenants.insert(
        "strict".into(),
        Thresholds {
            r1_total_received: 10,
            ..Thresholds::default()
        },
    );
    let mut w = PartitionWindows::new(config.window_spec());
    let mut e = event("a", "bob", "x", 0, 50);
    let s = w
        .observe(0, &e, config.thresholds_for(&e.tenant_id))
        .unwrap();
    assert!(!s.screened);
    e.event_id = "b".into();
    e.tenant_id = "strict".into();
    let s = w
        .observe(1, &e, config.thresholds_for(&e.tenant_id))
        .unwrap();
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R1]);
}

#[test]
fn two_tenants_targets_with_the_same_id_are_two_targets() {
    let t = Thresholds {
        r1_total_received: 300,
        ..Thresholds::default()
    };
    let in_tenant = |tenant: &str, mut e: kusanagi_schemas::GameEvent| {
        e.tenant_id = tenant.into();
        e
    };
    let mut w = PartitionWindows::new(spec());
    w.observe(0, &in_tenant("game-a", event("a1", "bob", "x", 0, 200)), &t);
    // The same event id and target in another game: not a duplicate, and
    // not in game-a's window.
    let s = w
        .observe(1, &in_tenant("game-b", event("a1", "bob", "y", 1, 200)), &t)
        .expect("another tenant's event is no duplicate");
    assert_eq!(s.window.transaction_count, 1);
    assert_eq!(s.tenant_id, "game-b");
    assert!(s.triggered_rules.is_empty());
    let s = w
        .observe(2, &in_tenant("game-a", event("a2", "bob", "z", 2, 200)), &t)
        .unwrap();
    assert_eq!(s.window.transaction_count, 2, "game-a's own two");
    assert_eq!(s.triggered_rules.to_vec(), [Rule::R1]);
    assert_eq!(w.targets(), 2);
    // Both expire whole once the watermark leaves them behind.
    w.observe(
        3,
        &in_tenant("game-a", event("late", "carol", "x", 2_000, 1)),
        &t,
    );
    assert_eq!(w.targets(), 1, "only carol is left");
}
