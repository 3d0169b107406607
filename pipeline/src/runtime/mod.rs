//! The stage runtime: the [`Stage`] trait, the exactly-once
//! [`TransactionalLoop`] that runs any stage, metrics and shutdown.

mod archive_metrics;
pub mod dead_letter;
mod erasure_metrics;
pub mod lag;
mod metrics;
pub mod replay;
mod screening_metrics;
mod shutdown;
mod stage;
pub mod trace;
mod transactional;
mod view_metrics;

pub use archive_metrics::ArchiveMetrics;
pub use erasure_metrics::ErasureMetrics;
pub use metrics::Metrics;
pub use replay::{NoHistory, PartitionSource};
pub use screening_metrics::{ScreeningMetrics, ScreeningTally};
pub use shutdown::Shutdown;
pub use stage::{AssignedPartition, InRecord, OutRecord, Partitions, Stage, StageError};
pub use transactional::{LoopConfig, RuntimeError, TransactionalLoop};
pub use view_metrics::ViewMetrics;
