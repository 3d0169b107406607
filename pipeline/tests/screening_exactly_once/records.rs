//! What the brokers hold, read back: records by partition in offset order,
//! their payloads, and counts by topic.

use std::collections::BTreeMap;

use rdkafka::Message;
use rdkafka::message::OwnedMessage;

/// Records by (partition, offset), read_committed, from the beginning.
pub(crate) fn by_partition(messages: Vec<&OwnedMessage>) -> BTreeMap<i32, Vec<&OwnedMessage>> {
    let mut out: BTreeMap<i32, Vec<&OwnedMessage>> = BTreeMap::new();
    for m in messages {
        out.entry(m.partition()).or_default().push(m);
    }
    for list in out.values_mut() {
        list.sort_by_key(|m| m.offset());
    }
    out
}

pub(crate) fn values(messages: &BTreeMap<i32, Vec<&OwnedMessage>>) -> BTreeMap<i32, Vec<Vec<u8>>> {
    messages
        .iter()
        .map(|(p, ms)| {
            (
                *p,
                ms.iter().map(|m| m.payload().unwrap().to_vec()).collect(),
            )
        })
        .collect()
}

pub(crate) fn count(m: &[OwnedMessage], topic: &str) -> usize {
    m.iter().filter(|m| m.topic() == topic).count()
}
