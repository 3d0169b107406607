//! The compact stage: `erasures` -> the archive's purge, deletion
//! certificates, and `audit`.
//!
//! For each erasure request, in order: [`purge::purge`] marks the subject
//! deleted in the catalog and rewrites every file that holds it; the
//! certificate ([`crate::erasure::certificate`]) is written to the
//! catalog's store as `certificates/<request id>.json`; the audit records
//! of every step go to `audit`, in the same Kafka transaction as the
//! request's offset. A crash anywhere redoes the request: the purge finds
//! what is left (nothing, once it committed), the certificate is made
//! again from the catalog with the same bytes, and the audit records of an
//! aborted transaction are never read.

mod config;
pub mod purge;
mod rewrite;
mod stage;
#[cfg(test)]
mod tests;

pub use config::{CompactStageConfig, SPEC};
pub use stage::{ABORT_AT_ENV, CompactStage, CompactTopics, STAGE, certificate_path};
