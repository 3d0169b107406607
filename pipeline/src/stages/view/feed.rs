//! The view's Kafka reader: every partition of `accounts` and
//! `accounts.transitions`, from the beginning, `read_committed`, outside any
//! consumer group (each copy holds the whole index). It applies records in
//! batches under one write lock, marks the view ready once it reached the
//! offsets that were stable when each partition was assigned, reports its
//! lag per partition (from librdkafka's statistics), and picks up
//! partitions added to the topics.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_schemas::{Account, ErasureRequest, RecordCodec, Transition};
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};

use super::{STAGE, View, ViewConfig};
use crate::runtime::lag::{LagReporter, enable_stats};
use crate::runtime::{Metrics, RuntimeError, Shutdown};

/// Most records applied under one write lock.
const BATCH: usize = 4_096;
/// How long a metadata or watermark request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The topics the view reads.
#[derive(Debug, Clone)]
pub struct ViewTopics {
    /// The latest state of every account (compacted).
    pub accounts: String,
    /// Every move of every account.
    pub transitions: String,
    /// Erasure requests (compacted).
    pub erasures: String,
}

/// One decoded record.
enum Update {
    Account(String, Option<Account>),
    Transition(Transition, i64),
    Erase(String, i64),
}

/// Where one partition's reading stands.
struct PartitionProgress {
    /// The offset that was stable when it was assigned; `None` once reached.
    catch_up_to: Option<i64>,
}

/// The consumer's context: librdkafka's statistics give the lag per
/// partition, as for the other stages.
struct LagStats(LagReporter);

impl ClientContext for LagStats {
    fn stats(&self, statistics: Statistics) {
        self.0.report(&statistics);
    }
}

impl ConsumerContext for LagStats {}

/// Keeps a [`View`] up to date from Kafka.
pub struct ViewFeed {
    consumer: BaseConsumer<LagStats>,
    topics: ViewTopics,
    view: Arc<View>,
    metrics: Metrics,
    config: ViewConfig,
    partitions: HashMap<(String, i32), PartitionProgress>,
    accounts: RecordCodec<Account>,
    transitions: RecordCodec<Transition>,
    erasures: RecordCodec<ErasureRequest>,
    last_behind_log: Instant,
}

impl std::fmt::Debug for ViewFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewFeed")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

fn kafka_error(operation: &'static str, source: KafkaError) -> RuntimeError {
    RuntimeError::Fatal {
        stage: STAGE,
        operation,
        detail: source.to_string(),
    }
}

impl ViewFeed {
    /// A reader for the brokers of `settings`; the index starts empty.
    pub fn new(
        settings: &KafkaSettings,
        topics: ViewTopics,
        view: Arc<View>,
        config: ViewConfig,
        metrics: Metrics,
    ) -> Result<Self, RuntimeError> {
        let mut c = settings.reader_config("kusanagi-view");
        c.set("client.id", format!("{}-view", settings.client_id));
        enable_stats(&mut c);
        let lag = LagStats(LagReporter::new(STAGE, metrics.clone()));
        let consumer = c
            .create_with_context(lag)
            .map_err(|source| RuntimeError::Client {
                stage: STAGE,
                client: "view consumer",
                source,
            })?;
        Ok(Self {
            consumer,
            topics,
            view,
            metrics,
            config,
            partitions: HashMap::new(),
            accounts: RecordCodec::new(),
            transitions: RecordCodec::new(),
            erasures: RecordCodec::new(),
            last_behind_log: Instant::now(),
        })
    }

    /// Rebuilds the index from the beginning of the topics, then follows
    /// them until `shutdown`.
    pub fn run(mut self, shutdown: &Shutdown) -> Result<(), RuntimeError> {
        // A restarted feed rebuilds from scratch: what the old one applied
        // may be ahead of a fresh read, never behind, so start clean. Not
        // ready first, under the write lock: a reader never sees a ready,
        // emptied index (`View::read_ready`).
        {
            let mut index = self.view.write();
            self.view.set_ready(false);
            *index = super::AccountIndex::new();
        }
        self.metrics.view.ready(false);
        let started = Instant::now();
        self.assign_new_partitions()?;
        self.check_caught_up(started);
        let mut last_refresh = Instant::now();
        let mut last_check = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        while !shutdown.is_triggered() {
            while batch.len() < BATCH {
                let wait = if batch.is_empty() {
                    Duration::from_millis(100)
                } else {
                    Duration::ZERO
                };
                match self.consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        if let Some(u) = self.decode(&m) {
                            batch.push(u);
                        }
                    }
                    Some(Err(e)) if is_fatal(&e) => return Err(kafka_error("reading", e)),
                    Some(Err(e)) => tracing::warn!(error = %e, "view read error"),
                }
            }
            self.apply(&mut batch);
            if !self.view.is_ready() && last_check.elapsed() > Duration::from_millis(200) {
                self.check_caught_up(started);
                last_check = Instant::now();
            }
            if last_refresh.elapsed() > Duration::from_secs(self.config.metadata_refresh_seconds) {
                if let Err(e) = self.assign_new_partitions() {
                    tracing::warn!(error = %e, "view: cannot refresh the topics' partitions");
                }
                last_refresh = Instant::now();
            }
        }
        Ok(())
    }

    fn decode(&self, m: &BorrowedMessage<'_>) -> Option<Update> {
        let topic = m.topic();
        let skipped = |why: String| {
            tracing::warn!(
                topic,
                partition = m.partition(),
                offset = m.offset(),
                why,
                "view: skipping a record it cannot read"
            );
            self.metrics.view.records(topic, "skipped", 1);
            None
        };
        if topic == self.topics.accounts {
            let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                return skipped("no UTF-8 key".into());
            };
            match m.payload() {
                None => Some(Update::Account(key.to_owned(), None)),
                Some(bytes) => match self.accounts.decode(bytes) {
                    Ok(a) => Some(Update::Account(key.to_owned(), Some(a))),
                    Err(e) => skipped(e.to_string()),
                },
            }
        } else if topic == self.topics.erasures {
            // A tombstone on `erasures` (compaction of an old request) is
            // not a withdrawal of the erasure: nothing to apply.
            let bytes = m.payload()?;
            match self.erasures.decode(bytes) {
                Ok(r) => Some(Update::Erase(r.subject, r.requested_at.as_micros() / 1_000)),
                Err(e) => skipped(e.to_string()),
            }
        } else {
            let Some(bytes) = m.payload() else {
                return skipped("no value".into());
            };
            match self.transitions.decode(bytes) {
                Ok(t) => {
                    let at = m.timestamp().to_millis().unwrap_or_else(|| {
                        // A record without a timestamp: when its cause happened.
                        t.event_time.as_micros() / 1_000
                    });
                    Some(Update::Transition(t, at))
                }
                Err(e) => skipped(e.to_string()),
            }
        }
    }

    fn apply(&self, batch: &mut Vec<Update>) {
        if batch.is_empty() {
            return;
        }
        let (mut accounts, mut transitions, mut unchanged, mut erased) = (0u64, 0u64, 0u64, 0u64);
        let held = {
            let mut index = self.view.write();
            for u in batch.drain(..) {
                match u {
                    Update::Account(id, a) => {
                        index.apply_account(&id, a);
                        accounts += 1;
                    }
                    Update::Transition(t, at) => {
                        if index.apply_transition(t, at) {
                            transitions += 1;
                        } else {
                            unchanged += 1;
                        }
                    }
                    Update::Erase(subject, at) => {
                        index.erase(&subject, at);
                        erased += 1;
                    }
                }
            }
            index.len()
        };
        let m = &self.metrics.view;
        m.records(&self.topics.accounts, "applied", accounts);
        m.records(&self.topics.transitions, "applied", transitions);
        m.records(&self.topics.transitions, "unchanged", unchanged);
        m.records(&self.topics.erasures, "applied", erased);
        m.accounts(held);
    }

    /// Assigns, from their beginning, the partitions of both topics not
    /// read yet, noting for each the offset that is stable now.
    fn assign_new_partitions(&mut self) -> Result<(), RuntimeError> {
        let mut added = TopicPartitionList::new();
        let mut progress = Vec::new();
        for topic in [
            &self.topics.accounts,
            &self.topics.transitions,
            &self.topics.erasures,
        ] {
            let md = self
                .consumer
                .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
                .map_err(|e| kafka_error("reading the topics' metadata", e))?;
            let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
                continue;
            };
            if let Some(e) = t.error() {
                return Err(RuntimeError::Setup {
                    stage: STAGE,
                    detail: format!("cannot read topic `{topic}`: {e:?}"),
                });
            }
            for p in t.partitions() {
                let key = (topic.clone(), p.id());
                if self.partitions.contains_key(&key) {
                    continue;
                }
                // `read_committed`: the high mark is the last stable offset.
                // A partition whose records all aged out (low = high) has
                // nothing to catch up on.
                let (low, stable) = self
                    .consumer
                    .fetch_watermarks(topic, p.id(), REQUEST_TIMEOUT)
                    .map_err(|e| kafka_error("reading the partitions' ends", e))?;
                added
                    .add_partition_offset(topic, p.id(), Offset::Beginning)
                    .map_err(|e| kafka_error("assigning partitions", e))?;
                progress.push((
                    key,
                    PartitionProgress {
                        catch_up_to: (stable > low).then_some(stable),
                    },
                ));
            }
        }
        if added.count() > 0 {
            tracing::info!(
                partitions = added.count(),
                "view: reading partitions from their beginning"
            );
            self.consumer
                .incremental_assign(&added)
                .map_err(|e| kafka_error("assigning partitions", e))?;
            // Known only once assigned: a failure above is retried whole at
            // the next refresh.
            self.partitions.extend(progress);
        }
        Ok(())
    }

    fn positions(&self) -> HashMap<(String, i32), i64> {
        let Ok(tpl) = self.consumer.position() else {
            return HashMap::new();
        };
        tpl.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                _ => None,
            })
            .collect()
    }

    fn check_caught_up(&mut self, started: Instant) {
        let positions = self.positions();
        for (key, progress) in &mut self.partitions {
            if let (Some(target), Some(&at)) = (progress.catch_up_to, positions.get(key))
                && at >= target
            {
                progress.catch_up_to = None;
            }
        }
        let behind: Vec<String> = self
            .partitions
            .iter()
            .filter_map(|((t, p), progress)| {
                let target = progress.catch_up_to?;
                let at = positions
                    .get(&(t.clone(), *p))
                    .map_or("none".into(), i64::to_string);
                Some(format!("{t}/{p} at {at} of {target}"))
            })
            .collect();
        if !behind.is_empty() {
            if self.last_behind_log.elapsed() > Duration::from_secs(10) {
                tracing::info!(behind = %behind.join(", "), "view: still catching up");
                self.last_behind_log = Instant::now();
            }
            return;
        }
        {
            let accounts = self.view.read().len();
            tracing::info!(
                accounts,
                seconds = started.elapsed().as_secs_f64(),
                "view: caught up; serving"
            );
            self.view.set_ready(true);
            self.metrics.view.ready(true);
        }
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::Fatal)
    )
}
