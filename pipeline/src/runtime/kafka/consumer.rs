//! What both Kafka sources do the same way on a librdkafka consumer: turn
//! a message into a [`Consumed`], classify a poll error, seek, pause,
//! resume, and read a partition's bounds and the consumer's positions.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use crate::runtime::source::{Consumed, LogBounds, PollError};
use crate::runtime::trace;

/// How long a seek may wait for the fetcher.
const SEEK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a request for a partition's bounds may take.
const BOUNDS_TIMEOUT: Duration = Duration::from_secs(5);

/// `timeout` rounded up to whole milliseconds, for a consumer poll.
///
/// rust-rdkafka hands librdkafka the time left truncated to whole
/// milliseconds and polls again until it is over, so the last fraction of
/// a millisecond would be spent polling with a zero timeout in a loop.
pub(super) fn whole_ms(timeout: Duration) -> Duration {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// The record, owned.
pub(super) fn consumed(m: &BorrowedMessage<'_>) -> Consumed {
    Consumed {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        timestamp_ms: m.timestamp().to_millis(),
        trace: m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == trace::HEADER)
                .and_then(|h| h.value.map(<[u8]>::to_vec))
        }),
    }
}

/// What a consumer error means for the loop.
pub(super) fn poll_error(e: KafkaError) -> PollError {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::FencedInstanceId) => PollError::Fenced,
        Some(RDKafkaErrorCode::Fatal) => PollError::Fatal(e.to_string()),
        _ => PollError::Transient(e.to_string()),
    }
}

/// The (topic, partition) pairs of a list.
pub(super) fn partitions_of(tpl: &TopicPartitionList) -> Vec<(String, i32)> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

fn one(topic: &str, partition: i32) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(1);
    tpl.add_partition(topic, partition);
    tpl
}

/// Reads `topic`/`partition` from `next` on (`None`: its beginning); false
/// when the consumer cannot seek yet.
pub(super) fn seek<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    stage: &str,
    topic: &str,
    partition: i32,
    next: Option<i64>,
) -> bool {
    let offset = next.map_or(Offset::Beginning, Offset::Offset);
    match consumer.seek(topic, partition, offset, SEEK_TIMEOUT) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(stage, topic, partition, error = %e, "seek failed");
            false
        }
    }
}

/// Stops fetching `topic`/`partition`.
pub(super) fn pause<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    stage: &str,
    topic: &str,
    partition: i32,
) {
    if let Err(e) = consumer.pause(&one(topic, partition)) {
        tracing::warn!(stage, topic, partition, error = %e, "cannot pause the partition");
    }
}

/// Fetches `topic`/`partition` again.
pub(super) fn resume<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    stage: &str,
    topic: &str,
    partition: i32,
) {
    if let Err(e) = consumer.resume(&one(topic, partition)) {
        tracing::debug!(stage, topic, partition, error = %e, "cannot resume the partition");
    }
}

/// The partition's first offset and end; under `read_committed` the end is
/// its last stable offset.
pub(super) fn log_bounds<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    stage: &str,
    topic: &str,
    partition: i32,
) -> Option<LogBounds> {
    consumer
        .fetch_watermarks(topic, partition, BOUNDS_TIMEOUT)
        .map(|(low, high)| LogBounds { low, high })
        .map_err(|e| tracing::warn!(stage, topic, partition, error = %e, "cannot read the partition's offsets"))
        .ok()
}

/// Where the application stands in each assigned partition (librdkafka's
/// position: past the last record handed out and any transaction markers
/// after it); partitions with no position yet are left out.
pub(super) fn positions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
) -> Vec<((String, i32), i64)> {
    let Ok(tpl) = consumer.position() else {
        return Vec::new();
    };
    tpl.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poll_timeout_is_rounded_up_to_whole_milliseconds() {
        assert_eq!(whole_ms(Duration::ZERO), Duration::ZERO);
        assert_eq!(whole_ms(Duration::from_micros(1)), Duration::from_millis(1));
        assert_eq!(
            whole_ms(Duration::from_micros(9_300)),
            Duration::from_millis(10)
        );
        assert_eq!(
            whole_ms(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }
}
