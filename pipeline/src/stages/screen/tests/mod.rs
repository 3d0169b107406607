//! The screen stage's unit tests, one file per area: the golden boundary
//! cases, the windows, the evidence a screening carries, batches through
//! the stage, and property tests against a brute-force model. Shared here:
//! events at fixed times, a window spec and a batch fed to the stage.

mod evidence;
mod golden;
mod properties;
mod stage_batches;
mod windows;

use kusanagi_schemas::{EventTime, GameEvent};

use super::{ScreenStage, WindowSpec};
use crate::runtime::{InRecord, OutRecord, Stage};

pub(super) const T0: i64 = 4_070_908_800_000_000; // 2099-01-01T00:00:00Z
pub(super) const SEC: i64 = 1_000_000;

pub(super) fn event(id: &str, target: &str, actor: &str, at_s: i64, amount: i64) -> GameEvent {
    GameEvent {
        event_id: id.into(),
        timestamp: EventTime::from_micros(T0 + at_s * SEC),
        event_type: "TRADE".into(),
        actor_id: actor.into(),
        target_id: target.into(),
        action_details: kusanagi_schemas::ActionDetails {
            currency_amount: amount,
            ..Default::default()
        },
        context_metadata: Default::default(),
        tenant_id: "default".into(),
    }
}

pub(super) fn spec() -> WindowSpec {
    WindowSpec {
        window_us: 300 * SEC,
        allowed_lateness_us: 600 * SEC,
    }
}

pub(super) fn feed(
    stage: &mut ScreenStage,
    log: &[Vec<u8>],
    range: std::ops::Range<usize>,
) -> Vec<OutRecord> {
    let batch: Vec<InRecord<'_>> = range
        .map(|i| InRecord {
            topic: "events",
            partition: 3,
            offset: i as i64,
            key: None,
            payload: Some(&log[i]),
            timestamp_ms: None,
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage.process(&batch, &mut out).unwrap();
    out
}
