//! Reading a committed range of a partition back: how stages rebuild their
//! state from Kafka (a replay of the window horizon, a compacted changelog),
//! never from local disk.

use kusanagi_connectors::ConnectorError;
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
    ) -> Result<u64, ConnectorError>;

    /// The offset after the last record of `topic`/`partition`, committed
    /// or not: reading to it sees every transaction that ended before.
    fn end(&mut self, topic: &str, partition: i32) -> Result<i64, ConnectorError>;
}

impl PartitionSource for PartitionReader {
    fn read(
        &mut self,
        topic: &str,
        partition: i32,
        from: i64,
        until: i64,
        each: &mut RecordVisitor<'_>,
    ) -> Result<u64, ConnectorError> {
        PartitionReader::read(self, topic, partition, from, until, each)
    }

    fn end(&mut self, topic: &str, partition: i32) -> Result<i64, ConnectorError> {
        PartitionReader::end(self, topic, partition)
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
    ) -> Result<u64, ConnectorError> {
        Ok(0)
    }

    fn end(&mut self, _: &str, _: i32) -> Result<i64, ConnectorError> {
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
    ) -> Result<u64, ConnectorError> {
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

    fn end(&mut self, _topic: &str, _partition: i32) -> Result<i64, ConnectorError> {
        Ok(self.0.lock().expect("log lock").len() as i64)
    }
}

/// How long a replay may go without reading anything before it fails.
const REPLAY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The reader a stage rebuilds its state with (screen's windows, decide's
/// accounts).
pub fn replay_reader(
    stage: &'static str,
    settings: &kusanagi_connectors::kafka::KafkaSettings,
) -> Result<PartitionReader, super::RuntimeError> {
    PartitionReader::new(settings, REPLAY_TIMEOUT).map_err(|e| super::RuntimeError::Setup {
        stage,
        detail: e.to_string(),
    })
}
