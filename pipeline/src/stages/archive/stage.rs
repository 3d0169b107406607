//! The archive stage: `events`, `screenings`, `accounts.transitions` and
//! `audit` into Parquet files in the hot tier, exactly once.
//!
//! Design (docs/archive.md tells it at length):
//! - **It runs on the runtime's loop as a sink** ([`crate::runtime::Sink`]):
//!   the catalog holds the offsets. Each catalog commit lists the new files
//!   *and* moves every partition's archived offset forward
//!   ([`crate::catalog::Progress`]), in one atomic object. The loop reads
//!   each partition from the catalog's offset ([`Sink::positions`]), checks
//!   the broker's log still reaches it, and commits the group offsets
//!   afterwards only so that lag shows in the usual tools.
//! - **No two writers archive the same offsets.** A commit holds only if
//!   the catalog still says what the writer read (`from`). A copy that lost
//!   its partitions in a rebalance and commits late is refused; the loop
//!   drops what it holds and reads again from the catalog.
//! - **A file is visible only once listed**: each rotation's files go
//!   through the states of [`Flight`] (written, staged, committed, in
//!   place).
//! - **Open files** (rows per table, tenant, day and hour) are all written
//!   at once, when one reaches `rotate_after_bytes`, all reach
//!   `max_buffered_bytes`, the oldest is `rotate_after_seconds` old (its
//!   oldest row's time in Kafka, or the last rotation's start if later:
//!   [`OpenFiles::push`]), on a rebalance and on shutdown.
//! - A record that cannot be decoded goes to the dead-letter topic (the
//!   loop flushes it before the commit that moves past it).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kusanagi_connectors::storage::TierStore;

use super::config::ArchiveStageConfig;
use super::file::{WrittenFile, write_file, write_files};
use super::flight::{Flight, FlightError, recover};
use super::layout::PartitionKey;
use super::open_files::{OpenFile, OpenFiles, age_from};
use super::table::{Decoders, Row, Table};
use crate::catalog::{Action, Catalog, Progress, Tier};
use crate::erasure::{Erased, ErasureError, Secrets};
use crate::runtime::dead_letter::{Rejection, dead_letter};
use crate::runtime::{
    AssignedPartition, InRecord, Metrics, OutRecord, ReadRange, RuntimeError, Sink, SinkFailure,
    Stage, StageError,
};

/// The stage's name (metrics, logs, dead letters).
pub const STAGE: &str = "archive";

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
    /// The topics read, one per table.
    pub fn inputs(&self) -> Vec<String> {
        Table::ALL
            .iter()
            .map(|t| self.topic_of(*t).to_owned())
            .collect()
    }

    fn table_of(&self, topic: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| self.topic_of(*t) == topic)
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

/// What one copy of the stage runs with.
#[derive(Clone)]
pub struct ArchiveCopy {
    /// Names this copy in the catalog commits it makes.
    pub instance: String,
    /// The largest dead letter the broker takes.
    pub max_dead_letter_bytes: usize,
    /// Where it reports.
    pub metrics: Metrics,
    /// The salt that names erased subjects (an error: why it is missing;
    /// needed only once the archive records an erasure).
    pub secrets: Result<Secrets, ErasureError>,
    /// The process's async runtime, for the stores' I/O.
    pub rt: tokio::runtime::Handle,
}

/// One copy of the archive stage.
pub struct ArchiveStage {
    config: ArchiveStageConfig,
    topics: ArchiveTopics,
    max_dead_letter_bytes: usize,
    catalog: Catalog,
    hot: TierStore,
    subject_filter_fpp: f64,
    /// The salt that names erased subjects (an error: why it is missing).
    secrets: Result<Secrets, ErasureError>,
    rt: tokio::runtime::Handle,
    decoders: Decoders,
    open: OpenFiles,
    /// A committed rotation whose move into place failed: retried every
    /// turn of the loop.
    not_in_place: Option<Flight>,
    /// A commit failed in a way that may have landed (a timeout after the
    /// write): files the catalog lists may sit under `_staging/`.
    recover_due: bool,
    /// When the last commit began (or the stage started): no open file's
    /// age counts from earlier.
    last_commit: Instant,
    metrics: Metrics,
}

fn storage(detail: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Storage {
        stage: STAGE,
        detail: detail.to_string(),
    }
}

impl ArchiveStage {
    /// Opens the catalog and the hot tier, and finishes what a crash left
    /// half done.
    pub fn new(
        config: ArchiveStageConfig,
        topics: ArchiveTopics,
        archive: &crate::config::ArchiveConfig,
        copy: ArchiveCopy,
    ) -> Result<Self, RuntimeError> {
        let ArchiveCopy {
            instance,
            max_dead_letter_bytes,
            metrics,
            secrets,
            rt,
        } = copy;
        let setup = |detail: String| RuntimeError::Setup {
            stage: STAGE,
            detail,
        };
        let hot = archive
            .open_tier(Tier::Hot)
            .map_err(|e| setup(e.to_string()))?;
        let store = archive
            .open_catalog_store()
            .map_err(|e| setup(e.to_string()))?;
        // The URLs were checked; failing to read now is the store's (retried).
        let mut catalog = rt
            .block_on(Catalog::open(store, format!("archive@{instance}")))
            .map_err(storage)?;
        let moved = rt.block_on(recover(&hot, &mut catalog)).map_err(storage)?;
        if !moved.is_empty() {
            tracing::info!(
                stage = STAGE,
                files = moved.len(),
                "moved committed files into place"
            );
        }
        tracing::info!(
            stage = STAGE,
            catalog = catalog.url(),
            hot = hot.url(),
            "archive opened"
        );
        Ok(Self {
            config,
            subject_filter_fpp: archive.subject_filter_fpp,
            secrets,
            topics,
            max_dead_letter_bytes,
            catalog,
            hot,
            rt,
            decoders: Decoders::new(),
            open: OpenFiles::default(),
            not_in_place: None,
            recover_due: false,
            last_commit: Instant::now(),
            metrics,
        })
    }

    /// Adds one record to its open file, or dead-letters it; `clock`: this
    /// turn's time, as an instant and as Unix milliseconds.
    fn read(&mut self, r: &InRecord<'_>, clock: (Instant, i64), out: &mut Vec<OutRecord>) {
        let Some(table) = self.topics.table_of(r.topic) else {
            return;
        };
        let decoded = match r.payload {
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
                    partition: r.partition,
                    offset: r.offset,
                };
                let size = r.payload.map_or(0, <[u8]>::len);
                let since = age_from(r.timestamp_ms, clock, self.last_commit);
                self.open.push(pk, row, size, json, since);
            }
            Err(detail) => {
                tracing::debug!(stage = STAGE, topic = r.topic, partition = r.partition, offset = r.offset, %detail, "record rejected");
                let rejection = Rejection {
                    reason: "undecodable",
                    detail,
                    field: None,
                };
                let trace_free = InRecord { trace: None, ..*r };
                out.push(dead_letter(
                    STAGE,
                    &self.topics.dead_letter,
                    &trace_free,
                    &rejection,
                    self.max_dead_letter_bytes,
                ));
            }
        }
    }

    /// Writes the open files as Parquet (several at once, up to the
    /// machine's cores), named after their partitions' offsets and
    /// rewinds.
    fn write_files(
        &self,
        files: BTreeMap<PartitionKey, OpenFile>,
    ) -> Result<Vec<WrittenFile>, StageError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (zstd_level, fpp) = (self.config.zstd_level, self.subject_filter_fpp);
        let rotation = files
            .into_iter()
            .map(|(key, file)| {
                let topic = self.topics.topic_of(key.table).to_owned();
                (key, topic, file)
            })
            .collect();
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let state = self.catalog.state();
        write_files(rotation, threads, |key, topic, file| {
            write_file(key, topic, file, zstd_level, fpp, now_ms)
        })
        .into_iter()
        .map(|(key, w)| {
            let w = w.map_err(|e| {
                StageError::external(STAGE, format!("cannot write {}: {e}", key.dir()))
            })?;
            Ok(w.after_rewinds(&key, |t, p| state.rewinds(t, p)))
        })
        .collect()
    }

    /// Drops the rows of subjects erased as of the catalog now (read
    /// again first) from `files`; returns how many erasures it knows.
    fn drop_erased(
        &mut self,
        files: &mut BTreeMap<PartitionKey, OpenFile>,
    ) -> Result<u64, StageError> {
        self.rt
            .block_on(self.catalog.refresh())
            .map_err(|e| StageError::external(STAGE, e))?;
        let known = self.catalog.state().erasures().count() as u64;
        if known == 0 {
            return Ok(0);
        }
        // Retried (logged each time) rather than stopped: the rest of the
        // process goes on while an operator provides the salt.
        let secrets = self.secrets.clone().map_err(|why| {
            StageError::external(
                STAGE,
                format!(
                    "the archive records {known} erasures and this copy cannot name their \
                     subjects without the salt ({why}); nothing is archived until it can"
                ),
            )
        })?;
        let erased = Erased::of(self.catalog.state(), Some(secrets))
            .map_err(|e| StageError::external(STAGE, e))?;
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
        Ok(known)
    }

    /// Metrics after a commit.
    fn committed(&mut self, written: &[WrittenFile], version: u64) {
        let mut rows = 0;
        for w in written {
            let table = Table::from_name(&w.entry.table).unwrap_or(Table::Events);
            self.metrics.archive.file_committed(
                table.name(),
                w.entry.rows,
                w.entry.size_bytes,
                w.entry.json_bytes,
            );
            self.metrics
                .records_in(STAGE, self.topics.topic_of(table), w.entry.rows);
            rows += w.entry.rows;
        }
        self.metrics.archive.catalog_totals(self.catalog.state());
        tracing::debug!(
            stage = STAGE,
            version,
            files = written.len(),
            rows,
            "archived"
        );
    }
}

impl Stage for ArchiveStage {
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        let clock = (Instant::now(), chrono::Utc::now().timestamp_millis());
        for r in batch {
            self.read(r, clock, out);
        }
        self.metrics.archive.open_rows(self.open.rows());
        Ok(())
    }

    fn on_rewind(&mut self, _assigned: &[AssignedPartition]) {
        self.open.take();
        self.metrics.archive.open_rows(0);
    }

    fn sink(&mut self) -> Option<&mut dyn Sink> {
        Some(self)
    }
}

impl Sink for ArchiveStage {
    fn positions(&mut self, partitions: &[(String, i32)]) -> Result<Vec<Option<i64>>, StageError> {
        self.rt
            .block_on(self.catalog.refresh())
            .map_err(|e| StageError::external(STAGE, format!("cannot read the catalog: {e}")))?;
        let state = self.catalog.state();
        Ok(partitions
            .iter()
            .map(|(t, p)| state.next_offset(t, *p))
            .collect())
    }

    fn due(&self, now: Instant, progress: bool) -> Option<&'static str> {
        let rotation = self
            .open
            .rotation_due(&self.config, now)
            .map(|r| r.as_str());
        // Offsets to move with no rows (dead letters, erased rows only).
        let idle_progress = self.open.is_empty()
            && progress
            && now.duration_since(self.last_commit)
                >= Duration::from_secs(self.config.rotate_after_seconds);
        rotation.or(idle_progress.then_some("age"))
    }

    fn commit(&mut self, reason: &'static str, ranges: &[ReadRange]) -> Result<(), SinkFailure> {
        let mut files = self.open.take();
        self.metrics.archive.open_rows(0);
        if files.is_empty() && ranges.is_empty() {
            return Ok(());
        }
        self.last_commit = Instant::now();
        self.metrics.archive.rotation(reason);
        // Rows of erased subjects are never archived again. The commit
        // holds only if no subject was erased since this read.
        let erasures_known = self.drop_erased(&mut files)?;
        let written = self.write_files(files)?;
        let mut with: Vec<Action> = ranges
            .iter()
            .map(|r| {
                Action::Progress(Progress {
                    topic: r.topic.clone(),
                    partition: r.partition,
                    from: r.from,
                    to: r.to,
                })
            })
            .collect();
        with.push(Action::ErasuresKnown(erasures_known));
        let entries: Vec<WrittenFile> = written.clone();
        let (hot, rt) = (self.hot.clone(), self.rt.clone());
        let flight = rt.block_on(async {
            Flight::Written(written)
                .upload(&hot)
                .await?
                .commit(&mut self.catalog, &hot, with)
                .await
        });
        let flight = match flight {
            Ok(f) => f,
            Err(FlightError::Conflict(c)) => {
                self.metrics.archive.commit("conflict");
                return Err(SinkFailure::Conflict(c));
            }
            Err(FlightError::Store(e)) => {
                self.metrics.archive.commit("failed");
                self.recover_due = true;
                return Err(StageError::external(STAGE, e).into());
            }
        };
        self.metrics.archive.commit("committed");
        if let Flight::Committed { version, .. } = &flight {
            self.committed(&entries, *version);
        }
        match rt.block_on(flight.promote(&hot)) {
            Ok(_) => {}
            Err((left, e)) => {
                tracing::warn!(stage = STAGE, error = %e, state = left.name(), "files committed but not yet moved into place; retrying");
                self.not_in_place = Some(left);
            }
        }
        Ok(())
    }

    fn tick(&mut self) {
        if self.not_in_place.is_none() && !self.recover_due {
            return;
        }
        // Through the catalog: a file a tier pass moved meanwhile must not
        // come back here.
        let (hot, rt) = (self.hot.clone(), self.rt.clone());
        match rt.block_on(recover(&hot, &mut self.catalog)) {
            Ok(_) => {
                self.not_in_place = None;
                self.recover_due = false;
            }
            Err(e) => {
                tracing::warn!(stage = STAGE, error = %e, "committed files still not in place; retrying")
            }
        }
    }

    fn refused(&mut self, topic: &str, partition: i32, refused: bool) {
        self.metrics.archive.refused(topic, partition, refused);
    }
}
