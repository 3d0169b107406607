//! The screen stage: `events` -> `screenings`, one screening per distinct
//! event, co-partitioned with its input (screenings of `events` partition
//! `p` go to `screenings` partition `p`).
//!
//! State is one [`PartitionWindows`] per owned partition. It is never read
//! from local disk: with every transaction the stage commits, next to the
//! partition's offset, the offset a replay must start from
//! (`screen.v1 replay_from=<offset>`); when it is given a partition (start,
//! rebalance, or a rewind after an aborted transaction) it replays the
//! partition from there up to the committed offset before screening
//! anything new, so the screenings are the same as if it had never stopped.

use std::collections::HashMap;

use kusanagi_schemas::{GameEvent, GameEventCodec, RecordCodec, Screening};

use super::config::ScreenConfig;
use super::window::PartitionWindows;
use crate::runtime::dead_letter::reject_record;
use crate::runtime::trace::TraceCause;
use crate::runtime::{
    AssignedPartition, InRecord, Metrics, OutRecord, PartitionSource, Partitions, ScreeningTally,
    Stage, StageError,
};

/// The stage's name in metrics and logs.
pub const STAGE: &str = "screen";

/// Content type header on every record of the `screenings` topic.
pub const CONTENT_TYPE: &str = "application/vnd.kusanagi.screening.v2+avro";

const METADATA_PREFIX: &str = "screen.v1 replay_from=";

enum PartitionState {
    /// Assigned; its windows must be rebuilt up to `committed` first.
    Pending(AssignedPartition),
    /// Windows ready; `next` is the offset after the last record seen.
    Ready {
        windows: PartitionWindows,
        next: i64,
    },
}

/// `events` -> `screenings` (and `events.dlq` for undecodable records).
pub struct ScreenStage {
    config: ScreenConfig,
    events_topic: String,
    screenings_topic: String,
    dead_letter_topic: String,
    events: GameEventCodec,
    screenings: RecordCodec<Screening>,
    source: Box<dyn PartitionSource>,
    partitions: HashMap<i32, PartitionState>,
    /// Windows of partitions revoked in a rebalance, kept until the next
    /// assignment: a partition given back at the offset this copy had
    /// reached keeps them instead of replaying.
    parked: HashMap<i32, (PartitionWindows, i64)>,
    stats: ScreenStats,
    /// What the current batch did, recorded when it commits.
    tally: ScreeningTally,
}

/// What the stage did since it started.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScreenStats {
    /// Records replayed to rebuild windows.
    pub replayed: u64,
}

impl ScreenStage {
    /// A stage reading `events_topic` and writing `screenings_topic`,
    /// rebuilding windows through `source`.
    pub fn new(
        config: ScreenConfig,
        events_topic: &str,
        screenings_topic: &str,
        dead_letter_topic: &str,
        source: Box<dyn PartitionSource>,
    ) -> Self {
        Self {
            config,
            events_topic: events_topic.to_owned(),
            screenings_topic: screenings_topic.to_owned(),
            dead_letter_topic: dead_letter_topic.to_owned(),
            events: GameEventCodec::new(),
            screenings: RecordCodec::new(),
            source,
            partitions: HashMap::new(),
            parked: HashMap::new(),
            stats: ScreenStats::default(),
            tally: ScreeningTally::default(),
        }
    }

    /// What the stage did so far.
    pub fn stats(&self) -> ScreenStats {
        self.stats
    }

    /// Rebuilds the windows of `partition` if they are pending.
    fn ready(&mut self, partition: i32) -> Result<(), StageError> {
        let pending = match self.partitions.get(&partition) {
            Some(PartitionState::Ready { .. }) => return Ok(()),
            Some(PartitionState::Pending(p)) => p.clone(),
            // Records of a partition we were never told about: start empty
            // from the first record seen (a runtime without rebalance
            // callbacks, as in unit tests).
            None => AssignedPartition {
                topic: self.events_topic.clone(),
                partition,
                committed: None,
                metadata: None,
            },
        };
        let mut windows = PartitionWindows::new(self.config.window_spec());
        let mut next = pending.committed.unwrap_or(0);
        if let Some(committed) = pending.committed {
            let from = match pending.metadata.as_deref().and_then(parse_metadata) {
                Some(from) => from.min(committed),
                None => {
                    tracing::warn!(
                        stage = STAGE,
                        partition,
                        committed,
                        metadata = ?pending.metadata,
                        "no replay point committed with the offset: windows of this partition start empty"
                    );
                    committed
                }
            };
            let (events, config) = (&self.events, &self.config);
            let mut replayed = 0u64;
            let mut undecodable = 0u64;
            self.source
                .read(&self.events_topic, partition, from, committed, &mut |r| {
                    replayed += 1;
                    match r.value.map(|v| events.decode(v)) {
                        // Skipped exactly as the live path skipped it.
                        Some(Ok(e)) if config.from_the_future(&e, r.timestamp_ms).is_some() => {}
                        Some(Ok(e)) => {
                            windows.observe(r.offset, &e, config.thresholds_for(&e.tenant_id));
                        }
                        _ => undecodable += 1,
                    }
                })
                .map_err(|message| {
                    StageError::external(
                        STAGE,
                        format!("rebuilding the windows of partition {partition}: {message}"),
                    )
                })?;
            tracing::info!(
                stage = STAGE,
                partition,
                from,
                to = committed,
                replayed,
                undecodable,
                targets = windows.targets(),
                "windows rebuilt by replay"
            );
            self.stats.replayed += replayed;
            next = committed;
        }
        self.partitions
            .insert(partition, PartitionState::Ready { windows, next });
        Ok(())
    }

    fn screen_one(&mut self, record: &InRecord<'_>, out: &mut Vec<OutRecord>) {
        let event: GameEvent = match record.payload.map(|v| self.events.decode(v)) {
            Some(Ok(e)) => e,
            Some(Err(e)) => {
                out.push(self.reject(record, "undecodable", e.to_string()));
                self.advance(record);
                return;
            }
            None => {
                out.push(self.reject(record, "undecodable", "the record has no value".into()));
                self.advance(record);
                return;
            }
        };
        if let Some(ahead_s) = self.config.from_the_future(&event, record.timestamp_ms) {
            let detail = format!(
                "event time {} is {ahead_s} s ahead of its ingest time (more than max_future_seconds = {}): \
                 a producer clock is wrong; not screened, so that it cannot move the windows' watermark",
                event.timestamp.to_rfc3339(),
                self.config.max_future_seconds
            );
            out.push(self.reject(record, "future_event", detail));
            self.advance(record);
            return;
        }
        let thresholds = *self.config.thresholds_for(&event.tenant_id);
        let Some(PartitionState::Ready { windows, next }) =
            self.partitions.get_mut(&record.partition)
        else {
            unreachable!("ready() was called for every partition of the batch");
        };
        *next = record.offset + 1;
        match windows.observe(record.offset, &event, &thresholds) {
            None => self.tally.duplicates += 1,
            Some(mut s) => {
                if !self.config.evidence.include_chat(&s.tenant_id) {
                    for e in &mut s.evidence_events {
                        e.chat = None;
                    }
                }
                self.tally
                    .screening(if s.screened { "screened" } else { "passed" });
                for rule in s.triggered_rules.iter() {
                    self.tally.rule(rule.as_str());
                }
                self.tally.late += u64::from(s.late);
                self.tally.event_times_us.push(s.event_time.as_micros());
                out.push(OutRecord {
                    topic: self.screenings_topic.clone(),
                    partition: Some(record.partition),
                    key: Some(s.target_id.as_bytes().to_vec()),
                    payload: Some(self.screenings.encode(&s)),
                    headers: vec![("content-type".into(), CONTENT_TYPE.as_bytes().to_vec())],
                    timestamp_ms: None,
                    trace: TraceCause::of(record.trace),
                });
            }
        }
    }

    fn advance(&mut self, record: &InRecord<'_>) {
        if let Some(PartitionState::Ready { next, .. }) = self.partitions.get_mut(&record.partition)
        {
            *next = record.offset + 1;
        }
    }

    fn reject(&self, record: &InRecord<'_>, reason: &str, detail: String) -> OutRecord {
        reject_record(STAGE, &self.dead_letter_topic, record, reason, detail)
    }
}

fn parse_metadata(m: &str) -> Option<i64> {
    m.strip_prefix(METADATA_PREFIX)?.trim().parse().ok()
}

impl Stage for ScreenStage {
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        for record in batch {
            self.ready(record.partition)?;
        }
        for record in batch {
            self.screen_one(record, out);
        }
        Ok(())
    }

    fn on_assign(&mut self, partitions: &[AssignedPartition]) {
        let mut parked = std::mem::take(&mut self.parked);
        for p in partitions.iter().filter(|p| p.topic == self.events_topic) {
            // Given back where this copy left it (an eager rebalance revokes
            // every partition, then hands most of them back): the windows
            // are still exact.
            let state = match parked.remove(&p.partition) {
                Some((windows, next)) if p.committed == Some(next) => {
                    PartitionState::Ready { windows, next }
                }
                _ => PartitionState::Pending(p.clone()),
            };
            self.partitions.insert(p.partition, state);
        }
    }

    fn on_revoke(&mut self, partitions: &Partitions) {
        for (topic, partition) in partitions {
            if *topic == self.events_topic
                && let Some(PartitionState::Ready { windows, next }) =
                    self.partitions.remove(partition)
            {
                self.parked.insert(*partition, (windows, next));
            }
        }
    }

    fn on_rewind(&mut self, assigned: &[AssignedPartition]) {
        self.partitions.clear();
        self.parked.clear();
        self.tally = ScreeningTally::default();
        self.on_assign(assigned);
    }

    fn on_commit(&mut self, metrics: &Metrics) {
        metrics.screening.record_committed(&mut self.tally);
        let targets = self
            .partitions
            .values()
            .map(|p| match p {
                PartitionState::Ready { windows, .. } => windows.targets(),
                PartitionState::Pending(_) => 0,
            })
            .sum();
        metrics.screening.window_targets(targets);
    }

    fn commit_metadata(&self, topic: &str, partition: i32) -> Option<String> {
        if topic != self.events_topic {
            return None;
        }
        match self.partitions.get(&partition)? {
            PartitionState::Ready { windows, next } => {
                Some(format!("{METADATA_PREFIX}{}", windows.replay_from(*next)))
            }
            PartitionState::Pending(_) => None,
        }
    }
}
