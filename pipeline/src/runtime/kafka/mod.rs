//! The loop's ports on Kafka: a librdkafka consumer in the stage's group
//! ([`KafkaSource`]) and a producer, transactional or not
//! ([`KafkaOutput`]).

mod output;
mod source;

pub use output::KafkaOutput;
pub use source::KafkaSource;
