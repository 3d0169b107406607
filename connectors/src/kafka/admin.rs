//! Topic administration: create what a topology needs, leave what exists.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::KafkaSettings;
use crate::ConnectorError;

/// A topic a topology needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// The topic's name.
    pub name: String,
    /// Number of partitions (bounds the number of consumers that share it).
    pub partitions: i32,
    /// Copies of each partition.
    pub replication_factor: i32,
    /// Topic-level configs (`cleanup.policy`, `max.message.bytes`, ...).
    pub configs: Vec<(String, String)>,
}

/// Creates every topic in `specs` that does not exist yet. Topics that exist
/// are left as they are (their partition count is the operator's to change).
pub async fn ensure_topics(
    settings: &KafkaSettings,
    specs: &[TopicSpec],
) -> Result<(), ConnectorError> {
    let admin: AdminClient<DefaultClientContext> =
        settings
            .admin_config()
            .create()
            .map_err(|source| ConnectorError::KafkaConfig {
                client: "admin client",
                source,
            })?;
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let mut t = NewTopic::new(
                &s.name,
                s.partitions,
                TopicReplication::Fixed(s.replication_factor),
            );
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            t
        })
        .collect();
    // The request's own timeout, not librdkafka's default of a minute: a
    // broker that cannot be reached fails the call within 10 s, so that
    // the caller can say so and retry (rust-rdkafka serves no log or error
    // events of an admin client, so nothing else would tell). The broker
    // may take 8 s of it to create the topics.
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(8)))
        .request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|source| ConnectorError::Kafka {
            operation: "create topics".into(),
            source,
        })?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(ConnectorError::CreateTopic {
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    Ok(())
}
