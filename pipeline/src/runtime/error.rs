//! The runtime's errors, classified as arroyo classifies its own: whose
//! problem it is ([`ErrorClass`]) and whether trying again can help. The
//! loop and its supervisor act on these, never on a message's text.

use kusanagi_connectors::ErrorClass;
use rdkafka::error::KafkaError;

/// A failure inside a stage (its dependency is unreachable, its store
/// refused a write). Bad input is never one: it is dead-lettered.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {message}")]
pub struct StageError {
    /// The stage.
    pub stage: &'static str,
    /// Whose problem it is.
    pub class: ErrorClass,
    /// What failed.
    pub message: String,
}

impl StageError {
    /// An external system failed; a retry may mend it.
    pub fn external(stage: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            stage,
            class: ErrorClass::External,
            message: message.to_string(),
        }
    }

    /// The configuration cannot work; a retry does not help.
    pub fn user(stage: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            stage,
            class: ErrorClass::User,
            message: message.to_string(),
        }
    }

    /// Whether trying the batch again can help.
    pub fn is_retriable(&self) -> bool {
        self.class != ErrorClass::User
    }
}

/// Why a stage's loop stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// A client could not be created (configuration: the user's to fix).
    #[error("{stage}: cannot create the Kafka {client}: {source}")]
    Client {
        /// The stage.
        stage: &'static str,
        /// Which client.
        client: &'static str,
        /// The client library's error.
        source: KafkaError,
    },
    /// A stage's own resources could not be set up (the user's to fix).
    #[error("{stage}: {detail}")]
    Setup {
        /// The stage.
        stage: &'static str,
        /// What failed.
        detail: String,
    },
    /// Another process started with the same transactional id (or static
    /// membership id) and fenced this one: two copies share an instance id.
    #[error(
        "{stage}: fenced: another copy with transactional id `{transactional_id}` took over \
         (give every copy its own KUSANAGI_INSTANCE_ID)"
    )]
    Fenced {
        /// The stage.
        stage: &'static str,
        /// The shared id.
        transactional_id: String,
    },
    /// Object storage failed (the catalog or a tier): an external system; a
    /// restart of the stage retries.
    #[error("{stage}: {detail}")]
    Storage {
        /// The stage.
        stage: &'static str,
        /// What failed.
        detail: String,
    },
    /// A Kafka client hit a fatal error and must be created again.
    #[error("{stage}: fatal Kafka error during {operation}: {detail}")]
    Fatal {
        /// The stage.
        stage: &'static str,
        /// What was attempted.
        operation: &'static str,
        /// The client library's error.
        detail: String,
    },
    /// A partition's records came again from before where this copy had
    /// read: the broker lost records it had acknowledged. A stage that
    /// holds what it read in memory (the view) is started again and
    /// rebuilds from the beginning.
    #[error(
        "{stage}: {topic}/{partition} came again from offset {came_back_at}, below {read_to} \
         where this copy had read: the broker lost records it had acknowledged; rebuilding \
         from the beginning"
    )]
    WentBack {
        /// The stage.
        stage: &'static str,
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Where this copy had read to.
        read_to: i64,
        /// The offset the records came again from.
        came_back_at: i64,
    },
    /// The stage itself failed in a way a retry does not mend.
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl RuntimeError {
    /// Whose problem it is.
    pub fn class(&self) -> ErrorClass {
        match self {
            RuntimeError::Client { .. } | RuntimeError::Setup { .. } => ErrorClass::User,
            RuntimeError::Fenced { .. } => ErrorClass::User,
            RuntimeError::Storage { .. }
            | RuntimeError::Fatal { .. }
            | RuntimeError::WentBack { .. } => ErrorClass::External,
            RuntimeError::Stage(e) => e.class,
        }
    }

    /// Whether starting the stage again (new clients, state rebuilt) can
    /// help; the supervisor stops for good when not.
    pub fn is_retriable(&self) -> bool {
        self.class() != ErrorClass::User
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_and_fencing_stop_for_good_stores_and_clients_are_retried() {
        let fenced = RuntimeError::Fenced {
            stage: "screen",
            transactional_id: "kusanagi-screen-a".into(),
        };
        assert!(!fenced.is_retriable());
        assert!(fenced.to_string().contains("KUSANAGI_INSTANCE_ID"));
        let setup = RuntimeError::Setup {
            stage: "archive",
            detail: "bad URL".into(),
        };
        assert!(!setup.is_retriable());
        let storage = RuntimeError::Storage {
            stage: "archive",
            detail: "503".into(),
        };
        assert!(storage.is_retriable());
        assert_eq!(storage.class(), ErrorClass::External);
        assert!(!RuntimeError::from(StageError::user("analyze", "no key")).is_retriable());
        assert!(RuntimeError::from(StageError::external("analyze", "timeout")).is_retriable());
    }
}
