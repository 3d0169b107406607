//! The consumer side of a stage loop, as a port: what the loop asks of
//! the records' source. [`super::kafka::KafkaSource`] is the real one (a
//! librdkafka consumer in the stage's group); the loop's unit tests use
//! an in-memory one, so what a rebalance or a failure does to the loop
//! shows in milliseconds.

use std::time::Duration;

use super::{AssignedPartition, InRecord, RuntimeError};

/// One consumed record, owned (the loop holds a batch of them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value (`None`: a tombstone).
    pub payload: Option<Vec<u8>>,
    /// Timestamp in milliseconds, if the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// The `traceparent` header, if any.
    pub trace: Option<Vec<u8>>,
}

impl Consumed {
    /// The record as a stage sees it.
    pub fn as_in_record(&self) -> InRecord<'_> {
        InRecord {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            key: self.key.as_deref(),
            payload: self.payload.as_deref(),
            timestamp_ms: self.timestamp_ms,
            trace: self.trace.as_deref(),
        }
    }
}

/// A change of the partitions a copy owns, seen while polling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions were given to this copy.
    Assigned(Vec<(String, i32)>),
    /// These partitions were taken away.
    Revoked(Vec<(String, i32)>),
    /// The group protocol failed and every partition was dropped at once
    /// (no chance to finish what was read).
    Lost,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// Another copy joined with this copy's static membership id: this one
    /// must stop (not retriable: two copies share an instance id).
    #[error("fenced: another member joined with this copy's instance id")]
    Fenced,
    /// The client can go on no more; it must be created again.
    #[error("fatal consumer error: {0}")]
    Fatal(String),
    /// A passing problem (a broker went away, a fetch failed): logged, the
    /// client recovers by itself.
    #[error("consumer error: {0}")]
    Transient(String),
}

/// A partition's log bounds in the broker: its first offset and its end
/// (the offset the next record gets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The first offset still in the log.
    pub low: i64,
    /// The log's end.
    pub high: i64,
}

/// What the loop asks of its consumer.
pub trait Source {
    /// What a transactional commit needs from the consumer to fence a copy
    /// that lost its partitions (Kafka's consumer group metadata, KIP-447).
    type Group;

    /// Waits up to `timeout` for one record. Rebalances seen meanwhile are
    /// kept for [`Source::rebalances`].
    fn poll(&mut self, timeout: Duration) -> Option<Result<Consumed, PollError>>;

    /// How many rebalances this consumer has seen: a record polled under an
    /// older generation than the current one is dropped (it comes again
    /// from the committed offsets to whoever owns its partition now).
    fn generation(&self) -> u64;

    /// The rebalances seen since the last call, in order.
    fn rebalances(&mut self) -> Vec<RebalanceEvent>;

    /// The group's committed offsets (and metadata) of `partitions`.
    fn committed(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<AssignedPartition>, RuntimeError>;

    /// The partitions this copy owns now.
    fn assignment(&self) -> Result<Vec<(String, i32)>, RuntimeError>;

    /// Reads `topic`/`partition` from `next` on (`None`: its beginning).
    /// False when the consumer cannot seek yet (tried again later).
    fn seek(&mut self, topic: &str, partition: i32, next: Option<i64>) -> bool;

    /// Stops fetching `topic`/`partition` until [`Source::resume`].
    fn pause(&mut self, topic: &str, partition: i32);

    /// Fetches `topic`/`partition` again.
    fn resume(&mut self, topic: &str, partition: i32);

    /// The partition's log bounds in the broker; `None` when it did not
    /// answer.
    fn log_bounds(&mut self, topic: &str, partition: i32) -> Option<LogBounds>;

    /// Where the application stands in each assigned partition: the offset
    /// after the last record handed out, past any transaction markers that
    /// follow it. Partitions with no position yet are left out.
    fn positions(&self) -> Vec<((String, i32), i64)>;

    /// The group metadata for a transactional commit; `None` until the
    /// consumer has joined its group.
    fn group(&self) -> Option<Self::Group>;

    /// Commits `(topic, partition, next offset)` to the group without
    /// waiting (a sink keeps its offsets itself: this only shows lag in
    /// the usual tools).
    fn commit_async(&mut self, offsets: &[(String, i32, i64)]);

    /// Leaves the group.
    fn close(&mut self);
}
