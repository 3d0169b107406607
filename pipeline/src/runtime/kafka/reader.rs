//! [`Source`] outside any consumer group: every partition of its topics,
//! assigned by hand from their beginning, `read_committed`. Partitions
//! added to the topics later are found by a metadata refresh and handed
//! to the loop as an assignment, so the loop treats them like partitions a
//! group gave it. Nothing is ever revoked and nothing is committed: the
//! stage that reads this way keeps what it read in memory and rebuilds it
//! from the beginning when it starts (the view).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kusanagi_connectors::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::consumer::{
    consumed, log_bounds, partitions_of, pause, poll_error, positions, resume, seek, whole_ms,
};
use crate::runtime::lag::{LagReporter, enable_stats};
use crate::runtime::source::{Consumed, LogBounds, PollError, RebalanceEvent, Source};
use crate::runtime::{AssignedPartition, Metrics, RuntimeError};

/// How long a metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The consumer's context: librdkafka's statistics give the lag per
/// partition, as for the stages in a group.
struct LagStats(LagReporter);

impl ClientContext for LagStats {
    fn stats(&self, statistics: Statistics) {
        self.0.report(&statistics);
    }
}

impl ConsumerContext for LagStats {}

/// A reader of every partition of some topics.
pub struct KafkaReader {
    stage: &'static str,
    consumer: BaseConsumer<LagStats>,
    topics: Vec<String>,
    /// Every partition assigned so far.
    assigned: BTreeSet<(String, i32)>,
    /// Assigned from the beginning and nothing read of them yet: a seek
    /// to their beginning has nothing to do (librdkafka refuses a seek
    /// before the partition's fetcher started).
    fresh: BTreeSet<(String, i32)>,
    /// Each new partition's bounds, read just before it was assigned, for
    /// the loop's first question: once the consumer fetches, a request for
    /// them waits behind its fetches (up to `fetch.wait.max.ms` each).
    bounds_when_assigned: BTreeMap<(String, i32), LogBounds>,
    pending: Vec<RebalanceEvent>,
    refresh_every: Duration,
    last_refresh: Instant,
}

impl std::fmt::Debug for KafkaReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReader")
            .field("stage", &self.stage)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl KafkaReader {
    /// A reader of `topics` for `stage`, with every partition they have now
    /// assigned from its beginning; it looks for new partitions every
    /// `refresh_every`. Fails when a topic cannot be read.
    pub fn new(
        stage: &'static str,
        settings: &KafkaSettings,
        topics: &[String],
        refresh_every: Duration,
        metrics: &Metrics,
    ) -> Result<Self, RuntimeError> {
        let mut config = settings.reader_config(&format!("kusanagi-{stage}"));
        config.set("client.id", format!("{}-{stage}", settings.client_id));
        enable_stats(&mut config);
        let consumer = config
            .create_with_context(LagStats(LagReporter::new(stage, metrics.clone())))
            .map_err(|source| RuntimeError::Client {
                stage,
                client: "reader",
                source,
            })?;
        let mut reader = Self {
            stage,
            consumer,
            topics: topics.to_vec(),
            assigned: BTreeSet::new(),
            fresh: BTreeSet::new(),
            bounds_when_assigned: BTreeMap::new(),
            pending: Vec::new(),
            refresh_every,
            last_refresh: Instant::now(),
        };
        reader.assign_new_partitions()?;
        tracing::info!(stage, topics = ?reader.topics, "stage started (reading every partition)");
        Ok(reader)
    }

    /// Assigns, from their beginning, the partitions of the topics not
    /// read yet.
    fn assign_new_partitions(&mut self) -> Result<(), RuntimeError> {
        let fatal = |operation, e: rdkafka::error::KafkaError| RuntimeError::Fatal {
            stage: self.stage,
            operation,
            detail: e.to_string(),
        };
        let mut added = TopicPartitionList::new();
        for topic in &self.topics {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), METADATA_TIMEOUT)
                .map_err(|e| fatal("reading the topics' metadata", e))?;
            let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                continue;
            };
            if let Some(e) = t.error() {
                return Err(RuntimeError::Setup {
                    stage: self.stage,
                    detail: format!("cannot read topic `{topic}`: {e:?}"),
                });
            }
            for p in t.partitions() {
                let key = (topic.clone(), p.id());
                if self.assigned.contains(&key) {
                    continue;
                }
                if let Some(b) = log_bounds(&self.consumer, self.stage, topic, p.id()) {
                    self.bounds_when_assigned.insert(key, b);
                }
                added
                    .add_partition_offset(topic, p.id(), Offset::Beginning)
                    .map_err(|e| fatal("assigning partitions", e))?;
            }
        }
        if added.count() > 0 {
            self.consumer
                .incremental_assign(&added)
                .map_err(|e| fatal("assigning partitions", e))?;
            let parts = partitions_of(&added);
            self.assigned.extend(parts.iter().cloned());
            self.fresh.extend(parts.iter().cloned());
            self.pending.push(RebalanceEvent::Assigned(parts));
        }
        Ok(())
    }
}

impl Source for KafkaReader {
    type Group = ConsumerGroupMetadata;

    fn poll(&mut self, timeout: Duration) -> Option<Result<Consumed, PollError>> {
        if self.last_refresh.elapsed() >= self.refresh_every {
            if let Err(e) = self.assign_new_partitions() {
                tracing::warn!(stage = self.stage, error = %e, "cannot look for new partitions of the topics");
            }
            self.last_refresh = Instant::now();
        }
        if !self.pending.is_empty() {
            // The loop places new partitions before it is handed any of
            // their records (as a group's rebalance comes first too), so
            // they are read from their beginning without a seek.
            return None;
        }
        let m = match self.consumer.poll(whole_ms(timeout))? {
            Ok(m) => consumed(&m),
            Err(e) => return Some(Err(poll_error(e))),
        };
        self.fresh.remove(&(m.topic.clone(), m.partition));
        Some(Ok(m))
    }

    /// Partitions are only ever added: a record polled before an addition
    /// is still this reader's to hand on.
    fn generation(&self) -> u64 {
        0
    }

    fn rebalances(&mut self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut self.pending)
    }

    /// No group: nothing is committed.
    fn committed(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<AssignedPartition>, RuntimeError> {
        Ok(partitions
            .iter()
            .map(|(topic, partition)| AssignedPartition {
                topic: topic.clone(),
                partition: *partition,
                committed: None,
                metadata: None,
            })
            .collect())
    }

    fn assignment(&self) -> Result<Vec<(String, i32)>, RuntimeError> {
        Ok(self.assigned.iter().cloned().collect())
    }

    fn seek(&mut self, topic: &str, partition: i32, next: Option<i64>) -> bool {
        let key = (topic.to_owned(), partition);
        if next.is_none() && self.fresh.contains(&key) {
            return true;
        }
        self.fresh.remove(&key);
        seek(&self.consumer, self.stage, topic, partition, next)
    }

    fn pause(&mut self, topic: &str, partition: i32) {
        pause(&self.consumer, self.stage, topic, partition);
    }

    fn resume(&mut self, topic: &str, partition: i32) {
        resume(&self.consumer, self.stage, topic, partition);
    }

    /// A new partition's first answer is its bounds when it was assigned.
    fn log_bounds(&mut self, topic: &str, partition: i32) -> Option<LogBounds> {
        self.bounds_when_assigned
            .remove(&(topic.to_owned(), partition))
            .or_else(|| log_bounds(&self.consumer, self.stage, topic, partition))
    }

    fn positions(&self) -> Vec<((String, i32), i64)> {
        positions(&self.consumer)
    }

    /// No group to join.
    fn group(&self) -> Option<ConsumerGroupMetadata> {
        None
    }

    /// No group to commit to.
    fn commit_async(&mut self, _offsets: &[(String, i32, i64)]) {}

    fn close(&mut self) {}
}
