//! The ingest stage: `events.raw` (JSON) -> `events` (Avro, zstd) and
//! `events.dlq`, plus the validation the HTTP API shares.

mod config;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{IngestConfig, SPEC};
pub use stage::{CONTENT_TYPE, IngestStage, STAGE, event_record, validate};
