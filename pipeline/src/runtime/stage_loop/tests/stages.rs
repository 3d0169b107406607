//! A stage for the loop's tests: copies each record to its output (or, as
//! a sink, buffers it), and fails when told to.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use super::fakes::Tp;
use crate::runtime::sink::{ReadRange, Sink, SinkFailure};
use crate::runtime::trace::TraceCause;
use crate::runtime::{AssignedPartition, InRecord, OutRecord, Partitions, Stage, StageError};

/// What a stage was told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Told {
    Assign(Vec<(Tp, Option<i64>)>),
    Revoke(Vec<Tp>),
    Rewind,
}

/// A stage that copies each record to `out` (or, as a sink, buffers it),
/// and fails when told to.
#[derive(Default)]
pub struct FakeStage {
    pub told: Vec<Told>,
    /// Errors for the next batches, in order.
    pub process_failures: VecDeque<StageError>,
    /// Set for a sink stage.
    pub sink: Option<FakeSink>,
    pub processed: u64,
    /// The size of each batch processed.
    pub batches: Vec<usize>,
    /// How many records it had processed each time it was told it caught up.
    pub caught_up: Vec<u64>,
}

/// A sink that keeps rows and offsets "durably" in memory.
#[derive(Default)]
pub struct FakeSink {
    pub buffer: Vec<String>,
    pub rows: Vec<String>,
    pub offsets: BTreeMap<Tp, i64>,
    pub commit_failures: VecDeque<SinkFailure>,
    /// How many of the next reads of the sink's offsets fail.
    pub positions_failures: u32,
    pub commits: Vec<(&'static str, Vec<ReadRange>)>,
    pub refused: Vec<(Tp, bool)>,
    /// Held in memory only (rebuilt at every start), as the view's.
    pub in_memory: bool,
}

impl FakeStage {
    pub fn sink() -> Self {
        Self {
            sink: Some(FakeSink::default()),
            ..Self::default()
        }
    }
}

fn text(r: &InRecord<'_>) -> String {
    String::from_utf8_lossy(r.payload.unwrap_or_default()).into()
}

impl Stage for FakeStage {
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        if let Some(e) = self.process_failures.pop_front() {
            return Err(e);
        }
        self.processed += batch.len() as u64;
        self.batches.push(batch.len());
        for r in batch {
            let value = text(r);
            match &mut self.sink {
                Some(_) if value.ends_with(":bad") => out.push(dead(r)),
                Some(sink) => sink.buffer.push(value),
                None => out.push(OutRecord {
                    topic: "out".into(),
                    partition: None,
                    key: None,
                    payload: Some(value.into_bytes()),
                    headers: Vec::new(),
                    timestamp_ms: None,
                    trace: TraceCause::None,
                }),
            }
        }
        Ok(())
    }

    fn on_assign(&mut self, partitions: &[AssignedPartition]) {
        self.told.push(Told::Assign(
            partitions
                .iter()
                .map(|p| ((p.topic.clone(), p.partition), p.committed))
                .collect(),
        ));
    }

    fn on_revoke(&mut self, partitions: &Partitions) {
        self.told.push(Told::Revoke(partitions.to_vec()));
    }

    fn on_rewind(&mut self, _assigned: &[AssignedPartition]) {
        self.told.push(Told::Rewind);
        if let Some(sink) = &mut self.sink {
            sink.buffer.clear();
        }
    }

    fn on_caught_up(&mut self, _metrics: &crate::runtime::Metrics) {
        self.caught_up.push(self.processed);
    }

    fn sink(&mut self) -> Option<&mut dyn Sink> {
        self.sink.as_mut().map(|s| s as &mut dyn Sink)
    }
}

fn dead(r: &InRecord<'_>) -> OutRecord {
    OutRecord {
        topic: "dlq".into(),
        partition: None,
        key: None,
        payload: r.payload.map(<[u8]>::to_vec),
        headers: vec![(
            crate::runtime::dead_letter::REASON_HEADER.to_owned(),
            b"undecodable".to_vec(),
        )],
        timestamp_ms: None,
        trace: TraceCause::None,
    }
}

impl Sink for FakeSink {
    fn positions(&mut self, partitions: &[Tp]) -> Result<Vec<Option<i64>>, StageError> {
        if self.positions_failures > 0 {
            self.positions_failures -= 1;
            return Err(StageError::external("test", "the catalog is unreachable"));
        }
        Ok(partitions
            .iter()
            .map(|p| self.offsets.get(p).copied())
            .collect())
    }

    fn due(&self, _now: Instant, progress: bool) -> Option<&'static str> {
        (self.buffer.len() >= 4 || (progress && self.buffer.is_empty())).then_some("size")
    }

    fn commit(&mut self, reason: &'static str, ranges: &[ReadRange]) -> Result<(), SinkFailure> {
        if let Some(f) = self.commit_failures.pop_front() {
            return Err(f);
        }
        for r in ranges {
            let key = (r.topic.clone(), r.partition);
            if self.offsets.get(&key).copied() != r.from {
                return Err(SinkFailure::Conflict(format!("{key:?} moved")));
            }
            self.offsets.insert(key, r.to);
        }
        self.rows.append(&mut self.buffer);
        self.commits.push((reason, ranges.to_vec()));
        Ok(())
    }

    fn refused(&mut self, topic: &str, partition: i32, refused: bool) {
        self.refused.push(((topic.to_owned(), partition), refused));
    }

    fn is_durable(&self) -> bool {
        !self.in_memory
    }
}
