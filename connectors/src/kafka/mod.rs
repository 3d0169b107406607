//! Kafka: client settings for exactly-once stages, topic admin and the
//! embedded Kafka-protocol broker.
//!
//! Kusanagi relies only on documented Apache Kafka semantics (KIP-98
//! transactions, KIP-447 group-fenced offsets, `read_committed`), so the
//! same code runs against Apache Kafka in production and the embedded
//! broker on a laptop.

pub mod admin;
pub mod embedded;
pub mod produce;
pub mod replay;
pub mod settings;

pub use admin::{TopicSpec, ensure_topics};
pub use embedded::{EmbeddedBroker, FlushPolicy};
pub use produce::enqueue;
pub use replay::{PartitionReader, RecordVisitor, ReplayedRecord};
pub use settings::KafkaSettings;
