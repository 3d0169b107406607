//! Reading a committed range of a partition back: how stages rebuild their
//! state from Kafka (a replay of the window horizon, a compacted changelog),
//! never from local disk.

use kusanagi_connectors::kafka::{PartitionReader, RecordVisitor};

/// Reads a committed range of one partition (Kafka in production, a vector
/// in unit tests).
pub trait PartitionSource: Send {
    /// Calls `each` for every committed record of
    /// `topic`/`partition` with `from <= offset < until`, in offset order,
    /// stopping early at the end of the partition. Returns the count read.
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        until: i64,
        each: &mut RecordVisitor<'_>,
    ) -> Result<u64, String>;

    /// The offset after the last record of `topic`/`partition`, committed
    /// or not: reading to it sees every transaction that ended before.
    fn end(&mut self, topic: &str, partition: i32) -> Result<i64, String>;
}

impl PartitionSource for PartitionReader {
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        until: i64,
        each: &mut RecordVisitor<'_>,
    ) -> Result<u64, String> {
        PartitionReader::read(self, topic, partition, from, until, each).map_err(|e| e.to_string())
    }

    fn end(&mut self, topic: &str, partition: i32) -> Result<i64, String> {
        PartitionReader::end(self, topic, partition).map_err(|e| e.to_string())
    }
}

/// A source with nothing in it: for a stage that runs from the very
/// beginning of its input and is never rebuilt (benches, reference runs).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHistory;

impl PartitionSource for NoHistory {
    fn read(
        &mut self,
        _: &str,
        _: i32,
        _: i64,
        _: i64,
        _: &mut RecordVisitor<'_>,
    ) -> Result<u64, String> {
        Ok(0)
    }

    fn end(&mut self, _: &str, _: i32) -> Result<i64, String> {
        Ok(0)
    }
}

/// One record of a [`MemoryLog`]: key and value.
#[cfg(test)]
type LoggedRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// An in-memory partition log, for unit tests of stages that replay.
#[cfg(test)]
#[derive(Debug, Clone, Default)]
pub struct MemoryLog(pub std::sync::Arc<std::sync::Mutex<Vec<LoggedRecord>>>);

#[cfg(test)]
impl MemoryLog {
    /// Appends a record and returns its offset.
    pub fn push(&self, key: Option<Vec<u8>>, value: Option<Vec<u8>>) -> i64 {
        let mut log = self.0.lock().expect("log lock");
        log.push((key, value));
        log.len() as i64 - 1
    }
}

#[cfg(test)]
impl PartitionSource for MemoryLog {
    fn read(
        &mut self,
        _topic: &str,
        _partition: i32,
        from: i64,
        until: i64,
        each: &mut RecordVisitor<'_>,
    ) -> Result<u64, String> {
        let log = self.0.lock().expect("log lock");
        let end = until.min(log.len() as i64);
        for offset in from.max(0)..end {
            let (k, v) = &log[offset as usize];
            each(&kusanagi_connectors::kafka::ReplayedRecord {
                offset,
                timestamp_ms: None,
                key: k.as_deref(),
                value: v.as_deref(),
            });
        }
        Ok((end - from.max(0)).max(0) as u64)
    }

    fn end(&mut self, _topic: &str, _partition: i32) -> Result<i64, String> {
        Ok(self.0.lock().expect("log lock").len() as i64)
    }
}
