//! The bare broker's rate on the drain's records: produce them all to a
//! scratch topic with the pipeline's producer settings, then read them all
//! back `read_committed`; no stage involved. The stages cannot drain faster
//! than this on the same machine.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kusanagi_connectors::kafka::KafkaSettings;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use super::Preload;
use crate::drive::Deliveries;

/// The scratch topic.
pub const TOPIC: &str = "loadtest.ceiling";

/// How long the broker took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceiling {
    /// Seconds to produce every record (until acknowledged).
    pub produce_seconds: f64,
    /// Seconds to read them all back.
    pub consume_seconds: f64,
}

impl Ceiling {
    /// Records per second through produce then consume.
    pub fn events_per_second(&self, n: u64) -> f64 {
        n as f64 / (self.produce_seconds + self.consume_seconds).max(1e-9)
    }
}

/// Creates [`TOPIC`] with `partitions`.
pub async fn create_topic(settings: &KafkaSettings, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = settings
        .admin_config()
        .create()
        .context("creating the admin client")?;
    let topic = NewTopic::new(TOPIC, partitions, TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .context("creating the scratch topic")?
    {
        if let Err((name, code)) = result {
            bail!("creating `{name}`: {code}");
        }
    }
    Ok(())
}

/// Produces `records` to `topic` and waits until every one is
/// acknowledged; returns the seconds it took.
pub fn produce_all(
    settings: &KafkaSettings,
    topic: &str,
    records: &Preload,
) -> anyhow::Result<f64> {
    let producer: ThreadedProducer<Deliveries> = settings
        .producer_config()
        .create_with_context(Deliveries::default())
        .context("creating the producer")?;
    let started = Instant::now();
    for (key, json) in &records.records {
        let mut record = BaseRecord::to(topic).key(key).payload(json);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    back,
                )) => {
                    record = back;
                    producer.poll(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e).context("producing"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("waiting for the acknowledgements")?;
    let seconds = started.elapsed().as_secs_f64();
    if let (failed @ 1.., first) = producer.context().failures() {
        bail!(
            "{failed} records to `{topic}` were not delivered; the first: {}",
            first.unwrap_or_default()
        );
    }
    Ok(seconds)
}

/// Reads `n` records of `topic` from the start, `read_committed`; returns
/// the seconds it took.
pub fn consume_all(settings: &KafkaSettings, topic: &str, n: u64) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = settings
        .reader_config("kusanagi-loadtest-ceiling")
        .create()
        .context("creating the reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("reading the metadata of `{topic}`"))?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut read = 0u64;
    while read < n {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => read += 1,
            Some(Err(e)) => return Err(e).context("reading"),
            None if started.elapsed() > Duration::from_secs(120) => {
                bail!("read {read} of {n} records of `{topic}` in 120 s")
            }
            None => {}
        }
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Produces `records` to [`TOPIC`] and reads them back.
pub fn measure(settings: &KafkaSettings, records: &Preload) -> anyhow::Result<Ceiling> {
    let produce_seconds = produce_all(settings, TOPIC, records)?;
    let consume_seconds = consume_all(settings, TOPIC, records.records.len() as u64)?;
    Ok(Ceiling {
        produce_seconds,
        consume_seconds,
    })
}
