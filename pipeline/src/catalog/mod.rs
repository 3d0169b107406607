//! The archive catalog: every Parquet file of every tier, what it holds,
//! and how far each Kafka partition is archived, changed only by atomic
//! commits ([`model`] is the pure core, [`log`] keeps it in object storage,
//! [`tiers`] keeps every tier's folders equal to it, [`stats`] sums it up).

pub mod log;
pub mod model;
pub mod parquet;
mod state;
pub mod stats;
pub mod subjects;
pub mod tiers;

pub use log::{Catalog, CatalogError};
pub use model::{
    Action, CatalogState, Commit, Conflict, Erasure, ErasureState, FileEntry, FileKey, OffsetRange,
    Progress, Purge, PurgedFile, Rewind, Tier, Unchanged,
};
pub use tiers::{Reconciled, STAGING, Tiers, staged};
