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
    /// When the first row arrived.
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
    /// The oldest file has been open `rotate_after_seconds`.
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
    /// Adds `row` (`bytes` long in Kafka, `json_bytes` as JSON) to its file.
    pub fn push(
        &mut self,
        key: PartitionKey,
        row: Row,
        bytes: usize,
        json_bytes: usize,
        now: Instant,
    ) {
        let file = self.files.entry(key).or_insert_with(|| OpenFile {
            rows: Vec::new(),
            bytes: 0,
            json_bytes: 0,
            opened_at: now,
        });
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
}
