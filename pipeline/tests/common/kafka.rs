//! Kafka clients of a test: an idempotent producer, test events, and
//! read_committed readers and offset lookups that join no group.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::ToBytes;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{
    BaseRecord, DefaultProducerContext, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// An idempotent producer for test input.
pub fn producer(bootstrap: &str) -> ThreadedProducer<DefaultProducerContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", "8388608")
        .create()
        .expect("producer")
}

/// Valid TRADE events as producers send them to `events` (Avro), keyed by
/// their account: for each `(event_id, i)`, the `i`th event of a test's
/// stream, one millisecond after 2099-01-01 per step, on account
/// `acct_<i % accounts>`. Far in the future, so nothing ages out.
pub fn trades(
    events: impl IntoIterator<Item = (String, usize)>,
    accounts: usize,
) -> Vec<(String, Vec<u8>)> {
    use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent, GameEventCodec};
    const T0: i64 = 4_070_908_800_000_000; // 2099-01-01T00:00:00Z
    let codec = GameEventCodec::new();
    events
        .into_iter()
        .map(|(event_id, i)| {
            let e = GameEvent {
                event_id,
                timestamp: EventTime::from_micros(T0 + i as i64 * 1_000),
                event_type: "TRADE".into(),
                actor_id: format!("actor-{}", i % 97),
                target_id: format!("acct_{:04}", i % accounts),
                action_details: ActionDetails {
                    currency_amount: 100 + (i as i64 % 50),
                    item_id: None,
                    market_avg_price: None,
                },
                context_metadata: ContextMetadata::default(),
                tenant_id: "default".into(),
            };
            (e.target_id.clone(), codec.encode(&e))
        })
        .collect()
}

/// Hands `record` to `producer`, waiting while its queue is full, or while
/// it does not know the record's partition yet (one just added to the
/// topic: the producer learns it at its next metadata refresh). Any other
/// refusal, or a minute of waiting, fails the test.
pub fn send_waiting<'a, C, K, P>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
) where
    C: ProducerContext + 'static,
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(code), back))
                if matches!(
                    code,
                    RDKafkaErrorCode::QueueFull | RDKafkaErrorCode::UnknownPartition
                ) && Instant::now() < deadline =>
            {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err((e, _)) => panic!("the producer refused a test record: {e}"),
        }
    }
}

/// Produces `(key, value)` records to `topic` and waits for every ack.
pub fn produce_all(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    records: &[(String, Vec<u8>)],
) {
    for (key, value) in records {
        send_waiting(producer, BaseRecord::to(topic).key(key).payload(value));
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("every test record acknowledged");
}

/// A read_committed reader of whole topics from their beginning.
pub struct Reader {
    consumer: BaseConsumer,
    pub messages: Vec<OwnedMessage>,
}

impl Reader {
    /// Assigns every partition of `topics` from the beginning.
    pub fn new(bootstrap: &str, topics: &[&str]) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "kusanagi-test-reader")
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.message.max.bytes", "8388608")
            .create()
            .expect("reader");
        let mut tpl = TopicPartitionList::new();
        for topic in topics {
            let md = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .expect("metadata");
            for t in md.topics() {
                for p in t.partitions() {
                    tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                        .expect("offset");
                }
            }
        }
        consumer.assign(&tpl).expect("assign");
        Self {
            consumer,
            messages: Vec::new(),
        }
    }

    /// Reads until `done(messages)` holds or `timeout` passes; returns whether it held.
    pub fn read_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[OwnedMessage]) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        // `done` looks at every message read so far: ask it when the topics
        // are quiet or after each thousand new messages, not after every one
        // (that made long reads quadratic).
        let (mut fresh, mut quiet) = (0usize, true);
        while Instant::now() < end {
            if quiet || fresh >= 1_000 {
                if done(&self.messages) {
                    return true;
                }
                fresh = 0;
            }
            quiet = match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    self.messages.push(m.detach());
                    fresh += 1;
                    false
                }
                _ => true,
            };
        }
        done(&self.messages)
    }

    /// Reads whatever arrives within `quiet` of the last record.
    pub fn drain(&mut self, quiet: Duration) {
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                self.messages.push(m.detach());
                last = Instant::now();
            }
        }
    }

    /// Messages of `topic` read so far.
    pub fn of<'a>(&'a self, topic: &'a str) -> impl Iterator<Item = &'a OwnedMessage> + 'a {
        self.messages.iter().filter(move |m| m.topic() == topic)
    }
}

/// The value of header `name` of `m`, as text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The offsets group `group` committed on each partition of `topic` (0
/// where it committed none), read without joining the group.
pub fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("offsets client");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(
            |p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => 0,
            },
        )
        .collect()
}

/// The end (high watermark) of each partition of `topic`.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("offsets client");
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .collect()
}
