//! The compact stage's metrics (erasure purges), defined once with fixed
//! names (`docs/metrics.md`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The compact stage's metrics. Cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct ErasureMetrics {
    requests: Counter,
    files_opened: Counter,
    files_listed: Counter,
    files_rewritten: Counter,
    rows_removed: Counter,
    opened_per_request: Histogram,
}

impl ErasureMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Counter::default(),
            files_opened: Counter::default(),
            files_listed: Counter::default(),
            files_rewritten: Counter::default(),
            rows_removed: Counter::default(),
            opened_per_request: Histogram::new([
                0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0,
            ]),
        };
        registry.register(
            "erasure_requests",
            "Erasure requests purged and certified (committed with their audit records)",
            m.requests.clone(),
        );
        registry.register(
            "erasure_files_opened",
            "Archive files the purges opened (their subject filters did not rule the subjects out)",
            m.files_opened.clone(),
        );
        registry.register(
            "erasure_files_listed",
            "Archive files the catalog listed when the purges planned (opened / listed is the share read)",
            m.files_listed.clone(),
        );
        registry.register(
            "erasure_files_rewritten",
            "Archive files rewritten (or removed) without erased subjects' rows",
            m.files_rewritten.clone(),
        );
        registry.register(
            "erasure_rows_removed",
            "Rows removed from the archive by purges",
            m.rows_removed.clone(),
        );
        registry.register(
            "erasure_files_opened_per_request",
            "Files whose subject filter did not rule out a request's subject, per request",
            m.opened_per_request.clone(),
        );
        m
    }

    /// One purge of a batch was committed.
    pub fn purged(&self, opened: u64, listed: u64, rewritten: u64, rows: u64) {
        self.files_opened.inc_by(opened);
        self.files_listed.inc_by(listed);
        self.files_rewritten.inc_by(rewritten);
        self.rows_removed.inc_by(rows);
    }

    /// One request was certified; its purge could not rule out `opened` files.
    pub fn certified(&self, opened: u64) {
        self.requests.inc();
        self.opened_per_request.observe(opened as f64);
    }

    /// Requests so far.
    pub fn requests_total(&self) -> u64 {
        self.requests.get()
    }
}
