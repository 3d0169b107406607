//! The view stage's metrics, defined once with fixed names
//! (`docs/metrics.md`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicOutcome {
    topic: String,
    outcome: &'static str,
}

/// The view stage's metrics. Cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct ViewMetrics {
    records: Family<TopicOutcome, Counter>,
    accounts: Gauge,
    ready: Gauge,
}

impl ViewMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            records: Family::default(),
            accounts: Gauge::default(),
            ready: Gauge::default(),
        };
        registry.register(
            "view_records",
            "Records the view read, per topic and outcome (applied, unchanged, skipped: undecodable)",
            m.records.clone(),
        );
        registry.register(
            "view_accounts",
            "Accounts the view's index holds",
            m.accounts.clone(),
        );
        registry.register(
            "view_ready",
            "1 once the view caught up with the topics as they were at its start",
            m.ready.clone(),
        );
        m
    }

    /// `n` records of `topic` ended with `outcome`.
    pub fn records(&self, topic: &str, outcome: &'static str, n: u64) {
        if n > 0 {
            self.records
                .get_or_create(&TopicOutcome {
                    topic: topic.to_owned(),
                    outcome,
                })
                .inc_by(n);
        }
    }

    /// Records of `topic` with `outcome` so far.
    pub fn records_total(&self, topic: &str, outcome: &'static str) -> u64 {
        self.records
            .get_or_create(&TopicOutcome {
                topic: topic.to_owned(),
                outcome,
            })
            .get()
    }

    /// The index holds `n` accounts.
    pub fn accounts(&self, n: usize) {
        self.accounts.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The view is (or is no longer) caught up.
    pub fn ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }
}
