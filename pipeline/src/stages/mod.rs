//! The stages, one folder each: ingest -> screen -> decide <-> analyze,
//! and archive (every table to Parquet) -> tier (hot -> warm -> cold);
//! compact purges erased subjects from the archive; view serves state.
//! [`registry`] lists them and builds each from the topology.

pub mod analyze;
pub mod archive;
pub mod compact;
pub mod decide;
pub mod ingest;
pub mod registry;
pub mod screen;
pub mod tier;
pub mod view;
