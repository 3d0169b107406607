//! Where a row goes: its table partition (tenant, UTC day and hour of its
//! event time) and the Hive-style paths Athena partition projection and
//! DuckDB `hive_partitioning` read as they are:
//! `<table>/tenant=<t>/dt=<YYYY-MM-DD>/hour=<HH>/part-<id>.parquet`.
//!
//! File names are deterministic: `<id>` is a hash of the table partition
//! and the Kafka offsets the file holds, so the same records always make
//! the same name (and the same bytes), and two files never share a name.
//! A new file is first uploaded under `_staging/` (outside every table's
//! folder, so no glob of a table sees it) and moved into place only once
//! the catalog lists it.

use sha2::{Digest, Sha256};

use super::table::Table;
use crate::catalog::OffsetRange;

/// A table partition: the rows of one table, tenant, day and hour.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    /// The table.
    pub table: Table,
    /// The tenant.
    pub tenant: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub dt: String,
    /// The UTC hour.
    pub hour: u8,
}

impl PartitionKey {
    /// The partition of a row of `table` for `tenant` at `event_time_us`.
    /// A time chrono cannot represent (beyond ±262,000 years: only a
    /// producer writing Avro to `events` directly, bypassing ingest's
    /// checks, can make one) is filed under `1970-01-01`, hour `00`; the
    /// row keeps its own time.
    pub fn of(table: Table, tenant: &str, event_time_us: i64) -> Self {
        use chrono::{Datelike, Timelike};
        let t = chrono::DateTime::from_timestamp_micros(event_time_us).unwrap_or_default();
        // What `%Y-%m-%d` prints, without parsing a format string per row
        // (a twentieth of the archive stage's CPU); `%Y` adds a sign
        // outside years 0-9999.
        let dt = if (0..=9999).contains(&t.year()) {
            format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
        } else {
            t.format("%Y-%m-%d").to_string()
        };
        Self {
            table,
            tenant: tenant.to_owned(),
            dt,
            hour: t.hour() as u8,
        }
    }

    /// The partition's folder: `<table>/tenant=<t>/dt=<day>/hour=<HH>`.
    pub fn dir(&self) -> String {
        format!(
            "{}/tenant={}/dt={}/hour={:02}",
            self.table.name(),
            escape(&self.tenant),
            self.dt,
            self.hour
        )
    }

    /// The path of the file holding `offsets` of this partition.
    pub fn file_path(&self, offsets: &[OffsetRange]) -> String {
        let mut h = Sha256::new();
        h.update(self.dir().as_bytes());
        for r in offsets {
            h.update(format!("\n{}/{}/{}-{}", r.topic, r.partition, r.first, r.last).as_bytes());
            if r.rewinds > 0 {
                h.update(format!("@{}", r.rewinds).as_bytes());
            }
        }
        let digest = h.finalize();
        let id = hex::encode(&digest[..10]);
        format!("{}/part-{id}.parquet", self.dir())
    }
}

/// A tenant id as a path segment: letters, digits, `-`, `_` and `.` stay,
/// every other byte becomes `%XX` (Hive's escaping), so no tenant can add
/// a folder or a `=`.
pub fn escape(tenant: &str) -> String {
    let mut out = String::with_capacity(tenant.len());
    for b in tenant.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = out.replace('.', "%2E");
        if out.is_empty() {
            out.push_str("%00");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_day_is_what_strftime_prints_in_every_year() {
        const YEAR_US: i64 = 31_556_952_000_000;
        let times = (-3_000..12_000i64)
            .step_by(7)
            .map(|y| (y - 1970) * YEAR_US + 12_345_678_901)
            .chain([0, -1, i64::MAX, i64::MIN]);
        for us in times {
            let t = chrono::DateTime::from_timestamp_micros(us).unwrap_or_default();
            let k = PartitionKey::of(Table::Events, "t", us);
            assert_eq!(k.dt, t.format("%Y-%m-%d").to_string(), "{us}");
        }
    }

    #[test]
    fn paths_are_hive_style_by_utc_event_time() {
        // 2026-03-04T05:06:07Z
        let k = PartitionKey::of(Table::Events, "game-1", 1_772_600_767_000_000);
        assert_eq!(k.dir(), "events/tenant=game-1/dt=2026-03-04/hour=05");
        let r = |last| OffsetRange {
            topic: "events".into(),
            partition: 2,
            first: 10,
            last,
            rewinds: 0,
        };
        let a = k.file_path(&[r(20)]);
        assert!(a.starts_with("events/tenant=game-1/dt=2026-03-04/hour=05/part-"));
        assert!(a.ends_with(".parquet"));
        assert_eq!(a, k.file_path(&[r(20)]), "the same offsets, the same name");
        assert_ne!(a, k.file_path(&[r(21)]));
        let rewound = OffsetRange {
            rewinds: 1,
            ..r(20)
        };
        assert_ne!(
            a,
            k.file_path(&[rewound]),
            "the same offsets after a rewind are other records"
        );
    }

    #[test]
    fn tenants_cannot_escape_their_folder() {
        assert_eq!(escape("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape(""), "%00");
        assert_eq!(escape("ゲーム").len(), 27);
    }
}
