//! The one trait every consuming stage implements.

use super::{Metrics, Sink, StageError};

/// One consumed record, as the runtime hands it to a stage.
#[derive(Debug, Clone, Copy)]
pub struct InRecord<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The record's key, if any.
    pub key: Option<&'a [u8]>,
    /// The record's value (`None` for a tombstone).
    pub payload: Option<&'a [u8]>,
    /// The record's timestamp in milliseconds, if the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// Its W3C `traceparent` header, if it is traced ([`super::trace`]).
    pub trace: Option<&'a [u8]>,
}

/// One record a stage wants produced, inside the same transaction as the
/// offsets of the batch that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// The destination partition; `None` lets the producer's partitioner
    /// choose by key. Stages whose output must stay co-partitioned with
    /// their input (the state of one partition number lives in one copy)
    /// name the input's partition.
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value; `None` is a tombstone (on a compacted topic, it erases the key).
    pub payload: Option<Vec<u8>>,
    /// Headers, in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Timestamp in milliseconds; `None` lets the producer stamp it.
    pub timestamp_ms: Option<i64>,
    /// The trace it continues: the runtime writes its `traceparent`.
    pub trace: super::trace::TraceCause,
}

impl OutRecord {
    /// Its headers as the Kafka client sends them.
    pub fn kafka_headers(&self) -> rdkafka::message::OwnedHeaders {
        let mut headers = rdkafka::message::OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(rdkafka::message::Header {
                key: k,
                value: Some(v),
            });
        }
        headers
    }
}

/// The (topic, partition) pairs a stage lost in a rebalance.
pub type Partitions = [(String, i32)];

/// A partition a stage was given (or rewound to), with where its group
/// committed last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedPartition {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The committed offset (the next record to process); `None` when the
    /// group never committed one.
    pub committed: Option<i64>,
    /// The metadata the stage committed with it ([`Stage::commit_metadata`]).
    pub metadata: Option<String>,
}

/// A stage: turns a batch of consumed records into records to produce.
/// The runtime ([`super::StageLoop`]) does the rest: consuming, producing,
/// and committing outputs with the consumed offsets in one transaction,
/// or, for a stage whose output is kept elsewhere, through its
/// [`Sink`].
///
/// `process` must be deterministic given the records (and the state the
/// stage rebuilt in [`Stage::on_assign`]): after an aborted transaction
/// the runtime rewinds to the committed offsets and hands the same records
/// again. Bad input is the stage's to dead-letter, never an error.
pub trait Stage: Send {
    /// Processes a batch, appending what to produce to `out`.
    ///
    /// An `Err` aborts the transaction; the runtime rewinds and retries the
    /// batch after a back-off when [`StageError::is_retriable`], and stops
    /// otherwise. Never return one for bad input: dead-letter it.
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError>;

    /// Called after partitions are assigned, before their first batch, with
    /// their committed offsets: plan the rebuild of their state here. Do the
    /// I/O in [`Stage::process`], where a failure can be retried.
    fn on_assign(&mut self, _partitions: &[AssignedPartition]) {}

    /// Called after partitions are revoked: drop their state here.
    fn on_revoke(&mut self, _partitions: &Partitions) {}

    /// Called after a transaction was aborted and the consumer rewound to the
    /// committed offsets of `assigned`: forget anything learned since.
    fn on_rewind(&mut self, _assigned: &[AssignedPartition]) {}

    /// For a sink stage: called once it has been handed everything its
    /// partitions held when they were placed (under `read_committed`, up
    /// to their last stable offset then), and again each time partitions
    /// placed later have caught up too. A stage that serves what it read
    /// (the view) starts serving here.
    fn on_caught_up(&mut self, _metrics: &Metrics) {}

    /// Called after the transaction of the last batch committed: record
    /// what it did in `metrics` here (counts of aborted batches are
    /// dropped by [`Stage::on_rewind`]).
    fn on_commit(&mut self, _metrics: &Metrics) {}

    /// Metadata to commit with the next offset of `(topic, partition)`, in
    /// the same transaction as the batch just processed (at most a few
    /// hundred bytes; Kafka's `offset.metadata.max.bytes` is 4096 by
    /// default). It comes back in [`AssignedPartition::metadata`].
    fn commit_metadata(&self, _topic: &str, _partition: i32) -> Option<String> {
        None
    }

    /// A stage whose output is kept outside Kafka returns its sink here:
    /// the runtime then reads each partition from the sink's offsets and
    /// commits through it ([`super::sink`]) instead of in a Kafka
    /// transaction. The stage's outputs (dead letters) are sent as they
    /// come and flushed before each sink commit.
    fn sink(&mut self) -> Option<&mut dyn Sink> {
        None
    }
}
