//! The files the archive stage is filling: rows buffered per table
//! partition until the stage rotates them all (see [`OpenFiles::rotation_due`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::config::ArchiveStageConfig;
use super::layout::PartitionKey;
use super::table::Row;

/// The rows of one table partition not yet written.
#[derive(Debug)]
pub struct OpenFile {
    /// The rows, in arrival order.
    pub rows: Vec<Row>,
    /// Their size as read from Kafka.
    pub bytes: usize,
    /// Their size as JSON.
    pub json_bytes: u64,
    /// What its age counts from: when its oldest row reached Kafka, or
    /// when the last rotation began if that is later
    /// ([`OpenFiles::push`]).
    pub opened_at: Instant,
}

/// Every open file of the stage.
#[derive(Debug, Default)]
pub struct OpenFiles {
    files: BTreeMap<PartitionKey, OpenFile>,
    bytes: usize,
    largest: usize,
}

/// Why the open files are written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// One file reached `rotate_after_bytes`.
    Size,
    /// The oldest file is `rotate_after_seconds` old.
    Age,
    /// All files together reached `max_buffered_bytes`.
    Memory,
}

impl Rotation {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rotation::Size => "size",
            Rotation::Age => "age",
            Rotation::Memory => "memory",
        }
    }
}

impl OpenFiles {
    /// Adds `row` (`bytes` long in Kafka, `json_bytes` as JSON) to its file;
    /// `since`: when it reached Kafka, or when the last rotation began if
    /// that is later. A file's age counts from its oldest row's, so
    /// `rotate_after_seconds` bounds how long a record waits after it was
    /// written to Kafka, including while the stage was busy writing the
    /// last rotation; under a backlog (every row older than the last
    /// rotation) files rotate every `rotate_after_seconds` from the start
    /// of the one before.
    pub fn push(
        &mut self,
        key: PartitionKey,
        row: Row,
        bytes: usize,
        json_bytes: usize,
        since: Instant,
    ) {
        let file = self.files.entry(key).or_insert_with(|| OpenFile {
            rows: Vec::new(),
            bytes: 0,
            json_bytes: 0,
            opened_at: since,
        });
        file.opened_at = file.opened_at.min(since);
        file.rows.push(row);
        file.bytes += bytes;
        file.json_bytes += json_bytes as u64;
        self.bytes += bytes;
        self.largest = self.largest.max(file.bytes);
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Rows buffered.
    pub fn rows(&self) -> usize {
        self.files.values().map(|f| f.rows.len()).sum()
    }

    /// Whether the files should be written now, and why.
    pub fn rotation_due(&self, config: &ArchiveStageConfig, now: Instant) -> Option<Rotation> {
        if self.largest >= config.rotate_after_bytes {
            return Some(Rotation::Size);
        }
        if self.bytes >= config.max_buffered_bytes {
            return Some(Rotation::Memory);
        }
        let max_age = Duration::from_secs(config.rotate_after_seconds);
        let oldest = self.files.values().map(|f| f.opened_at).min()?;
        (now.saturating_duration_since(oldest) >= max_age).then_some(Rotation::Age)
    }

    /// Takes every open file out, leaving none.
    pub fn take(&mut self) -> BTreeMap<PartitionKey, OpenFile> {
        self.bytes = 0;
        self.largest = 0;
        std::mem::take(&mut self.files)
    }
}

/// What a row's age counts from: when it reached Kafka (its timestamp
/// `timestamp_ms`, read on `clock`: now, and now in Unix milliseconds;
/// now when it has none or its producer's clock is ahead of ours), but
/// never before `floor` (when the last rotation began).
pub fn age_from(
    timestamp_ms: Option<i64>,
    (now, now_ms): (Instant, i64),
    floor: Instant,
) -> Instant {
    let ago = timestamp_ms.map_or(0, |ts| now_ms.saturating_sub(ts).max(0));
    now.checked_sub(Duration::from_millis(ago as u64))
        .map_or(floor, |t| t.max(floor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stages::archive::table::{Record, Table};
    use kusanagi_schemas::{EventTime, GameEvent};

    fn row(offset: i64) -> Row {
        Row {
            record: Record::Event(GameEvent {
                event_id: format!("e{offset}"),
                timestamp: EventTime::from_micros(0),
                event_type: "TRADE".into(),
                actor_id: "a".into(),
                target_id: "b".into(),
                action_details: Default::default(),
                context_metadata: Default::default(),
                tenant_id: "t".into(),
            }),
            partition: 0,
            offset,
        }
    }

    #[test]
    fn rotation_by_size_memory_and_age() {
        let config = ArchiveStageConfig {
            rotate_after_bytes: 100,
            max_buffered_bytes: 150,
            rotate_after_seconds: 60,
            ..ArchiveStageConfig::default()
        };
        let t0 = Instant::now();
        let key = |tenant: &str| PartitionKey::of(Table::Events, tenant, 0);
        let mut open = OpenFiles::default();
        assert_eq!(open.rotation_due(&config, t0), None);
        open.push(key("a"), row(0), 60, 100, t0);
        open.push(key("b"), row(1), 60, 100, t0);
        assert_eq!(open.rotation_due(&config, t0), None);
        assert_eq!(
            open.rotation_due(&config, t0 + Duration::from_secs(60)),
            Some(Rotation::Age)
        );
        open.push(key("c"), row(2), 60, 100, t0);
        assert_eq!(open.rotation_due(&config, t0), Some(Rotation::Memory));
        let taken = open.take();
        assert_eq!(taken.len(), 3);
        assert!(open.is_empty());
        open.push(key("a"), row(3), 100, 100, t0);
        assert_eq!(open.rotation_due(&config, t0), Some(Rotation::Size));
        assert_eq!(open.rows(), 1);
    }

    #[test]
    fn a_files_age_counts_from_its_oldest_row() {
        let config = ArchiveStageConfig {
            rotate_after_seconds: 60,
            ..ArchiveStageConfig::default()
        };
        let t0 = Instant::now();
        let mut open = OpenFiles::default();
        let key = PartitionKey::of(Table::Events, "t", 0);
        open.push(key.clone(), row(0), 10, 10, t0 + Duration::from_secs(30));
        open.push(key, row(1), 10, 10, t0);
        assert_eq!(
            open.rotation_due(&config, t0 + Duration::from_secs(59)),
            None
        );
        assert_eq!(
            open.rotation_due(&config, t0 + Duration::from_secs(60)),
            Some(Rotation::Age)
        );
    }

    #[test]
    fn a_rows_age_counts_from_its_time_in_kafka_but_not_before_the_last_rotation() {
        let now = Instant::now() + Duration::from_secs(3_600);
        let floor = now - Duration::from_secs(10);
        let now_ms = 1_000_000_000;
        let from = |ts| age_from(ts, (now, now_ms), floor);
        assert_eq!(
            from(Some(now_ms - 2_500)),
            now - Duration::from_millis(2_500)
        );
        assert_eq!(
            from(Some(now_ms - 60_000)),
            floor,
            "older than the last rotation"
        );
        assert_eq!(from(Some(i64::MIN)), floor);
        assert_eq!(from(Some(now_ms + 5_000)), now, "a producer's clock ahead");
        assert_eq!(from(None), now);
    }
}
