//! [`Output`] on a librdkafka producer: transactional for Kafka-to-Kafka
//! stages (`transactional.id` = `<group>-<instance id>`, stable across
//! restarts, so a restarted copy's `init_transactions` aborts what its dead
//! predecessor left open), idempotent and non-transactional for sinks.
//!
//! The producer's delivery reports are served by its own polling thread
//! (rdkafka's [`ThreadedProducer`]), and waiting for deliveries blocks in
//! librdkafka's `rd_kafka_flush` until that thread has served the last one.
//! The stage thread never polls for them itself: rust-rdkafka's
//! `BaseProducer::poll(d)` runs to the end of `d` and hands librdkafka its
//! remainder truncated to whole milliseconds, so a wait of under 1 ms polls
//! with a zero timeout in a loop. Waiting for a transaction's deliveries in
//! 1 ms polls that way kept a core busy and took the CPU the producer's
//! own threads needed to deliver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kusanagi_connectors::kafka::KafkaSettings;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::runtime::output::{NextOffset, Output, OutputFailure};
use crate::runtime::{Backoff, OutRecord, RuntimeError};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// Counts records the broker did not take: a sink commit that would move
/// past one is not made.
#[derive(Default)]
pub struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            tracing::warn!(error = %e, "a record was not delivered");
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A stage copy's producer.
pub struct KafkaOutput {
    producer: ThreadedProducer<Deliveries>,
    /// Failed deliveries already reported by [`Output::flush`].
    failed_seen: u64,
}

impl KafkaOutput {
    /// A transactional producer with id `transactional_id`; fences any
    /// predecessor with the same id (`init_transactions`).
    pub fn transactional(
        stage: &'static str,
        settings: &KafkaSettings,
        transactional_id: &str,
    ) -> Result<Self, RuntimeError> {
        let producer = create(
            stage,
            settings.transactional_producer_config(transactional_id),
        )?;
        init_transactions(stage, &producer)?;
        Ok(Self {
            producer,
            failed_seen: 0,
        })
    }

    /// An idempotent producer without transactions.
    pub fn plain(stage: &'static str, settings: &KafkaSettings) -> Result<Self, RuntimeError> {
        let producer = create(stage, settings.producer_config())?;
        Ok(Self {
            producer,
            failed_seen: 0,
        })
    }

    /// Waits until every queued record was delivered (or failed) and its
    /// report served, up to `timeout`; false if some were still out then.
    ///
    /// `rd_kafka_flush` also sends at once what `linger.ms` still held.
    /// `commit_transaction` flushes first too, but through rust-rdkafka's
    /// flush, which polls in slices of up to 100 ms that run to their end:
    /// a 100 ms floor under every transaction. After this wait it has
    /// nothing left to wait for; delivery failures still fail the commit.
    fn await_deliveries(&self, timeout: Duration) -> bool {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the handle is the live client `self.producer` owns, and
        // rd_kafka_flush may be called from any thread while the polling
        // thread serves the delivery reports.
        let err =
            unsafe { rdkafka::bindings::rd_kafka_flush(self.producer.client().native_ptr(), ms) };
        err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
    }

    fn queue(&self, record: &OutRecord) -> Result<(), OutputFailure> {
        let mut base =
            BaseRecord::<Vec<u8>, Vec<u8>>::to(&record.topic).headers(record.kafka_headers());
        if let Some(payload) = &record.payload {
            base = base.payload(payload);
        }
        if let Some(p) = record.partition {
            base = base.partition(p);
        }
        if let Some(k) = &record.key {
            base = base.key(k);
        }
        if let Some(ts) = record.timestamp_ms {
            base = base.timestamp(ts);
        }
        loop {
            match self.producer.send(base) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    // The polling thread frees room as deliveries come back.
                    std::thread::sleep(Duration::from_millis(1));
                    base = back;
                }
                Err((e, _)) => return Err(classify("produce", e)),
            }
        }
    }
}

fn create(
    stage: &'static str,
    config: rdkafka::ClientConfig,
) -> Result<ThreadedProducer<Deliveries>, RuntimeError> {
    config
        .create_with_context(Deliveries::default())
        .map_err(|source| RuntimeError::Client {
            stage,
            client: "producer",
            source,
        })
}

/// Sorts a client error: fenced, fatal, or abortable.
fn classify(operation: &'static str, e: KafkaError) -> OutputFailure {
    let fenced = matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::Fenced)
    );
    if fenced {
        return OutputFailure::Fenced { operation };
    }
    match &e {
        KafkaError::Transaction(t) if t.is_fatal() => OutputFailure::Fatal {
            operation,
            detail: e.to_string(),
        },
        _ => OutputFailure::Abortable {
            operation,
            detail: e.to_string(),
        },
    }
}

impl Output<ConsumerGroupMetadata> for KafkaOutput {
    fn transact(
        &mut self,
        group: &ConsumerGroupMetadata,
        out: &[OutRecord],
        offsets: &[NextOffset],
    ) -> Result<(), OutputFailure> {
        let txn = |op: &'static str, r: Result<(), KafkaError>| r.map_err(|e| classify(op, e));
        txn("begin_transaction", self.producer.begin_transaction())?;
        for record in out {
            self.queue(record)?;
        }
        let mut tpl = TopicPartitionList::with_capacity(offsets.len());
        for o in offsets {
            let added = tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.offset));
            added.map_err(|e| classify("send_offsets_to_transaction", e))?;
            if let (Some(m), Some(mut e)) = (&o.metadata, tpl.find_partition(&o.topic, o.partition))
            {
                e.set_metadata(m.clone());
            }
        }
        txn(
            "send_offsets_to_transaction",
            self.producer
                .send_offsets_to_transaction(&tpl, group, KAFKA_TIMEOUT),
        )?;
        self.await_deliveries(KAFKA_TIMEOUT);
        txn(
            "commit_transaction",
            self.producer.commit_transaction(KAFKA_TIMEOUT),
        )
    }

    fn abort(&mut self) -> Result<(), OutputFailure> {
        match self.producer.abort_transaction(KAFKA_TIMEOUT) {
            Ok(()) => Ok(()),
            Err(e) => {
                let not_open = matches!(e.rdkafka_error_code(), Some(RDKafkaErrorCode::State));
                match classify("abort_transaction", e) {
                    OutputFailure::Abortable { .. } if not_open => Ok(()),
                    OutputFailure::Abortable { detail, .. } => {
                        tracing::warn!(error = %detail, "abort_transaction failed");
                        Ok(())
                    }
                    stop => Err(stop),
                }
            }
        }
    }

    fn send(&mut self, out: &[OutRecord]) -> Result<(), OutputFailure> {
        for record in out {
            self.queue(record)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), OutputFailure> {
        let delivered = self.await_deliveries(KAFKA_TIMEOUT);
        let failed = self.producer.context().failed.load(Ordering::Relaxed);
        let newly_failed = failed != self.failed_seen;
        self.failed_seen = failed;
        if !delivered {
            return Err(OutputFailure::Abortable {
                operation: "flush",
                detail: format!("records still undelivered after {KAFKA_TIMEOUT:?}"),
            });
        }
        if newly_failed {
            return Err(OutputFailure::Abortable {
                operation: "flush",
                detail: "records were not delivered".into(),
            });
        }
        Ok(())
    }
}

fn init_transactions(
    stage: &'static str,
    producer: &ThreadedProducer<Deliveries>,
) -> Result<(), RuntimeError> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(3));
    let mut attempt = 0u32;
    loop {
        match producer.init_transactions(KAFKA_TIMEOUT) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 && !matches!(&e, KafkaError::Transaction(t) if t.is_fatal()) => {
                attempt += 1;
                tracing::warn!(stage, error = %e, attempt, "init_transactions failed; retrying");
                std::thread::sleep(backoff.next_delay());
            }
            Err(e) => {
                return Err(RuntimeError::Fatal {
                    stage,
                    operation: "init_transactions",
                    detail: e.to_string(),
                });
            }
        }
    }
}
