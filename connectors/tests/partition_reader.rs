//! `PartitionReader` reads exactly a range of one partition, and one reader
//! reads several partitions one after the other (as a stage rebuilding the
//! state of every partition it was given does), on the embedded broker.

use std::time::Duration;

use kusanagi_connectors::kafka::{
    EmbeddedBroker, KafkaSettings, PartitionReader, TopicSpec, ensure_topics,
};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reader_reads_ranges_of_several_partitions_in_turn() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().join("broker");
    let broker =
        EmbeddedBroker::start("127.0.0.1:0", &dir, Duration::from_secs(60)).expect("broker");
    let settings = KafkaSettings::new(broker.addr().to_string());
    let spec = TopicSpec {
        name: "log".into(),
        partitions: 3,
        replication_factor: 1,
        configs: vec![],
    };
    ensure_topics(&settings, &[spec]).await.expect("topic");
    let producer: ThreadedProducer<DefaultProducerContext> =
        settings.producer_config().create().expect("producer");
    for p in 0..3 {
        for i in 0..(100 + p * 50) {
            let value = format!("p{p}-{i}");
            producer
                .send(BaseRecord::to("log").partition(p).key("k").payload(&value))
                .expect("queued");
        }
    }
    producer.flush(Duration::from_secs(30)).expect("acked");

    let result = tokio::task::spawn_blocking(move || {
        let mut reader = PartitionReader::new(&settings, Duration::from_secs(10)).expect("reader");
        let mut seen = Vec::new();
        for (p, from, until) in [
            (0, 0, i64::MAX),
            (1, 0, i64::MAX),
            (2, 10, 20),
            (0, 95, 100),
            (1, 0, i64::MAX),
        ] {
            let mut values = Vec::new();
            let n = reader
                .read("log", p, from, until, &mut |r| {
                    assert!(r.timestamp_ms.is_some(), "records carry their timestamp");
                    values.push((
                        r.offset,
                        String::from_utf8_lossy(r.value.unwrap_or_default()).into_owned(),
                    ));
                })
                .expect("read");
            assert_eq!(n as usize, values.len());
            seen.push((p, values));
        }
        seen
    })
    .await
    .expect("reader thread");
    let counts: Vec<(i32, usize)> = result.iter().map(|(p, v)| (*p, v.len())).collect();
    // The true end of each partition, committed or not.
    let reader = PartitionReader::new(
        &KafkaSettings::new(broker.addr().to_string()),
        Duration::from_secs(10),
    )
    .expect("reader");
    let ends: Vec<i64> = (0..3).map(|p| reader.end("log", p).expect("end")).collect();
    assert_eq!(ends, [100, 150, 200]);
    assert_eq!(counts, [(0, 100), (1, 150), (2, 10), (0, 5), (1, 150)]);
    for (p, values) in &result {
        for (offset, value) in values {
            assert_eq!(
                value,
                &format!("p{p}-{offset}"),
                "partition {p} offset {offset}"
            );
        }
    }
    drop(broker);
}
