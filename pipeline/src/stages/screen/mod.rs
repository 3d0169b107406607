//! The screen stage: the L1 rules R1-R4 over per-target 5-minute windows
//! by event time (`events` -> `screenings`), state rebuilt by replay.

mod config;
mod rules;
mod stage;
#[cfg(test)]
mod tests;
mod window;

pub use config::{EvidenceConfig, SPEC, ScreenConfig, TenantEvidence};
pub use rules::{SLANG_PATTERN, Thresholds, evaluate, has_slang};
pub use stage::{CONTENT_TYPE, STAGE, ScreenStage, ScreenStats};
pub use window::{MAX_EVIDENCE_CHAT_BYTES, MAX_EVIDENCE_ITEM_BYTES, PartitionWindows, WindowSpec};
