//! The stages, one folder each: ingest -> screen -> decide <-> analyze.

pub mod analyze;
pub mod decide;
pub mod ingest;
pub mod screen;
