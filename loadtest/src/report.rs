//! The result of a run: the figures, the human-readable block printed on
//! stdout, the JSON form written with `--json`, and the pass/fail verdict.
//!
//! Definitions (also in `docs/loadtest.md`):
//! - achieved send rate: `(sent - 1) / (last hand-over - first hand-over)`,
//!   the rate between the first and the last event handed to the producer;
//! - throughput: `seen / (last event seen - first hand-over)`, events that
//!   became readable in `events` per second of the whole run, so a pipeline
//!   that falls behind shows a throughput below the target rate;
//! - latency: hand-over to the producer -> first read in `events` by a
//!   `read_committed` reader, percentiles from an HDR histogram (3
//!   significant digits);
//! - missing: sent but not seen by the end of the drain; duplicated: seen
//!   more than once. Either fails the run.

use std::fmt;

use hdrhistogram::Histogram;
use serde_json::json;

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    /// Events measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl LatencySummary {
    /// The percentiles of a histogram of microseconds; `None` when empty.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Some(Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1_000.0,
        })
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The run's event id prefix.
    pub run: String,
    /// `embedded` or `external`.
    pub mode: &'static str,
    /// The brokers' `bootstrap.servers`.
    pub bootstrap: String,
    /// The topic watched: `events` (through ingest) or `screenings`
    /// (through ingest and screen).
    pub observed: String,
    /// Partitions of the watched topic.
    pub partitions: usize,
    /// Requested events per second.
    pub target_rate: u64,
    /// Requested seconds of sending.
    pub duration_s: f64,
    /// Measured events handed to the producer.
    pub sent: u64,
    /// Seconds from the first to the last hand-over.
    pub send_seconds: f64,
    /// The largest delay of a hand-over behind its schedule, in ms.
    pub max_send_lag_ms: f64,
    /// Measured events seen in `events`, once each.
    pub seen: u64,
    /// Further sightings of measured events.
    pub duplicated: u64,
    /// Events with this run's prefix that were never sent.
    pub unexpected: u64,
    /// Records the producer reported as not delivered.
    pub delivery_failed: u64,
    /// Seconds from the first hand-over to the last event seen.
    pub measured_seconds: f64,
    /// Latency percentiles, when any event was seen.
    pub latency: Option<LatencySummary>,
    /// `std::thread::available_parallelism`.
    pub cpu_cores: usize,
}

/// Rounds to `digits` decimals (for the JSON form).
fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Report {
    /// Events handed to the producer per second, between the first and the
    /// last hand-over.
    pub fn achieved_send_rate(&self) -> f64 {
        if self.sent >= 2 && self.send_seconds > 0.0 {
            (self.sent - 1) as f64 / self.send_seconds
        } else {
            0.0
        }
    }

    /// Events readable in `events` per second, from the first hand-over to
    /// the last event seen.
    pub fn throughput(&self) -> f64 {
        if self.measured_seconds > 0.0 {
            self.seen as f64 / self.measured_seconds
        } else {
            0.0
        }
    }

    /// Throughput per CPU core.
    pub fn per_core(&self) -> f64 {
        self.throughput() / self.cpu_cores.max(1) as f64
    }

    /// Sent and never seen.
    pub fn missing(&self) -> u64 {
        self.sent.saturating_sub(self.seen)
    }

    /// Every event seen exactly once.
    pub fn passed(&self) -> bool {
        self.missing() == 0 && self.duplicated == 0 && self.unexpected == 0
    }

    /// The JSON form (`--json`); rates in events/s, times in ms unless the
    /// key says seconds.
    pub fn to_json(&self) -> serde_json::Value {
        let latency = self.latency.map(|l| {
            json!({
                "count": l.count,
                "p50": round(l.p50_ms, 3),
                "p90": round(l.p90_ms, 3),
                "p99": round(l.p99_ms, 3),
                "p99_9": round(l.p999_ms, 3),
                "max": round(l.max_ms, 3),
                "mean": round(l.mean_ms, 3),
            })
        });
        json!({
            "run": self.run,
            "mode": self.mode,
            "bootstrap": self.bootstrap,
            "observed_topic": self.observed,
            "partitions": self.partitions,
            "target_rate": self.target_rate,
            "duration_s": self.duration_s,
            "achieved_send_rate": round(self.achieved_send_rate(), 1),
            "max_send_lag_ms": round(self.max_send_lag_ms, 3),
            "throughput": round(self.throughput(), 1),
            "events": {
                "sent": self.sent,
                "seen": self.seen,
                "missing": self.missing(),
                "duplicated": self.duplicated,
                "unexpected": self.unexpected,
                "delivery_failed": self.delivery_failed,
            },
            "latency_ms": latency,
            "measured_s": round(self.measured_seconds, 3),
            "cpu_cores": self.cpu_cores,
            "events_per_second_per_core": round(self.per_core(), 1),
            "passed": self.passed(),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Kusanagi load test {} ({} brokers at {}, {} partitions of `{}`)",
            self.run, self.mode, self.bootstrap, self.partitions, self.observed
        )?;
        writeln!(
            f,
            "  target        {} events/s for {} s",
            self.target_rate, self.duration_s
        )?;
        writeln!(
            f,
            "  sent          {} events, {:.1} events/s achieved (max lag behind schedule {:.1} ms)",
            self.sent,
            self.achieved_send_rate(),
            self.max_send_lag_ms
        )?;
        writeln!(
            f,
            "  seen          {} in `{}`: {} missing, {} duplicated{}",
            self.seen,
            self.observed,
            self.missing(),
            self.duplicated,
            if self.delivery_failed > 0 || self.unexpected > 0 {
                format!(
                    ", {} not delivered by the producer, {} unexpected",
                    self.delivery_failed, self.unexpected
                )
            } else {
                String::new()
            }
        )?;
        writeln!(
            f,
            "  throughput    {:.1} events/s end to end over {:.2} s",
            self.throughput(),
            self.measured_seconds
        )?;
        match &self.latency {
            Some(l) => writeln!(
                f,
                "  latency       p50 {:.2} ms | p90 {:.2} ms | p99 {:.2} ms | p99.9 {:.2} ms | max {:.2} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            )?,
            None => writeln!(f, "  latency       no event seen")?,
        }
        writeln!(
            f,
            "  cpu           {} cores, {:.1} events/s per core",
            self.cpu_cores,
            self.per_core()
        )?;
        write!(
            f,
            "  result        {}",
            if self.passed() {
                "PASS: every event seen exactly once".to_owned()
            } else {
                format!(
                    "FAIL: {} missing, {} duplicated, {} unexpected",
                    self.missing(),
                    self.duplicated,
                    self.unexpected
                )
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::latency_histogram;

    fn report() -> Report {
        Report {
            run: "lt-x-1".into(),
            mode: "embedded",
            bootstrap: "127.0.0.1:1234".into(),
            observed: "events".into(),
            partitions: 6,
            target_rate: 10_000,
            duration_s: 30.0,
            sent: 300_000,
            send_seconds: 29.9999,
            max_send_lag_ms: 2.5,
            seen: 300_000,
            duplicated: 0,
            unexpected: 0,
            delivery_failed: 0,
            measured_seconds: 30.0,
            latency: Some(LatencySummary {
                count: 300_000,
                p50_ms: 12.0,
                p90_ms: 20.0,
                p99_ms: 40.0,
                p999_ms: 80.0,
                max_ms: 120.0,
                mean_ms: 13.0,
            }),
            cpu_cores: 2,
        }
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = latency_histogram();
        for us in 1..=100_000u64 {
            h.record(us).unwrap();
        }
        let l = LatencySummary::of(&h).unwrap();
        assert_eq!(l.count, 100_000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(l.p50_ms, 50.0), "{l:?}");
        assert!(close(l.p90_ms, 90.0), "{l:?}");
        assert!(close(l.p99_ms, 99.0), "{l:?}");
        assert!(close(l.p999_ms, 99.9), "{l:?}");
        assert!(close(l.max_ms, 100.0), "{l:?}");
        assert!(close(l.mean_ms, 50.0), "{l:?}");
    }

    #[test]
    fn a_tail_shows_only_in_the_high_percentiles() {
        let mut h = latency_histogram();
        for _ in 0..9_990 {
            h.record(5_000).unwrap();
        }
        for _ in 0..10 {
            h.record(2_000_000).unwrap();
        }
        let l = LatencySummary::of(&h).unwrap();
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.max_ms - 2_000.0).abs() < 2.0, "{l:?}");
        assert!(LatencySummary::of(&latency_histogram()).is_none());
    }

    #[test]
    fn rates_and_per_core() {
        let r = report();
        assert!((r.achieved_send_rate() - 299_999.0 / 29.9999).abs() < 1e-6);
        assert!((r.throughput() - 10_000.0).abs() < 1e-9);
        assert!((r.per_core() - 5_000.0).abs() < 1e-9);
        let none = Report {
            sent: 0,
            seen: 0,
            send_seconds: 0.0,
            measured_seconds: 0.0,
            latency: None,
            ..report()
        };
        assert_eq!(none.achieved_send_rate(), 0.0);
        assert_eq!(none.throughput(), 0.0);
        assert!(none.passed(), "nothing sent, nothing missing");
    }

    #[test]
    fn missing_or_duplicated_events_fail() {
        assert!(report().passed());
        let missing = Report {
            seen: 299_990,
            ..report()
        };
        assert_eq!(missing.missing(), 10);
        assert!(!missing.passed());
        assert!(missing.to_string().contains("FAIL: 10 missing"));
        let dup = Report {
            duplicated: 1,
            ..report()
        };
        assert!(!dup.passed());
        assert_eq!(dup.to_json()["passed"], false);
    }

    #[test]
    fn the_human_block_has_every_figure() {
        let text = report().to_string();
        for want in [
            "lt-x-1 (embedded brokers at 127.0.0.1:1234, 6 partitions of `events`)",
            "target        10000 events/s for 30 s",
            "sent          300000 events, 10000.0 events/s achieved (max lag behind schedule 2.5 ms)",
            "seen          300000 in `events`: 0 missing, 0 duplicated\n",
            "throughput    10000.0 events/s end to end over 30.00 s",
            "p50 12.00 ms | p90 20.00 ms | p99 40.00 ms | p99.9 80.00 ms | max 120.00 ms",
            "cpu           2 cores, 5000.0 events/s per core",
            "result        PASS",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn the_json_form_has_every_figure() {
        let j = report().to_json();
        assert_eq!(j["target_rate"], 10_000);
        assert_eq!(j["achieved_send_rate"], 10_000.0);
        assert_eq!(j["throughput"], 10_000.0);
        assert_eq!(j["events"]["sent"], 300_000);
        assert_eq!(j["events"]["missing"], 0);
        assert_eq!(j["events"]["duplicated"], 0);
        assert_eq!(j["latency_ms"]["p50"], 12.0);
        assert_eq!(j["latency_ms"]["p99_9"], 80.0);
        assert_eq!(j["latency_ms"]["max"], 120.0);
        assert_eq!(j["cpu_cores"], 2);
        assert_eq!(j["events_per_second_per_core"], 5_000.0);
        assert_eq!(j["passed"], true);
        let empty = Report {
            latency: None,
            ..report()
        };
        assert!(empty.to_json()["latency_ms"].is_null());
    }
}
