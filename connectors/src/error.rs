//! The connectors' error type.

use thiserror::Error;

/// Whose problem a failure is: it decides whether to retry, to stop and
/// tell the operator, or to report a defect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The configuration or the input is wrong: a retry does not help.
    User,
    /// A system outside the process failed or is unreachable: a retry may.
    External,
    /// A defect of ours: a retry may get past it, and it must be reported.
    Internal,
}

/// A failure at the edge of the process.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConnectorError {
    /// A Kafka client could not be created: the configuration is wrong
    /// (the user's fault; a retry does not help).
    #[error("cannot create the Kafka {client}: {source}")]
    KafkaConfig {
        /// Which client (consumer, producer, admin).
        client: &'static str,
        /// The client library's error.
        source: rdkafka::error::KafkaError,
    },
    /// The broker refused or failed an operation (external; a retry may help).
    #[error("Kafka {operation} failed: {source}")]
    Kafka {
        /// What was attempted.
        operation: String,
        /// The client library's error.
        source: rdkafka::error::KafkaError,
    },
    /// Creating a topic failed for a reason other than that it exists.
    #[error("cannot create topic `{topic}`: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// An object-storage tier failed: a bad URL or option (the user's to
    /// fix), or the store refused or failed the operation (external).
    #[error("storage {url}: {operation}: {detail}")]
    Storage {
        /// The tier's URL.
        url: String,
        /// What was attempted (`open`, `put <path>`, ...).
        operation: String,
        /// The store's message.
        detail: String,
    },
    /// The object a tier was asked for is not there (another writer may
    /// have moved it: read the catalog again).
    #[error("storage {url}: {path}: not found")]
    NotFound {
        /// The tier's URL.
        url: String,
        /// The object.
        path: String,
    },
    /// An HTTP client could not be built (a bad URL or TLS setup: the
    /// user's to fix).
    #[error("HTTP client for {url}: {detail}")]
    Http {
        /// The endpoint.
        url: String,
        /// What failed.
        detail: String,
    },
    /// The embedded broker could not start (a port in use, an unreadable
    /// data directory).
    #[error("embedded broker: {detail}")]
    EmbeddedBroker {
        /// What went wrong, with the path or address involved.
        detail: String,
    },
}

impl ConnectorError {
    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whose problem it is.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::KafkaConfig { .. } | Self::Http { .. } | Self::EmbeddedBroker { .. } => {
                ErrorClass::User
            }
            Self::Storage { operation, .. } if operation == "open" => ErrorClass::User,
            Self::CreateTopic { .. } => ErrorClass::External,
            Self::Kafka { .. } | Self::Storage { .. } | Self::NotFound { .. } => {
                ErrorClass::External
            }
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Kafka { .. })
            || matches!(self, Self::Storage { operation, .. } if operation != "open")
    }
}
