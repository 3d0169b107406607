//! The stages, one folder each: ingest -> screen -> decide <-> analyze,
//! and archive (every table to Parquet) -> tier (hot -> warm -> cold).

pub mod analyze;
pub mod archive;
pub mod decide;
pub mod ingest;
pub mod screen;
pub mod tier;
pub mod view;
