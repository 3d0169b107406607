//! The stage runtime: the [`Stage`] trait, the exactly-once
//! [`TransactionalLoop`] that runs any stage, metrics and shutdown.

pub mod dead_letter;
mod metrics;
mod shutdown;
mod stage;
mod transactional;

pub use metrics::Metrics;
pub use shutdown::Shutdown;
pub use stage::{InRecord, OutRecord, Partitions, Stage, StageError};
pub use transactional::{LoopConfig, RuntimeError, TransactionalLoop};
