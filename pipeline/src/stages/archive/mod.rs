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
//! | [`log_check`] | whether the broker's log still holds what the catalog says is archived |
//! | [`stage`] | the loop: read, buffer, write, commit, move into place |

pub mod config;
pub mod file;
pub mod layout;
pub mod log_check;
pub mod open_files;
pub mod stage;
pub mod table;

pub use config::ArchiveStageConfig;
pub use stage::{ArchiveStage, ArchiveTopics, STAGE};
pub use table::Table;
