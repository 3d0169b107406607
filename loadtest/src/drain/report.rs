//! The drain's figures: text on stdout, JSON with `--json`.
//!
//! - a stage's rate: N / seconds from the stages' start until it had
//!   committed all N (so the rate of a stage includes waiting for the
//!   stages before it: a stage cannot finish before its input does);
//! - end to end: N / the slowest stage's seconds;
//! - CPU per event: a thread group's CPU seconds over the whole drain,
//!   divided by N; the total over every group is what an event costs the
//!   process (the load test's own thread idles meanwhile).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::json;

use super::ceiling::Ceiling;

/// When one stage had committed every event.
#[derive(Debug, Clone, PartialEq)]
pub struct StageDrain {
    /// The stage.
    pub stage: &'static str,
    /// The topic counted.
    pub topic: String,
    /// Seconds from the stages' start.
    pub seconds: f64,
}

/// Everything one drain measured.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainReport {
    /// The run's id.
    pub run: String,
    /// Events preloaded.
    pub events: u64,
    /// Partitions of `events.raw`.
    pub partitions: i32,
    /// The bare broker on the same records.
    pub ceiling: Ceiling,
    /// Seconds to write the events to `events.raw`.
    pub preload_seconds: f64,
    /// Per stage, in data-flow order.
    pub stages: Vec<StageDrain>,
    /// CPU seconds per thread group during the drain.
    pub cpu_seconds: BTreeMap<String, f64>,
    /// Seconds from the stages' start until the last was done.
    pub wall_seconds: f64,
    /// Records dead-lettered by any stage (0 expected: every event is valid).
    pub dead_letters: u64,
    /// Cores the machine offers.
    pub cores: usize,
    /// Per stage: transactions committed during the drain and their mean
    /// time from the batch's start to the commit, in ms.
    pub transactions: Vec<(String, u64, f64)>,
}

impl DrainReport {
    /// End-to-end events per second: N over the slowest stage's time.
    pub fn events_per_second(&self) -> f64 {
        let slowest = self.stages.iter().map(|s| s.seconds).fold(0.0, f64::max);
        self.events as f64 / slowest.max(1e-9)
    }

    /// CPU microseconds per event of every group together.
    pub fn cpu_us_per_event(&self) -> f64 {
        self.cpu_seconds.values().sum::<f64>() * 1e6 / self.events as f64
    }

    /// Mean records per transaction of a stage that read all N events
    /// (ingest, screen, decide); `None` for the others.
    fn records_per_transaction(&self, stage: &str, committed: u64) -> Option<f64> {
        (committed > 0 && self.stages.iter().any(|s| s.stage == stage))
            .then(|| self.events as f64 / committed as f64)
    }

    /// The JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        let per_event = |s: f64| s * 1e6 / self.events as f64;
        json!({
            "run": self.run,
            "events": self.events,
            "partitions": self.partitions,
            "cores": self.cores,
            "ceiling": {
                "produce_seconds": self.ceiling.produce_seconds,
                "consume_seconds": self.ceiling.consume_seconds,
                "events_per_second": self.ceiling.events_per_second(self.events),
            },
            "preload_seconds": self.preload_seconds,
            "stages": self.stages.iter().map(|s| json!({
                "stage": s.stage,
                "topic": s.topic,
                "seconds": s.seconds,
                "events_per_second": self.events as f64 / s.seconds.max(1e-9),
            })).collect::<Vec<_>>(),
            "events_per_second": self.events_per_second(),
            "wall_seconds": self.wall_seconds,
            "cpu": self.cpu_seconds.iter().map(|(group, s)| json!({
                "group": group,
                "seconds": s,
                "us_per_event": per_event(*s),
            })).collect::<Vec<_>>(),
            "cpu_us_per_event": self.cpu_us_per_event(),
            "transactions": self.transactions.iter().map(|(stage, n, mean)| json!({
                "stage": stage,
                "committed": n,
                "mean_ms": mean,
                "records_per_transaction": self.records_per_transaction(stage, *n),
            })).collect::<Vec<_>>(),
            "dead_letters": self.dead_letters,
        })
    }
}

impl fmt::Display for DrainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.events as f64;
        writeln!(
            f,
            "drain {}: {} events, {} partitions, {} cores",
            self.run, self.events, self.partitions, self.cores
        )?;
        writeln!(
            f,
            "  bare broker: {:>9.0} events/s (produce {:.2} s, consume {:.2} s)",
            self.ceiling.events_per_second(self.events),
            self.ceiling.produce_seconds,
            self.ceiling.consume_seconds
        )?;
        for s in &self.stages {
            writeln!(
                f,
                "  {:<8} {:>9.0} events/s (all {} of `{}` committed after {:.2} s)",
                s.stage,
                n / s.seconds.max(1e-9),
                self.events,
                s.topic,
                s.seconds
            )?;
        }
        writeln!(
            f,
            "  end to end {:>7.0} events/s; {:.0} µs of CPU per event",
            self.events_per_second(),
            self.cpu_us_per_event()
        )?;
        let mut groups: Vec<(&String, &f64)> = self.cpu_seconds.iter().collect();
        groups.sort_by(|a, b| b.1.total_cmp(a.1));
        for (group, s) in groups.into_iter().filter(|(_, s)| **s > 0.0) {
            writeln!(
                f,
                "    {group:<16} {s:>7.2} s CPU, {:>6.1} µs/event, {:.2} cores",
                s * 1e6 / n,
                s / self.wall_seconds.max(1e-9)
            )?;
        }
        for (stage, n, mean) in &self.transactions {
            let per = self
                .records_per_transaction(stage, *n)
                .map_or(String::new(), |r| format!(", {r:.0} records"));
            writeln!(
                f,
                "    {stage} transactions: {n}, {mean:.1} ms{per} each on average"
            )?;
        }
        write!(f, "  dead letters: {}", self.dead_letters)
    }
}
