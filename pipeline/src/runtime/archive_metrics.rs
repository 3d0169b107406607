//! The archive stage's metrics, defined once with fixed names
//! (`docs/metrics.md`). Counted when the catalog commit that lists the
//! files succeeded, so they count archived data only.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabel {
    table: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableTier {
    table: String,
    tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabel {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The archive stage's metrics. Cheap to clone (shared counters).
#[derive(Clone, Debug)]
pub struct ArchiveMetrics {
    files: Family<TableLabel, Counter>,
    rows: Family<TableLabel, Counter>,
    bytes: Family<TableLabel, Counter>,
    json_bytes: Family<TableLabel, Counter>,
    rotations: Family<ReasonLabel, Counter>,
    erased_rows: Counter,
    commits: Family<OutcomeLabel, Counter>,
    open_rows: Gauge,
    refused: Family<PartitionLabel, Gauge>,
    stored_bytes: Family<TableTier, Gauge>,
    stored_json_bytes: Family<TableTier, Gauge>,
    compression_ratio: Family<TableTier, Gauge<f64, AtomicU64>>,
}

impl ArchiveMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let m = Self {
            files: Family::default(),
            rows: Family::default(),
            bytes: Family::default(),
            json_bytes: Family::default(),
            rotations: Family::default(),
            erased_rows: Counter::default(),
            commits: Family::default(),
            open_rows: Gauge::default(),
            refused: Family::default(),
            stored_bytes: Family::default(),
            stored_json_bytes: Family::default(),
            compression_ratio: Family::default(),
        };
        registry.register(
            "archive_files",
            "Parquet files the archive stage committed to the catalog, per table",
            m.files.clone(),
        );
        registry.register(
            "archive_rows",
            "Rows the archive stage committed, per table",
            m.rows.clone(),
        );
        registry.register(
            "archive_bytes",
            "Parquet bytes the archive stage committed, per table",
            m.bytes.clone(),
        );
        registry.register(
            "archive_json_bytes",
            "Bytes the committed rows take as JSON (the compression baseline), per table",
            m.json_bytes.clone(),
        );
        registry.register(
            "archive_rotations",
            "Times the archive stage wrote its open files, by reason (size, age, memory, rebalance, shutdown)",
            m.rotations.clone(),
        );
        registry.register(
            "archive_erased_rows",
            "Rows of erased subjects the archive stage dropped instead of archiving",
            m.erased_rows.clone(),
        );
        registry.register(
            "archive_catalog_commits",
            "Archive catalog commits by outcome (committed, conflict, failed)",
            m.commits.clone(),
        );
        registry.register(
            "archive_open_rows",
            "Rows buffered in the archive stage's open files",
            m.open_rows.clone(),
        );
        registry.register(
            "archive_refused_partitions",
            "1 while this copy refuses a partition whose log in the broker ends below the offset already archived (the broker lost records; docs/operators.md)",
            m.refused.clone(),
        );
        registry.register(
            "archive_stored_bytes",
            "Bytes the catalog lists per table and tier (all writers), as of this copy's last commit",
            m.stored_bytes.clone(),
        );
        registry.register(
            "archive_stored_json_bytes",
            "Bytes the same rows take as JSON, per table and tier",
            m.stored_json_bytes.clone(),
        );
        registry.register(
            "archive_compression_ratio",
            "Bytes stored / bytes as JSON, per table and tier (lower is better)",
            m.compression_ratio.clone(),
        );
        m
    }

    /// The archive's totals per table and tier, from the catalog.
    pub fn catalog_totals(&self, state: &crate::catalog::CatalogState) {
        for s in crate::catalog::stats::stats(state) {
            let l = TableTier {
                table: s.table,
                tier: s.tier,
            };
            self.stored_bytes
                .get_or_create(&l)
                .set(s.bytes_stored as i64);
            self.stored_json_bytes
                .get_or_create(&l)
                .set(s.bytes_json as i64);
            self.compression_ratio.get_or_create(&l).set(s.ratio);
        }
    }

    /// A committed file of `table`.
    pub fn file_committed(&self, table: &'static str, rows: u64, bytes: u64, json_bytes: u64) {
        let l = TableLabel { table };
        self.files.get_or_create(&l).inc();
        self.rows.get_or_create(&l).inc_by(rows);
        self.bytes.get_or_create(&l).inc_by(bytes);
        self.json_bytes.get_or_create(&l).inc_by(json_bytes);
    }

    /// The open files were written, for `reason`.
    pub fn rotation(&self, reason: &'static str) {
        self.rotations.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// `n` rows of erased subjects were dropped instead of archived.
    pub fn erased_rows(&self, n: u64) {
        self.erased_rows.inc_by(n);
    }

    /// A catalog commit ended with `outcome`.
    pub fn commit(&self, outcome: &'static str) {
        self.commits.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// `topic`/`partition` is refused (the broker went backwards), or no
    /// longer (this copy gave it up).
    pub fn refused(&self, topic: &str, partition: i32, refused: bool) {
        let l = PartitionLabel {
            topic: topic.to_owned(),
            partition,
        };
        self.refused.get_or_create(&l).set(i64::from(refused));
    }

    /// Rows buffered now.
    pub fn open_rows(&self, rows: usize) {
        self.open_rows.set(rows as i64);
    }
}
