//! [Kusanagi patch] Produce throughput of the engine, in one run: in memory
//! only (the engine before the journal, as noida-db 0.2.3 answered), with
//! the journal written to the OS (`os`, the default), and fsynced before
//! each answer (`always`). Each iteration produces 200 requests of one
//! batch of 10 records of 100 bytes to a fresh engine, as an idempotent
//! producer does (acks=all); throughput in records.

use std::path::PathBuf;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{CreateTopicsRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use noida::kafka::engine::Engine;
use noida::kafka::journal::FlushPolicy;

const REQUESTS: usize = 200;
const RECORDS: usize = 10;

fn batch(seq: i32) -> bytes::Bytes {
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 1000,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(bytes::Bytes::from(format!("acct_{i:04}"))),
            value: Some(bytes::Bytes::from(vec![b'x'; 100])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
    buf.freeze()
}

fn requests() -> Vec<ProduceRequest> {
    (0..REQUESTS)
        .map(|n| {
            let mut req = ProduceRequest::default();
            req.acks = -1;
            let mut td = TopicProduceData::default();
            td.name = TopicName(StrBytes::from_static_str("events.raw"));
            let mut pd = PartitionProduceData::default();
            pd.index = 0;
            pd.records = Some(batch((n * RECORDS) as i32));
            td.partition_data.push(pd);
            req.topic_data.push(td);
            req
        })
        .collect()
}

fn ready(engine: Engine) -> Engine {
    use kafka_protocol::messages::InitProducerIdRequest;
    let mut req = CreateTopicsRequest::default();
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_static_str("events.raw"));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    req.topics.push(topic);
    engine.handle_create_topics(&req, 5);
    // kafka-protocol's default transactional id is Some(""); an idempotent
    // producer sends null.
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = None;
    let init = engine.handle_init_producer_id(&init, 4);
    assert_eq!(init.producer_id.0, 1000);
    engine
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("noida-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn produce(c: &mut Criterion) {
    let reqs = requests();
    let mut group = c.benchmark_group("broker_produce");
    group.throughput(Throughput::Elements((REQUESTS * RECORDS) as u64));
    group.sample_size(20);
    let run = |engine: &Engine| {
        for r in &reqs {
            let res = engine.handle_produce(r, 8);
            assert_eq!(res.responses[0].partition_responses[0].error_code, 0);
        }
    };
    group.bench_function("memory_only_before", |b| {
        b.iter_batched(
            || ready(Engine::new("127.0.0.1".into(), 9092)),
            |e| run(&e),
            BatchSize::PerIteration,
        )
    });
    for (name, policy) in [("journal_os", FlushPolicy::Os), ("journal_always", FlushPolicy::Always)]
    {
        let d = dir(name);
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_dir_all(&d);
                    let (e, _) =
                        Engine::open_durable(&d, "127.0.0.1".into(), 9092, policy).unwrap();
                    ready(e)
                },
                |e| run(&e),
                BatchSize::PerIteration,
            )
        });
        let _ = std::fs::remove_dir_all(&d);
    }
    group.finish();
}

criterion_group!(benches, produce);
criterion_main!(benches);
