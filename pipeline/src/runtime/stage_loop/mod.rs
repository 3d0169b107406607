//! The one loop every consuming stage runs: poll a batch, hand it to the
//! stage, commit, and handle rebalances, fencing and failures the same way
//! for all.
//!
//! Design (Kafka's KIP-98 transactions with KIP-447 group fencing):
//! - one consumer in the stage's group (`read_committed`, no auto-commit,
//!   static membership with the copy's id, KIP-345);
//! - a Kafka-to-Kafka stage commits per batch in one transaction: its
//!   outputs and the batch's next offsets (carrying the group metadata, so a
//!   copy that lost its partitions is fenced by the coordinator), visible
//!   together or not at all ([`transaction`]);
//! - a sink stage ([`super::Stage::sink`]) commits through its sink when the
//!   sink says so, and reads each partition from the sink's own offsets
//!   ([`sink_step`], [`super::sink`]);
//! - records polled before a rebalance are dropped, not processed: they
//!   come again from the committed offsets to whichever copy owns them now;
//! - a failure the stage or the producer says can be retried rewinds: the
//!   open transaction is aborted (or the sink's unwritten state dropped),
//!   the consumer goes back to the committed offsets, the stage is told
//!   ([`super::Stage::on_rewind`]) and the batch comes again after a
//!   back-off. A fenced copy, or an error nobody can retry, stops the loop.
//!
//! The loop talks to Kafka through two ports, [`Source`] and [`Output`];
//! its unit tests run it on in-memory ones.

mod catch_up;
mod sink_step;
mod transaction;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use kusanagi_connectors::kafka::KafkaSettings;

use super::kafka::{KafkaOutput, KafkaSource};
use super::output::{Output, OutputFailure};
use super::sink::Positions;
use super::source::{Consumed, PollError, RebalanceEvent, Source};
use super::{Backoff, Metrics, OutRecord, RuntimeError, Shutdown, Stage, StageError};

/// How a stage's loop runs.
#[derive(Debug, Clone)]
pub struct LoopConfig {
    /// The stage's name (metrics label, logs).
    pub stage: &'static str,
    /// Topics consumed.
    pub input_topics: Vec<String>,
    /// The consumer group; copies of a stage share it.
    pub group_id: String,
    /// Stable per copy: `<group>-<instance id>`. The consumer's static
    /// group membership id and, for a Kafka-to-Kafka stage, the producer's
    /// `transactional.id`.
    pub transactional_id: String,
    /// Most records in one batch.
    pub batch_max_records: usize,
    /// Longest wait for a batch to fill once its first record arrived;
    /// after it, the batch still takes what the consumer already holds,
    /// without waiting (zero: only that).
    pub batch_max_wait: Duration,
}

/// Why a step of the loop did not complete.
#[derive(Debug)]
enum Failure {
    /// Rewind and try again; after a back-off when `back_off`.
    Retry { why: String, back_off: bool },
    /// Stop the loop.
    Stop(RuntimeError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retry { why, .. } => f.write_str(why),
            Failure::Stop(e) => e.fmt(f),
        }
    }
}

impl Failure {
    fn output(e: OutputFailure, stage: &'static str, transactional_id: &str) -> Self {
        match e {
            OutputFailure::Abortable { .. } => Failure::Retry {
                why: e.to_string(),
                back_off: true,
            },
            OutputFailure::Fenced { .. } => Failure::Stop(RuntimeError::Fenced {
                stage,
                transactional_id: transactional_id.to_owned(),
            }),
            OutputFailure::Fatal { operation, detail } => Failure::Stop(RuntimeError::Fatal {
                stage,
                operation,
                detail,
            }),
        }
    }

    fn stage(e: StageError) -> Self {
        if e.is_retriable() {
            Failure::Retry {
                why: e.to_string(),
                back_off: true,
            }
        } else {
            Failure::Stop(e.into())
        }
    }
}

/// The loop of one stage copy. Blocking: run it on its own thread.
pub struct StageLoop<S, Src, Out> {
    stage: S,
    config: LoopConfig,
    metrics: Metrics,
    source: Src,
    output: Out,
    /// The partitions this copy owns, as the rebalances said.
    owned: BTreeSet<(String, i32)>,
    /// For a sink stage: where each partition stands.
    positions: Option<Positions>,
    /// For a sink stage: partitions this loop paused because the sink could
    /// not say where to read them from.
    sink_paused: BTreeSet<(String, i32)>,
    /// For a sink stage: what it sent (dead letters) since its last
    /// commit, counted in the metrics once the commit holds.
    sink_sent: Vec<OutRecord>,
    /// For a sink stage: what it still has to read of what its partitions
    /// held when placed.
    catch_up: catch_up::CatchUp,
    backoff: Backoff,
}

impl<S: Stage> StageLoop<S, KafkaSource, KafkaOutput> {
    /// Creates the Kafka clients (a transactional producer, fencing any
    /// predecessor with the same id, unless the stage is a sink) and
    /// subscribes.
    pub fn kafka(
        mut stage: S,
        settings: &KafkaSettings,
        config: LoopConfig,
        metrics: Metrics,
    ) -> Result<Self, RuntimeError> {
        let name = config.stage;
        let output = if stage.sink().is_some() {
            KafkaOutput::plain(name, settings)?
        } else {
            KafkaOutput::transactional(name, settings, &config.transactional_id)?
        };
        let source = KafkaSource::subscribe(
            name,
            settings,
            &config.group_id,
            &config.transactional_id,
            &config.input_topics,
            &metrics,
        )?;
        tracing::info!(
            stage = name,
            group = %config.group_id,
            instance = %config.transactional_id,
            topics = ?config.input_topics,
            "stage started"
        );
        Ok(Self::new(stage, config, metrics, source, output))
    }
}

impl<S: Stage, Src: Source, Out: Output<Src::Group>> StageLoop<S, Src, Out> {
    /// A loop of `stage` on `source` and `output`.
    pub fn new(
        mut stage: S,
        config: LoopConfig,
        metrics: Metrics,
        source: Src,
        output: Out,
    ) -> Self {
        let positions = stage.sink().map(|_| Positions::default());
        Self {
            stage,
            config,
            metrics,
            source,
            output,
            owned: BTreeSet::new(),
            positions,
            sink_paused: BTreeSet::new(),
            sink_sent: Vec::new(),
            catch_up: catch_up::CatchUp::default(),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
        }
    }

    /// Runs until `shutdown` is triggered or an error that retrying the
    /// batch cannot mend. A durable sink stage reads what is already there
    /// and commits it before it returns.
    pub fn run(&mut self, shutdown: &Shutdown) -> Result<(), RuntimeError> {
        let mut out = Vec::new();
        while !shutdown.is_triggered() {
            let batch = self.poll_batch(shutdown)?;
            let step = if self.positions.is_some() {
                self.sink_step(batch, &mut out)
            } else if batch.is_empty() {
                continue;
            } else {
                self.commit_batch(&batch, &mut out)
            };
            self.settle(step, shutdown)?;
        }
        // A sink held in memory is lost with the process: nothing to drain.
        if self.positions.is_some() && self.stage.sink().is_some_and(|s| s.is_durable()) {
            self.finish_sink(&mut out);
        }
        tracing::info!(stage = self.config.stage, "stage stopping");
        self.source.close();
        Ok(())
    }

    /// After a step: go on, rewind and back off, or stop.
    fn settle(
        &mut self,
        step: Result<(), Failure>,
        shutdown: &Shutdown,
    ) -> Result<(), RuntimeError> {
        match step {
            Ok(()) => {
                self.backoff.reset();
                Ok(())
            }
            Err(Failure::Stop(e)) => Err(e),
            Err(Failure::Retry { why, back_off }) => {
                let stage = self.config.stage;
                if self.positions.is_none() {
                    self.metrics.transaction_aborted(stage);
                }
                let failures = self.backoff.failures() + 1;
                tracing::warn!(stage, %why, failures, "batch not committed; rewinding");
                self.rewind()?;
                if back_off {
                    shutdown.sleep(self.backoff.next_delay());
                }
                Ok(())
            }
        }
    }

    /// Polls until the batch is full, its wait is over and the consumer has
    /// nothing more at hand, or shutdown. Records polled before a rebalance
    /// are dropped (see the module notes).
    fn poll_batch(&mut self, shutdown: &Shutdown) -> Result<Vec<Consumed>, RuntimeError> {
        let mut batch: Vec<(u64, Consumed)> = Vec::new();
        let mut deadline: Option<Instant> = None;
        while !shutdown.is_triggered() {
            let timeout = match deadline {
                None => Duration::from_millis(100),
                Some(d) => d.saturating_duration_since(Instant::now()),
            };
            let polled = self.source.poll(timeout);
            let got = matches!(polled, Some(Ok(_)));
            let generation = self.source.generation();
            let placed = self.deliver_rebalances()?;
            match polled {
                // A sink's partition taken on in this poll was sought to the
                // sink's offset after this record was fetched: it comes
                // again if it is still to be read.
                Some(Ok(m)) if placed.contains(&(m.topic.clone(), m.partition)) => {}
                Some(Ok(m)) => {
                    batch.push((generation, m));
                    deadline.get_or_insert_with(|| Instant::now() + self.config.batch_max_wait);
                    if batch.len() >= self.config.batch_max_records {
                        break;
                    }
                }
                Some(Err(e)) => self.poll_error(e)?,
                None if self.positions.is_some() && deadline.is_none() => break,
                None => {}
            }
            if !got && deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let current = self.source.generation();
        Ok(batch
            .into_iter()
            .filter(|(g, _)| *g == current)
            .map(|(_, m)| m)
            .collect())
    }

    fn poll_error(&self, e: PollError) -> Result<(), RuntimeError> {
        let stage = self.config.stage;
        match e {
            PollError::Fenced => Err(RuntimeError::Fenced {
                stage,
                transactional_id: self.config.transactional_id.clone(),
            }),
            PollError::Fatal(detail) => Err(RuntimeError::Fatal {
                stage,
                operation: "consume",
                detail,
            }),
            PollError::Transient(detail) => {
                tracing::warn!(stage, error = %detail, "consumer error");
                Ok(())
            }
        }
    }

    /// Tells the stage (and, for a sink, its positions) what the
    /// rebalances seen while polling changed; returns the partitions a sink
    /// took on (sought to its offsets).
    fn deliver_rebalances(&mut self) -> Result<BTreeSet<(String, i32)>, RuntimeError> {
        let mut placed = BTreeSet::new();
        let events = self.source.rebalances();
        if events.is_empty() {
            return Ok(placed);
        }
        let stage = self.config.stage;
        for event in events {
            match event {
                RebalanceEvent::Assigned(p) => {
                    tracing::info!(stage, partitions = ?p, "partitions assigned");
                    self.owned.extend(p.iter().cloned());
                    if self.positions.is_some() {
                        self.sink_assigned(&p)?;
                        placed.extend(p);
                    } else {
                        let assigned = self.source.committed(&p)?;
                        self.stage.on_assign(&assigned);
                    }
                }
                RebalanceEvent::Revoked(p) => {
                    tracing::info!(stage, partitions = ?p, "partitions revoked");
                    if self.positions.is_some() {
                        self.sink_revoked(&p)?;
                    }
                    for part in &p {
                        self.owned.remove(part);
                    }
                    self.stage.on_revoke(&p);
                }
                RebalanceEvent::Lost => {
                    tracing::warn!(stage, "every partition lost in a failed rebalance");
                    let lost: Vec<(String, i32)> =
                        std::mem::take(&mut self.owned).into_iter().collect();
                    if self.positions.is_some() {
                        self.sink_lost();
                    }
                    self.stage.on_revoke(&lost);
                }
            }
        }
        self.metrics.assigned_partitions(stage, self.owned.len());
        Ok(placed)
    }

    /// Undoes what was not committed: aborts the transaction and moves the
    /// consumer back to the committed offsets (or the sink's).
    fn rewind(&mut self) -> Result<(), RuntimeError> {
        if self.positions.is_some() {
            self.sink_rewind();
            return Ok(());
        }
        let stage = self.config.stage;
        self.output.abort().map_err(|e| {
            match Failure::output(e, stage, &self.config.transactional_id) {
                Failure::Stop(stop) => stop,
                Failure::Retry { why, .. } => RuntimeError::Fatal {
                    stage,
                    operation: "abort_transaction",
                    detail: why,
                },
            }
        })?;
        let owned = self.source.assignment()?;
        let committed = self.source.committed(&owned)?;
        for p in &committed {
            if !self.source.seek(&p.topic, p.partition, p.committed) {
                // A seek fails when the fetcher is not started yet; the
                // stage state is reset either way, so restart the clients
                // rather than continue from a guess.
                return Err(RuntimeError::Fatal {
                    stage,
                    operation: "seek",
                    detail: format!("cannot seek {}/{}", p.topic, p.partition),
                });
            }
        }
        self.stage.on_rewind(&committed);
        Ok(())
    }
}
