//! The exactly-once consume-process-produce loop every Kafka-to-Kafka stage
//! runs.
//!
//! Design (Kafka's KIP-98 transactions with KIP-447 group fencing):
//! - one consumer in the stage's group (`read_committed`, no auto-commit)
//!   and one transactional producer whose `transactional.id` is
//!   `<group>-<instance id>`, stable across restarts: a restarted copy's
//!   `init_transactions` aborts whatever its dead predecessor left open, and
//!   the same id as `group.instance.id` (static membership, KIP-345) gives
//!   it its predecessor's partitions at once, without a rebalance;
//! - per batch: begin a transaction, produce the stage's outputs, add the
//!   batch's next offsets with `send_offsets_to_transaction` (carrying the
//!   group metadata, so a copy that lost its partitions in a rebalance is
//!   fenced by the coordinator), commit. Outputs and offsets become visible
//!   together or not at all;
//! - records polled before a rebalance are dropped, not processed: after an
//!   eager rebalance the consumer resumes from the committed offsets, so they
//!   come again to whichever copy owns them now;
//! - a failed transaction is aborted, the consumer rewinds to the committed
//!   offsets and the stage is told ([`Stage::on_rewind`]); the batch is
//!   retried after a back-off. A fenced producer stops the loop: another
//!   copy with the same instance id took over.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use kusanagi_connectors::kafka::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::lag::{LagReporter, enable_stats};
use super::trace;
use super::{AssignedPartition, InRecord, Metrics, OutRecord, Shutdown, Stage};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a stage's loop runs.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// The stage's name (metrics label, logs).
    pub stage: &'static str,
    /// Topics consumed.
    pub input_topics: Vec<String>,
    /// The consumer group; copies of a stage share it.
    pub group_id: String,
    /// Stable per copy: `<group>-<instance id>`. Also the consumer's
    /// static group membership id (`group.instance.id`).
    pub transactional_id: String,
    /// Most records in one transaction.
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived.
    pub batch_max_wait: Duration,
}

/// Why a stage's loop stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A client could not be created (configuration: the user's to fix).
    #[error("{stage}: cannot create the Kafka {client}: {source}")]
    Client {
        /// The stage.
        stage: &'static str,
        /// Which client.
        client: &'static str,
        /// The client library's error.
        source: KafkaError,
    },
    /// A stage's own resources could not be set up (the user's to fix).
    #[error("{stage}: {detail}")]
    Setup {
        /// The stage.
        stage: &'static str,
        /// What failed.
        detail: String,
    },
    /// Another process started with the same transactional id and fenced
    /// this one. Not retriable: two copies share an instance id.
    #[error(
        "{stage}: fenced: another copy with transactional id `{transactional_id}` took over \
         (give every copy its own KUSANAGI_INSTANCE_ID)"
    )]
    Fenced {
        /// The stage.
        stage: &'static str,
        /// The shared transactional id.
        transactional_id: String,
    },
    /// Object storage failed (the catalog or a tier): an external system; a
    /// restart of the stage retries.
    #[error("{stage}: {detail}")]
    Storage {
        /// The stage.
        stage: &'static str,
        /// What failed.
        detail: String,
    },
    /// The producer hit a fatal error and cannot go on.
    #[error("{stage}: fatal Kafka error during {operation}: {source}")]
    Fatal {
        /// The stage.
        stage: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// The client library's error.
        source: KafkaError,
    },
}

/// Rebalance events seen inside `poll`, handed to the stage afterwards;
/// and the statistics librdkafka reports there, for the lag per partition.
struct RebalanceTracker {
    generation: Mutex<u64>,
    pending: Mutex<Vec<RebalanceEvent>>,
    lag: LagReporter,
}

enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl ClientContext for RebalanceTracker {
    fn stats(&self, statistics: Statistics) {
        self.lag.report(&statistics);
    }
}

impl ConsumerContext for RebalanceTracker {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(partitions_of(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(partitions_of(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error");
                return;
            }
        };
        *self.generation.lock().expect("generation lock") += 1;
        self.pending.lock().expect("pending lock").push(event);
    }
}

impl RebalanceTracker {
    fn generation(&self) -> u64 {
        *self.generation.lock().expect("generation lock")
    }

    fn take(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.pending.lock().expect("pending lock"))
    }
}

/// The loop of one stage copy. Blocking: run it on its own thread.
pub struct TransactionalLoop<S: Stage> {
    stage: S,
    config: LoopConfig,
    metrics: Metrics,
    consumer: BaseConsumer<RebalanceTracker>,
    producer: BaseProducer,
}

enum TxnFailure {
    /// Abort, rewind and retry.
    Abortable(String),
    /// Stop the loop.
    Stop(RuntimeError),
}

impl<S: Stage> TransactionalLoop<S> {
    /// Creates the clients, fences any predecessor with the same
    /// transactional id, and subscribes.
    pub fn new(
        stage: S,
        settings: &KafkaSettings,
        config: LoopConfig,
        metrics: Metrics,
    ) -> Result<Self, RuntimeError> {
        let name = config.stage;
        let mut consumer_config =
            settings.consumer_config(&config.group_id, Some(&config.transactional_id));
        enable_stats(&mut consumer_config);
        let tracker = RebalanceTracker {
            generation: Mutex::new(0),
            pending: Mutex::new(Vec::new()),
            lag: LagReporter::new(name, metrics.clone()),
        };
        let consumer: BaseConsumer<RebalanceTracker> = consumer_config
            .create_with_context(tracker)
            .map_err(|source| RuntimeError::Client {
                stage: name,
                client: "consumer",
                source,
            })?;
        let producer: BaseProducer = settings
            .transactional_producer_config(&config.transactional_id)
            .create()
            .map_err(|source| RuntimeError::Client {
                stage: name,
                client: "producer",
                source,
            })?;
        init_transactions(&producer, &config)?;
        let topics: Vec<&str> = config.input_topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| RuntimeError::Client {
                stage: name,
                client: "consumer subscription",
                source,
            })?;
        tracing::info!(
            stage = name,
            group = %config.group_id,
            transactional_id = %config.transactional_id,
            topics = ?config.input_topics,
            "stage started"
        );
        Ok(Self {
            stage,
            config,
            metrics,
            consumer,
            producer,
        })
    }

    /// Runs until `shutdown` is triggered or an unrecoverable error.
    pub fn run(mut self, shutdown: &Shutdown) -> Result<(), RuntimeError> {
        let mut out = Vec::new();
        let mut failures = 0u32;
        while !shutdown.is_triggered() {
            let batch = self.poll_batch(shutdown)?;
            if batch.is_empty() {
                continue;
            }
            match self.commit_batch(&batch, &mut out) {
                Ok(()) => failures = 0,
                Err(TxnFailure::Stop(e)) => return Err(e),
                Err(TxnFailure::Abortable(why)) => {
                    failures += 1;
                    self.metrics.transaction_aborted(self.config.stage);
                    tracing::warn!(stage = self.config.stage, %why, failures, "transaction aborted; rewinding");
                    self.abort_and_rewind()?;
                    let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(7)));
                    shutdown.sleep(backoff.min(MAX_BACKOFF));
                }
            }
        }
        tracing::info!(stage = self.config.stage, "stage stopping");
        self.consumer.unsubscribe();
        Ok(())
    }

    /// Polls until the batch is full, its wait is over, or shutdown. Records
    /// polled before a rebalance are dropped (see the module notes).
    fn poll_batch(&mut self, shutdown: &Shutdown) -> Result<Vec<OwnedMessage>, RuntimeError> {
        let mut batch: Vec<(u64, OwnedMessage)> = Vec::new();
        let mut deadline: Option<Instant> = None;
        while !shutdown.is_triggered() {
            let timeout = match deadline {
                None => Duration::from_millis(100),
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            let polled = self.consumer.poll(timeout).map(|r| r.map(|m| m.detach()));
            let generation = self.consumer.context().generation();
            self.deliver_rebalances()?;
            match polled {
                Some(Ok(m)) => {
                    batch.push((generation, m));
                    deadline.get_or_insert_with(|| Instant::now() + self.config.batch_max_wait);
                    if batch.len() >= self.config.batch_max_records {
                        break;
                    }
                }
                Some(Err(e)) => {
                    if e.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId) {
                        return Err(RuntimeError::Fenced {
                            stage: self.config.stage,
                            transactional_id: self.config.transactional_id.clone(),
                        });
                    }
                    tracing::warn!(stage = self.config.stage, error = %e, "consumer error");
                }
                None => {}
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let current = self.consumer.context().generation();
        Ok(batch
            .into_iter()
            .filter(|(g, _)| *g == current)
            .map(|(_, m)| m)
            .collect())
    }

    fn deliver_rebalances(&mut self) -> Result<(), RuntimeError> {
        let events = self.consumer.context().take();
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            match event {
                RebalanceEvent::Assigned(p) => {
                    tracing::info!(stage = self.config.stage, partitions = ?p, "partitions assigned");
                    let assigned = self.committed(&p)?;
                    self.stage.on_assign(&assigned);
                }
                RebalanceEvent::Revoked(p) => {
                    tracing::info!(stage = self.config.stage, partitions = ?p, "partitions revoked");
                    self.stage.on_revoke(&p);
                }
            }
        }
        let owned = self.consumer.assignment().map(|a| a.count()).unwrap_or(0);
        self.metrics.assigned_partitions(self.config.stage, owned);
        Ok(())
    }

    /// The group's committed offsets and metadata for `partitions`, retried
    /// a few times: a stage must not rebuild its state from a guess.
    fn committed(
        &self,
        partitions: &[(String, i32)],
    ) -> Result<Vec<AssignedPartition>, RuntimeError> {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            tpl.add_partition(topic, *partition);
        }
        let mut attempt = 0u32;
        let committed = loop {
            match self.consumer.committed_offsets(tpl.clone(), KAFKA_TIMEOUT) {
                Ok(c) => break c,
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(stage = self.config.stage, error = %e, attempt, "cannot read committed offsets; retrying");
                    std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                }
                Err(source) => {
                    return Err(RuntimeError::Fatal {
                        stage: self.config.stage,
                        operation: "committed_offsets",
                        source,
                    });
                }
            }
        };
        committed
            .elements()
            .iter()
            .map(|e| {
                // A partition whose lookup failed must not look like one the
                // group never committed: the stage would start empty.
                if let Err(source) = e.error() {
                    return Err(RuntimeError::Fatal {
                        stage: self.config.stage,
                        operation: "committed_offsets",
                        source,
                    });
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

    fn commit_batch(
        &mut self,
        batch: &[OwnedMessage],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), TxnFailure> {
        let started = Instant::now();
        let records: Vec<InRecord<'_>> = batch
            .iter()
            .map(|m| InRecord {
                topic: m.topic(),
                partition: m.partition(),
                offset: m.offset(),
                key: m.key(),
                payload: m.payload(),
                timestamp_ms: m.timestamp().to_millis(),
                trace: traceparent(m),
            })
            .collect();
        out.clear();
        let wall_start = SystemTime::now();
        self.stage
            .process(&records, out)
            .map_err(|e| TxnFailure::Abortable(e.to_string()))?;
        let spans = trace::link_batch(self.config.stage, out, wall_start);
        let result = self.transact(batch, &records, out, started);
        match &result {
            Ok(()) => spans.end(true, None),
            Err(TxnFailure::Abortable(why)) => spans.end(false, Some(why)),
            Err(TxnFailure::Stop(e)) => spans.end(false, Some(&e.to_string())),
        }
        result
    }

    /// Produces `out` and commits it with the offsets of `batch`.
    fn transact(
        &mut self,
        batch: &[OwnedMessage],
        records: &[InRecord<'_>],
        out: &[OutRecord],
        started: Instant,
    ) -> Result<(), TxnFailure> {
        let txn = |op: &'static str, r: Result<(), KafkaError>| r.map_err(|e| self.classify(op, e));
        txn("begin_transaction", self.producer.begin_transaction())?;
        for record in out.iter() {
            self.send(record)?;
        }
        let offsets = next_offsets(batch);
        for mut e in offsets.elements() {
            if let Some(m) = self.stage.commit_metadata(e.topic(), e.partition()) {
                e.set_metadata(m);
            }
        }
        let group = self.consumer.group_metadata().ok_or_else(|| {
            TxnFailure::Abortable("the consumer has no group metadata yet".into())
        })?;
        txn(
            "send_offsets_to_transaction",
            self.producer
                .send_offsets_to_transaction(&offsets, &group, KAFKA_TIMEOUT),
        )?;
        self.await_deliveries();
        txn(
            "commit_transaction",
            self.producer.commit_transaction(KAFKA_TIMEOUT),
        )?;

        let stage = self.config.stage;
        self.stage.on_commit(&self.metrics);
        self.metrics
            .transaction_committed(stage, started.elapsed().as_secs_f64());
        for (topic, n) in count_by_topic(records.iter().map(|r| r.topic)) {
            self.metrics.records_in(stage, topic, n);
        }
        for (topic, n) in count_by_topic(out.iter().map(|r| r.topic.as_str())) {
            self.metrics.records_out(stage, topic, n);
        }
        for reason in out.iter().filter_map(dead_letter_reason) {
            self.metrics.dead_letter(stage, reason);
        }
        Ok(())
    }

    /// Serves delivery reports in 1 ms polls until nothing is in flight.
    ///
    /// `commit_transaction` flushes first, but rust-rdkafka's flush polls in
    /// slices of up to 100 ms that always run to their end, which put a
    /// 100 ms floor under every transaction. Draining here first leaves that
    /// flush nothing to wait for; delivery failures still fail the commit.
    fn await_deliveries(&self) {
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(1));
        }
    }

    fn send(&self, record: &OutRecord) -> Result<(), TxnFailure> {
        let mut base =
            BaseRecord::<Vec<u8>, Vec<u8>>::to(&record.topic).headers(record.kafka_headers());
        if let Some(payload) = &record.payload {
            base = base.payload(payload);
        }
        if let Some(p) = record.partition {
            base = base.partition(p);
        }
        if let Some(k) = &record.key {
            base = base.key(k);
        }
        if let Some(ts) = record.timestamp_ms {
            base = base.timestamp(ts);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    self.producer.poll(Duration::from_millis(10));
                    base = back;
                }
                Err((e, _)) => return Err(self.classify("produce", e)),
            }
        }
    }

    fn classify(&self, operation: &'static str, e: KafkaError) -> TxnFailure {
        let stage = self.config.stage;
        let fenced = matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced)
        );
        if fenced {
            return TxnFailure::Stop(RuntimeError::Fenced {
                stage,
                transactional_id: self.config.transactional_id.clone(),
            });
        }
        match &e {
            KafkaError::Transaction(t) if t.is_fatal() => TxnFailure::Stop(RuntimeError::Fatal {
                stage,
                operation,
                source: e,
            }),
            _ => TxnFailure::Abortable(format!("{operation}: {e}")),
        }
    }

    /// Aborts the open transaction (if any) and moves the consumer back to
    /// the committed offsets of its assignment.
    fn abort_and_rewind(&mut self) -> Result<(), RuntimeError> {
        if let Err(e) = self.producer.abort_transaction(KAFKA_TIMEOUT) {
            let not_open = matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::State));
            if let TxnFailure::Stop(stop) = self.classify("abort_transaction", e) {
                return Err(stop);
            }
            if !not_open {
                tracing::warn!(stage = self.config.stage, "abort_transaction failed");
            }
        }
        let owned = self
            .consumer
            .assignment()
            .map(|a| partitions_of(&a))
            .map_err(|source| RuntimeError::Fatal {
                stage: self.config.stage,
                operation: "assignment",
                source,
            })?;
        let committed = self.committed(&owned)?;
        for p in &committed {
            let to = p.committed.map_or(Offset::Beginning, Offset::Offset);
            if let Err(e) = self.consumer.seek(&p.topic, p.partition, to, KAFKA_TIMEOUT) {
                // A seek fails when the fetcher is not started yet; the
                // stage state is reset below either way, so make the loop
                // restart its clients rather than continue from a guess.
                return Err(RuntimeError::Fatal {
                    stage: self.config.stage,
                    operation: "seek",
                    source: e,
                });
            }
        }
        self.stage.on_rewind(&committed);
        Ok(())
    }
}

fn init_transactions(producer: &BaseProducer, config: &LoopConfig) -> Result<(), RuntimeError> {
    let mut attempt = 0u32;
    loop {
        match producer.init_transactions(KAFKA_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 && !matches!(&e, KafkaError::Transaction(t) if t.is_fatal()) => {
                attempt += 1;
                tracing::warn!(stage = config.stage, error = %e, attempt, "init_transactions failed; retrying");
                std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
            }
            Err(source) => {
                return Err(RuntimeError::Fatal {
                    stage: config.stage,
                    operation: "init_transactions",
                    source,
                });
            }
        }
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

/// For each (topic, partition) in the batch, the offset after its last record.
fn next_offsets(batch: &[OwnedMessage]) -> TopicPartitionList {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for m in batch {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::with_capacity(next.len());
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
            .expect("a fresh partition list accepts offsets");
    }
    tpl
}

/// The `traceparent` header of `m`, if any.
fn traceparent(m: &OwnedMessage) -> Option<&[u8]> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == trace::HEADER)
        .and_then(|h| h.value)
}

fn dead_letter_reason(r: &OutRecord) -> Option<&str> {
    r.headers
        .iter()
        .find(|(k, _)| k == super::dead_letter::REASON_HEADER)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn count_by_topic<'a>(topics: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, u64> {
    let mut counts = BTreeMap::new();
    for t in topics {
        *counts.entry(t).or_insert(0) += 1;
    }
    counts
}
