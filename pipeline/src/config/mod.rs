//! Typed configuration: the topology file, overridable by environment.

mod archive;
pub mod auth;
mod gdpr;
mod load;
mod redact;
pub mod stages;
mod topology;

pub use archive::ArchiveConfig;
pub use auth::{AuthConfig, KeyConfig, Role};
pub use gdpr::GdprConfig;
pub use load::{ConfigError, ConfigProblem};
pub use redact::{REDACTED, is_secret};
pub use topology::{
    BrokerFlush, EmbeddedBrokerConfig, HttpConfig, InstanceConfig, KafkaConfig, LogConfig,
    LogFormat, StagesConfig, TelemetryConfig, TopicsConfig, Topology,
};

/// A stage's consumer group must be named. Problems as (key, message).
pub(crate) fn check_group_id(group_id: &str) -> Vec<(String, String)> {
    if group_id.trim().is_empty() {
        return vec![(
            "group_id".into(),
            "expected a consumer group name, found \"\"".into(),
        )];
    }
    Vec::new()
}

/// The checks every stage's loop settings share: a group name, at least
/// one record per batch, at most a minute of batch wait. Problems as (key,
/// message).
pub(crate) fn check_loop(
    group_id: &str,
    batch_max_records: usize,
    batch_max_wait_ms: u64,
) -> Vec<(String, String)> {
    let mut p = check_group_id(group_id);
    if batch_max_records == 0 {
        p.push((
            "batch_max_records".into(),
            "expected at least 1, found 0".into(),
        ));
    }
    if batch_max_wait_ms > 60_000 {
        p.push((
            "batch_max_wait_ms".into(),
            format!("expected at most 60000, found {batch_max_wait_ms}"),
        ));
    }
    p
}

impl Topology {
    /// The Kafka client settings this topology describes, for brokers at
    /// `bootstrap` (the configured ones, or the embedded broker's address).
    pub fn kafka_settings(&self, bootstrap: &str) -> kusanagi_connectors::kafka::KafkaSettings {
        let mut s = kusanagi_connectors::kafka::KafkaSettings::new(bootstrap);
        s.client_id = self.kafka.client_id.clone();
        s.properties = self.kafka.properties.clone();
        s.session_timeout_ms = self.kafka.session_timeout_ms;
        s.message_max_bytes = self.kafka.message_max_bytes;
        s.static_membership = self.kafka.static_membership;
        s
    }

    /// The topics this topology needs, with their layout.
    pub fn topic_specs(&self) -> Vec<kusanagi_connectors::kafka::TopicSpec> {
        let t = &self.topics;
        let spec =
            |name: &str, configs: Vec<(&str, String)>| kusanagi_connectors::kafka::TopicSpec {
                name: name.to_owned(),
                partitions: t.partitions,
                replication_factor: t.replication_factor,
                configs: configs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            };
        let bounded = || {
            vec![
                ("retention.ms", t.raw_retention_ms.to_string()),
                ("max.message.bytes", t.raw_max_message_bytes.to_string()),
            ]
        };
        let producer = || vec![("compression.type", "producer".into())];
        let evidence = || {
            vec![
                ("retention.ms", t.evidence_retention_ms.to_string()),
                ("compression.type", "producer".into()),
            ]
        };
        vec![
            spec(&t.raw, bounded()),
            spec(&t.events, producer()),
            spec(&t.dead_letter, bounded()),
            spec(&t.screenings, evidence()),
            spec(&t.l2_requests, evidence()),
            spec(&t.l2_verdicts, producer()),
            spec(
                &t.accounts,
                vec![
                    ("cleanup.policy", "compact".into()),
                    ("compression.type", "producer".into()),
                ],
            ),
            spec(
                &t.erasures,
                vec![
                    ("cleanup.policy", "compact".into()),
                    ("compression.type", "producer".into()),
                ],
            ),
            spec(
                &t.audit,
                vec![
                    ("retention.ms", "-1".into()),
                    ("compression.type", "producer".into()),
                ],
            ),
            spec(
                &t.transitions,
                vec![
                    ("retention.ms", t.transitions_retention_ms.to_string()),
                    ("compression.type", "producer".into()),
                ],
            ),
        ]
    }
}
