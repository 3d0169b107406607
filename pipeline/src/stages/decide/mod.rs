//! The decide stage: the account state machine over L1 screenings and L2
//! verdicts, with L2 requests coalesced per account; state rebuilt from the
//! compacted `accounts` topic.

mod accounts;
mod config;
mod machine;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{DecideConfig, SPEC};
pub use machine::{Effects, NEWER_EVIDENCE_PENDING, SUPERSEDED, apply_screening, apply_verdict};
pub use stage::{DecideStage, DecideStats, DecideTopics, STAGE};
