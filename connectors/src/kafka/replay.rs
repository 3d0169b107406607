//! Reading a range of one partition outside any consumer group: how a
//! stage rebuilds its state from Kafka after a rebalance or a crash.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaSettings;
use crate::ConnectorError;

/// One record read back.
#[derive(Debug, Clone, Copy)]
pub struct ReplayedRecord<'a> {
    /// Its offset.
    pub offset: i64,
    /// Its Kafka timestamp in milliseconds, if it has one.
    pub timestamp_ms: Option<i64>,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value (`None` for a tombstone).
    pub value: Option<&'a [u8]>,
}

/// What a replay calls for each record.
pub type RecordVisitor<'a> = dyn FnMut(&ReplayedRecord<'_>) + 'a;

/// Reads partitions by offset range, `read_committed`, with no group.
pub struct PartitionReader {
    consumer: BaseConsumer,
    /// A `read_uncommitted` client, for the true end of a partition (a
    /// `read_committed` one reports the last stable offset).
    watermarks: BaseConsumer,
    timeout: Duration,
}

impl std::fmt::Debug for PartitionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionReader").finish_non_exhaustive()
    }
}

impl PartitionReader {
    /// A reader for the brokers of `settings`; a read that makes no progress
    /// for `timeout` fails.
    pub fn new(settings: &KafkaSettings, timeout: Duration) -> Result<Self, ConnectorError> {
        let mut config = settings.reader_config("kusanagi-replay");
        config.set("enable.partition.eof", "true");
        let consumer = config
            .create()
            .map_err(|source| ConnectorError::KafkaConfig {
                client: "replay consumer",
                source,
            })?;
        let mut config = settings.reader_config("kusanagi-replay");
        config.set("isolation.level", "read_uncommitted");
        let watermarks = config
            .create()
            .map_err(|source| ConnectorError::KafkaConfig {
                client: "replay watermarks",
                source,
            })?;
        Ok(Self {
            consumer,
            watermarks,
            timeout,
        })
    }

    /// The end of `topic`/`partition` now: the offset after its last
    /// record, committed or not (the high watermark). Reading to it waits
    /// for any transaction still open there to end.
    pub fn end(&self, topic: &str, partition: i32) -> Result<i64, ConnectorError> {
        self.watermarks
            .fetch_watermarks(topic, partition, self.timeout)
            .map(|(_, high)| high)
            .map_err(|source| ConnectorError::Kafka {
                operation: format!("reading the end of {topic}/{partition}"),
                source,
            })
    }

    fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        match positions.find_partition(topic, partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    /// Calls `each` for every committed record of
    /// `topic`/`partition` with `from <= offset < until`, in offset order.
    /// Returns how many records it read. It reads past aborted records and
    /// transaction markers, and waits while a transaction below `until` is
    /// still open (`read_committed` stops at the last stable offset),
    /// failing after the timeout without progress.
    pub fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        until: i64,
        each: &mut RecordVisitor<'_>,
    ) -> Result<u64, ConnectorError> {
        if from >= until {
            return Ok(0);
        }
        let fail =
            |operation: String, source: KafkaError| ConnectorError::Kafka { operation, source };
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(from))
            .map_err(|e| fail(format!("replay of {topic}/{partition}"), e))?;
        self.consumer
            .assign(&tpl)
            .map_err(|e| fail(format!("assign {topic}/{partition} for replay"), e))?;
        let mut read = 0u64;
        let mut progress = Instant::now();
        let result = loop {
            match self.consumer.poll(Duration::from_millis(100)) {
                // The consumer is reused: events of an earlier range may
                // still be queued. Only this partition's count.
                Some(Ok(m)) if m.topic() != topic || m.partition() != partition => {}
                Some(Err(KafkaError::PartitionEOF(p))) if p != partition => {}
                Some(Ok(m)) => {
                    progress = Instant::now();
                    if m.offset() >= until {
                        break Ok(read);
                    }
                    if m.offset() >= from {
                        each(&ReplayedRecord {
                            offset: m.offset(),
                            timestamp_ms: m.timestamp().to_millis(),
                            key: m.key(),
                            value: m.payload(),
                        });
                        read += 1;
                    }
                    if m.offset() + 1 >= until {
                        break Ok(read);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    // The end of what is stable: done if that is `until`
                    // (or the partition ends before it), else a transaction
                    // is still open below `until` and its marker is coming.
                    let position = self.position(topic, partition).unwrap_or(i64::MAX);
                    let end = self.end(topic, partition).unwrap_or(i64::MAX);
                    if position >= until.min(end) {
                        break Ok(read);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(topic, partition, error = %e, "replay read error");
                }
                None => {}
            }
            if progress.elapsed() > self.timeout {
                break Err(ConnectorError::Kafka {
                    operation: format!(
                        "replay of {topic}/{partition} from {from} to {until}: no progress for {:?}",
                        self.timeout
                    ),
                    source: KafkaError::NoMessageReceived,
                });
            }
        };
        let _ = self.consumer.unassign();
        result
    }
}
