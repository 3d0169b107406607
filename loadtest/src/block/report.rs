//! The time-to-block figures: text on stdout, JSON with `--json`.
//!
//! Time to block: the send of the suspicious trade (hand-over to the
//! producer, or the start of `POST /api/v1/events`) -> the first
//! withdrawal check that refuses (423, or 403 if banned). A check is
//! asked 1 ms after the previous one answered, so a figure can be late by
//! one check's round trip plus the sleep: 1-2 ms on an idle loopback, more
//! under load.

use std::fmt;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::drive::Sending;
use crate::report::LatencySummary;

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockReport {
    /// The run's id.
    pub run: String,
    /// `kafka` or `http`.
    pub via: &'static str,
    /// Background events per second asked for.
    pub background_rate: u64,
    /// Background events per second sent (between the first and the last).
    pub background_achieved: f64,
    /// Trials blocked in time.
    pub blocked: u64,
    /// Trials not blocked within the trial timeout.
    pub failed: u64,
    /// Time to block, when any trial was blocked.
    pub latency: Option<LatencySummary>,
    /// Where the time went, gap by gap.
    pub hops: Option<super::hops::Hops>,
}

impl BlockReport {
    /// The report of a run.
    pub fn new(
        run: &str,
        via: &'static str,
        background_rate: u64,
        background: Option<Sending>,
        latencies: &Histogram<u64>,
        failed: u64,
    ) -> Self {
        let background_achieved = background.filter(|s| s.sent >= 2).map_or(0.0, |s| {
            (s.sent - 1) as f64 / s.last.duration_since(s.first).as_secs_f64().max(1e-9)
        });
        Self {
            run: run.to_owned(),
            via,
            background_rate,
            background_achieved,
            blocked: latencies.len(),
            failed,
            latency: LatencySummary::of(latencies),
            hops: None,
        }
    }

    /// Every trial blocked.
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.blocked > 0
    }

    /// The JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "run": self.run,
            "via": self.via,
            "background_rate": self.background_rate,
            "background_achieved": self.background_achieved,
            "blocked": self.blocked,
            "failed": self.failed,
            "time_to_block_ms": self.latency.map(|l| json!({
                "p50": l.p50_ms, "p90": l.p90_ms, "p99": l.p99_ms,
                "p99_9": l.p999_ms, "max": l.max_ms, "mean": l.mean_ms,
            })),
            "hops": self.hops.as_ref().map(super::hops::Hops::to_json),
        })
    }
}

impl fmt::Display for BlockReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "block {}: trades through {}, {} background events/s asked, {:.0} sent",
            self.run, self.via, self.background_rate, self.background_achieved
        )?;
        writeln!(
            f,
            "  trials: {} blocked, {} not blocked in time",
            self.blocked, self.failed
        )?;
        match &self.latency {
            Some(l) => write!(
                f,
                "  time to block (ms): p50 {:.1} | p90 {:.1} | p99 {:.1} | p99.9 {:.1} | max {:.1} | mean {:.1}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.mean_ms
            )?,
            None => write!(f, "  no trial was blocked")?,
        }
        if let Some(h) = &self.hops {
            write!(f, "\n{h}")?;
        }
        Ok(())
    }
}
