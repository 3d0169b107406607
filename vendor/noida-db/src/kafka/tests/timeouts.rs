//! [Kusanagi patch] Timeouts as in Kafka: expired sessions are evicted by
//! the engine's tick, transactions past their timeout are aborted.

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnTopic,
};
use kafka_protocol::messages::end_txn_request::EndTxnRequest;
use kafka_protocol::messages::produce_request::{
    PartitionProduceData, ProduceRequest, TopicProduceData,
};
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, InitProducerIdRequest, JoinGroupRequest, ProducerId,
    SyncGroupRequest, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::T;
use crate::kafka::engine::GroupLifecycleState;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// A one-member group, stable: (member id, generation).
fn stable_group(t: &T, group: &str) -> (StrBytes, i32) {
    let mut join = JoinGroupRequest::default();
    join.protocols.push(
        kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
            .with_name(s("range")),
    );
    join.group_id = GroupId(s(group));
    join.protocol_type = s("consumer");
    join.session_timeout_ms = 6000;
    let first = t.engine.handle_join_group(&join, 5);
    join.member_id = first.member_id.clone();
    let joined = t.engine.handle_join_group(&join, 5);
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s(group));
    sync.member_id = joined.member_id.clone();
    sync.generation_id = joined.generation_id;
    assert_eq!(t.engine.handle_sync_group(&sync, 3).error_code, 0);
    (joined.member_id, joined.generation_id)
}

fn heartbeat(t: &T, group: &str, member: &StrBytes, generation: i32) -> i16 {
    let mut hb = HeartbeatRequest::default();
    hb.group_id = GroupId(s(group));
    hb.member_id = member.clone();
    hb.generation_id = generation;
    t.engine.handle_heartbeat(&hb, 4).error_code
}

#[test]
fn a_member_that_stops_heartbeating_is_evicted_and_the_rest_rebalance() {
    let t = T::new();
    let (live, generation) = stable_group(&t, "g");
    // A second member that died: joined with the live one, never heard
    // from again.
    {
        let mut state = t.engine.state.lock().unwrap();
        let group = state.groups.get_mut("g").unwrap();
        let mut dead = group.members.values().next().unwrap().clone();
        dead.member_id = "dead-member".into();
        dead.group_instance_id = Some("copy-b".into());
        group.members.insert(dead.member_id.clone(), dead);
    }
    t.advance(4_000);
    assert_eq!(heartbeat(&t, "g", &live, generation), 0);
    t.engine.run_timeouts();
    assert_eq!(t.engine.state.lock().unwrap().groups["g"].members.len(), 2, "not yet");
    t.advance(3_000); // the dead member's session (6 s) is over
    t.engine.run_timeouts();
    {
        let state = t.engine.state.lock().unwrap();
        let group = &state.groups["g"];
        assert!(!group.members.contains_key("dead-member"));
        assert_eq!(group.state, GroupLifecycleState::PreparingRebalance);
        assert_eq!(group.generation_id, generation + 1);
    }
    // The live member hears of the rebalance at its next heartbeat.
    assert_eq!(heartbeat(&t, "g", &live, generation), 27);
    // It rejoins, alone, and the group is stable again in the next
    // generation, with it as the only member.
    let mut join = JoinGroupRequest::default();
    join.protocols.push(
        kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
            .with_name(s("range")),
    );
    join.group_id = GroupId(s("g"));
    join.protocol_type = s("consumer");
    join.session_timeout_ms = 6000;
    join.member_id = live.clone();
    let rejoined = t.engine.handle_join_group(&join, 5);
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.generation_id, generation + 1);
    assert_eq!(rejoined.members.len(), 1, "the leader sees only itself");
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s("g"));
    sync.member_id = live.clone();
    sync.generation_id = rejoined.generation_id;
    assert_eq!(t.engine.handle_sync_group(&sync, 3).error_code, 0);
    assert_eq!(heartbeat(&t, "g", &live, rejoined.generation_id), 0);
    let state = t.engine.state.lock().unwrap();
    assert_eq!(state.groups["g"].state, GroupLifecycleState::Stable);
    assert_eq!(state.groups["g"].members.len(), 1);
}

#[test]
fn a_lone_member_that_dies_leaves_the_group_empty() {
    let t = T::new();
    stable_group(&t, "solo");
    t.advance(6_001);
    t.engine.run_timeouts();
    let state = t.engine.state.lock().unwrap();
    assert_eq!(state.groups["solo"].state, GroupLifecycleState::Empty);
    assert!(state.groups["solo"].members.is_empty());
}

/// A leader that dies after its JoinGroup was answered, before its
/// SyncGroup, is evicted after its session; the follower gets
/// REBALANCE_IN_PROGRESS and forms the group alone. (The round used to stay
/// in CompletingRebalance for good: sessions were checked in stable groups
/// only, and the follower's rejoin was answered with the same dead leader.)
#[test]
fn a_leader_that_dies_before_its_sync_is_evicted_and_the_follower_carries_on() {
    let t = T::new();
    let join = |member: &StrBytes| {
        let mut j = JoinGroupRequest::default();
        j.protocols.push(
            kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol::default()
                .with_name(s("range")),
        );
        j.group_id = GroupId(s("dl"));
        j.protocol_type = s("consumer");
        j.session_timeout_ms = 6000;
        j.rebalance_timeout_ms = 60_000;
        j.member_id = member.clone();
        j
    };
    let (leader, follower) = {
        let mut state = t.engine.state.lock().unwrap();
        let a = state.handle_join_group(&join(&s("")), 5, "a", "/h").member_id;
        let b = state.handle_join_group(&join(&s("")), 5, "b", "/h").member_id;
        state.handle_join_group(&join(&a), 5, "a", "/h");
        state.handle_join_group(&join(&b), 5, "b", "/h");
        let group = state.groups.get_mut("dl").unwrap();
        group.initial_until = None;
        group.try_complete_join();
        assert_eq!(group.state, GroupLifecycleState::CompletingRebalance);
        let leader = group.leader_id.clone().unwrap();
        let follower = if leader == a.as_str() { b } else { a };
        (s(&leader), follower)
    };
    let generation = t.engine.state.lock().unwrap().groups["dl"].generation_id;
    // The leader dies here. The follower heartbeats; the leader's session ends.
    t.advance(3_000);
    assert_eq!(heartbeat(&t, "dl", &follower, generation), 0);
    t.advance(3_500);
    assert_eq!(t.engine.state.lock().unwrap().expire_sessions(), 1, "the dead leader is evicted");
    {
        let state = t.engine.state.lock().unwrap();
        let group = &state.groups["dl"];
        assert!(!group.members.contains_key(leader.as_str()));
        assert_eq!(group.state, GroupLifecycleState::PreparingRebalance);
    }
    let mut sync = SyncGroupRequest::default();
    sync.group_id = GroupId(s("dl"));
    sync.member_id = follower.clone();
    sync.generation_id = generation;
    assert_eq!(t.engine.handle_sync_group(&sync, 3).error_code, 27, "rejoin");
    let rejoined = t.engine.handle_join_group(&join(&follower), 5);
    assert_eq!(rejoined.error_code, 0);
    assert_eq!(rejoined.leader, follower, "the follower leads now");
    assert_eq!(rejoined.members.len(), 1);
    sync.generation_id = rejoined.generation_id;
    assert_eq!(t.engine.handle_sync_group(&sync, 3).error_code, 0);
    assert_eq!(t.engine.state.lock().unwrap().groups["dl"].state, GroupLifecycleState::Stable);
}

/// A member told to rejoin stays alive through its heartbeats, and one
/// that never rejoins (its session over, no open JoinGroup) is dropped so
/// that the round completes without it.
#[test]
fn heartbeats_keep_a_rejoining_member_alive_and_a_silent_one_is_dropped_from_the_round() {
    let t = T::new();
    let (live, generation) = stable_group(&t, "rj");
    {
        let mut state = t.engine.state.lock().unwrap();
        let group = state.groups.get_mut("rj").unwrap();
        let mut silent = group.members.values().next().unwrap().clone();
        silent.member_id = "silent".into();
        group.members.insert("silent".into(), silent);
        // A new round, as when a member joins.
        group.state = GroupLifecycleState::PreparingRebalance;
        group.generation_id += 1;
        group.awaiting_members.clear();
    }
    for _ in 0..4 {
        t.advance(2_000);
        assert_eq!(heartbeat(&t, "rj", &live, generation), 27, "rejoin, and alive");
        t.engine.state.lock().unwrap().expire_sessions();
    }
    let state = t.engine.state.lock().unwrap();
    let group = &state.groups["rj"];
    assert!(group.members.contains_key(live.as_str()), "heartbeats kept it");
    assert!(!group.members.contains_key("silent"), "no heartbeat, no join: dropped");
}

#[test]
fn a_transaction_open_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let t = T::new();
    t.create_topic("out", 1);
    let mut init = InitProducerIdRequest::default();
    init.transactional_id = Some(TransactionalId(s("stage-a")));
    init.transaction_timeout_ms = 10_000;
    let r = t.engine.handle_init_producer_id(&init, 1);
    let (pid, epoch) = (r.producer_id.0, r.producer_epoch);
    let mut add = AddPartitionsToTxnRequest::default();
    add.v3_and_below_transactional_id = TransactionalId(s("stage-a"));
    add.v3_and_below_producer_id = ProducerId(pid);
    add.v3_and_below_producer_epoch = epoch;
    let mut topic = AddPartitionsToTxnTopic::default();
    topic.name = TopicName(s("out"));
    topic.partitions = vec![0];
    add.v3_and_below_topics = vec![topic];
    t.engine.handle_add_partitions_to_txn(&add, 1);
    let mut produce = ProduceRequest::default();
    produce.acks = -1;
    let mut td = TopicProduceData::default();
    td.name = TopicName(s("out"));
    let mut pd = PartitionProduceData::default();
    pd.index = 0;
    let mut batch = super::record_batch(&[b"pending"], pid, epoch, 0);
    batch[21..23].copy_from_slice(&0x0010i16.to_be_bytes()); // transactional
    let crc = crc32c::crc32c(&batch[21..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    pd.records = Some(bytes::Bytes::from(batch));
    td.partition_data.push(pd);
    produce.topic_data.push(td);
    assert_eq!(
        t.engine.handle_produce(&produce, 8).responses[0].partition_responses[0].error_code,
        0
    );
    let open =
        |t: &T| t.engine.state.lock().unwrap().topics["out"].partitions[&0].active_txns.len();
    t.advance(9_000);
    t.engine.run_timeouts();
    assert_eq!(open(&t), 1, "within its timeout");
    t.advance(2_000);
    t.engine.run_timeouts();
    assert_eq!(open(&t), 0, "aborted after 10 s");
    {
        let state = t.engine.state.lock().unwrap();
        let p = &state.topics["out"].partitions[&0];
        assert_eq!(p.aborted_txns, vec![(pid, 0)]);
        assert_eq!(state.producer_epochs[&pid], epoch + 1, "fenced");
    }
    let mut end = EndTxnRequest::default();
    end.transactional_id = TransactionalId(s("stage-a"));
    end.producer_id = ProducerId(pid);
    end.producer_epoch = epoch;
    end.committed = true;
    assert_eq!(t.engine.handle_end_txn(&end, 1).error_code, 47, "the old producer is fenced");
}
