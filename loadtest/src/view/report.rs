//! The figures of a `kusanagi-loadtest view` run: a latency histogram and
//! the statuses per phase, as text on stdout and as JSON.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde_json::json;

use super::ViewArgs;

/// One phase's figures.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) latency: Histogram<u64>,
    pub(super) statuses: BTreeMap<u16, u64>,
    pub(super) failed: u64,
    pub(super) seconds: f64,
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            statuses: BTreeMap::new(),
            failed: 0,
            seconds: 0.0,
        }
    }

    fn requests(&self) -> u64 {
        self.latency.len()
    }

    fn per_second(&self) -> f64 {
        self.requests() as f64 / self.seconds.max(1e-9)
    }

    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1_000.0
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "requests": self.requests(),
            "requests_per_second": self.per_second(),
            "failed": self.failed,
            "statuses": self.statuses,
            "latency_ms": {
                "p50": self.ms(0.5), "p90": self.ms(0.9), "p99": self.ms(0.99),
                "p999": self.ms(0.999), "max": self.latency.max() as f64 / 1_000.0,
            },
        })
    }
}

/// The figures of a run.
pub(super) struct ViewReport {
    pub(super) connections: usize,
    pub(super) connect_seconds: f64,
    pub(super) baseline: Tally,
    pub(super) lookups: Tally,
}

impl ViewReport {
    pub(super) fn text(&self, args: &ViewArgs) -> String {
        let line = |name: &str, t: &Tally| {
            format!(
                "  {name:<9} {:>9} requests, {:>8.0} req/s | p50 {:>7.3} ms  p90 {:>7.3} ms  p99 {:>7.3} ms  p99.9 {:>7.3} ms  max {:>8.3} ms | failed {}",
                t.requests(),
                t.per_second(),
                t.ms(0.5),
                t.ms(0.9),
                t.ms(0.99),
                t.ms(0.999),
                t.latency.max() as f64 / 1_000.0,
                t.failed
            )
        };
        let (b, l) = (&self.baseline, &self.lookups);
        format!(
            "Kusanagi view load test: GET /api/v1/accounts/{{id}} over {} accounts, {} connections ({} opened in {:.1} s), {}\n{}\n{}\n  lookups / healthz: p50 x{:.2}, p99 x{:.2}, req/s x{:.2}\n  lookup statuses: {:?}",
            args.accounts,
            args.connections,
            self.connections,
            self.connect_seconds,
            match args.rate {
                0 => "closed loop".to_owned(),
                r => format!("open loop at {r} req/s"),
            },
            line("healthz", b),
            line("lookups", l),
            l.ms(0.5) / b.ms(0.5).max(1e-9),
            l.ms(0.99) / b.ms(0.99).max(1e-9),
            l.per_second() / b.per_second().max(1e-9),
            l.statuses,
        )
    }

    pub(super) fn json(&self, args: &ViewArgs) -> serde_json::Value {
        json!({
            "accounts": args.accounts,
            "connections": self.connections,
            "rate": args.rate,
            "server_threads": args.server_threads,
            "connect_seconds": self.connect_seconds,
            "baseline_healthz": self.baseline.json(),
            "lookups": self.lookups.json(),
        })
    }
}
