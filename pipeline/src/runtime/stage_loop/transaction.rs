//! A Kafka-to-Kafka stage's step: process the batch, then produce its
//! outputs and commit them with the batch's offsets in one transaction.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use super::{Failure, StageLoop};
use crate::runtime::output::{NextOffset, Output};
use crate::runtime::source::{Consumed, Source};
use crate::runtime::{InRecord, OutRecord, Stage, dead_letter, trace};

impl<S: Stage, Src: Source, Out: Output<Src::Group>> StageLoop<S, Src, Out> {
    /// Processes `batch` and commits it; on an error nothing of it is
    /// visible.
    pub(super) fn commit_batch(
        &mut self,
        batch: &[Consumed],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let records: Vec<InRecord<'_>> = batch.iter().map(Consumed::as_in_record).collect();
        out.clear();
        let wall_start = SystemTime::now();
        self.stage.process(&records, out).map_err(Failure::stage)?;
        let spans = trace::link_batch(self.config.stage, out, wall_start);
        let result = self.transact(&records, out);
        match &result {
            Ok(()) => spans.end(true, None),
            Err(Failure::Retry { why, .. }) => spans.end(false, Some(why)),
            Err(Failure::Stop(e)) => spans.end(false, Some(&e.to_string())),
        }
        if result.is_ok() {
            self.committed(&records, out, started);
        }
        result
    }

    /// Produces `out` and commits it with the next offsets of `records`.
    fn transact(&mut self, records: &[InRecord<'_>], out: &[OutRecord]) -> Result<(), Failure> {
        let offsets: Vec<NextOffset> = next_offsets(records)
            .into_iter()
            .map(|((topic, partition), offset)| NextOffset {
                metadata: self.stage.commit_metadata(topic, partition),
                topic: topic.to_owned(),
                partition,
                offset,
            })
            .collect();
        let group = self.source.group().ok_or_else(|| Failure::Retry {
            why: "the consumer has no group metadata yet".into(),
            back_off: true,
        })?;
        let (stage, id) = (self.config.stage, &self.config.transactional_id);
        self.output
            .transact(&group, out, &offsets)
            .map_err(|e| Failure::output(e, stage, id))
    }

    /// After a commit: the stage's hook and the loop's metrics.
    fn committed(&mut self, records: &[InRecord<'_>], out: &[OutRecord], started: Instant) {
        let stage = self.config.stage;
        self.stage.on_commit(&self.metrics);
        self.metrics
            .transaction_committed(stage, started.elapsed().as_secs_f64());
        for (topic, n) in count_by_topic(records.iter().map(|r| r.topic)) {
            self.metrics.records_in(stage, topic, n);
        }
        self.count_outputs(out.iter());
    }

    /// Counts produced records and dead letters.
    pub(super) fn count_outputs<'a>(&self, out: impl Iterator<Item = &'a OutRecord> + Clone) {
        let stage = self.config.stage;
        for (topic, n) in count_by_topic(out.clone().map(|r| r.topic.as_str())) {
            self.metrics.records_out(stage, topic, n);
        }
        for reason in out.filter_map(dead_letter_reason) {
            self.metrics.dead_letter(stage, reason);
        }
    }
}

/// For each (topic, partition) in the batch, the offset after its last record.
fn next_offsets<'a>(records: &[InRecord<'a>]) -> BTreeMap<(&'a str, i32), i64> {
    let mut next: BTreeMap<(&str, i32), i64> = BTreeMap::new();
    for r in records {
        let e = next.entry((r.topic, r.partition)).or_insert(0);
        *e = (*e).max(r.offset + 1);
    }
    next
}

/// The reason a dead letter carries, if `r` is one.
pub(super) fn dead_letter_reason(r: &OutRecord) -> Option<&str> {
    r.headers
        .iter()
        .find(|(k, _)| k == dead_letter::REASON_HEADER)
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

fn count_by_topic<'a>(topics: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, u64> {
    let mut counts = BTreeMap::new();
    for t in topics {
        *counts.entry(t).or_insert(0) += 1;
    }
    counts
}
