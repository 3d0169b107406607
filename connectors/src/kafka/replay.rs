//! Reading a range of one partition outside any consumer group: how a
//! stage rebuilds its state from Kafka after a rebalance or a crash.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::KafkaSettings;
use crate::ConnectorError;

/// What a replay calls for each record: `(offset, key, value)`.
pub type RecordVisitor<'a> = dyn FnMut(i64, Option<&[u8]>, Option<&[u8]>) + 'a;

/// Reads partitions by offset range, `read_committed`, with no group.
pub struct PartitionReader {
    consumer: BaseConsumer,
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
        Ok(Self { consumer, timeout })
    }

    /// Calls `each(offset, key, value)` for every committed record of
    /// `topic`/`partition` with `from <= offset < until`, in offset order.
    /// Returns how many records it read.
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
                        each(m.offset(), m.key(), m.payload());
                        read += 1;
                    }
                    if m.offset() + 1 >= until {
                        break Ok(read);
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) => break Ok(read),
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
