//! How Kusanagi configures its Kafka clients.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

/// Where the brokers are and any extra librdkafka properties (security,
/// timeouts) the operator wants on every client. Its `Debug` hides secret
/// properties.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]` of the brokers.
    pub bootstrap: String,
    /// The client id prefix shown in broker logs and metrics.
    pub client_id: String,
    /// Extra librdkafka properties applied to every client, after Kusanagi's
    /// own (so an operator can override any of them).
    pub properties: BTreeMap<String, String>,
    /// Consumer group session timeout: how long a dead consumer keeps its
    /// partitions before a rebalance hands them to a live one.
    pub session_timeout_ms: u32,
    /// Largest record a producer sends, in bytes.
    pub message_max_bytes: u32,
    /// Whether stage consumers are static group members (`group.instance.id`):
    /// a restarted copy takes its predecessor's place without a rebalance,
    /// but a stopped copy's partitions move only after the session timeout
    /// (a static member does not leave its group on close). Off: a clean
    /// stop hands its partitions over at once, and every restart rebalances.
    pub static_membership: bool,
}

impl std::fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSettings")
            .field("bootstrap", &self.bootstrap)
            .field("client_id", &self.client_id)
            .field("properties", &crate::secrets::redact_map(&self.properties))
            .field("session_timeout_ms", &self.session_timeout_ms)
            .field("message_max_bytes", &self.message_max_bytes)
            .field("static_membership", &self.static_membership)
            .finish()
    }
}

impl KafkaSettings {
    /// Settings for brokers at `bootstrap` with Kusanagi's defaults.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            client_id: "kusanagi".into(),
            properties: BTreeMap::new(),
            session_timeout_ms: 10_000,
            message_max_bytes: 8 * 1024 * 1024,
            static_membership: true,
        }
    }

    fn base(&self, role: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("client.id", format!("{}-{role}", self.client_id))
            .set("broker.address.family", "v4")
            // Requests are small and latency-bound: do not let Nagle's
            // algorithm hold them back waiting for a delayed ACK.
            .set("socket.nagle.disable", "true");
        c
    }

    fn finish(&self, mut c: ClientConfig) -> ClientConfig {
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// A consumer for an exactly-once stage: group member, offsets never
    /// committed by the consumer itself (the transaction commits them),
    /// reads only committed transactional data.
    ///
    /// With `instance_id`, the consumer is a static member of its group
    /// (KIP-345, `group.instance.id`): a restarted copy takes its
    /// predecessor's place and partitions at once, with no rebalance, while a
    /// copy that is gone for good hands its partitions on after
    /// `session_timeout_ms`.
    pub fn consumer_config(&self, group_id: &str, instance_id: Option<&str>) -> ClientConfig {
        let mut c = self.base("consumer");
        if let Some(id) = instance_id.filter(|_| self.static_membership) {
            c.set("group.instance.id", id);
        }
        c.set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest")
            // Co-partitioned inputs (the decide stage reads partition p of
            // `screenings` and of `l2.verdicts`): the range assignor gives
            // one member the same partition number of every topic.
            .set("partition.assignment.strategy", "range")
            .set("enable.partition.eof", "false")
            .set("session.timeout.ms", self.session_timeout_ms.to_string())
            // A tenth of the session: a live copy hears of a dead one's
            // eviction (and rejoins) within a tenth of the session after it.
            .set(
                "heartbeat.interval.ms",
                (self.session_timeout_ms / 10).max(100).to_string(),
            )
            .set(
                "fetch.message.max.bytes",
                self.message_max_bytes.to_string(),
            );
        self.finish(c)
    }

    /// A plain reader outside any group (tests, `loadtest`, the demo's
    /// end-to-end check): `read_committed`, assigned partitions by hand.
    pub fn reader_config(&self, group_id: &str) -> ClientConfig {
        let mut c = self.consumer_config(group_id, None);
        c.set("client.id", format!("{}-reader", self.client_id));
        c
    }

    /// A transactional producer for an exactly-once stage. The
    /// `transactional_id` must be stable across restarts of the same stage
    /// instance, so that a restarted copy fences its dead predecessor and
    /// aborts its open transaction at once.
    pub fn transactional_producer_config(&self, transactional_id: &str) -> ClientConfig {
        let mut c = self.base("producer");
        c.set("transactional.id", transactional_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("transaction.timeout.ms", "60000")
            .set("message.max.bytes", self.message_max_bytes.to_string());
        self.finish(c)
    }

    /// An idempotent, non-transactional producer (the HTTP API, the demo's
    /// traffic generator, tests).
    pub fn producer_config(&self) -> ClientConfig {
        let mut c = self.base("producer");
        c.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.max.bytes", self.message_max_bytes.to_string());
        self.finish(c)
    }

    /// An admin client.
    pub fn admin_config(&self) -> ClientConfig {
        let c = self.base("admin");
        self.finish(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_properties_override_defaults() {
        let mut s = KafkaSettings::new("b:9092");
        s.properties.insert("linger.ms".into(), "50".into());
        let c = s.transactional_producer_config("t");
        assert_eq!(c.get("linger.ms"), Some("50"));
        assert_eq!(c.get("transactional.id"), Some("t"));
        let c = s.consumer_config("g", Some("g-1"));
        assert_eq!(c.get("group.instance.id"), Some("g-1"));
        assert_eq!(c.get("isolation.level"), Some("read_committed"));
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
    }
}
