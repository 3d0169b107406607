//! Each stage's settings (`[stages.<name>]`): typed, defaulted and
//! validated here, below the stages, which build themselves from them
//! (`crate::stages::registry`).

pub mod analyze;
pub mod archive;
pub mod compact;
pub mod decide;
pub mod ingest;
pub mod screen;
pub mod tier;
pub mod view;
