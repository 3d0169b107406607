//! The loop's ports on Kafka: a librdkafka consumer in the stage's group
//! ([`KafkaSource`]), a reader of every partition outside any group
//! ([`KafkaReader`]), and a producer, transactional or not
//! ([`KafkaOutput`]).

mod consumer;
mod output;
mod reader;
mod source;

pub use output::KafkaOutput;
pub use reader::KafkaReader;
pub use source::KafkaSource;
