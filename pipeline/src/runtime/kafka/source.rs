//! [`Source`] on a librdkafka consumer: `read_committed`, no auto-commit,
//! static membership (`group.instance.id`), rebalances recorded inside
//! `poll` and handed to the loop afterwards, and the statistics librdkafka
//! reports there turned into the lag per partition.

use std::sync::Mutex;
use std::time::Duration;

use kusanagi_connectors::kafka::KafkaSettings;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::consumer::{
    consumed, log_bounds, partitions_of, pause, poll_error, positions, resume, seek, whole_ms,
};
use crate::runtime::lag::{LagReporter, enable_stats};
use crate::runtime::source::{Consumed, LogBounds, PollError, RebalanceEvent, Source};
use crate::runtime::{AssignedPartition, Backoff, Metrics, RuntimeError};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Rebalances seen inside `poll`, and the statistics for the lag.
struct Tracker {
    generation: Mutex<u64>,
    pending: Mutex<Vec<RebalanceEvent>>,
    lag: LagReporter,
}

impl ClientContext for Tracker {
    fn stats(&self, statistics: Statistics) {
        self.lag.report(&statistics);
    }
}

impl ConsumerContext for Tracker {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(partitions_of(tpl)),
            // rust-rdkafka unassigns every partition after a rebalance error.
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error: every partition dropped");
                RebalanceEvent::Lost
            }
        };
        *self.generation.lock().expect("generation lock") += 1;
        self.pending.lock().expect("pending lock").push(event);
    }
}

/// A stage copy's consumer.
pub struct KafkaSource {
    stage: &'static str,
    consumer: BaseConsumer<Tracker>,
}

impl KafkaSource {
    /// Creates the consumer of `group`, member `instance` (static
    /// membership), and subscribes to `topics`.
    pub fn subscribe(
        stage: &'static str,
        settings: &KafkaSettings,
        group: &str,
        instance: &str,
        topics: &[String],
        metrics: &Metrics,
    ) -> Result<Self, RuntimeError> {
        let mut config = settings.consumer_config(group, Some(instance));
        enable_stats(&mut config);
        let tracker = Tracker {
            generation: Mutex::new(0),
            pending: Mutex::new(Vec::new()),
            lag: LagReporter::new(stage, metrics.clone()),
        };
        let consumer: BaseConsumer<Tracker> =
            config
                .create_with_context(tracker)
                .map_err(|source| RuntimeError::Client {
                    stage,
                    client: "consumer",
                    source,
                })?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| RuntimeError::Client {
                stage,
                client: "consumer subscription",
                source,
            })?;
        Ok(Self { stage, consumer })
    }

    fn fatal(&self, operation: &'static str, source: KafkaError) -> RuntimeError {
        RuntimeError::Fatal {
            stage: self.stage,
            operation,
            detail: source.to_string(),
        }
    }
}

impl Source for KafkaSource {
    type Group = ConsumerGroupMetadata;

    fn poll(&mut self, timeout: Duration) -> Option<Result<Consumed, PollError>> {
        Some(
            self.consumer
                .poll(whole_ms(timeout))?
                .map(|m| consumed(&m))
                .map_err(poll_error),
        )
    }

    fn generation(&self) -> u64 {
        *self
            .consumer
            .context()
            .generation
            .lock()
            .expect("generation lock")
    }

    fn rebalances(&mut self) -> Vec<RebalanceEvent> {
        std::mem::take(
            &mut *self
                .consumer
                .context()
                .pending
                .lock()
                .expect("pending lock"),
        )
    }

    /// Retried a few times: a stage must not rebuild its state from a guess.
    fn committed(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<AssignedPartition>, RuntimeError> {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(2));
        let mut attempt = 0u32;
        let committed = loop {
            match self.consumer.committed_offsets(tpl.clone(), KAFKA_TIMEOUT) {
                Ok(c) => break c,
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(stage = self.stage, error = %e, attempt, "cannot read committed offsets; retrying");
                    std::thread::sleep(backoff.next_delay());
                }
                Err(source) => return Err(self.fatal("committed_offsets", source)),
            }
        };
        committed
            .elements()
            .iter()
            .map(|e| {
                // A partition whose lookup failed must not look like one the
                // group never committed: the stage would start empty.
                if let Err(source) = e.error() {
                    return Err(self.fatal("committed_offsets", source));
                }
                Ok(AssignedPartition {
                    topic: e.topic().to_owned(),
                    partition: e.partition(),
                    committed: match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    },
                    metadata: committed_metadata(e),
                })
            })
            .collect()
    }

    fn assignment(&self) -> Result<Vec<(String, i32)>, RuntimeError> {
        self.consumer
            .assignment()
            .map(|a| partitions_of(&a))
            .map_err(|source| self.fatal("assignment", source))
    }

    fn seek(&mut self, topic: &str, partition: i32, next: Option<i64>) -> bool {
        seek(&self.consumer, self.stage, topic, partition, next)
    }

    fn pause(&mut self, topic: &str, partition: i32) {
        pause(&self.consumer, self.stage, topic, partition);
    }

    fn resume(&mut self, topic: &str, partition: i32) {
        resume(&self.consumer, self.stage, topic, partition);
    }

    fn log_bounds(&mut self, topic: &str, partition: i32) -> Option<LogBounds> {
        log_bounds(&self.consumer, self.stage, topic, partition)
    }

    fn positions(&self) -> Vec<((String, i32), i64)> {
        positions(&self.consumer)
    }

    fn group(&self) -> Option<ConsumerGroupMetadata> {
        self.consumer.group_metadata()
    }

    fn commit_async(&mut self, offsets: &[(String, i32, i64)]) {
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for (topic, partition, next) in offsets {
            let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next));
        }
        if tpl.count() > 0
            && let Err(e) = self.consumer.commit(&tpl, CommitMode::Async)
        {
            tracing::debug!(stage = self.stage, error = %e, "group offset commit failed");
        }
    }

    fn close(&mut self) {
        self.consumer.unsubscribe();
    }
}

/// The metadata committed with an offset, if any. rust-rdkafka panics on
/// metadata that is not UTF-8 (another client may have written it): such
/// metadata reads as none, and the stage rebuilds as best it can.
fn committed_metadata(
    e: &rdkafka::topic_partition_list::TopicPartitionListElem<'_>,
) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.metadata().to_owned()))
        .ok()
        .filter(|m| !m.is_empty())
}
