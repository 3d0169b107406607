//! A sink stage's step: admit the batch's records by the sink's positions,
//! process them, send the stage's outputs, and commit through the sink
//! when it says so (see [`crate::runtime::sink`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::catch_up::Check;
use super::{Failure, StageLoop};
use crate::runtime::output::Output;
use crate::runtime::sink::PartitionState;
use crate::runtime::sink::{Admit, Placement, Positions, Sink, SinkFailure};
use crate::runtime::source::{Consumed, Source};
use crate::runtime::{AssignedPartition, InRecord, OutRecord, RuntimeError, Stage};

/// On shutdown, a sink reads on until nothing came for this long...
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// ...but no longer than this.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

impl<S: Stage, Src: Source, Out: Output<Src::Group>> StageLoop<S, Src, Out> {
    fn positions(&mut self) -> &mut Positions {
        self.positions.as_mut().expect("a sink stage has positions")
    }

    fn sink(&mut self) -> &mut dyn Sink {
        self.stage.sink().expect("a sink stage has a sink")
    }

    /// One turn: place what waits to be placed, take the batch, commit when
    /// due.
    pub(super) fn sink_step(
        &mut self,
        batch: Vec<Consumed>,
        out: &mut Vec<OutRecord>,
    ) -> Result<(), Failure> {
        let placed = self.place_unplaced()?;
        // Fetched before the seek to the sink's offset: they come again.
        let batch = batch
            .into_iter()
            .filter(|r| !placed.contains(&(r.topic.clone(), r.partition)))
            .collect();
        self.take(batch, out)?;
        self.check_caught_up();
        self.sink().tick();
        let progress = self.positions().has_progress() || !self.sink_sent.is_empty();
        if let Some(reason) = self.sink().due(Instant::now(), progress) {
            self.sink_commit(reason)?;
        }
        Ok(())
    }

    /// Admits `batch`'s records, processes those taken and sends what the
    /// stage made of them; partitions whose records came back from before
    /// where this copy read are committed, then refused.
    fn take(&mut self, batch: Vec<Consumed>, out: &mut Vec<OutRecord>) -> Result<(), Failure> {
        let mut taken = Vec::with_capacity(batch.len());
        let mut went_back: Vec<((String, i32), i64, i64)> = Vec::new();
        // Partitions whose later records in this batch are not to be taken:
        // sought again (they were fetched before the seek and come again
        // from the sink's offset), or going to be refused.
        let mut skip = BTreeSet::new();
        for r in batch {
            let key = (r.topic.clone(), r.partition);
            if skip.contains(&key) {
                continue;
            }
            match self.positions().admit(&key, r.offset) {
                Admit::Take => taken.push(r),
                Admit::Drop => {}
                Admit::Reseek(next) => {
                    if !self.source.seek(&key.0, key.1, next) {
                        self.positions().seek_failed(&key);
                    }
                    skip.insert(key);
                }
                Admit::WentBack { read_to } if !self.sink().is_durable() => {
                    // What it holds came from records the broker lost:
                    // start again and rebuild from the beginning.
                    return Err(Failure::Stop(RuntimeError::WentBack {
                        stage: self.config.stage,
                        topic: key.0,
                        partition: key.1,
                        read_to,
                        came_back_at: r.offset,
                    }));
                }
                Admit::WentBack { read_to } => {
                    skip.insert(key.clone());
                    went_back.push((key, read_to, r.offset));
                }
            }
        }
        out.clear();
        if !taken.is_empty() {
            let records: Vec<InRecord<'_>> = taken.iter().map(Consumed::as_in_record).collect();
            self.stage.process(&records, out).map_err(Failure::stage)?;
            let (stage, id) = (self.config.stage, self.config.transactional_id.clone());
            self.output
                .send(out)
                .map_err(|e| Failure::output(e, stage, &id))?;
            self.sink_sent.append(out);
        }
        for (key, read_to, offset) in went_back {
            tracing::warn!(
                stage = self.config.stage,
                topic = %key.0,
                partition = key.1,
                read_to,
                came_back_at = offset,
                "the partition's records came again from an earlier offset"
            );
            // What was read is real (acknowledged before the broker lost
            // it): keep it, then refuse the partition.
            self.sink_commit("broker")?;
            let log_end = self
                .source
                .log_bounds(&key.0, key.1)
                .map_or(offset, |b| b.high);
            self.refuse(&key, Some(read_to), log_end);
        }
        Ok(())
    }

    /// Makes what was read durable through the sink.
    fn sink_commit(&mut self, reason: &'static str) -> Result<(), Failure> {
        let (stage, id) = (self.config.stage, self.config.transactional_id.clone());
        // Dead letters first: a commit must not move past one the broker
        // did not take.
        self.output
            .flush()
            .map_err(|e| Failure::output(e, stage, &id))?;
        let ranges = self.positions().ranges();
        if ranges.is_empty() {
            return Ok(()); // nothing read since the last commit
        }
        match self.sink().commit(reason, &ranges) {
            Ok(()) => {
                let next = self.positions().committed();
                // Only so that lag shows in the usual tools: the sink is
                // where a copy starts from.
                self.source.commit_async(&next);
                let sent = std::mem::take(&mut self.sink_sent);
                self.count_outputs(sent.iter());
                self.stage.on_commit(&self.metrics);
                Ok(())
            }
            Err(SinkFailure::Conflict(why)) => Err(Failure::Retry {
                why,
                back_off: false,
            }),
            Err(SinkFailure::Failed(e)) => Err(Failure::stage(e)),
        }
    }

    /// Places the partitions waiting for the sink's offsets; on a failure
    /// they stay paused, and the next turn tries again.
    fn place_unplaced(&mut self) -> Result<BTreeSet<(String, i32)>, Failure> {
        let parts = self.positions().unplaced();
        if parts.is_empty() {
            return Ok(BTreeSet::new());
        }
        let durable = match self.sink().positions(&parts) {
            Ok(d) => d,
            Err(e) => {
                for (topic, partition) in &parts {
                    if self.sink_paused.insert((topic.clone(), *partition)) {
                        self.source.pause(topic, *partition);
                    }
                }
                return Err(Failure::stage(e));
            }
        };
        let mut assigned = Vec::with_capacity(parts.len());
        let report_aged_out = self.sink().is_durable();
        for (part, durable) in parts.iter().zip(durable) {
            let bounds = self.source.log_bounds(&part.0, part.1);
            match self
                .positions()
                .place(part, durable, bounds, report_aged_out)
            {
                Placement::Read(next) => {
                    self.catch_up
                        .placed(part.clone(), durable, bounds, Instant::now());
                    // Resume first: librdkafka restarts a resumed partition
                    // at the application's position, undoing a seek made
                    // before. Only what this loop paused is resumed.
                    if self.sink_paused.remove(part) {
                        self.source.resume(&part.0, part.1);
                    }
                    if !self.source.seek(&part.0, part.1, next) {
                        self.positions().seek_failed(part);
                    }
                    assigned.push(AssignedPartition {
                        topic: part.0.clone(),
                        partition: part.1,
                        committed: durable,
                        metadata: None,
                    });
                }
                Placement::Refuse { durable, log_end } => self.refuse(part, durable, log_end),
            }
        }
        self.stage.on_assign(&assigned);
        Ok(parts.into_iter().collect())
    }

    /// Tells the stage once it has read what its partitions held when they
    /// were placed ([`Stage::on_caught_up`]); logs the partitions still
    /// behind every few seconds.
    fn check_caught_up(&mut self) {
        if !self.catch_up.is_pending() {
            return;
        }
        for part in self.catch_up.unknown() {
            let from = match self.positions().state(&part.0, part.1) {
                Some(PartitionState::Reading { durable, .. }) => durable,
                _ => None,
            };
            if let Some(bounds) = self.source.log_bounds(&part.0, part.1) {
                self.catch_up.set_end(part, from, bounds);
            }
        }
        // A position is trusted once the seek to the sink's offset held.
        let positions = self.positions.as_ref().expect("a sink stage has positions");
        let at: BTreeMap<(String, i32), i64> = self
            .source
            .positions()
            .into_iter()
            .filter(|(p, _)| {
                matches!(
                    positions.state(&p.0, p.1),
                    Some(PartitionState::Reading {
                        seek_pending: false,
                        ..
                    })
                )
            })
            .collect();
        let stage = self.config.stage;
        match self.catch_up.check(&at, Instant::now()) {
            Check::CaughtUp(after) => {
                if !after.is_zero() {
                    tracing::info!(
                        stage,
                        seconds = after.as_secs_f64(),
                        "caught up with what its partitions held when assigned"
                    );
                }
                self.stage.on_caught_up(&self.metrics);
            }
            Check::Behind(Some(behind)) => {
                tracing::info!(stage, behind = %behind.join(", "), "still catching up");
            }
            Check::Behind(None) | Check::Quiet => {}
        }
    }

    /// Stops reading `part`: its log ends at `log_end`, below `durable`.
    /// The records the broker takes next reuse offsets the sink holds;
    /// reading on would skip them silently.
    fn refuse(&mut self, part: &(String, i32), durable: Option<i64>, log_end: i64) {
        self.catch_up.forget(part);
        self.source.pause(&part.0, part.1);
        self.positions().refuse(part, log_end);
        self.sink().refused(&part.0, part.1, true);
        tracing::error!(
            stage = self.config.stage,
            topic = %part.0,
            partition = part.1,
            durable = durable.unwrap_or(0),
            log_end,
            "the broker's log of this partition went back below the offset already archived: \
             the broker lost records it had acknowledged, or is not the one the archive was \
             made from. This partition is not archived until an operator decides; see \
             docs/operators.md, \"The broker went backwards\""
        );
    }

    /// Partitions given to this copy: read from the sink's offsets.
    pub(super) fn sink_assigned(&mut self, parts: &[(String, i32)]) -> Result<(), RuntimeError> {
        for p in parts {
            self.positions().assign(p.clone());
        }
        match self.place_unplaced() {
            Ok(_) => Ok(()),
            Err(Failure::Stop(e)) => Err(e),
            Err(Failure::Retry { why, .. }) => {
                tracing::warn!(stage = self.config.stage, error = %why, "cannot read the sink's offsets; retrying");
                Ok(())
            }
        }
    }

    /// Partitions taken away: commit what was read of them first (if their
    /// new owner was faster, the sink refuses it), then forget them.
    pub(super) fn sink_revoked(&mut self, parts: &[(String, i32)]) -> Result<(), RuntimeError> {
        match self.sink_commit("rebalance") {
            Ok(()) => {}
            Err(Failure::Stop(e)) => return Err(e),
            Err(Failure::Retry { why, .. }) => {
                tracing::warn!(stage = self.config.stage, error = %why, "cannot commit before the revoke; its records are read again by their next owner");
                self.sink_rewind();
            }
        }
        for p in parts {
            self.release(p);
        }
        Ok(())
    }

    /// Every partition lost at once: nothing read can be committed.
    pub(super) fn sink_lost(&mut self) {
        self.catch_up.clear();
        self.stage.on_rewind(&[]);
        self.sink_sent.clear();
        for p in self.positions().clear() {
            self.source.resume(&p.0, p.1);
            self.sink().refused(&p.0, p.1, false);
        }
        for p in std::mem::take(&mut self.sink_paused) {
            self.source.resume(&p.0, p.1);
        }
    }

    /// Forgets `p`; a refused partition is resumed (its next owner checks
    /// it again).
    fn release(&mut self, p: &(String, i32)) {
        self.catch_up.forget(p);
        if self.positions().remove(p) {
            self.source.resume(&p.0, p.1);
            self.sink().refused(&p.0, p.1, false);
        }
        if self.sink_paused.remove(p) {
            self.source.resume(&p.0, p.1);
        }
    }

    /// After a failed commit: drop what was read and read every partition
    /// again from the sink's offsets (placed on the next turn).
    pub(super) fn sink_rewind(&mut self) {
        self.stage.on_rewind(&[]);
        self.sink_sent.clear();
        let positions = self.positions();
        for p in positions.partitions() {
            if !matches!(
                positions.state(&p.0, p.1),
                Some(PartitionState::Refused { .. })
            ) {
                positions.assign(p);
            }
        }
    }

    /// On shutdown: reads what is already there until nothing came for a
    /// while, then commits it, so that a clean stop leaves nothing behind.
    pub(super) fn finish_sink(&mut self, out: &mut Vec<OutRecord>) {
        // Partitions left unplaced by a failed commit are placed first, so
        // that what is drained of them is archived too.
        let mut placed = self.place_unplaced().unwrap_or_default();
        let end = Instant::now() + DRAIN_LIMIT;
        let mut last = Instant::now();
        let mut drained: Vec<(u64, Consumed)> = Vec::new();
        while last.elapsed() < DRAIN_QUIET && Instant::now() < end {
            let polled = self.source.poll(Duration::from_millis(50));
            let generation = self.source.generation();
            match self.deliver_rebalances() {
                Ok(p) => placed.extend(p),
                Err(_) => break,
            }
            if let Some(Ok(m)) = polled {
                drained.push((generation, m));
                last = Instant::now();
            }
        }
        // As in `poll_batch`: what was fetched before a rebalance, or before
        // its partition was sought to the sink's offset, comes again.
        let current = self.source.generation();
        let drained: Vec<Consumed> = drained
            .into_iter()
            .filter(|(g, m)| *g == current && !placed.contains(&(m.topic.clone(), m.partition)))
            .map(|(_, m)| m)
            .collect();
        let done = self
            .take(drained, out)
            .and_then(|()| self.sink_commit("shutdown"));
        if let Err(e) = done {
            let why = e.to_string();
            tracing::warn!(stage = self.config.stage, error = %why, "cannot commit on shutdown; the next start reads it again");
        }
    }
}
