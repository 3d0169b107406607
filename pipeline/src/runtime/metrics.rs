//! Every metric Kusanagi exports, defined once, with fixed names.
//!
//! `docs/metrics.md` lists them; `GET /metrics` serves them in the
//! Prometheus text format. Stages record through the typed methods here,
//! never by name.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageTopic {
    stage: &'static str,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageReason {
    stage: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageOutcome {
    stage: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StagePartition {
    stage: &'static str,
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// The process's metrics. Cheap to clone (shared counters).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    records_in: Family<StageTopic, Counter>,
    records_out: Family<StageTopic, Counter>,
    dead_letters: Family<StageReason, Counter>,
    transactions: Family<StageOutcome, Counter>,
    transaction_seconds: HistogramFamily<StageLabel>,
    assigned_partitions: Family<StageLabel, Gauge>,
    consumer_lag: Family<StagePartition, Gauge>,
    http_requests: Family<RouteStatus, Counter>,
    http_events: Family<StageOutcome, Counter>,
    /// The screen, decide and analyze stages' own metrics.
    pub screening: super::ScreeningMetrics,
    /// The archive stage's metrics.
    pub archive: super::ArchiveMetrics,
    /// The view stage's metrics.
    pub view: super::ViewMetrics,
    /// The compact stage's (erasure purges).
    pub erasure: super::ErasureMetrics,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kusanagi");
        let records_in = Family::default();
        let records_out = Family::default();
        let dead_letters = Family::default();
        let transactions = Family::default();
        let transaction_seconds: HistogramFamily<StageLabel> =
            Family::new_with_constructor(seconds_histogram);
        let assigned_partitions = Family::default();
        let consumer_lag = Family::default();
        let http_requests = Family::default();
        let http_events = Family::default();
        registry.register(
            "records_in",
            "Records consumed by a stage in committed transactions, per source topic",
            records_in.clone(),
        );
        registry.register(
            "records_out",
            "Records produced by a stage in committed transactions, per destination topic",
            records_out.clone(),
        );
        registry.register(
            "dead_letters",
            "Records a stage dead-lettered in committed transactions, per reason",
            dead_letters.clone(),
        );
        registry.register(
            "transactions",
            "Stage transactions by outcome (committed, aborted)",
            transactions.clone(),
        );
        registry.register(
            "transaction_duration_seconds",
            "Time from the start of a batch's transaction to its commit",
            transaction_seconds.clone(),
        );
        registry.register(
            "assigned_partitions",
            "Partitions currently assigned to this copy of a stage",
            assigned_partitions.clone(),
        );
        registry.register(
            "consumer_lag",
            "Records of a partition this copy of a stage has not read yet (end offset - position), \
             per topic and partition; dropped when the partition is revoked",
            consumer_lag.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            http_requests.clone(),
        );
        registry.register(
            "http_events",
            "Events received over HTTP by outcome (accepted, rejected)",
            http_events.clone(),
        );
        let screening = super::ScreeningMetrics::register(&mut registry);
        let archive = super::ArchiveMetrics::register(&mut registry);
        let view = super::ViewMetrics::register(&mut registry);
        let erasure = super::ErasureMetrics::register(&mut registry);
        Self {
            screening,
            archive,
            view,
            erasure,
            registry: Arc::new(registry),
            records_in,
            records_out,
            dead_letters,
            transactions,
            transaction_seconds,
            assigned_partitions,
            consumer_lag,
            http_requests,
            http_events,
        }
    }

    /// `n` records consumed by `stage` from `topic`.
    pub fn records_in(&self, stage: &'static str, topic: &str, n: u64) {
        self.records_in
            .get_or_create(&StageTopic {
                stage,
                topic: topic.to_owned(),
            })
            .inc_by(n);
    }

    /// Records `stage` consumed from `topic` and committed so far.
    pub fn records_in_total(&self, stage: &'static str, topic: &str) -> u64 {
        self.records_in
            .get_or_create(&StageTopic {
                stage,
                topic: topic.to_owned(),
            })
            .get()
    }

    /// Records produced by `stage` to `topic` so far.
    pub fn records_out_total(&self, stage: &'static str, topic: &str) -> u64 {
        self.records_out
            .get_or_create(&StageTopic {
                stage,
                topic: topic.to_owned(),
            })
            .get()
    }

    /// `n` records produced by `stage` to `topic`.
    pub fn records_out(&self, stage: &'static str, topic: &str, n: u64) {
        self.records_out
            .get_or_create(&StageTopic {
                stage,
                topic: topic.to_owned(),
            })
            .inc_by(n);
    }

    /// One record dead-lettered by `stage` for `reason`.
    pub fn dead_letter(&self, stage: &'static str, reason: &str) {
        self.dead_letters
            .get_or_create(&StageReason {
                stage,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Dead letters sent by `stage` so far, over every reason.
    pub fn dead_letters_total(&self, stage: &'static str, reasons: &[&'static str]) -> u64 {
        reasons
            .iter()
            .map(|&reason| {
                self.dead_letters
                    .get_or_create(&StageReason {
                        stage,
                        reason: reason.to_owned(),
                    })
                    .get()
            })
            .sum()
    }

    /// A transaction of `stage` committed after `seconds`.
    pub fn transaction_committed(&self, stage: &'static str, seconds: f64) {
        self.transactions
            .get_or_create(&StageOutcome {
                stage,
                outcome: "committed",
            })
            .inc();
        self.transaction_seconds
            .get_or_create(&StageLabel { stage })
            .observe(seconds);
    }

    /// A transaction of `stage` aborted.
    pub fn transaction_aborted(&self, stage: &'static str) {
        self.transactions
            .get_or_create(&StageOutcome {
                stage,
                outcome: "aborted",
            })
            .inc();
    }

    /// `stage` now owns `n` partitions (after a rebalance).
    pub fn assigned_partitions(&self, stage: &'static str, n: usize) {
        self.assigned_partitions
            .get_or_create(&StageLabel { stage })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Partitions `stage` owns now.
    pub fn assigned_partitions_now(&self, stage: &'static str) -> i64 {
        self.assigned_partitions
            .get_or_create(&StageLabel { stage })
            .get()
    }

    /// `stage` is `lag` records behind the end of `topic`/`partition`.
    pub fn consumer_lag(&self, stage: &'static str, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .get_or_create(&StagePartition {
                stage,
                topic: topic.to_owned(),
                partition,
            })
            .set(lag.max(0));
    }

    /// `stage` no longer reads `topic`/`partition`: its lag is not reported.
    pub fn forget_lag(&self, stage: &'static str, topic: &str, partition: i32) {
        self.consumer_lag.remove(&StagePartition {
            stage,
            topic: topic.to_owned(),
            partition,
        });
    }

    /// The lag last reported for `stage` on `topic`/`partition`, if any.
    pub fn consumer_lag_now(
        &self,
        stage: &'static str,
        topic: &str,
        partition: i32,
    ) -> Option<i64> {
        let key = StagePartition {
            stage,
            topic: topic.to_owned(),
            partition,
        };
        self.consumer_lag.get(&key).map(|g| g.get())
    }

    /// One HTTP request answered.
    pub fn http_request(&self, route: &'static str, status: u16) {
        self.http_requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
    }

    /// `n` events received over HTTP with `outcome` (`accepted`, `rejected`).
    pub fn http_events(&self, outcome: &'static str, n: u64) {
        self.http_events
            .get_or_create(&StageOutcome {
                stage: "ingest",
                outcome,
            })
            .inc_by(n);
    }

    /// Everything, in the Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_prometheus_text_with_fixed_names() {
        let m = Metrics::new();
        m.records_in("ingest", "events.raw", 3);
        m.dead_letter("ingest", "invalid_json");
        m.transaction_committed("ingest", 0.01);
        let text = m.encode();
        assert!(text.contains(r#"kusanagi_records_in_total{stage="ingest",topic="events.raw"} 3"#));
        assert!(
            text.contains(r#"kusanagi_dead_letters_total{stage="ingest",reason="invalid_json"} 1"#)
        );
        assert!(text.contains("kusanagi_transaction_duration_seconds_bucket"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            m.dead_letters_total("ingest", &["invalid_json", "too_large"]),
            1
        );
    }
}
