//! The stage runtime: the [`Stage`] trait and the one [`StageLoop`] that
//! runs every consuming stage (a Kafka transaction per batch, or a
//! [`Sink`]'s own commit), its ports on Kafka, metrics and shutdown.
//!
//! | module | what |
//! |---|---|
//! | [`Stage`], [`Sink`] | what a stage implements |
//! | [`StageLoop`] | the loop: poll, process, commit, rebalance, rewind |
//! | [`source`], [`output`] | the loop's ports; [`kafka`] implements them |
//! | [`sink`] | a sink stage's positions, checked against the broker's log |
//! | [`RuntimeError`], [`StageError`] | classified errors the loop acts on |
//! | [`Backoff`] | the one back-off |
//! | [`supervise`], [`supervise_loop`] | restarting a stage after an error a restart mends |
//! | [`Metrics`] and the `*_metrics` modules | what every stage reports |

mod archive_metrics;
mod backoff;
pub mod dead_letter;
mod erasure_metrics;
mod error;
pub mod kafka;
pub mod lag;
pub mod log_check;
mod metrics;
pub mod output;
pub mod replay;
mod screening_metrics;
mod shutdown;
pub mod sink;
pub mod source;
mod stage;
mod stage_loop;
mod supervise;
pub mod trace;
mod view_metrics;

pub use archive_metrics::ArchiveMetrics;
pub use backoff::Backoff;
pub use erasure_metrics::ErasureMetrics;
pub use error::{RuntimeError, StageError};
pub use metrics::Metrics;
pub use replay::{NoHistory, PartitionSource, replay_reader};
pub use screening_metrics::{ScreeningMetrics, ScreeningTally};
pub use shutdown::Shutdown;
pub use sink::{ReadRange, Sink, SinkFailure};
pub use stage::{AssignedPartition, InRecord, OutRecord, Partitions, Stage};
pub use stage_loop::{LoopConfig, StageLoop};
pub use supervise::{KafkaLoop, supervise, supervise_loop};
pub use view_metrics::ViewMetrics;
