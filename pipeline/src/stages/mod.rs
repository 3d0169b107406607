//! The stages, one folder each, in data-flow order.

pub mod ingest;
