//! The view as a stage of the shared loop: a sink with nothing durable.
//! It reads every partition of `accounts`, `accounts.transitions` and
//! `erasures` from the beginning, outside any consumer group
//! ([`crate::runtime::kafka::KafkaReader`]: each copy holds the whole
//! index), applies each batch under one write lock, and marks the view
//! ready once the loop says it has read what the partitions held when it
//! started ([`Stage::on_caught_up`]). Its lag per partition comes from
//! librdkafka's statistics, as for the other stages.

use std::sync::Arc;
use std::time::Instant;

use kusanagi_schemas::{Account, ErasureRequest, RecordCodec, Transition};

use super::{AccountIndex, View};
use crate::runtime::sink::{ReadRange, Sink, SinkFailure};
use crate::runtime::{InRecord, Metrics, OutRecord, Stage, StageError};

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

impl ViewTopics {
    /// The topics, in the order the reader assigns them.
    pub fn inputs(&self) -> Vec<String> {
        vec![
            self.accounts.clone(),
            self.transitions.clone(),
            self.erasures.clone(),
        ]
    }
}

/// One decoded record.
enum Update {
    Account(String, Option<Account>),
    Transition(Transition, i64),
    Erase(String, i64),
}

/// The view's sink: what it read is applied to the index at once and held
/// in memory only, so there is nothing to commit, and a copy reads every
/// partition from its beginning.
#[derive(Debug, Default)]
struct Applied;

impl Sink for Applied {
    fn positions(&mut self, partitions: &[(String, i32)]) -> Result<Vec<Option<i64>>, StageError> {
        Ok(vec![None; partitions.len()])
    }

    /// Every turn that read something: what was read is in the index.
    fn due(&self, _now: Instant, progress: bool) -> Option<&'static str> {
        progress.then_some("applied")
    }

    fn commit(&mut self, _reason: &'static str, _ranges: &[ReadRange]) -> Result<(), SinkFailure> {
        Ok(())
    }

    fn is_durable(&self) -> bool {
        false
    }
}

/// Keeps a [`View`] up to date.
pub struct ViewStage {
    topics: ViewTopics,
    view: Arc<View>,
    metrics: Metrics,
    accounts: RecordCodec<Account>,
    transitions: RecordCodec<Transition>,
    erasures: RecordCodec<ErasureRequest>,
    sink: Applied,
    started: Instant,
    updates: Vec<Update>,
    skip_log: SkipLog,
}

/// How often the view says it skipped records: the first at once, then at
/// most one line a second with how many more, so that a topic full of
/// records it cannot read does not flood the log (the metric counts each).
#[derive(Debug, Default)]
struct SkipLog {
    last: Option<Instant>,
    unsaid: u64,
}

impl SkipLog {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    /// `Some(skipped since the last line, this one excluded)` when a line
    /// is due at `now`; `None` when this skip is only counted.
    fn due(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Self::EVERY)
        {
            self.unsaid += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unsaid))
    }
}

impl std::fmt::Debug for ViewStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewStage")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl ViewStage {
    /// A stage that fills `view` from scratch: it empties the index and
    /// marks it not ready first. A restarted stage rebuilds: what the old
    /// one applied may be ahead of a fresh read, never behind, so it
    /// starts clean. Not ready first, under the write lock: a reader never
    /// sees a ready, emptied index ([`View::read_ready`]).
    pub fn new(topics: ViewTopics, view: Arc<View>, metrics: Metrics) -> Self {
        {
            let mut index = view.write();
            view.set_ready(false);
            *index = AccountIndex::new();
        }
        metrics.view.ready(false);
        metrics.view.accounts(0);
        Self {
            topics,
            view,
            metrics,
            accounts: RecordCodec::new(),
            transitions: RecordCodec::new(),
            erasures: RecordCodec::new(),
            sink: Applied,
            started: Instant::now(),
            updates: Vec::new(),
            skip_log: SkipLog::default(),
        }
    }

    fn decode(&mut self, r: &InRecord<'_>) -> Option<Update> {
        let topic = r.topic;
        let (metrics, skip_log) = (&self.metrics, &mut self.skip_log);
        let mut skipped = |why: String| {
            if let Some(before) = skip_log.due(Instant::now()) {
                tracing::warn!(
                    topic,
                    partition = r.partition,
                    offset = r.offset,
                    why,
                    skipped_since_last_line = before,
                    "view: skipping a record it cannot read"
                );
            }
            metrics.view.records(topic, "skipped", 1);
            None
        };
        if topic == self.topics.accounts {
            let Some(key) = r.key.and_then(|k| std::str::from_utf8(k).ok()) else {
                return skipped("no UTF-8 key".into());
            };
            match r.payload {
                None => Some(Update::Account(key.to_owned(), None)),
                Some(bytes) => match self.accounts.decode(bytes) {
                    Ok(a) => Some(Update::Account(key.to_owned(), Some(a))),
                    Err(e) => skipped(e.to_string()),
                },
            }
        } else if topic == self.topics.erasures {
            // A tombstone on `erasures` (compaction of an old request) is
            // not a withdrawal of the erasure: nothing to apply.
            let bytes = r.payload?;
            match self.erasures.decode(bytes) {
                Ok(e) => Some(Update::Erase(e.subject, e.requested_at.as_micros() / 1_000)),
                Err(e) => skipped(e.to_string()),
            }
        } else if topic == self.topics.transitions {
            let Some(bytes) = r.payload else {
                return skipped("no value".into());
            };
            match self.transitions.decode(bytes) {
                Ok(t) => {
                    // A record without a timestamp: when its cause happened.
                    let at = r
                        .timestamp_ms
                        .unwrap_or_else(|| t.event_time.as_micros() / 1_000);
                    Some(Update::Transition(t, at))
                }
                Err(e) => skipped(e.to_string()),
            }
        } else {
            skipped(format!("not one of the view's topics: {topic}"))
        }
    }

    /// Applies the decoded batch under one write lock.
    fn apply(&mut self) {
        if self.updates.is_empty() {
            return;
        }
        let (mut accounts, mut transitions, mut unchanged, mut erased) = (0u64, 0u64, 0u64, 0u64);
        let held = {
            let mut index = self.view.write();
            for u in self.updates.drain(..) {
                match u {
                    Update::Account(key, a) => {
                        index.apply_account(key.as_bytes(), a);
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
}

impl Stage for ViewStage {
    /// Decodes the batch (a record it cannot read is skipped and counted:
    /// the view answers from the rest) and applies it. Never fails.
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        _out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        let mut updates = std::mem::take(&mut self.updates);
        updates.extend(batch.iter().filter_map(|r| self.decode(r)));
        self.updates = updates;
        self.apply();
        Ok(())
    }

    fn on_caught_up(&mut self, metrics: &Metrics) {
        if self.view.is_ready() {
            return; // partitions added later: it serves already
        }
        let accounts = self.view.read().len();
        tracing::info!(
            accounts,
            seconds = self.started.elapsed().as_secs_f64(),
            "view: caught up; serving"
        );
        self.view.set_ready(true);
        metrics.view.ready(true);
    }

    fn sink(&mut self) -> Option<&mut dyn Sink> {
        Some(&mut self.sink)
    }
}

#[cfg(test)]
mod skip_log_tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn skipped_records_are_said_once_a_second_with_how_many_more() {
        let mut log = SkipLog::default();
        let t0 = Instant::now();
        assert_eq!(log.due(t0), Some(0), "the first is said at once");
        for ms in [1, 200, 999] {
            assert_eq!(log.due(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(log.due(t0 + Duration::from_millis(1_000)), Some(3));
        assert_eq!(log.due(t0 + Duration::from_millis(1_001)), None);
        assert_eq!(log.due(t0 + Duration::from_secs(5)), Some(1));
    }
}
