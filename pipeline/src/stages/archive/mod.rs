//! The archive stage: `events`, `screenings`, `accounts.transitions` ->
//! Parquet (zstd) in the hot tier, listed in the catalog, exactly once.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[stages.archive]`: rotation and compression |
//! | [`table`] | the tables: columns, decoding, Arrow batches |
//! | [`layout`] | Hive-style partition paths and deterministic file names |
//! | [`open_files`] | rows buffered per table partition, and when to write them |
//! | [`file`] | one Parquet file and its catalog entry |
//! | [`flight`] | a rotation's files on their way in: written, staged, committed, in place |
//! | [`stage`] | the stage on the runtime's loop: decode, buffer, and the catalog as its sink |

pub mod config;
pub mod file;
#[cfg(test)]
pub(crate) mod fixture;
pub mod flight;
pub mod layout;
pub mod open_files;
pub mod stage;
pub mod table;
#[cfg(test)]
mod tests;

pub use config::{ArchiveStageConfig, SPEC};
pub use stage::{ArchiveCopy, ArchiveStage, ArchiveTopics, STAGE};
pub use table::Table;
