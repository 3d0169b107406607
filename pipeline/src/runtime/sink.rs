//! Stages whose output is kept outside Kafka (the archive: Parquet files
//! listed in a catalog) run on the same loop as the others, with one
//! difference: their commit is the sink's, not a Kafka transaction.
//!
//! Design:
//! - **The sink holds the offsets.** Each sink commit makes what was read
//!   durable *and* moves the sink's offsets past it, in one atomic step
//!   ([`Sink::commit`]). A copy that gets a partition reads from where the
//!   sink says ([`Sink::positions`]), never from the group's offset (which
//!   the loop commits afterwards only so that lag shows in the usual tools).
//! - **The broker must not have gone back.** Before reading a partition
//!   from the sink's offset, the loop checks the broker's log still reaches
//!   it ([`super::log_check::check`]); a log that ends below it is
//!   refused (paused) until an operator decides. A record that comes from
//!   before where the copy read, once the seek held, tells the same.
//! - [`Positions`] is that bookkeeping, pure: each partition is
//!   [`PartitionState::Unplaced`], [`PartitionState::Reading`] or
//!   [`PartitionState::Refused`].

use std::collections::BTreeMap;
use std::time::Instant;

use super::StageError;
use super::log_check::{LogCheck, check};
use super::source::LogBounds;

/// What one partition's read moved, for the sink's commit: the sink held
/// `from` (the next offset it had; `None`: nothing yet) and now holds
/// everything before `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRange {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The sink's next offset when the read began.
    pub from: Option<i64>,
    /// The offset after the last record read.
    pub to: i64,
}

/// Why a sink commit did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkFailure {
    /// Another copy committed these offsets first (this one lost the
    /// partitions in a rebalance): read again from the sink's offsets, at
    /// once.
    #[error("another copy committed first: {0}")]
    Conflict(String),
    /// The sink's store failed: read again from its offsets after a
    /// back-off.
    #[error(transparent)]
    Failed(#[from] StageError),
}

/// The commit side of a sink stage ([`super::Stage::sink`]).
pub trait Sink {
    /// The next offset the sink holds for each of `partitions` (`None`:
    /// nothing yet), read afresh from its store.
    fn positions(&mut self, partitions: &[(String, i32)]) -> Result<Vec<Option<i64>>, StageError>;

    /// Whether what was read must be committed now, and why (a metric
    /// label); `progress`: some partition was read past the sink's offset.
    fn due(&self, now: Instant, progress: bool) -> Option<&'static str>;

    /// Makes everything processed durable, with `ranges` as the sink's new
    /// offsets, in one atomic step. On an error nothing moved: the loop
    /// rewinds the stage ([`super::Stage::on_rewind`]) and reads again.
    fn commit(&mut self, reason: &'static str, ranges: &[ReadRange]) -> Result<(), SinkFailure>;

    /// Every turn of the loop: finish what a commit left to do.
    fn tick(&mut self) {}

    /// A partition was refused (`true`) or given up after being refused
    /// (`false`): for metrics.
    fn refused(&mut self, _topic: &str, _partition: i32, _refused: bool) {}

    /// Whether what the sink commits outlives the process (the archive's
    /// catalog: true), or is held in memory and rebuilt from the beginning
    /// of the topics at every start (the view: false). For a sink that is
    /// not durable, records deleted by retention before it read them are
    /// expected, not a loss, and a broker that went back is met by
    /// rebuilding (the loop stops with [`super::RuntimeError::WentBack`]
    /// and the stage is started again), not by refusing the partition.
    fn is_durable(&self) -> bool {
        true
    }
}

/// Where one partition of a sink stage stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionState {
    /// Assigned, but the sink could not yet say where to read from: paused
    /// until it can.
    Unplaced,
    /// Read from the sink's offset on.
    Reading {
        /// The sink's next offset, as it said when last asked.
        durable: Option<i64>,
        /// The offset after the last record read.
        read: Option<i64>,
        /// The seek to `durable` did not take yet: records are dropped and
        /// the seek tried again.
        seek_pending: bool,
    },
    /// The broker's log ends at `log_end`, below the sink's offset: paused,
    /// not read, until an operator decides.
    Refused {
        /// The log's end when refused.
        log_end: i64,
    },
}

/// What to do with a partition after asking the sink and the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Seek to this offset (`None`: the beginning) and read.
    Read(Option<i64>),
    /// Pause it: the broker went back.
    Refuse {
        /// The sink's offset.
        durable: Option<i64>,
        /// The log's end.
        log_end: i64,
    },
}

/// What to do with one polled record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Hand it to the stage.
    Take,
    /// Drop it (its partition is not read here, or not from there yet).
    Drop,
    /// Drop it and seek again to this offset (the last seek did not take).
    Reseek(Option<i64>),
    /// It comes from before `read_to`, where this copy had read: the broker
    /// went back. Commit what was read, then refuse the partition.
    WentBack {
        /// Where this copy had read to.
        read_to: i64,
    },
}

/// The positions of a sink stage's partitions.
#[derive(Debug, Default)]
pub struct Positions {
    parts: BTreeMap<(String, i32), PartitionState>,
}

impl Positions {
    /// The state of `topic`/`partition`, if assigned.
    pub fn state(&self, topic: &str, partition: i32) -> Option<PartitionState> {
        self.parts.get(&(topic.to_owned(), partition)).copied()
    }

    /// Every assigned partition.
    pub fn partitions(&self) -> Vec<(String, i32)> {
        self.parts.keys().cloned().collect()
    }

    /// The partitions waiting to be placed.
    pub fn unplaced(&self) -> Vec<(String, i32)> {
        self.parts
            .iter()
            .filter(|(_, s)| matches!(s, PartitionState::Unplaced))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Takes `partition` on, not yet placed.
    pub fn assign(&mut self, partition: (String, i32)) {
        self.parts.insert(partition, PartitionState::Unplaced);
    }

    /// Forgets `partition`; true if it was refused (it must be resumed).
    pub fn remove(&mut self, partition: &(String, i32)) -> bool {
        matches!(
            self.parts.remove(partition),
            Some(PartitionState::Refused { .. })
        )
    }

    /// Forgets every partition; returns the refused ones.
    pub fn clear(&mut self) -> Vec<(String, i32)> {
        let refused = self
            .parts
            .iter()
            .filter(|(_, s)| matches!(s, PartitionState::Refused { .. }))
            .map(|(p, _)| p.clone())
            .collect();
        self.parts.clear();
        refused
    }

    /// Places `partition` at the sink's offset `durable`, checked against
    /// the broker's log (`bounds`; `None`: it did not answer, and the first
    /// record tells). A refused partition stays refused.
    ///
    /// `report_aged_out`: whether records retention deleted before the
    /// sink's offset are reported (an error in the log). False for a sink
    /// that is not durable ([`Sink::is_durable`]): it reads each log from
    /// its start at every start, so what retention deleted is expected.
    pub fn place(
        &mut self,
        partition: &(String, i32),
        durable: Option<i64>,
        bounds: Option<LogBounds>,
        report_aged_out: bool,
    ) -> Placement {
        let found = bounds
            .map(|b| check(durable, b.low, b.high))
            .filter(|c| report_aged_out || !matches!(c, LogCheck::AgedOut { .. }));
        let state = match found {
            Some(LogCheck::WentBack { log_end }) => {
                self.parts
                    .insert(partition.clone(), PartitionState::Refused { log_end });
                return Placement::Refuse { durable, log_end };
            }
            Some(LogCheck::AgedOut { first_available }) => {
                tracing::error!(
                    topic = %partition.0,
                    partition = partition.1,
                    from = durable.unwrap_or(0),
                    first_available,
                    "records were deleted by the topic's retention before they reached the sink"
                );
                PartitionState::Reading {
                    durable,
                    read: None,
                    seek_pending: false,
                }
            }
            Some(LogCheck::Fine) | None => PartitionState::Reading {
                durable,
                read: None,
                seek_pending: false,
            },
        };
        self.parts.insert(partition.clone(), state);
        Placement::Read(durable)
    }

    /// The seek of `partition` did not take: records are dropped until a
    /// later one does.
    pub fn seek_failed(&mut self, partition: &(String, i32)) {
        if let Some(PartitionState::Reading { seek_pending, .. }) = self.parts.get_mut(partition) {
            *seek_pending = true;
        }
    }

    /// Refuses `partition`: the broker's log ends at `log_end`.
    pub fn refuse(&mut self, partition: &(String, i32), log_end: i64) {
        self.parts
            .insert(partition.clone(), PartitionState::Refused { log_end });
    }

    /// Decides what to do with a record at `offset` of `partition`; a
    /// taken record moves the partition's read position past it.
    pub fn admit(&mut self, partition: &(String, i32), offset: i64) -> Admit {
        let Some(PartitionState::Reading {
            durable,
            read,
            seek_pending,
        }) = self.parts.get_mut(partition)
        else {
            return Admit::Drop;
        };
        if *seek_pending {
            // Until the seek holds, records may come from further on than
            // the sink's offset: they come again after it.
            *seek_pending = false;
            return Admit::Reseek(*durable);
        }
        if let Some(next) = read.or(*durable)
            && offset < next
        {
            // Once the seek holds (records fetched before it are dropped by
            // the client, or by the loop when polled with the rebalance), a
            // record from before where this copy reads means the consumer
            // was sent back: the log's end went below its position.
            return Admit::WentBack { read_to: next };
        }
        *read = Some(offset + 1);
        Admit::Take
    }

    /// Whether some partition was read past the sink's offset.
    pub fn has_progress(&self) -> bool {
        self.parts.values().any(|s| {
            matches!(s, PartitionState::Reading { durable, read: Some(r), .. } if Some(*r) != *durable)
        })
    }

    /// What was read past the sink's offsets.
    pub fn ranges(&self) -> Vec<ReadRange> {
        self.parts
            .iter()
            .filter_map(|((topic, partition), s)| match s {
                PartitionState::Reading {
                    durable,
                    read: Some(r),
                    ..
                } if Some(*r) != *durable => Some(ReadRange {
                    topic: topic.clone(),
                    partition: *partition,
                    from: *durable,
                    to: *r,
                }),
                _ => None,
            })
            .collect()
    }

    /// After a sink commit: what was read is durable. Returns each read
    /// partition's next offset (for the group's offsets).
    pub fn committed(&mut self) -> Vec<(String, i32, i64)> {
        let mut next = Vec::new();
        for ((topic, partition), s) in self.parts.iter_mut() {
            if let PartitionState::Reading { durable, read, .. } = s {
                if read.is_some() {
                    *durable = *read;
                }
                if let Some(o) = durable {
                    next.push((topic.clone(), *partition, *o));
                }
            }
        }
        next
    }
}

#[cfg(test)]
#[path = "sink_tests.rs"]
mod tests;
