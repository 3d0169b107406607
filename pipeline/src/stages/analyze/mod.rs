//! The analyze stage: the L2 analysis of suspicious accounts by an LLM
//! (OpenAI-compatible or Gemini), rate limited and cached, with the
//! deterministic fallback analyzer of SCREENING.md on every failure
//! (`l2.requests` -> `l2.verdicts`).

mod config;
pub mod fair;
mod fallback;
mod prompt;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{AnalyzeConfig, ModelConfig, ProviderKind, SPEC};
pub use fallback::{FALLBACK, fallback_fraud_type, fallback_score, fallback_verdict};
pub use prompt::{Judgment, parse_judgment, prompt_for, verdict_schema};
pub use stage::{AnalyzeStage, AnalyzeStats, Analyzer, ProfileKey, STAGE};
