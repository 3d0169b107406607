//! The operator commands as the `kusanagi` binary runs them: the library's
//! reports (`kusanagi_pipeline::ops`, the catalog, erasure) with progress
//! bars and printed output. `anyhow` is for this layer only.

pub mod archive;
pub mod erasures;

pub use archive::*;
