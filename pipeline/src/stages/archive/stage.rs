//! The archive stage: `events`, `screenings` and `accounts.transitions`
//! into Parquet files in the hot tier, exactly once.
//!
//! Design (docs/archive.md tells it at length):
//! - **The catalog holds the offsets.** Each catalog commit lists the new
//!   files *and* moves every partition's archived offset forward
//!   ([`crate::catalog::Progress`]), in one atomic object. A copy that gets
//!   a partition seeks to the offset the catalog gives, never to the
//!   consumer group's (which is committed afterwards only so that lag shows
//!   in the usual tools). A crash before the commit leaves the offset where
//!   it was, so the records are read and written again; a crash after it
//!   leaves them archived and they are not read again.
//! - **No two writers archive the same offsets.** A commit holds only if
//!   the catalog still says what the writer read (`from`). A copy that lost
//!   its partitions in a rebalance and commits late is refused; it drops
//!   what it holds and starts again from the catalog.
//! - **A file is visible only once listed.** Files are uploaded under
//!   `_staging/` (no table glob sees it), listed by the commit, then moved
//!   into place. A crash between the commit and the move is finished by the
//!   next start ([`ArchiveStage::promote_staged`]). Names are deterministic
//!   (a hash of the partition and offsets), so a retry makes the same name.
//! - **Open files** (rows per table, tenant, day and hour) are all written
//!   at once, when one reaches `rotate_after_bytes`, all reach
//!   `max_buffered_bytes`, the oldest is `rotate_after_seconds` old, on a
//!   rebalance and on shutdown.
//! - A record that cannot be decoded goes to the dead-letter topic (flushed
//!   before the commit that moves past it), so nothing is lost silently.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kusanagi_connectors::kafka::KafkaSettings;
use kusanagi_connectors::storage::TierStore;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::config::ArchiveStageConfig;
use super::file::{WrittenFile, write_file};
use super::layout::PartitionKey;
use super::log_check::{LogCheck, check};
use super::open_files::{OpenFile, OpenFiles};
use super::table::{Decoders, Row, Table};
use crate::catalog::tiers::{promote, promote_staged};
use crate::catalog::{Action, Catalog, CatalogError, Progress, Tier, staged};
use crate::erasure::{Erased, Secrets};
use crate::runtime::dead_letter::{Rejection, dead_letter};
use crate::runtime::lag::{LagReporter, enable_stats};
use crate::runtime::{InRecord, Metrics, RuntimeError, Shutdown};

/// The stage's name (metrics, logs, dead letters).
pub const STAGE: &str = "archive";

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);
const UPLOADS_IN_FLIGHT: usize = 8;

/// The topics the stage reads, and where rejects go.
#[derive(Debug, Clone)]
pub struct ArchiveTopics {
    /// Topic of the `events` table.
    pub events: String,
    /// Topic of the `screenings` table.
    pub screenings: String,
    /// Topic of the `transitions` table.
    pub transitions: String,
    /// Topic of the `audit` table.
    pub audit: String,
    /// The dead-letter topic.
    pub dead_letter: String,
}

impl ArchiveTopics {
    fn table_of(&self, topic: &str) -> Option<Table> {
        [
            (&self.events, Table::Events),
            (&self.screenings, Table::Screenings),
            (&self.transitions, Table::Transitions),
            (&self.audit, Table::Audit),
        ]
        .into_iter()
        .find_map(|(t, table)| (t == topic).then_some(table))
    }

    fn topic_of(&self, table: Table) -> &str {
        match table {
            Table::Events => &self.events,
            Table::Screenings => &self.screenings,
            Table::Transitions => &self.transitions,
            Table::Audit => &self.audit,
        }
    }
}

/// Rebalances seen inside `poll`, handled after it returns; and the
/// statistics librdkafka reports there, for the lag per partition.
struct Rebalances(Mutex<Vec<RebalanceEvent>>, LagReporter);

/// What `poll` saw.
enum RebalanceEvent {
    Assigned(Vec<(String, i32)>),
    Revoked(Vec<(String, i32)>),
    /// A rebalance error: librdkafka dropped every partition.
    Lost,
}

impl ClientContext for Rebalances {
    fn stats(&self, statistics: Statistics) {
        self.1.report(&statistics);
    }
}

impl ConsumerContext for Rebalances {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let parts = |tpl: &TopicPartitionList| {
            tpl.elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect()
        };
        let event = match rebalance {
            Rebalance::Assign(tpl) => RebalanceEvent::Assigned(parts(tpl)),
            Rebalance::Revoke(tpl) => RebalanceEvent::Revoked(parts(tpl)),
            Rebalance::Error(e) => {
                tracing::warn!(stage = STAGE, error = %e, "rebalance error: every partition dropped");
                RebalanceEvent::Lost
            }
        };
        self.0.lock().expect("rebalance lock").push(event);
    }
}

/// Counts dead letters the broker did not take: a commit that would move
/// past one is not made.
#[derive(Default)]
struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::warn!(stage = STAGE, error = %e, "a dead letter was not delivered");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Where one assigned partition stands.
#[derive(Debug, Clone, Copy, Default)]
struct Position {
    /// The next offset to archive, as the catalog said when last read.
    archived: Option<i64>,
    /// The offset after the last record read into the open files.
    read: Option<i64>,
    /// The seek to `archived` has not taken yet.
    seek_pending: bool,
}

/// One copy of the archive stage. Blocking: run it on its own thread.
pub struct ArchiveStage {
    config: ArchiveStageConfig,
    topics: ArchiveTopics,
    consumer: BaseConsumer<Rebalances>,
    producer: BaseProducer<Deliveries>,
    failed_deliveries: u64,
    max_dead_letter_bytes: usize,
    catalog: Catalog,
    hot: TierStore,
    subject_filter_fpp: f64,
    /// The salt that names erased subjects (an error: why it is missing).
    secrets: Result<Secrets, String>,
    rt: tokio::runtime::Runtime,
    decoders: Decoders,
    open: OpenFiles,
    positions: BTreeMap<(String, i32), Position>,
    /// Assigned partitions whose log went back below the catalog's offset:
    /// paused, not archived (`log_check`).
    refused: BTreeSet<(String, i32)>,
    /// Partitions (re)taken on in this loop iteration: sought to the
    /// catalog's offset after the record polled with the rebalance.
    just_taken: BTreeSet<(String, i32)>,
    dead_letters: Vec<&'static str>,
    /// Committed files whose move into place failed: retried every loop.
    unpromoted: bool,
    last_write: Instant,
    metrics: Metrics,
}

fn setup(detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Setup {
        stage: STAGE,
        detail: detail.to_string(),
    }
}

fn storage(detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Storage {
        stage: STAGE,
        detail: detail.to_string(),
    }
}

impl ArchiveStage {
    /// Opens the catalog and the hot tier, creates the Kafka clients and
    /// subscribes. `instance` names this copy (static group membership and
    /// the catalog commits it makes).
    pub fn new(
        config: ArchiveStageConfig,
        topics: ArchiveTopics,
        archive: &crate::config::ArchiveConfig,
        settings: &KafkaSettings,
        instance: &str,
        metrics: Metrics,
        secrets: Result<Secrets, String>,
    ) -> Result<Self, RuntimeError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(format!("cannot start its async runtime: {e}")))?;
        let hot = archive.open_tier(Tier::Hot).map_err(setup)?;
        let store = archive.open_catalog_store().map_err(setup)?;
        // The URLs were checked; failing to read now is the store's (retried).
        let catalog = rt
            .block_on(Catalog::open(store, format!("archive@{instance}")))
            .map_err(storage)?;
        let group_instance = format!("{}-{instance}", config.group_id);
        let mut consumer_config = settings.consumer_config(&config.group_id, Some(&group_instance));
        enable_stats(&mut consumer_config);
        let consumer: BaseConsumer<Rebalances> = consumer_config
            .create_with_context(Rebalances(
                Mutex::new(Vec::new()),
                LagReporter::new(STAGE, metrics.clone()),
            ))
            .map_err(|source| RuntimeError::Client {
                stage: STAGE,
                client: "consumer",
                source,
            })?;
        let producer: BaseProducer<Deliveries> = settings
            .producer_config()
            .create_with_context(Deliveries::default())
            .map_err(|source| RuntimeError::Client {
                stage: STAGE,
                client: "producer",
                source,
            })?;
        let subscribed = [
            &topics.events,
            &topics.screenings,
            &topics.transitions,
            &topics.audit,
        ];
        let names: Vec<&str> = subscribed.iter().map(|t| t.as_str()).collect();
        consumer
            .subscribe(&names)
            .map_err(|source| RuntimeError::Client {
                stage: STAGE,
                client: "consumer subscription",
                source,
            })?;
        tracing::info!(
            stage = STAGE,
            group = %config.group_id,
            catalog = catalog.url(),
            hot = hot.url(),
            topics = ?names,
            "stage started"
        );
        let mut stage = Self {
            config,
            subject_filter_fpp: archive.subject_filter_fpp,
            secrets,
            topics,
            consumer,
            producer,
            failed_deliveries: 0,
            max_dead_letter_bytes: (settings.message_max_bytes as usize).saturating_sub(64 * 1024),
            catalog,
            hot,
            rt,
            decoders: Decoders::new(),
            open: OpenFiles::default(),
            positions: BTreeMap::new(),
            refused: BTreeSet::new(),
            just_taken: BTreeSet::new(),
            dead_letters: Vec::new(),
            unpromoted: false,
            last_write: Instant::now(),
            metrics,
        };
        stage.promote_staged().map_err(storage)?;
        Ok(stage)
    }

    /// Runs until `shutdown` (writing what is open first) or an error its
    /// supervisor must handle.
    pub fn run(mut self, shutdown: &Shutdown) -> Result<(), RuntimeError> {
        let mut failures = 0u32;
        while !shutdown.is_triggered() {
            let polled = self
                .consumer
                .poll(Duration::from_millis(100))
                .map(|r| r.map(|m| m.detach()));
            let mut ok = self.handle_rebalances();
            match polled {
                // Fetched before its partition was sought to the catalog's
                // offset: it comes again if it is still to be archived.
                Some(Ok(m))
                    if !self.just_taken.is_empty()
                        && self
                            .just_taken
                            .contains(&(m.topic().to_owned(), m.partition())) => {}
                Some(Ok(m)) => self.read(m),
                Some(Err(e)) => self.consumer_error(e)?,
                None => {}
            }
            self.producer.poll(Duration::ZERO);
            if self.unpromoted {
                // Through the catalog: a file a tier pass moved meanwhile
                // must not come back here.
                match self.promote_staged() {
                    Ok(()) => self.unpromoted = false,
                    Err(e) => {
                        tracing::warn!(stage = STAGE, error = %e, "committed files still not in place; retrying")
                    }
                }
            }
            let now = Instant::now();
            let reason = self
                .open
                .rotation_due(&self.config, now)
                .map(|r| r.as_str());
            let idle_progress = self.open.is_empty()
                && self.has_progress()
                && now.duration_since(self.last_write)
                    >= Duration::from_secs(self.config.rotate_after_seconds);
            if let Some(reason) = reason.or(idle_progress.then_some("age")) {
                ok &= self.write(reason);
            }
            self.metrics.archive.open_rows(self.open.rows());
            if ok {
                failures = 0;
            } else {
                failures += 1;
                let backoff = Duration::from_millis(200 * 2u64.pow(failures.min(6)));
                shutdown.sleep(backoff);
            }
        }
        self.drain(Duration::from_millis(500), Duration::from_secs(10));
        self.write("shutdown");
        tracing::info!(stage = STAGE, "stage stopping");
        self.consumer.unsubscribe();
        Ok(())
    }

    /// A consumer error: fatal ones (this copy was fenced, or librdkafka
    /// gave up) end the run so the supervisor starts afresh.
    fn consumer_error(&mut self, e: KafkaError) -> Result<(), RuntimeError> {
        match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::FencedInstanceId) => Err(RuntimeError::Fenced {
                stage: STAGE,
                transactional_id: format!("{}-<instance>", self.config.group_id),
            }),
            Some(RDKafkaErrorCode::Fatal) => Err(RuntimeError::Fatal {
                stage: STAGE,
                operation: "consume",
                source: e,
            }),
            _ => {
                tracing::warn!(stage = STAGE, error = %e, "consumer error");
                Ok(())
            }
        }
    }

    /// On shutdown: reads what is already in Kafka until nothing came for
    /// `quiet` (at most `limit`), so that a clean stop archives all it can.
    fn drain(&mut self, quiet: Duration, limit: Duration) {
        let end = Instant::now() + limit;
        let mut last = Instant::now();
        while last.elapsed() < quiet && Instant::now() < end {
            let polled = self
                .consumer
                .poll(Duration::from_millis(50))
                .map(|r| r.map(|m| m.detach()));
            self.handle_rebalances();
            if let Some(Ok(m)) = polled {
                self.read(m);
                last = Instant::now();
            }
        }
    }

    fn has_progress(&self) -> bool {
        self.positions
            .values()
            .any(|p| p.read.is_some() && p.read != p.archived)
    }

    /// Handles the rebalances `poll` saw; false if writing on a revoke failed.
    fn handle_rebalances(&mut self) -> bool {
        self.just_taken.clear();
        let events =
            std::mem::take(&mut *self.consumer.context().0.lock().expect("rebalance lock"));
        let mut ok = true;
        for event in events {
            match event {
                RebalanceEvent::Assigned(parts) => ok &= self.assign(&parts),
                RebalanceEvent::Revoked(parts) => {
                    // Write what was read of the partitions before they go;
                    // if their new owner was faster, the catalog refuses this.
                    ok &= self.write("rebalance");
                    self.open.take();
                    for p in &parts {
                        self.positions.remove(p);
                        self.release(p);
                    }
                }
                RebalanceEvent::Lost => {
                    // Nothing is owned any more: drop what was read (its
                    // next owner reads it from the catalog's offsets).
                    self.open.take();
                    self.dead_letters.clear();
                    self.positions.clear();
                    for p in self.refused.clone() {
                        self.release(&p);
                    }
                }
            }
        }
        let n = self.positions.len();
        self.metrics.assigned_partitions(STAGE, n);
        ok
    }

    /// Takes `parts` on at the offsets the catalog gives.
    fn assign(&mut self, parts: &[(String, i32)]) -> bool {
        if let Err(e) = self.rt.block_on(self.catalog.refresh()) {
            tracing::warn!(stage = STAGE, error = %e, "cannot read the catalog; retrying");
            for p in parts {
                self.positions.insert(p.clone(), Position::default());
            }
            return self.resync();
        }
        for (topic, partition) in parts {
            let archived = self.catalog.state().next_offset(topic, *partition);
            self.take_on(topic, *partition, archived);
        }
        tracing::info!(stage = STAGE, partitions = ?parts, "partitions assigned");
        true
    }

    /// Reads `topic`/`partition` from `archived` on, unless its log went
    /// back below that (then refuses it).
    fn take_on(&mut self, topic: &str, partition: i32, archived: Option<i64>) {
        match self.log_check(topic, partition, archived) {
            Some(LogCheck::WentBack { log_end }) => {
                self.refuse(topic, partition, archived, log_end)
            }
            // Checked, or the broker did not answer: then the first record
            // tells (`read`: one from before `archived` means the log went
            // back).
            Some(_) | None => self.start_at(topic, partition, archived),
        }
        self.just_taken.insert((topic.to_owned(), partition));
    }

    /// Checks `topic`/`partition`'s log in the broker against `next`, the
    /// offset the stage would read from; says loudly when retention deleted
    /// records before they were archived (the stage goes on from the first
    /// record still there). `None`: the broker did not answer (the stage
    /// reads on; a fetch out of range is looked into again).
    fn log_check(&self, topic: &str, partition: i32, next: Option<i64>) -> Option<LogCheck> {
        let (low, high) = self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .map_err(|e| tracing::warn!(stage = STAGE, topic, partition, error = %e, "cannot read the partition's offsets"))
            .ok()?;
        let found = check(next, low, high);
        if let LogCheck::AgedOut { first_available } = found {
            tracing::error!(
                stage = STAGE,
                topic,
                partition,
                from = next.unwrap_or(0),
                first_available,
                "records were deleted by the topic's retention before they were archived"
            );
        }
        Some(found)
    }

    /// Stops archiving `topic`/`partition`: its log ends at `log_end`,
    /// below `archived`. The records the broker takes next reuse offsets
    /// the archive holds; reading on would skip them silently.
    fn refuse(&mut self, topic: &str, partition: i32, archived: Option<i64>, log_end: i64) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, partition);
        if let Err(e) = self.consumer.pause(&tpl) {
            tracing::warn!(stage = STAGE, topic, partition, error = %e, "cannot pause the partition");
        }
        self.positions.remove(&(topic.to_owned(), partition));
        self.refused.insert((topic.to_owned(), partition));
        self.metrics.archive.refused(topic, partition, true);
        tracing::error!(
            stage = STAGE,
            topic,
            partition,
            archived = archived.unwrap_or(0),
            log_end,
            "the broker's log of this partition went back below the offset already archived: \
             the broker lost records it had acknowledged, or is not the one the archive was \
             made from. This partition is not archived until an operator decides; see \
             docs/operators.md, \"The broker went backwards\""
        );
    }

    /// `topic`/`partition` came back from before `next`, where this copy
    /// had read to: archives what was read (real records, acknowledged
    /// before the broker lost them), then refuses the partition.
    fn jumped_back(&mut self, topic: &str, partition: i32, next: i64, offset: i64) {
        tracing::warn!(
            stage = STAGE,
            topic,
            partition,
            read_to = next,
            came_back_at = offset,
            "the partition's records came again from an earlier offset"
        );
        if !self.write("broker") {
            return; // re-read from the catalog's offsets, checked again (`resync`)
        }
        let log_end = self
            .consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
            .map_or(offset, |(_, high)| high);
        self.refuse(topic, partition, Some(next), log_end);
    }

    /// A refused partition is given up (revoked): its next owner checks it
    /// again.
    fn release(&mut self, p: &(String, i32)) {
        if self.refused.remove(p) {
            self.metrics.archive.refused(&p.0, p.1, false);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&p.0, p.1);
            let _ = self.consumer.resume(&tpl);
        }
    }

    /// Reads `topic`/`partition` from `archived` on (the beginning if
    /// nothing is archived), forgetting what was read past it.
    fn start_at(&mut self, topic: &str, partition: i32, archived: Option<i64>) {
        let sought = self.seek(topic, partition, archived);
        self.positions.insert(
            (topic.to_owned(), partition),
            Position {
                archived,
                read: None,
                seek_pending: !sought,
            },
        );
    }

    fn seek(&self, topic: &str, partition: i32, archived: Option<i64>) -> bool {
        let offset = archived.map_or(Offset::Beginning, Offset::Offset);
        match self.consumer.seek(topic, partition, offset, KAFKA_TIMEOUT) {
            Ok(()) => true,
            Err(e) => {
                // Tried again when the partition's next record comes.
                tracing::debug!(stage = STAGE, topic, partition, error = %e, "seek failed");
                false
            }
        }
    }

    /// Adds one polled record to its open file (or dead-letters it).
    fn read(&mut self, m: OwnedMessage) {
        let key = (m.topic().to_owned(), m.partition());
        let Some(pos) = self.positions.get_mut(&key) else {
            return; // polled before a revoke: its new owner reads it
        };
        let offset = m.offset();
        if pos.seek_pending {
            // Until the seek holds, records may come from further on than
            // the catalog's offset: drop them, they come again after it.
            let archived = pos.archived;
            let sought = self.seek(m.topic(), m.partition(), archived);
            if let Some(pos) = self.positions.get_mut(&key) {
                pos.seek_pending = !sought;
            }
            return;
        }
        if let Some(next) = pos.read.or(pos.archived)
            && offset < next
        {
            // Once the seek to the catalog's offset holds (records fetched
            // before it are dropped by librdkafka, or by `run` when polled
            // with the rebalance), a record from before where this copy
            // reads means the consumer was sent back: librdkafka starts
            // again from the log's start when its position is past the
            // log's end, i.e. the broker went backwards.
            self.jumped_back(m.topic(), m.partition(), next, offset);
            return;
        }
        pos.read = Some(offset + 1);
        let Some(table) = self.topics.table_of(m.topic()) else {
            return;
        };
        let decoded = match m.payload() {
            Some(bytes) => self
                .decoders
                .decode(table, bytes)
                .map_err(|e| e.to_string()),
            None => Err("a record without a value".to_owned()),
        };
        match decoded {
            Ok(record) => {
                let json = record.json_len();
                let pk = PartitionKey::of(table, record.tenant(), record.event_time_us());
                let row = Row {
                    record,
                    partition: m.partition(),
                    offset,
                };
                let size = m.payload().map_or(0, <[u8]>::len);
                self.open.push(pk, row, size, json, Instant::now());
            }
            Err(detail) => self.dead_letter(&m, detail),
        }
    }

    fn dead_letter(&mut self, m: &OwnedMessage, detail: String) {
        let source = InRecord {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            timestamp_ms: m.timestamp().to_millis(),
            trace: None,
        };
        tracing::debug!(stage = STAGE, topic = m.topic(), partition = m.partition(), offset = m.offset(), %detail, "record rejected");
        let rejection = Rejection {
            reason: "undecodable",
            detail,
            field: None,
        };
        let out = dead_letter(
            STAGE,
            &self.topics.dead_letter,
            &source,
            &rejection,
            self.max_dead_letter_bytes,
        );
        let mut headers = OwnedHeaders::new();
        for (k, v) in &out.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
        let mut record = BaseRecord::<Vec<u8>, Vec<u8>>::to(&out.topic).headers(headers);
        if let Some(payload) = &out.payload {
            record = record.payload(payload);
        }
        if let Some(k) = &out.key {
            record = record.key(k);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // Let deliveries drain, then try again.
                    self.producer.poll(Duration::from_millis(100));
                    record = back;
                }
                Err((e, _)) => {
                    tracing::warn!(stage = STAGE, error = %e, "cannot queue a dead letter; re-reading");
                    self.resync();
                    return;
                }
            }
        }
        self.dead_letters.push("undecodable");
    }

    /// Writes every open file and commits them with the partitions'
    /// progress; false if that failed (what was read is read again).
    fn write(&mut self, reason: &'static str) -> bool {
        let mut files = self.open.take();
        let progress: Vec<Action> = self
            .positions
            .iter()
            .filter(|(_, p)| p.read.is_some() && p.read != p.archived)
            .map(|((topic, partition), p)| {
                Action::Progress(Progress {
                    topic: topic.clone(),
                    partition: *partition,
                    from: p.archived,
                    to: p.read.unwrap_or_default(),
                })
            })
            .collect();
        if files.is_empty() && progress.is_empty() {
            return true;
        }
        self.last_write = Instant::now();
        self.metrics.archive.rotation(reason);
        let flushed = self.producer.flush(KAFKA_TIMEOUT);
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        if flushed.is_err() || failed != self.failed_deliveries {
            self.failed_deliveries = failed;
            tracing::warn!(stage = STAGE, "dead letters not delivered; re-reading");
            return self.retry_later();
        }
        // Rows of erased subjects are never archived again. The commit
        // below holds only if no subject was erased since this read.
        let Some(erasures_known) = self.drop_erased(&mut files) else {
            return self.retry_later();
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut written: Vec<WrittenFile> = Vec::with_capacity(files.len());
        for (key, file) in files {
            let topic = self.topics.topic_of(key.table).to_owned();
            match write_file(
                &key,
                &topic,
                file,
                self.config.zstd_level,
                self.subject_filter_fpp,
                now_ms,
            ) {
                Ok(w) => {
                    let state = self.catalog.state();
                    written.push(w.after_rewinds(&key, |t, p| state.rewinds(t, p)));
                }
                Err(e) => {
                    tracing::error!(stage = STAGE, partition = %key.dir(), error = %e, "cannot write a Parquet file; re-reading");
                    return self.retry_later();
                }
            }
        }
        // 1. Upload under _staging/, where no table glob sees them.
        let hot = self.hot.clone();
        let uploads = futures::stream::iter(written.iter().map(|w| {
            let hot = hot.clone();
            let (path, bytes) = (staged(&w.entry.path, &w.entry.sha256), w.bytes.clone());
            async move { hot.put(&path, bytes).await }
        }))
        .buffer_unordered(UPLOADS_IN_FLIGHT)
        .collect::<Vec<_>>();
        if let Some(Err(e)) = self.rt.block_on(uploads).into_iter().find(Result::is_err) {
            tracing::warn!(stage = STAGE, error = %e, "cannot upload to the hot tier; re-reading");
            self.metrics.archive.commit("failed");
            return self.retry_later();
        }
        // 2. One catalog commit: the files and the offsets, together.
        let mut actions: Vec<Action> = written
            .iter()
            .map(|w| Action::Add(w.entry.clone()))
            .collect();
        actions.extend(progress);
        actions.push(Action::ErasuresKnown(erasures_known));
        match self.rt.block_on(self.catalog.commit("archive", actions)) {
            Ok(version) => {
                self.metrics.archive.commit("committed");
                self.committed(&written, version);
            }
            Err(CatalogError::Conflict(c)) => {
                self.metrics.archive.commit("conflict");
                tracing::warn!(stage = STAGE, conflict = %c, "another copy archived these offsets first; re-reading from the catalog");
                self.discard_staged(&written);
                return self.resync();
            }
            Err(e) => {
                self.metrics.archive.commit("failed");
                tracing::warn!(stage = STAGE, error = %e, "catalog commit failed; re-reading");
                return self.retry_later();
            }
        }
        // 3. Move the files into place (a crash here is finished at start;
        // a failure is retried every loop).
        let files: Vec<(String, String)> = written
            .iter()
            .map(|w| (w.entry.path.clone(), w.entry.sha256.clone()))
            .collect();
        if let Err(e) = self.promote(files) {
            tracing::warn!(stage = STAGE, error = %e, "files committed but not yet moved into place; retrying");
            self.unpromoted = true;
        }
        true
    }

    /// Drops the rows of subjects erased as of the catalog now (read
    /// again first) from `files`; returns how many erasures it knows, or
    /// `None` if it could not filter (logged; the stage reads again later).
    fn drop_erased(&mut self, files: &mut BTreeMap<PartitionKey, OpenFile>) -> Option<u64> {
        if let Err(e) = self.rt.block_on(self.catalog.refresh()) {
            tracing::warn!(stage = STAGE, error = %e, "cannot read the catalog; re-reading");
            return None;
        }
        let known = self.catalog.state().erasures().count() as u64;
        if known == 0 {
            return Some(0);
        }
        let secrets = match &self.secrets {
            Ok(s) => s.clone(),
            Err(why) => {
                tracing::error!(stage = STAGE, erasures = known, error = %why, "the archive records erasures and this copy cannot name their subjects without the salt; nothing is archived until it can");
                return None;
            }
        };
        let erased = Erased::of(self.catalog.state(), Some(secrets)).ok()?;
        let mut dropped = 0usize;
        for file in files.values_mut() {
            let before = file.rows.len();
            let mut json_dropped = 0u64;
            file.rows.retain(|r| {
                let gone = r
                    .record
                    .subject_ids()
                    .into_iter()
                    .flatten()
                    .any(|id| erased.is_deleted(id));
                if gone {
                    json_dropped += r.record.json_len() as u64;
                }
                !gone
            });
            file.json_bytes = file.json_bytes.saturating_sub(json_dropped);
            dropped += before - file.rows.len();
        }
        files.retain(|_, f| !f.rows.is_empty());
        if dropped > 0 {
            tracing::info!(
                stage = STAGE,
                rows = dropped,
                "rows of erased subjects not archived"
            );
            self.metrics.archive.erased_rows(dropped as u64);
        }
        Some(known)
    }

    /// Bookkeeping after a commit: positions, metrics, group offsets.
    fn committed(&mut self, written: &[WrittenFile], version: u64) {
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), p) in self.positions.iter_mut() {
            if p.read.is_some() {
                p.archived = p.read;
            }
            if let Some(o) = p.archived {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(o));
            }
        }
        let mut rows = 0;
        for w in written {
            let table = Table::from_name(&w.entry.table).map_or("unknown", Table::name);
            self.metrics.archive.file_committed(
                table,
                w.entry.rows,
                w.entry.size_bytes,
                w.entry.json_bytes,
            );
            self.metrics.records_in(
                STAGE,
                self.topics
                    .topic_of(Table::from_name(table).unwrap_or(Table::Events)),
                w.entry.rows,
            );
            rows += w.entry.rows;
        }
        for reason in self.dead_letters.drain(..) {
            self.metrics.dead_letter(STAGE, reason);
        }
        self.metrics.archive.catalog_totals(self.catalog.state());
        tracing::debug!(
            stage = STAGE,
            version,
            files = written.len(),
            rows,
            "archived"
        );
        if tpl.count() > 0 {
            // Only so that lag shows in the usual tools: the catalog is
            // where a copy starts from.
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::debug!(stage = STAGE, error = %e, "group offset commit failed");
            }
        }
    }

    /// Moves committed files `(path, sha256)` from `_staging/` into place.
    fn promote(
        &self,
        files: Vec<(String, String)>,
    ) -> Result<(), kusanagi_connectors::ConnectorError> {
        self.rt.block_on(promote(&self.hot, &files))
    }

    /// Deletes the staged uploads of a refused commit (best effort: what
    /// is left is cleared a day later).
    fn discard_staged(&self, written: &[WrittenFile]) {
        let hot = self.hot.clone();
        let paths: Vec<String> = written
            .iter()
            .map(|w| staged(&w.entry.path, &w.entry.sha256))
            .collect();
        self.rt.block_on(async move {
            for p in paths {
                let _ = hot.delete(&p).await;
            }
        });
    }

    /// Finishes what a crash left half done: files the catalog lists but
    /// that still sit under `_staging/` are moved into place. Staged files
    /// the catalog does not list were never committed and stay invisible.
    pub fn promote_staged(&mut self) -> Result<(), CatalogError> {
        let promoted = self
            .rt
            .block_on(promote_staged(&self.hot, Tier::Hot, &mut self.catalog))?;
        if !promoted.is_empty() {
            tracing::info!(
                stage = STAGE,
                files = promoted.len(),
                "moved committed files into place"
            );
        }
        Ok(())
    }

    /// After a failed write: start again from the catalog, and report the
    /// failure so the loop backs off.
    fn retry_later(&mut self) -> bool {
        self.resync();
        false
    }

    /// Drops what is open and starts every partition again from the
    /// catalog (as last read, if it cannot be read now: a stale offset
    /// only makes the next commit be refused); false if it cannot be read.
    fn resync(&mut self) -> bool {
        self.open.take();
        self.dead_letters.clear();
        let refreshed = match self.rt.block_on(self.catalog.refresh()) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(stage = STAGE, error = %e, "cannot read the catalog");
                false
            }
        };
        let keys: Vec<(String, i32)> = self.positions.keys().cloned().collect();
        for (topic, partition) in keys {
            let archived = self.catalog.state().next_offset(&topic, partition);
            self.take_on(&topic, partition, archived);
        }
        if refreshed && let Err(e) = self.promote_staged() {
            tracing::warn!(stage = STAGE, error = %e, "cannot move committed files into place yet");
        }
        refreshed
    }
}
