//! [Kusanagi patch] The durable engine: what was answered survives a crash
//! (the engine dropped without a checkpoint), through the journal.

use std::path::{Path, PathBuf};

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequest, OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{
    GroupId, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::record_batch;
use crate::kafka::durable::CHECKPOINT;
use crate::kafka::engine::Engine;
use crate::kafka::journal::{self, FlushPolicy};

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("noida-durable-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn open(d: &Path) -> (Engine, crate::kafka::durable::Recovery) {
    Engine::open_durable(d, "127.0.0.1".into(), 9092, FlushPolicy::Os).unwrap()
}

fn create_topic(e: &Engine, name: &str) {
    use kafka_protocol::messages::CreateTopicsRequest;
    use kafka_protocol::messages::create_topics_request::CreatableTopic;
    let mut req = CreateTopicsRequest::default();
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(s(name));
    topic.num_partitions = 1;
    topic.replication_factor = 1;
    req.topics.push(topic);
    assert_eq!(e.handle_create_topics(&req, 5).topics[0].error_code, 0);
}

/// (error code, base offset).
fn produce(e: &Engine, topic: &str, batch: Vec<u8>) -> (i16, i64) {
    let mut req = ProduceRequest::default();
    req.acks = -1;
    let mut td = TopicProduceData::default();
    td.name = TopicName(s(topic));
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    pd.records = Some(bytes::Bytes::from(batch));
    td.partition_data.push(pd);
    req.topic_data.push(td);
    let res = e.handle_produce(&req, 8);
    let p = &res.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn txn_batch(pid: i64, epoch: i16, seq: i32, value: &'static [u8]) -> Vec<u8> {
    let record = Record {
        transactional: true,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: pid,
        producer_epoch: epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: seq,
        timestamp: 0,
        key: None,
        value: Some(bytes::Bytes::from_static(value)),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    RecordBatchEncoder::encode(&mut buf, std::iter::once(&record), &options).unwrap();
    buf.to_vec()
}

/// The values a fetch from 0 returns (`isolation` 0: all, 1: committed).
fn values(e: &Engine, topic: &str, isolation: i8) -> Vec<String> {
    let mut req = FetchRequest::default();
    req.isolation_level = isolation;
    let mut ft = FetchTopic::default();
    ft.topic = TopicName(s(topic));
    let mut fp = FetchPartition::default();
    fp.partition = 0;
    fp.fetch_offset = 0;
    fp.partition_max_bytes = 1 << 20;
    ft.partitions.push(fp);
    req.topics.push(ft);
    req.max_bytes = 1 << 20;
    let res = e.handle_fetch(&req, 11);
    let p = &res.responses[0].partitions[0];
    // (producer, first offset) of each aborted transaction: here each is
    // its producer's last, so everything of it from there on is aborted.
    let aborted: Vec<(i64, i64)> = p
        .aborted_transactions
        .as_ref()
        .map(|a| a.iter().map(|t| (t.producer_id.0, t.first_offset)).collect())
        .unwrap_or_default();
    let Some(bytes) = &p.records else { return vec![] };
    let mut buf = bytes.clone();
    kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf)
        .unwrap()
        .into_iter()
        .flat_map(|set| set.records)
        .filter(|r| {
            let is_aborted =
                aborted.iter().any(|(pid, first)| r.producer_id == *pid && r.offset >= *first);
            !(r.control || isolation == 1 && is_aborted)
        })
        .filter_map(|r| r.value.map(|v| String::from_utf8(v.to_vec()).unwrap()))
        .collect()
}

fn committed(e: &Engine, group: &str, topic: &str) -> i64 {
    let mut req = OffsetFetchRequest::default();
    req.group_id = GroupId(s(group));
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partition_indexes = vec![0];
    req.topics = Some(vec![t]);
    e.handle_offset_fetch(&req, 5).topics[0].partitions[0].committed_offset
}

fn init(e: &Engine, tid: Option<&str>) -> (i64, i16) {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = tid.map(|t| TransactionalId(s(t)));
    req.transaction_timeout_ms = 60_000;
    let res = e.handle_init_producer_id(&req, 1);
    assert_eq!(res.error_code, 0);
    (res.producer_id.0, res.producer_epoch)
}

fn add_partition(e: &Engine, tid: &str, pid: i64, epoch: i16, topic: &str) {
    let mut req = AddPartitionsToTxnRequest::default();
    req.v3_and_below_transactional_id = TransactionalId(s(tid));
    req.v3_and_below_producer_id = ProducerId(pid);
    req.v3_and_below_producer_epoch = epoch;
    let mut t = AddPartitionsToTxnTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![0];
    req.v3_and_below_topics = vec![t];
    let res = e.handle_add_partitions_to_txn(&req, 1);
    assert_eq!(
        res.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        0
    );
}

fn end_txn(e: &Engine, tid: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let mut req = EndTxnRequest::default();
    req.transactional_id = TransactionalId(s(tid));
    req.producer_id = ProducerId(pid);
    req.producer_epoch = epoch;
    req.committed = commit;
    e.handle_end_txn(&req, 1).error_code
}

fn commit_offset(e: &Engine, group: &str, topic: &str, offset: i64) {
    let mut req = OffsetCommitRequest::default();
    req.group_id = GroupId(s(group));
    req.generation_id_or_member_epoch = -1;
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = offset;
    p.committed_metadata = Some(s("replay_from=1"));
    t.partitions.push(p);
    req.topics.push(t);
    assert_eq!(e.handle_offset_commit(&req, 8).topics[0].partitions[0].error_code, 0);
}

#[test]
fn everything_answered_survives_a_crash_without_a_checkpoint() {
    let d = dir("crash");
    let (e, first) = open(&d);
    assert!(!first.checkpoint && first.replayed == 0);
    create_topic(&e, "events");
    let (pid, epoch) = init(&e, None);
    for seq in 0..3 {
        assert_eq!(produce(&e, "events", record_batch(&[b"a", b"b"], pid, epoch, seq * 2)).0, 0);
    }
    assert_eq!(produce(&e, "events", record_batch(&[b"plain"], -1, -1, -1)), (0, 6));
    commit_offset(&e, "screen", "events", 5);
    let (tpid, tepoch) = init(&e, Some("stage-1"));
    add_partition(&e, "stage-1", tpid, tepoch, "events");
    assert_eq!(produce(&e, "events", txn_batch(tpid, tepoch, 0, b"committed")).0, 0);
    assert_eq!(end_txn(&e, "stage-1", tpid, tepoch, true), 0);
    add_partition(&e, "stage-1", tpid, tepoch, "events");
    assert_eq!(produce(&e, "events", txn_batch(tpid, tepoch, 1, b"open")).0, 0);
    let before = values(&e, "events", 0);
    drop(e); // a crash: no checkpoint since the start

    let (e, recovery) = open(&d);
    assert!(recovery.checkpoint);
    assert!(recovery.replayed >= 10, "{recovery:?}");
    assert_eq!(recovery.aborted_open_transactions, 1);
    assert_eq!(values(&e, "events", 0), before, "every record, at its offset");
    assert_eq!(
        values(&e, "events", 1),
        ["a", "b", "a", "b", "a", "b", "plain", "committed"],
        "the transaction open at the crash is aborted"
    );
    assert_eq!(committed(&e, "screen", "events"), 5);
    // The idempotent producer carries on: its next batch is accepted, a
    // retry of its last is recognised as a duplicate.
    assert_eq!(produce(&e, "events", record_batch(&[b"a"], pid, epoch, 4)), (0, 4));
    assert_eq!(produce(&e, "events", record_batch(&[b"c"], pid, epoch, 6)).0, 0);
    // The transactional producer of the crash is fenced; a new one goes on.
    assert_ne!(end_txn(&e, "stage-1", tpid, tepoch, true), 0);
    let (tpid2, tepoch2) = init(&e, Some("stage-1"));
    assert_eq!((tpid2, tepoch2), (tpid, tepoch + 2));
}

#[test]
fn a_checkpoint_truncates_the_journal_and_recovery_goes_on_from_it() {
    let d = dir("checkpoint");
    let (e, _) = open(&d);
    create_topic(&e, "t");
    produce(&e, "t", record_batch(&[b"1"], -1, -1, -1));
    e.checkpoint(&d).unwrap();
    let files = journal::files(&d).unwrap();
    assert_eq!(files.len(), 1, "older journal files removed: {files:?}");
    produce(&e, "t", record_batch(&[b"2"], -1, -1, -1));
    drop(e);
    let (e, r) = open(&d);
    assert!(r.replayed >= 1 && r.replayed < 5, "{r:?}");
    assert_eq!(values(&e, "t", 0), ["1", "2"]);
    assert!(d.join(CHECKPOINT).exists());
}

#[test]
fn a_torn_tail_recovers_and_damage_before_it_refuses_to_start() {
    let d = dir("torn");
    let (e, _) = open(&d);
    create_topic(&e, "t");
    produce(&e, "t", record_batch(&[b"kept"], -1, -1, -1));
    produce(&e, "t", record_batch(&[b"torn"], -1, -1, -1));
    drop(e);
    let (_, path) = journal::files(&d).unwrap().pop().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    // The last frame cut in the middle, as a crash mid-write leaves it.
    std::fs::write(&path, &bytes[..bytes.len() - 20]).unwrap();
    let (e, r) = open(&d);
    assert!(r.torn_tail.is_some(), "{r:?}");
    assert_eq!(values(&e, "t", 0), ["kept"]);
    produce(&e, "t", record_batch(&[b"after"], -1, -1, -1));
    drop(e);
    // A flipped byte in the middle of the journal: refused, named.
    let (_, path) = journal::files(&d).unwrap().pop().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[journal::MAGIC.len() + 14] ^= 0x01;
    bytes.extend_from_slice(&journal::frame(&journal::Entry::Clean { now_ms: 1 }.encode()));
    std::fs::write(&path, &bytes).unwrap();
    let err = Engine::open_durable(&d, "127.0.0.1".into(), 9092, FlushPolicy::Os).unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("damaged"), "{err}");
}
